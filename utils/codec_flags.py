"""The image codecs' command line: the flags every image model shares, mbt2018's and ms2020's architecture flags,
and the parser of mbt2018.py and ms2020.py. Apart from utils/codec_commands.py (the commands, which import
TensorFlow) so that a script parses its command line, and answers --help, without importing TensorFlow."""
from pathlib import Path

from utils import cli, gan_sources, images, mnist, runs, train_flags
from utils.cli import InputError, int_in, positive_float, positive_int
from utils.sources import resolve_path


# The side of a training crop must be a multiple of this: the transforms downsample by 2^4 and the hyper
# transforms by 2^2 more, and training does not pad (the hyper-synthesis must give back y's shape exactly).
TRAIN_MULTIPLE = 64


def add_run_flags(p):
    """The flags before the subcommand that every image model shares: run folder, lambda, seed, verbosity."""
    p.add_argument("-V", "--verbose", action="store_true", help="report progress")
    p.add_argument("--checkpoint_dir", default="checkpoints",
                   help="parent folder of the run folders (named from the model flags)")
    p.add_argument("--lambda", dest="lmbda", type=positive_float, default=0.01,
                   help="weight of the MSE ([0, 255] scale) in the loss bpp + lambda * MSE")
    p.add_argument("--seed", type=int, default=0, help="seeds numpy and TensorFlow")
    p.add_argument("--run", metavar="DIR",
                   help="a trained run folder, for every command but train: its flags.json gives the model flags "
                        "and lambda (instead of naming the folder by --checkpoint_dir and those flags)")


DATASETS_HELP = (f"{', '.join(images.NAMED)} (named sets under $RDS_DATA_DIR; bsds500 validates on its val "
                 f"split), a glob or folder of images, an .npy of uint8 images [N, H, W, 3], or a GAN source "
                 f"({', '.join(gan_sources.NAMES)}) with --data_dim")
DATA_DIM_HELP = "latent dimension d of a GAN source (its images lie on a d-dimensional manifold)"


def add_image_train_flags(t):
    """The `train` flags every image model shares (the paper's defaults for 256-pixel crops)."""
    t.add_argument("--data_dim", type=positive_int, help=DATA_DIM_HELP)
    t.add_argument("--patchsize", type=positive_int, default=256,
                   help="side of the random square crops (GAN images are used whole)")
    t.add_argument("--batchsize", type=positive_int, default=8, help="images per training step")
    t.add_argument("--epochs", type=positive_int, default=600, help="training epochs")
    t.add_argument("--steps_per_epoch", type=positive_int, default=1000, help="training steps per epoch")
    t.add_argument("--lr", type=positive_float, default=1e-4, help="learning rate (Adam)")
    # The paper's image training: a constant rate, halved on plateaus of val_loss after 100 epochs.
    train_flags.add_schedule_flags(t, lr_schedule="constant", warmup=100, patience=10)
    t.add_argument("--max_validation_steps", type=positive_int, default=16,
                   help="validation batches per epoch (at most)")
    t.add_argument("--cont", action="store_true", help="resume the run's latest checkpoint")


def add_image_eval_flags(e):
    """The `eval` flags every image model shares."""
    e.add_argument("--dataset", default="kodak", help=DATASETS_HELP)
    e.add_argument("--data_dim", type=positive_int, help=DATA_DIM_HELP)
    e.add_argument("--batchsize", type=positive_int, default=100,
                   help="number of GAN samples (or MNIST test images) to evaluate")
    e.add_argument("--no_cast_xhat", action="store_true",
                   help="measure distortion on the float reconstruction (clipped to [0, 255]) instead of the "
                        "rounded uint8 image, as the paper does for the continuous GAN sources")
    e.add_argument("--results_dir",
                   help="folder for the .npz of per-image figures, in a subfolder named after --checkpoint_dir "
                        "(default: the run folder)")
    e.add_argument("--no_sub_dir", action="store_true", help="write into --results_dir itself, not a subfolder")


def add_mbt2018_flags(parser):
    parser.add_argument("--num_filters", type=positive_int, default=192,
                        help="channels of the transforms and of the hyper-latents")
    parser.add_argument("--latent_depth", type=positive_int,
                        help="channels of the latents (default: --num_filters; the paper uses 320 at high rates)")
    parser.add_argument("--hyper_posterior", choices=("deterministic", "gaussian"),
                        help="deterministic (the default): z = h_a(y), range coded; gaussian: q(z | y_hat) for "
                             "lossy bits-back coding with bb_sga.py (named in the run folder only when given)")


def add_ms2020_flags(parser):
    parser.add_argument("--num_filters", type=positive_int, default=192, help="channels of the transforms")
    parser.add_argument("--latent_depth", type=positive_int, default=320, help="channels of the latents y")
    parser.add_argument("--hyperprior_depth", type=positive_int, default=192, help="channels of the hyper-latents z")
    # A file holds one string per slice, one for z and the check, at most 255 (utils/container.py).
    parser.add_argument("--num_slices", type=int_in(1, 253), default=10, help="slices of y coded in sequence")
    parser.add_argument("--max_support_slices", type=int, default=5,
                        help="decoded slices each slice is conditioned on (-1: all before it)")


# Per codec: what adds its architecture flags, and their names, which with --lambda name the run folder (and are
# the model constructor's arguments; utils/image_models.py).
ARCHITECTURES = {
    "mbt2018": (add_mbt2018_flags, ("num_filters", "latent_depth", "hyper_posterior")),
    "ms2020": (add_ms2020_flags, ("num_filters", "latent_depth", "hyperprior_depth", "num_slices",
                                  "max_support_slices")),
}

# sga.py's relaxations of the quantizer (utils/rounding.py) and the paper's learning rate of each.
SGA_METHODS = ("sga", "map", "ste", "unoise", "danneal")
SGA_DEFAULT_LR = dict(sga=0.005, map=0.005, ste=1e-4, unoise=0.005, danneal=0.005)


def build_parser(script, description):
    """The command line of the codec `script` (a key of ARCHITECTURES); `description`: its --help text."""
    p = cli.ArgumentParser(prog=f"{script}.py", description=description)
    add_run_flags(p)
    ARCHITECTURES[script][0](p)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train on random crops of an image set, or on GAN samples",
                       description="Train on random crops of an image set, or on GAN samples.")
    t.add_argument("--train_glob",
                   help="glob or folder of training images, or an .npy of uint8 images (give this or --dataset)")
    t.add_argument("--dataset", help=DATASETS_HELP)
    add_image_train_flags(t)

    e = sub.add_parser("eval", help="per-image bpp from real bytes, estimated bpp, MSE, PSNR, MS-SSIM",
                       description="Per image: bpp from real bytes, estimated bpp, MSE, PSNR and MS-SSIM.")
    add_image_eval_flags(e)

    c = sub.add_parser("compress", help="compress an image file (PNG, JPEG, ...) to a .tfci file",
                       description="Compress an image file (PNG, JPEG, ...) to a .tfci file.")
    c.add_argument("input", help="the image file")
    c.add_argument("output", help="the .tfci file to write")
    cli.add_force_flag(c)
    d = sub.add_parser("decompress", help="decompress a .tfci file to a PNG",
                       description="Decompress a .tfci file to a PNG.")
    d.add_argument("input", help="the .tfci file")
    d.add_argument("output", help="the PNG file to write")
    cli.add_force_flag(d)
    for command in (c, d):
        command.add_argument("--export", metavar="DIR",
                             help="code with the SavedModel `export` wrote from the run, in place of the run: the "
                                  "same file, without building the model and tracing it (docs/deploy.md)")
    x = sub.add_parser("export", help="write the trained run as a SavedModel that runs with TensorFlow and "
                                      "tensorflow-compression alone (docs/deploy.md)",
                       description="Write the trained run as a SavedModel with compress and decompress functions "
                                   "(tensorflow-compression's convention) that runs with TensorFlow and "
                                   "tensorflow-compression alone (docs/deploy.md).")
    x.add_argument("output", help="the SavedModel folder to write")
    x.add_argument("--force", action="store_true", help="replace an existing SavedModel folder")
    return p


def parse_args(script, description, argv):
    """The codec `script`'s command line, parsed and checked: paths and the training crop are refused here,
    before TensorFlow loads."""
    parser = build_parser(script, description)
    args = parser.parse_args(argv)
    if getattr(args, "export", None) and args.run:
        raise InputError("--export and --run: give one (an export holds its run's weights)")
    runs.adopt_run_flags(args, parser)
    check_files(args)
    if args.command == "train":
        check_patchsize(args, args.train_glob or args.dataset, TRAIN_MULTIPLE)
    return args


def check_files(args):
    """Refuses, before any model is built, the paths every image script's commands cannot read or write
    (InputError): the run folders' parent, eval's results folder, compress/decompress's files."""
    if args.command in ("train", "eval"):
        cli.output_dir(args.checkpoint_dir, "--checkpoint_dir")
    if args.command == "eval" and args.results_dir:
        cli.output_dir(args.results_dir, "--results_dir")
    if args.command in ("compress", "decompress"):
        cli.input_file(resolve_path(args.input, "input") if args.command == "compress" else args.input, "input")
        cli.output_file(args.output, "output", force=args.force)
        if getattr(args, "export", None):  # the codecs' (rec.py shares this check)
            if not Path(args.export, "assets.extra", "codec.json").is_file():
                raise InputError(f"--export {args.export}: not an export of this package (no assets.extra/codec.json;"
                                 f" the `export` command writes one)")
    if args.command == "export":
        check_export_dir(args.output, args.force)


def check_export_dir(path, force):
    """Refuses an export folder that cannot be written, or one that exists (without --force; and even with it,
    one that holds anything but a SavedModel, which --force would delete)."""
    out = cli.output_dir(path, "output")
    if out.exists():
        if not force:
            raise InputError(f"output {out}: exists; pass --force to replace it")
        if any(out.iterdir()) and not (out / "saved_model.pb").is_file():
            raise InputError(f"output {out}: a folder that is not a SavedModel; --force replaces only a SavedModel "
                             f"(or an empty folder)")


def trains_on_crops(dataset):
    """Whether training on `dataset` takes --patchsize crops: GAN images are used whole, and MNIST's 28x28 images
    are padded inside the model (resnet_vae.py)."""
    return not (gan_sources.is_gan_source(dataset) or dataset in mnist.NAMED)


def check_patchsize(args, dataset, multiple):
    """Refuses a training crop the model cannot take when the flags are parsed, not in its first step."""
    if trains_on_crops(dataset) and args.patchsize % multiple:
        raise InputError(f"--patchsize {args.patchsize}: must be a multiple of {multiple} (the model's "
                         f"downsampling)")
