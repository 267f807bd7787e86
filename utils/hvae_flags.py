"""The ResNet-VAE's architecture flags (utils/hvae.py builds the model from them), apart from the model so that
resnet_vae.py and rec.py parse their command line, and answer --help, without importing TensorFlow."""
import math

from utils.cli import InputError, float_list, int_list, positive_int

LIKELIHOODS = ("mse", "dlogistic")
SEED_LAMBDA_UNITS = 12 / (255 ** 2 * math.log(2))  # the seed's lambda (nats per sub-pixel + lambda MSE on [-1, 1])
# times this is the package's (bpp + lambda MSE on [0, 255]): 2.662e-4


ARCHS = ("resnet", "convnext")
ARCH_DEFAULTS = {  # per architecture, the flags left unset: the paper's ResNet-VAE; the seed's rd_model_base
    "resnet": dict(num_filters=256, latent_channels=[4, 8, 16, 32, 64, 128]),
    "convnext": dict(widths=[256, 512, 640, 768, 768], enc_blocks=[6, 6, 6, 4, 4], latent_blocks=[5, 4, 3, 2, 1],
                     latent_channels=[32, 32, 32, 32, 32]),
}
RESNET_ONLY = ("ar_prior_levels", "flat_z0", "likelihood")  # with defaults of their own, so checked apart


def add_model_flags(p):
    """The architecture flags (before the subcommand)."""
    p.add_argument("--arch", choices=ARCHS, default="resnet",
                   help="resnet: the paper's ResNet-VAE; convnext: the variable-rate seed's ConvNeXt hierarchy "
                        "(lossy-vae's rd model; needs --lmb_range or --lmb_range_seed)")
    p.add_argument("--num_filters", type=positive_int,
                   help="resnet: channels of every residual block (default: 256)")
    p.add_argument("--latent_channels", type=int_list,
                   help="latent channels per level (resnet; each level halves the resolution; default: "
                        "4,8,16,32,64,128) or per scale (convnext; default: 32,32,32,32,32), bottom-up")
    p.add_argument("--widths", type=int_list,
                   help="convnext: block widths per scale, bottom-up; scale s has stride 4 * 2^s "
                        "(default: 256,512,640,768,768)")
    p.add_argument("--enc_blocks", type=int_list,
                   help="convnext: encoder ConvNeXt blocks per scale (default: 6,6,6,4,4)")
    p.add_argument("--latent_blocks", type=int_list,
                   help="convnext: latent blocks per scale, bottom-up (default: 5,4,3,2,1, 15 latent layers)")
    p.add_argument("--ar_prior_levels", type=int, default=0,
                   help="the number of lowest levels with a channel-wise autoregressive prior (the top level "
                        "never has one)")
    p.add_argument("--ar_slices", type=positive_int, default=8,
                   help="channel slices of the autoregressive priors (levels with fewer channels: one per slice)")
    p.add_argument("--flat_z0", action="store_true",
                   help="a MAF prior on the flattened top latent ((img_dim / 2^levels)^2 * latent_channels[-1] "
                        "values) instead of the deep factorized one")
    p.add_argument("--img_dim", type=positive_int, help="image side, required by --flat_z0 (square images)")
    p.add_argument("--maf_units", type=int_list, default=[32, 32], help="hidden units of each MADE of the MAF prior")
    p.add_argument("--maf_stacks", type=positive_int, default=3, help="MADE layers of the MAF prior")
    p.add_argument("--likelihood", choices=LIKELIHOODS, default="mse",
                   help="mse: the paper's lossy model (bpp + lambda * MSE); dlogistic: a discretized logistic "
                        "p(x | z) for lossless coding, trained on the negative ELBO (lambda unused)")
    p.add_argument("--image_channels", type=int, choices=(1, 3), default=3,
                   help="channels of the images the model takes (1: grey levels, e.g. --dataset mnist)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--lmb_range", type=float_list, metavar="LO,HI",
                   help="a variable-rate model: lambda-conditioned blocks, lambda log-uniform in [LO, HI] per "
                        "training image (this package's units, bpp + lambda MSE on [0, 255]); --lambda unused")
    g.add_argument("--lmb_range_seed", type=float_list, metavar="LO,HI",
                   help="--lmb_range in the seed's units (KL nats per sub-pixel + lambda MSE on [-1, 1]): "
                        f"multiplied by {SEED_LAMBDA_UNITS:.4e}, e.g. the seed's 4,2048 -> 0.001065,0.5452")


def check_model_flags(args):
    """Refuses inconsistent architecture flags (InputError); converts --lmb_range_seed to --lmb_range and fills
    in the architecture's defaults."""
    if args.lmb_range_seed is not None:
        args.lmb_range = [v * SEED_LAMBDA_UNITS for v in args.lmb_range_seed]
    if args.lmb_range is not None:
        flag = "--lmb_range_seed" if args.lmb_range_seed is not None else "--lmb_range"
        lo_hi = args.lmb_range_seed or args.lmb_range
        if len(lo_hi) != 2 or not 0 < lo_hi[0] < lo_hi[1] or not all(map(math.isfinite, lo_hi)):
            raise InputError(f"{flag} {','.join(map(str, lo_hi))}: give two numbers 0 < LO < HI")
        if args.likelihood != "mse":
            raise InputError(f"{flag}: a variable-rate model trades rate for MSE (--likelihood mse)")
    other = "convnext" if args.arch == "resnet" else "resnet"
    for name in ARCH_DEFAULTS[other]:
        if name not in ARCH_DEFAULTS[args.arch] and getattr(args, name) is not None:
            raise InputError(f"--{name} belongs to --arch {other}, not {args.arch}")
    for name, value in ARCH_DEFAULTS[args.arch].items():
        if getattr(args, name) is None:
            setattr(args, name, list(value) if isinstance(value, list) else value)
    if args.arch == "convnext":
        check_convnext_flags(args)
        return
    levels = len(args.latent_channels)
    if levels < 1 or min(args.latent_channels) < 1:
        raise InputError(f"--latent_channels {args.latent_channels}: give at least one positive channel count")
    if not 0 <= args.ar_prior_levels < levels:
        raise InputError(f"--ar_prior_levels {args.ar_prior_levels}: must lie in 0..{levels - 1} (the levels below "
                         "the top, whose prior is the deep factorized density or, with --flat_z0, a MAF)")
    for c in args.latent_channels[:args.ar_prior_levels]:
        if c % min(c, args.ar_slices):
            raise InputError(f"--ar_slices {args.ar_slices} does not divide the {c} channels of an autoregressive "
                             "level into equal slices")
    if args.flat_z0:
        if args.img_dim is None:
            raise InputError("--flat_z0 needs --img_dim, the side of the (square) images")
        if args.img_dim % 2 ** levels:
            raise InputError(f"--img_dim {args.img_dim} must be a multiple of 2^levels = {2 ** levels}")
    if not args.maf_units or min(args.maf_units) < 1:
        raise InputError(f"--maf_units {args.maf_units}: give positive hidden sizes")


def check_convnext_flags(args):
    if args.lmb_range is None:
        raise InputError("--arch convnext is variable-rate: give --lmb_range or --lmb_range_seed")
    given = [f"--{n}" for n in RESNET_ONLY if getattr(args, n) not in (None, 0, False, "mse")]
    if given:
        raise InputError(f"{', '.join(given)}: not a flag of --arch convnext (the ResNet-VAE's)")
    scales = len(args.widths)
    if scales < 1 or min(args.widths) < 1:
        raise InputError(f"--widths {args.widths}: give at least one positive width")
    for name in ("enc_blocks", "latent_blocks", "latent_channels"):
        values = getattr(args, name)
        if len(values) != scales or min(values) < (1 if name == "latent_channels" else 0):
            raise InputError(f"--{name} {','.join(map(str, values))}: give one count per scale of --widths "
                             f"({scales}), {'positive' if name == 'latent_channels' else 'non-negative'}")
    if sum(args.latent_blocks) < 1:
        raise InputError(f"--latent_blocks {args.latent_blocks}: the model needs at least one latent block")


def pad_multiple(args):
    """The total downsampling of the model of these (checked) flags: image sides are padded to multiples of it."""
    if args.arch == "convnext":
        return 4 * 2 ** (len(args.widths) - 1)
    return 2 ** len(args.latent_channels)


def model_flags(args):
    """The flags that define the model: they build it and name its run folder."""
    if args.arch == "convnext":
        flags = dict(arch="convnext", widths=args.widths, enc_blocks=args.enc_blocks,
                     latent_blocks=args.latent_blocks, latent_channels=args.latent_channels)
        if args.image_channels != 3:
            flags.update(image_channels=args.image_channels)
        return dict(flags, lmb_range=[float(f"{v:.6g}") for v in args.lmb_range])
    flags = dict(num_filters=args.num_filters, latent_channels=args.latent_channels)
    if args.ar_prior_levels:
        flags.update(ar_prior_levels=args.ar_prior_levels, ar_slices=args.ar_slices)
    if args.flat_z0:
        flags.update(flat_z0=True, img_dim=args.img_dim, maf_units=args.maf_units, maf_stacks=args.maf_stacks)
    if args.likelihood != "mse":
        flags.update(likelihood=args.likelihood)
    if args.image_channels != 3:
        flags.update(image_channels=args.image_channels)
    if args.lmb_range is not None:
        flags.update(lmb_range=[float(f"{v:.6g}") for v in args.lmb_range])
    return flags


def run_flags(args):
    """The model flags and, for a fixed-rate lossy model, lambda: what names a run folder (a lossless or
    variable-rate model has no lambda of its own)."""
    flags = model_flags(args)
    fixed = args.likelihood == "mse" and args.lmb_range is None
    return dict(flags, lmbda=args.lmbda) if fixed else flags
