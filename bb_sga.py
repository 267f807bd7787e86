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
"""
import functools
import struct
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

# TensorFlow (and the modules that import it: codec, inference) is imported in the functions that use it, so that
# --help and a bad flag answer at once.
from utils import ans, cli, container, images
from utils.cli import InputError, positive_float, positive_int, run
from utils.runs import atomic_write_bytes

METHODS = ("sga", "no_sga", "plain")
Y_RANGE = 1023  # y_hat is coded on [-Y_RANGE, Y_RANGE]; each of its 2047 integers keeps >= 2^-24 of the mass
TAIL_MASS = 1e-6  # the z grid spans the prior's central 1 - TAIL_MASS, padded by one unit
MC_DRAWS = 16  # draws of z for the expected net rate
OTHER_CODEC_HINT = "(bb_sga.py codes mbt2018.py --hyper_posterior gaussian runs)"
MAX_SIGMAS, MAX_ATTEMPTS = 8.0, 32  # a popped z beyond 8 standard deviations of q: other initial bits (encode)


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
                   help="a --hyper_posterior gaussian run folder, e.g. mbt2018-num_filters=192-hyper_posterior="
                        "gaussian-lmbda=0.01")
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


# ---- the coding grid of z, and p(z) on it -------------------------------------------------------

class ZGrid:
    """z's coding grid: n buckets of width `width` from `lo`; p(z) as one count table per channel."""

    def __init__(self, model, width):
        import tensorflow as tf
        import tensorflow_compression as tfc
        prior = model.hyperprior
        self.lo = float(np.floor(tfc.lower_tail(prior, TAIL_MASS).numpy().min())) - 1.0
        hi = float(np.ceil(tfc.upper_tail(prior, TAIL_MASS).numpy().max())) + 1.0
        self.width, self.n = width, int(round((hi - self.lo) / width))
        centres = self.values(np.arange(self.n))
        density = prior.prob(tf.constant(np.repeat(centres[:, None], prior.batch_shape[0], 1), tf.float32))
        # A bucket's mass is the density at its centre times the width (normalized): exact enough at widths
        # far below the prior's scale, and free of the cancellation of cdf differences.
        self.tables = [ans.categorical_table(w, ans.MAX_PRECISION) for w in np.asarray(density, np.float64).T]

    def values(self, symbols):
        return self.lo + (np.asarray(symbols, np.float64) + 0.5) * self.width

    def q_params(self, z_mean, z_logvar):
        """q's Gaussians in grid units: bucket k is [k - 1/2, k + 1/2) there."""
        mean = (np.asarray(z_mean, np.float64) - self.lo) / self.width - 0.5
        std = np.exp(0.5 * np.asarray(z_logvar, np.float64)) / self.width
        return mean.ravel(), std.ravel()


# ---- q(z | y_hat) for coding: what the decoder can repeat --------------------------------------

class RatePosterior:
    """q(z | y_hat) from the hyper-analysis, then (iterations > 0) Adam on its mean and log-variance for the
    expected net rate, with draws seeded by (seed, step). Adam is written out so that the whole loop is one
    traced graph, run identically by encoder and decoder on a batch of one image."""

    def __init__(self, model, iterations, lr, seed):
        import tensorflow as tf
        self.model, self.iterations, self.lr, self.seed = model, iterations, lr, seed
        # Traced here, not by a decorator: TensorFlow is not imported when the class is defined.
        self._optimize = tf.function(self._optimize_steps, reduce_retracing=True)

    def __call__(self, y_hat):
        import tensorflow as tf
        z_mean, z_logvar = self._optimize(tf.constant(y_hat, tf.float32))
        return z_mean.numpy(), z_logvar.numpy()

    def _optimize_steps(self, y_hat):
        import tensorflow as tf
        z_mean, z_logvar = self.model.posterior(y_hat)
        if self.iterations == 0:
            return z_mean, z_logvar
        params = [z_mean, z_logvar]
        m = [tf.zeros_like(p) for p in params]
        v = [tf.zeros_like(p) for p in params]
        b1, b2, eps = 0.9, 0.999, 1e-7
        for t in tf.range(self.iterations):
            noise = tf.random.stateless_normal(tf.shape(z_mean), seed=tf.stack([self.seed, t]))
            with tf.GradientTape() as tape:
                tape.watch(params)
                z = self.model.sample_z(params[0], params[1], noise)
                loss = tf.reduce_sum(self.model.net_bits(y_hat, z, params[0], params[1]))
            grads = tape.gradient(loss, params)
            step = tf.cast(t + 1, tf.float32)
            rate = self.lr * tf.sqrt(1 - b2 ** step) / (1 - b1 ** step)
            m = [b1 * mi + (1 - b1) * g for mi, g in zip(m, grads)]
            v = [b2 * vi + (1 - b2) * g * g for vi, g in zip(v, grads)]
            params = [p - rate * mi / (tf.sqrt(vi) + eps) for p, mi, vi in zip(params, m, v)]
        return params[0], params[1]


# ---- the bits-back coder ------------------------------------------------------------------------

def conditional(model, z):
    import tensorflow as tf
    mean, scale = model.conditional(tf.constant(z, tf.float32))
    return mean.numpy().ravel(), scale.numpy().ravel()


def encode(model, grid, y_hat, q, seed):
    """(stack words, initial words, net bits) coding y_hat [1, h, w, c] (integers) with bits-back on z: the net
    bits are those the stack grew by (pushes minus the pop)."""
    if np.abs(y_hat).max() > Y_RANGE:
        raise InputError(f"a latent of {np.abs(y_hat).max():.0f} is outside the coder's range +-{Y_RANGE}")
    q_mean, q_std = grid.q_params(*q)
    # Initial bits for the pop of z: its expected information under q plus a margin of 8 standard deviations
    # (about 1 bit each), so that `require` never trips in practice.
    need = np.sum(np.maximum(np.log2(q_std * np.sqrt(2 * np.pi * np.e)), 0.0)) + 8 * np.sqrt(q_std.size) + 128
    for attempt in range(MAX_ATTEMPTS):
        stack = ans.Stack.seeded(int(need) + 64, [seed, attempt])  # `require` keeps 64 bits of slack
        initial, initial_bits = stack.words(), stack.bits
        stack.require(int(need))
        z_symbols = stack.pop_gaussian(q_mean, q_std, 0, grid.n - 1)
        # The coder's Gaussians are leaky (every bucket of the grid keeps >= 2^-24): over ~1000 draws, one may
        # land far in a tail, and such a z costs p(y_hat | z) dearly. Other random initial words then (the
        # decoder restores whichever were used; it needs no seed).
        if np.max(np.abs(z_symbols - q_mean) / q_std) <= MAX_SIGMAS:
            break
    z_symbols = z_symbols.reshape(q[0].shape)
    mean, scale = conditional(model, grid.values(z_symbols))
    stack.push_gaussian(y_hat.ravel(), mean, scale, -Y_RANGE, Y_RANGE)
    for c, table in enumerate(grid.tables):
        stack.push_iid(z_symbols[..., c], table)
    return stack.words(), initial, stack.bits - initial_bits


def decode(model, grid, words, z_shape, y_shape, rate_posterior):
    """(y_hat, the initial words restored) from the stack words of one image."""
    stack = ans.Stack(words)
    z_symbols = np.zeros(z_shape, np.int64)
    for c in reversed(range(len(grid.tables))):  # last pushed, first popped
        z_symbols[..., c] = stack.pop_iid(int(np.prod(z_shape[:-1])), grid.tables[c]).reshape(z_shape[:-1])
    mean, scale = conditional(model, grid.values(z_symbols))
    y_hat = stack.pop_gaussian(mean, scale, -Y_RANGE, Y_RANGE).reshape(y_shape).astype(np.float32)
    q_mean, q_std = grid.q_params(*rate_posterior(y_hat))
    stack.push_gaussian(z_symbols.ravel(), q_mean, q_std, 0, grid.n - 1)
    return y_hat, stack.words()


# ---- the file: parameters the decoder repeats, then the stack's words ---------------------------

def pack(identity, image_shape, channels, args, words):
    params = bytes([METHODS.index(args.method), int(-np.log2(args.z_bin_width))]) + container.varint(
        args.rate_iterations) + struct.pack(">f", args.rate_lr) + container.varint(args.seed)
    return container.pack("bb_sga", identity, image_shape, channels, [params, words.astype("<u4").tobytes()])


def unpack(data, identity, what):
    shape, channels, (params, words) = container.unpack(data, "bb_sga", identity, what, "--checkpoint_dir and --run_name")
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


def latent_shapes(model, h, w):
    m = model.pad_multiple
    hp, wp = -(-h // m) * m, -(-w // m) * m
    return (1, hp // m, wp // m, model.hyperprior.batch_shape[0]), (1, hp // 16, wp // 16, model.latent_depth)


@functools.lru_cache(maxsize=8)
def zgrid(model, width):
    return ZGrid(model, width)


@functools.lru_cache(maxsize=8)
def rate_posterior(model, iterations, lr, seed):
    """One RatePosterior per setting (its traced graph is reused by every image of that setting)."""
    return RatePosterior(model, iterations, lr, seed)


def decode_file(model, identity, data, what):
    """(uint8 image in the source's channels, float reconstruction, y_hat, restored words) of a .bbi file."""
    import tensorflow as tf
    (h, w), channels, params, words = unpack(data, identity, what)
    grid = zgrid(model, params["z_bin_width"])
    z_shape, y_shape = latent_shapes(model, h, w)
    posterior = rate_posterior(model, params["rate_iterations"], params["rate_lr"], params["seed"])
    try:
        y_hat, restored = decode(model, grid, words, z_shape, y_shape, posterior)
    except (RuntimeError, ValueError) as e:
        raise InputError(f"{what}: corrupt file (decoding failed: {str(e).splitlines()[0][:120]})")
    x_hat = (model.synthesis(tf.constant(y_hat)) * 255).numpy()[0, :h, :w]
    return images.to_channels(images.to_uint8(x_hat), channels), x_hat, y_hat, restored


# ---- compress: optimize, code, decode, evaluate -------------------------------------------------

def first_stage(model, x, names, args, results, record):
    """y_hat [N, h, w, c] of a batch of same-shape images: SGA's (with q optimized alongside), or rounded."""
    import tensorflow as tf
    from utils import inference
    padded = images.pad_to_multiple(tf.constant(x), model.pad_multiple)
    if args.method != "sga":
        return np.round(model.analysis(padded / 255).numpy())
    opt = inference.LatentOptimizer(model, x, args.lmbda_used, "sga", args.lr, args.seed)
    latents, _ = inference.optimize(opt, names, args.iterations, results / inference.TRAJECTORY_NAME, record,
                                    args.verbose)
    return np.round(latents[0])


def compress(args):
    import tensorflow as tf
    from utils import image_eval, inference
    tf.config.experimental.enable_op_determinism()
    items = inference.read_images(args.eval_imgs, args.crop)
    results = inference.check_results_dir(args.results_dir, items, ".bbi",
                                          (inference.TRAJECTORY_NAME, image_eval.RESULTS_NAME))
    args.model = "mbt2018"
    model, identity, run_dir, checkpoint, args.lmbda_used = inference.load_run(args, OTHER_CODEC_HINT)
    if model.range_coded:
        raise InputError(f"RUN_NAME {args.run_name}: not a bits-back model; train one with mbt2018.py "
                         f"--hyper_posterior gaussian (sga.py refines this one)")
    grid = zgrid(model, args.z_bin_width)
    rate_iterations = 0 if args.method == "plain" else args.rate_iterations
    # The lr as the file stores it (float32), so that the encoder's q is exactly the decoder's.
    posterior = rate_posterior(model, rate_iterations, float(np.float32(args.rate_lr)), args.seed)
    results.mkdir(parents=True, exist_ok=True)
    fields = inference.dataset_fields(args.eval_imgs, args.crop)
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
    return image_eval.evaluate_images(items, lambda image, channels: next(remaining), npz, results / image_eval.RESULTS_NAME,
                                 record, args.verbose)


def code_image(model, identity, grid, posterior, y_hat, image, channels, args, path):
    """Codes one image (q from y_hat alone) for the file `path`, decodes it as `decompress` would and checks both
    the reconstruction and the restored initial bits; returns the file's bytes and its per-image figures."""
    import tensorflow as tf
    h, w = image.shape[:2]
    q = posterior(y_hat)
    words, initial, net_bits = encode(model, grid, y_hat, q, args.seed)
    data = pack(identity, (h, w), channels, args, words)
    x_uint8, x_hat, y_dec, restored = decode_file(model, identity, data, "bb_sga")
    if not (np.array_equal(y_dec, y_hat) and np.array_equal(restored, initial)):
        raise SystemExit(f"error: bb_sga: {path.name} does not decode to what was coded (latents equal: "
                         f"{np.array_equal(y_dec, y_hat)}, initial bits restored: {np.array_equal(restored, initial)})")
    z_mean = tf.constant(np.repeat(q[0], MC_DRAWS, 0))
    z_logvar = tf.constant(np.repeat(q[1], MC_DRAWS, 0))
    y_rep = tf.constant(np.repeat(y_hat, MC_DRAWS, 0))
    noise = tf.random.stateless_normal(tf.shape(z_mean), seed=[args.seed, -1])
    expected = model.net_bits(y_rep, model.sample_z(z_mean, z_logvar, noise), z_mean, z_logvar).numpy().mean()
    total = container.bpp(len(data), h, w)
    return data, dict(x_hat=x_uint8, bpp=total, total_bpp=total, net_bpp=net_bits / (h * w),
                      net_bpp_est=float(expected) / (h * w), initial_bpp=32.0 * len(initial) / (h * w))


def decompress(args):
    import tensorflow as tf
    from utils import inference
    tf.config.experimental.enable_op_determinism()
    args.model, args.lmbda_used = "mbt2018", None
    model, identity, *_ = inference.load_run(args, OTHER_CODEC_HINT)
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
