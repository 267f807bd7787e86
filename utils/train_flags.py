"""The `train` flags of the shared training loop (utils/training.py): schedules, early stopping, distribution,
TensorBoard. Apart from utils/training.py so that a script can define them without importing TensorFlow (a
subcommand that never trains, such as mcbits.py decompress, then starts in a fraction of a second)."""
from utils.cli import finite_float, positive_float, positive_int

SCHEDULES = ("step", "cosine", "constant", "half_cosine")
STRATEGIES = ("default", "mirrored", "multiworker")


def add_schedule_flags(t, lr_schedule, warmup, patience):
    """The `train` flags of the learning-rate schedule and early stopping, with a script's defaults (the paper's:
    rdub_mlp.py "step" and no plateau; the image scripts "constant" with warm-up 100 and patience 10)."""
    t.add_argument("--lr_schedule", choices=SCHEDULES, default=lr_schedule,
                   help="'step': x0.2 at 1/2, 3/4 and 7/8 of the epochs (the paper's rdub_mlp.py); 'cosine'; "
                        "'constant'; 'half_cosine': constant, then a cosine to 1%% over the second half (the "
                        "variable-rate seed's) (see utils/training.py)")
    t.add_argument("--lr_ramp", type=int, default=0,
                   help="linear warm-up of the rate from lr/100 over this many steps (not in the paper; 0: none)")
    t.add_argument("--warmup", type=int, default=warmup,
                   help="epochs before reduce-on-plateau (and early stopping) may act")
    t.add_argument("--patience", type=int, default=patience,
                   help="reduce-on-plateau: lower the rate after this many epochs without an improvement of 1e-4 "
                        "in val_loss (loss without validation data); 0: off")
    t.add_argument("--lr_decay_factor", type=positive_float, default=0.5,
                   help="reduce-on-plateau's multiplier of the rate (floor 1e-6)")
    t.add_argument("--early_stop", type=positive_int,
                   help="stop after this many epochs without an improvement of 1e-4 (default: never)")
    t.add_argument("--clip_norm", type=positive_float,
                   help="clip the gradient to this global norm (not in the paper; the variable-rate seed's 2.0)")
    t.add_argument("--ema", type=finite_float,
                   help="keep an exponential moving average of the weights with this decay, used by eval, "
                        "compress and decompress (not in the paper; the variable-rate seed's 0.9999)")
    t.add_argument("--ema_warmup", type=positive_int, default=10000,
                   help="with --ema: the decay at step t is ema (1 - exp(-t / ema_warmup)), as the seed's")
    add_run_flags(t)


def add_run_flags(t):
    """The `train` flags of distribution and TensorBoard (add_schedule_flags includes them)."""
    t.add_argument("--strategy", choices=STRATEGIES, default="default",
                   help="'mirrored': data-parallel over this machine's GPUs; 'multiworker': over the machines "
                        "of TF_CONFIG (docs/distributed.md). --batchsize stays the global batch")
    t.add_argument("--cpu_devices", type=int, default=0,
                   help="with --strategy mirrored and no GPU: mirror over this many logical CPU devices "
                        "(to check the distributed path; no speed-up)")
    t.add_argument("--tensorboard", action="store_true",
                   help="also write each epoch's metrics and lr as TensorBoard scalars into <run folder>/tb")
