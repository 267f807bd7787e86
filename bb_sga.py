"""Lossy bits-back coding with SGA (Yang, Bamler & Mandt, NeurIPS 2020): the hyper-latent z of the mean-scale
model is coded with bits-back on one ANS stack, so that its cost is the net -log p(z) + log q(z | y_hat).

It needs a model trained with a Gaussian hyper-posterior (`mbt2018.py --hyper_posterior gaussian`). Per image:
    1. y_hat: with --method sga, y and q's parameters are optimized jointly for the image's loss (SGA on y,
       as sga.py; 2000 iterations, lr 0.005); otherwise y_hat = round(g_a(x)).
    2. q(z | y_hat): from the hyper-analysis of y_hat; with sga and no_sga then optimized for the net rate
       alone (2000 Adam steps, lr 0.003, seeded reparameterized draws). This step depends on y_hat only, so
       the decoder repeats it exactly (same shapes, seeds, and TensorFlow's op determinism).
    3. The stack (seeded with random initial bits): pop z from q (z on a grid of width --z_bin_width, whose
       width cancels between q and p), push y_hat under p(y_hat | z), push z under p(z).
The decoder pops z and y_hat, recomputes q, and pushes z back under it: the initial bits come back exactly.

    python mbt2018.py --checkpoint_dir CKPT --num_filters 192 --hyper_posterior gaussian --lambda 0.01 train ...
    python bb_sga.py --num_filters 192 --verbose --checkpoint_dir CKPT compress \\
        mbt2018-num_filters=192-hyper_posterior=gaussian-lmbda=0.01 kodak --results_dir results/bb_sga
    python bb_sga.py --checkpoint_dir CKPT decompress results/bb_sga/kodim01.bbi kodim01.png \\
        --run_name mbt2018-num_filters=192-hyper_posterior=gaussian-lmbda=0.01

Rates per image: `total_bpp` (= `bpp`) counts the whole file, the initial bits included; `net_bpp` subtracts
the initial bits (what a chain of images would pay each); `net_bpp_est` is the model's net rate in
expectation over q (16 draws, continuous densities), which `net_bpp` should match; `initial_bpp` is the
initial bits' cost.

The bits-back coder (z's grid and p(z), q's re-optimization, the stack's pushes and pops) is utils/bb_sga.py, this
script's engine; the SGA of step 1 is sga.py's, utils/sga.py. The script holds the flags, the commands and the
.bbi file's packing.
"""
from utils import startup  # noqa: F401  (first, on purpose: TensorFlow's start-up lines; utils/startup.py)

import struct
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

# TensorFlow (and the modules that import it: image_eval, the engines utils/bb_sga.py and utils/sga.py) is imported in
# the functions that use it, so that --help and a bad flag answer at once.
from utils import cli, container, images
from utils.cli import InputError, positive_float, positive_int, run
from utils.runs import atomic_write_bytes

METHODS = ("sga", "no_sga", "plain")
OTHER_CODEC_HINT = "(bb_sga.py codes mbt2018.py --hyper_posterior gaussian runs)"


def build_parser():
    p = cli.ArgumentParser(prog="bb_sga.py", description=__doc__)
    p.add_argument("-V", "--verbose", action="store_true", help="report progress and per-image figures")
    p.add_argument("--checkpoint_dir", default="checkpoints", help="parent folder of the trained run folders")
    p.add_argument("--num_filters", type=positive_int,
                   help="the model's width (read from the run's flags.json; if given, it must agree)")
    p.add_argument("--lambda", dest="lmbda", type=positive_float,
                   help="weight of the MSE in SGA's loss bpp + lambda * MSE (default: the run's)")
    p.add_argument("--method", choices=METHODS, default="sga",
                   help="sga: SGA on y, then q re-optimized; no_sga: q re-optimized only; plain: neither")
    p.add_argument("--iterations", type=positive_int, default=2000, help="SGA steps (--method sga)")
    p.add_argument("--lr", type=positive_float, default=0.005, help="SGA's learning rate")
    p.add_argument("--rate_iterations", type=positive_int, default=2000,
                   help="Adam steps re-optimizing q(z | y_hat) for the net rate (sga, no_sga; decoded again)")
    p.add_argument("--rate_lr", type=positive_float, default=0.003, help="their learning rate")
    p.add_argument("--z_bin_width", type=positive_float, default=2.0 ** -6,
                   help="width of z's coding grid (a power of 2; it cancels between q and p)")
    p.add_argument("--seed", type=int, default=0, help="seeds SGA, q's draws and the initial bits")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compress", help="optimize, code every image of EVAL_IMGS to <name>.bbi, decode and check "
                                        "each, and evaluate",
                       description="Optimize and code every image of EVAL_IMGS to <image name>.bbi in "
                                   "--results_dir, decode and check each file, and evaluate them.")
    c.add_argument("run_name", metavar="RUN_NAME",
                   help="a --hyper_posterior gaussian run folder of --checkpoint_dir, e.g. mbt2018-num_filters=192-"
                        "hyper_posterior=gaussian-lmbda=0.01, or a run folder's path")
    c.add_argument("eval_imgs", metavar="EVAL_IMGS",
                   help="an image, a glob or folder, a named set (kodak), or an .npy of uint8 images [N, H, W, 3]")
    c.add_argument("--results_dir", default="results", help="where the files <image name>.bbi and the records go")
    c.add_argument("--crop", type=positive_int, help="center-crop every image to CROP x CROP pixels first")
    d = sub.add_parser("decompress", help="decode a .bbi file to a PNG", description="Decode a .bbi file to a PNG.")
    d.add_argument("input", help="the .bbi file")
    d.add_argument("output", help="the PNG file to write")
    d.add_argument("--run_name", required=True, help="the run folder of the model that coded it")
    cli.add_force_flag(d)
    return p


# ---- the file: parameters the decoder repeats, then the stack's words ---------------------------

def pack(identity, image_shape, channels, args, words):
    params = bytes([METHODS.index(args.method), int(-np.log2(args.z_bin_width))]) + container.varint(
        args.rate_iterations) + struct.pack(">f", args.rate_lr) + container.varint(args.seed)
    return container.pack("bb_sga", identity, image_shape, channels, [params, words.astype("<u4").tobytes()])


def unpack(data, identity, what):
    shape, channels, (params, words) = container.unpack(data, "bb_sga", identity, what,
                                                        "--checkpoint_dir and --run_name")
    reader = container.HeaderReader(params, what)
    method, log_width = reader.take(2)
    rate_iterations = reader.varint()
    rate_lr = struct.unpack(">f", reader.take(4))[0]
    seed = reader.varint()
    if method >= len(METHODS) or len(words) % 4:
        raise InputError(f"{what}: corrupt file (bad parameters)")
    return shape, channels, dict(method=METHODS[method], z_bin_width=2.0 ** -log_width,
                                 rate_iterations=rate_iterations if METHODS[method] != "plain" else 0,
                                 rate_lr=rate_lr, seed=seed), np.frombuffer(words, "<u4").astype(np.uint32)


def decode_file(model, identity, data, what):
    """(uint8 image in the source's channels, float reconstruction, y_hat, restored words) of a .bbi file."""
    import tensorflow as tf
    from utils import bb_sga
    (h, w), channels, params, words = unpack(data, identity, what)
    grid = bb_sga.zgrid(model, params["z_bin_width"])
    z_shape, y_shape = bb_sga.latent_shapes(model, h, w)
    posterior = bb_sga.rate_posterior(model, params["rate_iterations"], params["rate_lr"], params["seed"])
    try:
        y_hat, restored = bb_sga.decode(model, grid, words, z_shape, y_shape, posterior)
    except (RuntimeError, ValueError) as e:
        raise InputError(f"{what}: corrupt file (decoding failed: {str(e).splitlines()[0][:120]})")
    x_hat = (model.synthesis(tf.constant(y_hat)) * 255).numpy()[0, :h, :w]
    return images.to_channels(images.to_uint8(x_hat), channels), x_hat, y_hat, restored


# ---- compress: optimize, code, decode, evaluate -------------------------------------------------

def first_stage(model, x, names, args, results, record):
    """y_hat [N, h, w, c] of a batch of same-shape images: SGA's (with q optimized alongside), or rounded."""
    import tensorflow as tf
    from utils import sga
    padded = images.pad_to_multiple(tf.constant(x), model.pad_multiple)
    if args.method != "sga":
        return np.round(model.analysis(padded / 255).numpy())
    opt = sga.LatentOptimizer(model, x, args.lmbda_used, "sga", args.lr, args.seed)
    latents, _ = sga.optimize(opt, names, args.iterations, results / sga.TRAJECTORY_NAME, record, args.verbose)
    return np.round(latents[0])


def compress(args):
    import tensorflow as tf
    from utils import bb_sga, image_eval, sga
    tf.config.experimental.enable_op_determinism()
    items = sga.read_images(args.eval_imgs, args.crop)
    results = sga.check_results_dir(args.results_dir, items, ".bbi", (sga.TRAJECTORY_NAME, image_eval.RESULTS_NAME))
    args.model = "mbt2018"
    model, identity, run_dir, checkpoint, args.lmbda_used = sga.load_run(args, OTHER_CODEC_HINT)
    if model.range_coded:
        raise InputError(f"RUN_NAME {args.run_name}: not a bits-back model; train one with mbt2018.py "
                         f"--hyper_posterior gaussian (sga.py refines this one)")
    grid = bb_sga.zgrid(model, args.z_bin_width)
    rate_iterations = 0 if args.method == "plain" else args.rate_iterations
    # The lr as the file stores it (float32), so that the encoder's q is exactly the decoder's.
    posterior = bb_sga.rate_posterior(model, rate_iterations, float(np.float32(args.rate_lr)), args.seed)
    results.mkdir(parents=True, exist_ok=True)
    fields = sga.dataset_fields(args.eval_imgs, args.crop)
    label = fields["dataset"]
    record = dict(method=f"mbt2018+bb_{args.method}", inference=f"bb_{args.method}", run=run_dir.name,
                  checkpoint=str(checkpoint), **fields,
                  iterations=args.iterations, rate_iterations=rate_iterations, z_bin_width=args.z_bin_width,
                  seed=args.seed, **{"lambda": args.lmbda_used})
    batches = defaultdict(list)
    for k, item in enumerate(items):
        batches[item[1].shape].append(k)
    outputs, files = [None] * len(items), {}
    for b, (shape, members) in enumerate(batches.items()):
        if args.verbose:
            print(f"batch {b + 1}/{len(batches)}: {len(members)} image(s) of {shape[0]}x{shape[1]}", file=sys.stderr)
        x = np.stack([items[k][1] for k in members]).astype(np.float32)
        y_hats = first_stage(model, x, [items[k][0] for k in members], args, results, record)
        for j, k in enumerate(members):
            name, image, channels = items[k]
            path = results / f"{Path(name).stem}.bbi"
            files[path], outputs[k] = code_image(model, identity, grid, posterior, y_hats[j:j + 1], image,
                                                 channels, args, path)
    for path, data in files.items():  # once every image is coded: a failure leaves none of them
        atomic_write_bytes(path, data)
    remaining = iter(outputs)
    npz = results / (f"bb_{args.method}-lmbda={args.lmbda_used!r}-iterations={args.iterations}+{run_dir.name}"
                     f"-dataset={label}.npz")
    return image_eval.evaluate_images(items, lambda image, channels: next(remaining), npz,
                                      results / image_eval.RESULTS_NAME, record, args.verbose)


def code_image(model, identity, grid, posterior, y_hat, image, channels, args, path):
    """Codes one image (q from y_hat alone) for the file `path`, decodes it as `decompress` would and checks both
    the reconstruction and the restored initial bits; returns the file's bytes and its per-image figures."""
    from utils import bb_sga
    h, w = image.shape[:2]
    q = posterior(y_hat)
    words, initial, net_bits = bb_sga.encode(model, grid, y_hat, q, args.seed)
    data = pack(identity, (h, w), channels, args, words)
    x_uint8, x_hat, y_dec, restored = decode_file(model, identity, data, "bb_sga")
    if not (np.array_equal(y_dec, y_hat) and np.array_equal(restored, initial)):
        raise SystemExit(f"error: bb_sga: {path.name} does not decode to what was coded (latents equal: "
                         f"{np.array_equal(y_dec, y_hat)}, initial bits restored: {np.array_equal(restored, initial)})")
    expected = bb_sga.expected_net_bits(model, y_hat, q, args.seed)
    total = container.bpp(len(data), h, w)
    return data, dict(x_hat=x_uint8, bpp=total, total_bpp=total, net_bpp=net_bits / (h * w),
                      net_bpp_est=float(expected) / (h * w), initial_bpp=32.0 * len(initial) / (h * w))


def decompress(args):
    import tensorflow as tf
    from utils import sga
    tf.config.experimental.enable_op_determinism()
    args.model, args.lmbda_used = "mbt2018", None
    model, identity, *_ = sga.load_run(args, OTHER_CODEC_HINT)
    try:
        data = Path(args.input).read_bytes()
    except OSError as e:
        raise InputError(f"input file {args.input}: {e.strerror}")
    image, *_ = decode_file(model, identity, data, f"input file {args.input}")
    images.write_png(args.output, image)
    if args.verbose:
        print(f"{args.input} -> {args.output}: {image.shape[1]}x{image.shape[0]}", file=sys.stderr)


def main(argv):
    args = build_parser().parse_args(argv)
    # The file stores the seed (a non-negative int64), the lr as a float32 and -log2 of the width in one byte.
    if not 0 <= args.seed < 2 ** 63:
        raise InputError(f"--seed {args.seed}: must be >= 0 and below 2^63 (the decoder reads it from the file)")
    if not 0 < np.float32(args.rate_lr) < np.inf:
        raise InputError(f"--rate_lr {args.rate_lr}: must be a positive float32 (the file stores it as one)")
    if not (np.log2(args.z_bin_width).is_integer() and 0 <= -np.log2(args.z_bin_width) <= 255):
        raise InputError(f"--z_bin_width {args.z_bin_width}: must be a power of 2 from 2^-255 to 1 (grid points "
                         f"are then exact floats)")
    if args.command == "decompress":
        cli.input_file(args.input, "input")
        cli.output_file(args.output, "output", force=args.force)
    import tensorflow as tf
    tf.keras.utils.set_random_seed(args.seed)
    return compress(args) if args.command == "compress" else decompress(args)


if __name__ == "__main__":
    run(main)
