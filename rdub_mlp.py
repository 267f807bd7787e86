"""An upper bound on the R-D function of a vector source: a beta-VAE with MLP encoder and decoder.

The loss is rate + lambda * MSE, with rate the single-sample estimate of KL(q(y|x) || p(y)) = log q(y|x) - log p(y)
(bits per sample unless --nats; divided by the data dimension with --rpd) and MSE the squared error averaged
over data dimensions. Its expectation at any model is an achievable point above R(D): the bound (Yang & Mandt,
ICLR 2022). With a uniform posterior (y = encoder(x) + U(-1/2, 1/2)) and a factorized prior this becomes nonlinear
transform coding (Balle et al. 2021): `eval` then also quantizes the test set, range-codes it with tfc's
entropy model, decodes and checks it, and reports the rate from the bytes written.

  python rdub_mlp.py -V --dataset gaussian --data_dim 16 --latent_dim 16 --decoder_units 0 --prior_type gmm_1 \\
      --encoder_activation none --lambda 10 --rpd train --epochs 20 --steps_per_epoch 1000 --lr 5e-4
  python rdub_mlp.py ...same model flags... eval

The model (the beta-VAE, its rate and distortion estimates, NTC's range coding of the test set) is utils/rdub_mlp.py,
this script's engine; the script holds the flags, the run folders, training and eval.
"""
from utils import startup  # noqa: F401  (first, on purpose: TensorFlow's start-up lines; utils/startup.py)

import json
import math
import sys
import warnings
from pathlib import Path

import numpy as np

# TensorFlow (and the modules that import it: flows, priors, training, the engine utils/rdub_mlp.py) is imported in
# the functions that use it, so that --help and a bad flag answer at once.
from utils import jsonl, rd, runs, train_flags
from utils.cli import ArgumentParser, InputError, int_list, output_dir, positive_float, positive_int, run
from utils.nn import ACTIVATIONS, PRIOR_TYPES
from utils.sources import ImageFile, SampleFile, make_source

RESULTS_NAME = "results.jsonl"
POSTERIORS = ("gaussian", "uniform", "iaf")
# Flags that define the model (and its run folder); --cont refuses to resume a run trained with other values.
MODEL_FLAGS = ("dataset", "gparams_path", "data_dim", "latent_dim", "encoder_units", "decoder_units",
               "encoder_activation", "decoder_activation", "posterior_type", "prior_type", "maf_stacks",
               "iaf_stacks", "ar_hidden_units", "ar_activation", "lmbda", "nats", "rpd")


# ---- flags and set-up ---------------------------------------------------------------------------

def parse_args(argv):
    p = ArgumentParser(description=__doc__)
    p.add_argument("-V", "--verbose", action="store_true", help="progress and messages on stderr")
    p.add_argument("--dataset", default="gaussian", help="'gaussian', 'banana', or a path to an .npy of samples "
                   "[N, dim] (a `split=train` file finds its `split=test` twin for validation and eval)")
    p.add_argument("--gparams_path", help="an .npz with the Gaussian's 'loc' and 'scale' (or 'var')")
    p.add_argument("--data_dim", type=positive_int, help="source dimension (checked against files)")
    p.add_argument("--latent_dim", type=positive_int, help="latent dimension (default: --data_dim)")
    p.add_argument("--encoder_units", type=int_list, default=[],
                   help="hidden sizes, e.g. 500,500 (default: no hidden layer, an affine encoder)")
    p.add_argument("--decoder_units", type=int_list, default=[],
                   help="hidden sizes (default: no hidden layer, an affine decoder); '0' means no decoder at all "
                        "(x_hat = y; needs --latent_dim = --data_dim)")
    p.add_argument("--encoder_activation", default="softplus",
                   help=f"activation of the encoder's hidden layers: {', '.join(ACTIVATIONS)}")
    p.add_argument("--decoder_activation", default="softplus",
                   help=f"activation of the decoder's hidden layers: {', '.join(ACTIVATIONS)}")
    p.add_argument("--posterior_type", default="gaussian", choices=POSTERIORS,
                   help="q(y|x): a diagonal Gaussian; uniform, y = encoder(x) + U(-1/2, 1/2) (NTC); or a Gaussian "
                        "through an IAF")
    p.add_argument("--prior_type", default="deep", help=f"the learned prior p(y): {PRIOR_TYPES}")
    p.add_argument("--maf_stacks", type=positive_int, default=3, help="MAF layers of --prior_type maf")
    p.add_argument("--iaf_stacks", type=positive_int, default=3, help="IAF layers of --posterior_type iaf")
    p.add_argument("--ar_hidden_units", type=int_list, default=[10, 10], help="hidden sizes of each MADE")
    p.add_argument("--ar_activation", default="relu",
                   help="activation of the MADEs (one of the --encoder_activation names)")
    p.add_argument("--lambda", dest="lmbda", type=positive_float,
                   help="weight of the MSE in the loss rate + lambda * MSE (required, unless --run gives it)")
    p.add_argument("--nats", action="store_true", help="rate in nats (default: bits)")
    p.add_argument("--rpd", action="store_true", help="rate per data dimension")
    p.add_argument("--seed", type=int, default=0, help="seeds numpy and TensorFlow")
    p.add_argument("--checkpoint_dir", default="checkpoints", help="run folders go under here")
    p.add_argument("--run", metavar="DIR",
                   help="a trained run folder, for eval: its flags.json gives the model flags, --dataset and lambda "
                        "(instead of naming the folder by --checkpoint_dir and those flags)")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train (or with --cont resume) the model",
                       description="Train (or with --cont resume) the model.")
    t.add_argument("--epochs", type=positive_int, default=100, help="training epochs")
    t.add_argument("--steps_per_epoch", type=positive_int, default=1000, help="optimizer steps per epoch")
    t.add_argument("--lr", type=positive_float, default=5e-4, help="learning rate (Adam)")
    t.add_argument("--batchsize", type=positive_int, default=512,
                   help="samples per optimizer step: the global batch, split over the replicas of --strategy")
    t.add_argument("--max_validation_steps", type=positive_int,
                   help="validation batches per epoch (default: the whole test file; 10 for samplers)")
    # The paper's rdub_mlp.py: step decay, no warm-up ramp, no plateau reductions.
    train_flags.add_schedule_flags(t, lr_schedule="step", warmup=0, patience=0)
    t.add_argument("--cont", action="store_true", help="resume the run's latest checkpoint")

    e = sub.add_parser("eval", help="estimate the bound on held-out data, with standard errors",
                       description="Estimate the bound on held-out data, with standard errors.")
    e.add_argument("--num_samples", type=positive_int, default=100000,
                   help="fresh samples for samplers (files: at most this many of the test twin)")
    e.add_argument("--batchsize", type=positive_int, default=10000, help="samples per evaluation batch")
    args = p.parse_args(argv)
    runs.adopt_run_flags(args, p)
    if args.lmbda is None:
        raise InputError("--lambda is required (or --run with a trained run folder)")
    output_dir(args.checkpoint_dir, "--checkpoint_dir")
    return args


def setup(args):
    """(the source, the run folder) from the flags, with the source's dimensions filled in; raises InputError on a
    bad combination of the source and the layer flags."""
    source = make_source(args.dataset, args.data_dim, args.gparams_path)
    if isinstance(source, ImageFile):
        raise InputError(f"--dataset {args.dataset} holds images {source.shape}; rdub_mlp.py takes vectors [N, dim]")
    args.data_dim = source.dim
    if args.latent_dim is None:
        args.latent_dim = source.dim
    for flag in ("encoder_units", "ar_hidden_units"):
        if any(u < 1 for u in getattr(args, flag)):
            raise InputError(f"--{flag} {getattr(args, flag)}: layer sizes must be >= 1")
    no_decoder = args.decoder_units == [0]
    if no_decoder and args.latent_dim != args.data_dim:
        raise InputError(f"--decoder_units 0 (no decoder) needs --latent_dim = --data_dim, "
                         f"got {args.latent_dim} and {args.data_dim}")
    if not no_decoder and any(u < 1 for u in args.decoder_units):
        raise InputError(f"--decoder_units {args.decoder_units}: sizes must be >= 1, or '0' alone for no decoder")
    name = runs.run_name("rdub_mlp", data_dim=args.data_dim, latent_dim=args.latent_dim, lmbda=args.lmbda,
                         encoder_units=args.encoder_units or "none", decoder_units=args.decoder_units or "none",
                         prior_type=args.prior_type, posterior_type=args.posterior_type,
                         **({"maf_stacks": args.maf_stacks} if args.prior_type == "maf" else {}),
                         **({"iaf_stacks": args.iaf_stacks} if args.posterior_type == "iaf" else {}))
    return source, runs.run_folder(args, name)


def make_model(args):
    """The beta-VAE of the model flags (setup's dimensions filled in); raises InputError on a bad prior."""
    from utils import flows
    from utils.priors import make_prior
    from utils.rdub_mlp import RDVAE
    no_decoder = args.decoder_units == [0]
    prior = make_prior(args.prior_type, args.latent_dim, args.maf_stacks, args.ar_hidden_units, args.ar_activation)
    if args.posterior_type == "uniform" and not prior.factorized:
        raise InputError(f"--posterior_type uniform (NTC) needs a factorized prior, not --prior_type {args.prior_type}")
    iaf_mades = (flows.make_mades(args.iaf_stacks, args.latent_dim, args.ar_hidden_units, args.ar_activation)
                 if args.posterior_type == "iaf" else [])
    rate_scale = (1.0 if args.nats else 1.0 / math.log(2.0)) / (args.data_dim if args.rpd else 1)
    return RDVAE(args.data_dim, args.latent_dim, args.encoder_units, None if no_decoder else args.decoder_units,
                 args.encoder_activation, args.decoder_activation, args.posterior_type, prior, iaf_mades,
                 args.lmbda, rate_scale)


def units_of(args):
    unit = "nats" if args.nats else "bits"
    return f"rate: {unit} per {'data dimension' if args.rpd else 'sample'}; mse: squared error per dimension"


def check_same_model(args, run_dir):
    """--cont must not silently continue a run with different model flags."""
    saved = runs.load_flags(run_dir)
    current = json.loads(json.dumps({k: getattr(args, k) for k in MODEL_FLAGS}, default=str))
    diff = [k for k in MODEL_FLAGS if k in saved and saved[k] != current[k]]
    if diff:
        raise InputError(f"--cont: {run_dir} was trained with other model flags: "
                         + ", ".join(f"--{k} {saved[k]} (now {current[k]})" for k in diff))


# ---- train --------------------------------------------------------------------------------------

def train(args, source, model, run_dir):
    import tensorflow as tf
    from utils import training
    resuming = training.check_run_dir(run_dir, args.cont)
    if resuming:
        check_same_model(args, run_dir)
    train_ds = source.dataset(args.batchsize, seed=args.seed)
    if isinstance(source, SampleFile):  # validate on the test twin
        val_ds = tf.data.Dataset.from_tensor_slices(source.test).batch(args.batchsize)
        max_val = args.max_validation_steps
    else:
        val_ds = source.dataset(args.batchsize, seed=args.seed + 1)
        max_val = args.max_validation_steps or 10
    if args.verbose:
        print(f"run folder: {run_dir}", file=sys.stderr)
    training.fit_from_flags(args, model, run_dir, train_ds, val_ds, max_validation_steps=max_val)


# ---- eval ---------------------------------------------------------------------------------------

def eval_split(source):
    """Which data eval scores: 'test' (a file's split=test twin, or a split=test file itself), 'fresh' (new draws
    from a sampler, apart from the training stream), or 'train' (a file without a test twin: eval falls back to
    the training samples)."""
    return source.test_split if isinstance(source, SampleFile) else "fresh"


def heldout_batches(source, args):
    """Held-out data in batches: the file's test twin, or fresh draws (a stream apart from training's)."""
    if isinstance(source, SampleFile):
        data = source.test_set(args.num_samples, seed=args.seed)
        for i in range(0, len(data), args.batchsize):
            yield data[i:i + args.batchsize]
        return
    for i, start in enumerate(range(0, args.num_samples, args.batchsize)):
        yield source.test_set(min(args.batchsize, args.num_samples - start), seed=args.seed * 1000003 + i)


def evaluate(args, source, run_dir):
    import tensorflow as tf
    from utils import training
    from utils.rdub_mlp import ntc_bitstream

    def build_model(flags):
        with training.strategy_scope(args):
            return make_model(flags)  # RDVAE creates every weight when it is built

    model, ckpt, _ = training.open_run(args, run_dir, build_model, "rdub_mlp",
                                       lambda flags: {k: getattr(flags, k) for k in MODEL_FLAGS})
    # The model (so the rate's units) is built from the run's flags, the record's units and analytic line from the
    # command line's; --nats and --rpd are not in the run folder's name, so they could differ silently (a rate per
    # dimension scored against R(D) per sample, far below it).
    saved = runs.load_flags(run_dir)
    for key in ("nats", "rpd"):
        if key in saved and bool(saved[key]) != bool(getattr(args, key)):
            raise InputError(f"eval: {run_dir} was trained {'with' if saved[key] else 'without'} --{key}; "
                             f"evaluate it in the same units")
    split = eval_split(source)
    if split == "train":
        warnings.warn(f"eval: {source.path} has no split=test twin, so these figures are on the training "
                      f"samples (eval_split=train), not held-out data")
    step = tf.function(model.per_sample)
    kl, mse, xs = [], [], []
    ntc = args.posterior_type == "uniform" and args.prior_type == "deep"
    for x in heldout_batches(source, args):
        k, m = step(tf.constant(x))
        kl.append(k.numpy())
        mse.append(m.numpy())
        if ntc:
            xs.append(x)
    kl, mse = np.concatenate(kl).astype(np.float64), np.concatenate(mse).astype(np.float64)
    if len(kl) < 2:
        raise InputError(f"eval needs at least 2 test samples, got {len(kl)}")
    rate = kl * model.rate_scale
    r, d, l = rd.mean_ci(rate), rd.mean_ci(mse), rd.mean_ci(rate + args.lmbda * mse)
    record = {"method": "ntc" if args.posterior_type == "uniform" else "rdub", "dataset": args.dataset,
              "data_dim": args.data_dim, "latent_dim": args.latent_dim, "rate_unit": "nats" if args.nats else "bits",
              "per_dim": args.rpd, "lambda": args.lmbda, "rate": r["mean"], "rate_stderr": r["stderr"],
              "mse": d["mean"], "mse_stderr": d["stderr"], "loss": l["mean"], "loss_stderr": l["stderr"],
              "units": units_of(args), "num_samples": int(len(kl)), "eval_split": split, "seed": args.seed,
              "checkpoint": Path(ckpt).name}
    if source.gaussian_var is not None:
        a = rd.gaussian_rd_at_lambda(source.gaussian_var, args.lmbda, nats=args.nats, per_dim=args.rpd)
        record.update(analytic_rate=a["R"], analytic_mse=a["D"], analytic_loss=a["lagrangian"],
                      gap=(l["mean"] - a["lagrangian"]) / a["lagrangian"])
    if ntc:
        x = np.concatenate(xs)
        nbytes, est_bits, bs_mse = ntc_bitstream(model, x)
        bits_to_unit = (math.log(2.0) if args.nats else 1.0) / (args.data_dim if args.rpd else 1)
        bs_rate = 8.0 * nbytes / len(x) * bits_to_unit
        record.update(bitstream_rate=bs_rate, bitstream_bytes=nbytes, quantized_rate=est_bits / len(x) * bits_to_unit,
                      bitstream_mse=float(bs_mse.mean()), bitstream_loss=bs_rate + args.lmbda * float(bs_mse.mean()))
    runs.atomic_save_npz(run_dir / "eval.npz", rate=rate, mse=mse)
    jsonl.append(run_dir / RESULTS_NAME, record)
    print(json.dumps(record))
    return record


def main(argv):
    args = parse_args(argv)
    import tensorflow as tf
    from utils import training
    np.random.seed(args.seed)
    tf.random.set_seed(args.seed)
    training.strategy_from_flags(args)  # first: the strategy is set up before any other TensorFlow work
    source, run_dir = setup(args)
    if args.command == "train":
        with training.strategy_scope(args):
            model = make_model(args)
        train(args, source, model, run_dir)
    else:
        evaluate(args, source, run_dir)


if __name__ == "__main__":
    run(main)
