#!/usr/bin/env python
"""Relative entropy coding of resnet_vae.py checkpoints: image files at close to the model's KL rate.

resnet_vae.py reports an information rate (a KL); this script writes it as bytes with utils/rec.py (iREC, no
quantization: encoder and decoder share seeded random candidates, the file says which ones were picked). The
latents are coded top-down, each level's posterior conditioned on the latents already coded, as the model samples
them; the decoder recomputes every level's prior from the latents it has decoded, with the same operations on the
same shapes, so it rebuilds bitwise the encoder's latents and reconstruction (checked by `eval` on every image).

The pass is the model's own (utils/hvae.py): the encoder runs ResNetVAE.bottom_up, and encoder and decoder run
ResNetVAE.top_down, the pass that training runs, with a callback (Codec.coding_pass) that codes each level's
latent (encoder) or reads it from the stream (decoder) where training samples the posterior. This script holds
what is the coder's: which units are coded against which priors, the top level's map to N(0, 1), the residual's
tables, the file and the commands.

- Levels with a Gaussian prior: one REC layer each, against the prior computed from the decoded levels above.
- Levels with the channel-wise autoregressive prior (--ar_prior_levels): slice by slice, each slice one REC layer
  against its Gaussian conditional given the decoded earlier slices (the model's LatentLevel.slice_conditionals).
- The top level's prior, tfc's deep factorized density, is not Gaussian, and utils/rec.py codes against diagonal
  Gaussians: a fixed per-channel quantile map h (TopMap, from the weights, the same on both sides) makes the
  prior N(0, 1); the posterior pushed through h is coded as a Gaussian against N(0, 1) and decoded back by h^-1.
  The file pays the KL of that Gaussian (`coding_kl_bpp`): within the grid, at most the model's KL (`kl_bpp`).
  The MAF top prior (--flat_z0) is refused.

File: utils/container.py's container (kind resnet_vae, the model's identity: architecture flags and weights) holding
one utils/rec.py stream (which stores --seed, checked on decoding).

    python rec.py --latent_channels 8,16,32 --num_filters 32 --lambda 0.01 --checkpoint_dir ckpt \\
        compress kodim01.png kodim01.rec
    python rec.py ... decompress kodim01.rec kodim01.png
    python rec.py ... eval --dataset kodak

See docs/rec.md.
"""
from utils import startup  # noqa: F401  (first, on purpose: TensorFlow's start-up lines; utils/startup.py)

import itertools
import math
import sys
import time
from pathlib import Path

import numpy as np
import scipy.special

# TensorFlow (and the modules that import it: hvae, image_eval, rec, training) is imported in the functions that use it,
# so that --help and a bad flag answer at once.
from utils import ans, codec_flags, container, hvae_flags, image_data, images, runs
from utils.cli import ArgumentParser, InputError, add_force_flag, positive_float, positive_int, run
from utils.runs import atomic_write_bytes, run_name
from utils.sources import resolve_path

SCRIPT = "rec"
MODEL_SCRIPT = "resnet_vae"  # whose checkpoints (run folders) and file kind these are
RATE_TYPE = "file size (every byte), relative entropy coding of resnet_vae latents"
LOSSLESS_RATE_TYPE = "file size (every byte) in bits per dimension: REC of the latents + ANS of the image given them"
RESIDUAL_PRECISION = 16  # bits of the grey-level count tables: a level costs at most 16 bits
TOP_GRID = 1 << 16  # bins of the grid of the top prior's quantile map: h's kinks cost ~ |u| du per bin
TOP_TAIL_MASS = 1e-6  # the grid spans the deep factorized density but for this mass; the map is linear beyond
TOP_MIN_MASS = 1e-12  # a bin's least share of the mass (a density may underflow between modes): keeps h increasing
TOP_RANGE, TOP_BISECTIONS = 1e4, 48  # the tails are searched in [-range, range] to ~1e-10
TOP_NODES = 32  # Gauss-Hermite nodes of the top posterior's moments under the map


# ---- the top level's map to N(0, 1), the residual's tables -----------------------------------------

def _piecewise_linear(x, knots, values):
    """Per channel (last axis of x), the piecewise-linear function through (knots[:, c], values[:, c]), knots
    increasing, extended beyond the end knots along the end segments."""
    out = np.empty(x.shape)
    for c in range(x.shape[-1]):
        xc, a, b = x[..., c], knots[:, c], values[:, c]
        below = b[0] + (xc - a[0]) * ((b[1] - b[0]) / (a[1] - a[0]))
        above = b[-1] + (xc - a[-1]) * ((b[-1] - b[-2]) / (a[-1] - a[-2]))
        out[..., c] = np.where(xc < a[0], below, np.where(xc > a[-1], above, np.interp(xc, a, b)))
    return out


# TopMap is the coder's, not the model's: the model's rates use the deep factorized density itself; the map exists
# because utils/rec.py codes against diagonal Gaussians only.
class TopMap:
    """The top level's deep factorized prior (per channel, not Gaussian) turned into N(0, 1) for utils/rec.py:
    u = h(z), the strictly increasing piecewise-linear map through the knots (z_k, Phi^-1(F(z_k))) of a fixed
    grid between the prior's tails (F its CDF; the tails found by bisection), linear beyond. Under h the prior is
    N(0, 1) but for its variation within a bin, so the top level is coded against the model's own prior: the
    posterior N(mu, sig^2), pushed through h, is coded as the Gaussian of the same mean and variance (moments by
    Gauss-Hermite quadrature; of the Gaussians the closest to it, and no dearer than the model's KL where the
    posterior lies within the grid, since a Gaussian has the most entropy for its moments; beyond the tails h
    is linear, so the prior it stands for has Gaussian tails there), and the decoded u is mapped back by h^-1.
    Both sides compute the knots from the weights with the same operations; the decoder needs only them and
    h^-1."""

    def __init__(self, prior):
        import tensorflow as tf
        channels = prior.batch_shape[0]

        def cdf(x):
            return prior.cdf(tf.constant(x, tf.float32)).numpy().astype(np.float64)

        lo, hi = np.full((2, channels), -TOP_RANGE), np.full((2, channels), TOP_RANGE)  # rows: lower, upper tail
        target = np.array([[TOP_TAIL_MASS / 2], [1 - TOP_TAIL_MASS / 2]])
        for _ in range(TOP_BISECTIONS):
            mid = (lo + hi) / 2
            below = cdf(mid) < target
            lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
        self.z = lo[0] + (hi[1] - lo[0]) * np.linspace(0, 1, TOP_GRID + 1)[:, None]  # knots [grid + 1, C]
        # a bin's mass by the midpoint rule: the float32 density keeps its relative precision in the tails, where
        # differences of a float32 CDF near 1 do not
        centers = tf.constant((self.z[1:] + self.z[:-1]) / 2, tf.float32)
        mass = np.exp(prior.log_prob(centers).numpy().astype(np.float64))
        mass = np.maximum(mass / mass.sum(axis=0), TOP_MIN_MASS)
        cum = np.concatenate([np.zeros((1, channels)), np.cumsum(mass / mass.sum(axis=0), axis=0)])
        self.u = scipy.special.ndtri(TOP_TAIL_MASS / 2 + (1 - TOP_TAIL_MASS) * cum)
        if not (np.all(np.isfinite(self.u)) and np.all(np.diff(self.z, axis=0) > 0)
                and np.all(np.diff(self.u, axis=0) > 0)):
            raise InputError("the model's top prior (deep factorized) is degenerate: its quantile map to N(0, 1) is "
                             "not strictly increasing (a density of NaN, or narrower than float32 resolves)")

    def forward(self, z):
        return _piecewise_linear(z, self.z, self.u)

    def inverse(self, u):
        return _piecewise_linear(u, self.u, self.z)

    def posterior(self, loc, scale):
        """(mean, std) float64 of h(z) for z ~ N(loc, scale^2), per element [..., C]."""
        nodes, weights = np.polynomial.hermite_e.hermegauss(TOP_NODES)
        weights = (weights / weights.sum()).reshape((-1,) + (1,) * np.ndim(loc))
        u = self.forward(np.asarray(loc, np.float64) + np.asarray(scale, np.float64)
                         * nodes.reshape(weights.shape))
        mean = np.sum(weights * u, axis=0)
        # a posterior narrower than float64 resolves is coded as a point-like one
        return mean, np.maximum(np.sqrt(np.sum(weights * (u - mean) ** 2, axis=0)), 1e-12)


def residual_table(model, out):
    """The lossless model's count tables, one row per sub-pixel in C order, from its decoder output [H, W, 2C]."""
    from utils import hvae
    loc, scale = model.logistic_params(out)
    return ans.cdf_table(hvae.logistic_cdf_edges(loc.numpy(), scale.numpy()), RESIDUAL_PRECISION)


class Codec:
    """A restored model with what both sides of the coder need. A lossy model's file holds the REC stream of
    its latents, coded in the order of the model's top-down pass; a lossless one's (--likelihood dlogistic) also
    the image given the latents, ANS-coded under the model's discretized logistics."""

    def __init__(self, args, model, identity):
        from utils import hvae
        self.model, self.identity, self.seed = model, identity, args.seed
        self.lossless = isinstance(model, hvae.DLogisticResNetVAE)
        self.config = args.rec_config
        self.top = TopMap(model.top_prior)

    def coding_pass(self, code, features=None, top_shape=None):
        """Runs the model's top-down pass (ResNetVAE.top_down) with the coder at every level: code(layer id,
        (q mean, q scale) or None, prior mean, prior scale) is called for each coded unit in coding order (float64
        numpy in and out: the latent) and returns the unit's latent. `features` are the encoder's bottom-up
        features (None when decoding; `top_shape` is then needed). Returns the decoder's output on the padded
        image [1, H', W', C'] and the level of each coded unit, in coding order."""
        import tensorflow as tf
        ids, levels = itertools.count(), []

        def unit(level, q, p_loc, p_scale):
            levels.append(level)
            q = None if q is None else tuple(np.asarray(a, np.float64) for a in q)
            return code(next(ids), q, np.asarray(p_loc, np.float64), np.asarray(p_scale, np.float64))

        def sample(step):
            q = step.posterior
            if step.top:  # coded through the map to N(0, 1), decoded back by its inverse
                q = None if q is None else self.top.posterior(*(a.numpy() for a in q))
                z = self.top.inverse(unit(step.index, q, np.zeros(step.shape), np.ones(step.shape)))
            elif step.ar:  # one unit per slice, against its Gaussian conditional given the slices coded before it
                z = step.slice_conditionals(lambda s, cut, loc, scale: unit(
                    step.index, None if q is None else (q[0][..., cut], q[1][..., cut]), loc, scale))
            else:
                z = unit(step.index, q, *step.prior)
            return tf.constant(z, tf.float32)

        return self.model.top_down(sample, features, top_shape), levels

    def encode(self, image, channels):
        """(file bytes, x_hat float32 [H, W, C], the coded units as (level, LayerCode) pairs in coding order, the
        bottom-up features) of one image [H, W, C] on [0, 255] (uint8 values for a lossless model)."""
        import tensorflow as tf
        from utils import rec
        h, w = image.shape[:2]
        features = self.model.bottom_up(tf.constant(image, tf.float32)[None])
        codes = []

        def code(layer, q, p_loc, p_scale):
            c, z = rec.encode_layer(*q, p_loc, p_scale, seed=self.seed, layer=layer, config=self.config)
            codes.append(c)
            return z

        out, levels = self.coding_pass(code, features)
        out = self.model.crop(out, h, w)[0]
        strings = [rec.pack(codes, seed=self.seed, framed=False)]  # the container frames it
        if self.lossless:
            stack = ans.Stack()
            stack.push(np.asarray(image).ravel(), residual_table(self.model, out))
            strings.append(ans.words_to_bytes(stack.words()))
        data = container.pack(MODEL_SCRIPT, self.identity, (h, w), channels, strings)
        return data, self.model.reconstruction(out).numpy(), list(zip(levels, codes)), features

    def decode(self, data, what):
        """(the image, channels) from a file's bytes: x_hat float32 [H, W, C] unclipped, or for a lossless model
        the uint8 image itself."""
        from utils import rec
        (height, width), channels, strings = container.unpack(data, MODEL_SCRIPT, self.identity, what)
        if len(strings) != 1 + self.lossless:
            raise InputError(f"{what}: corrupt file ({len(strings)} streams; this model's files hold "
                             f"{1 + self.lossless})")
        reader = rec.Reader(strings[0], what, framed=False)
        if reader.seed != self.seed:
            raise InputError(f"{what} was coded with --seed {reader.seed}, not {self.seed}: decode it with the "
                             f"encoder's --seed")
        out, _ = self.coding_pass(lambda layer, q, p_loc, p_scale: reader.decode_layer(p_loc, p_scale, layer=layer),
                                  top_shape=self.model.top_shape(height, width))
        reader.finish()
        out = self.model.crop(out, height, width)[0]
        if not self.lossless:
            return self.model.reconstruction(out).numpy(), channels
        stack = ans.Stack(ans.bytes_to_words(strings[1]))
        x = stack.pop(residual_table(self.model, out)).astype(np.uint8)
        if not stack.coder.is_empty():
            raise InputError(f"{what}: corrupt file (bits left over after the last pixel)")
        return x.reshape(height, width, self.model.image_channels), channels


# ---- commands -----------------------------------------------------------------------------------

def compress(args, coder):
    image, channels, note = images.read_image(resolve_path(args.input, "input image"), "input image")
    if note:
        print(f"note: {note}", file=sys.stderr)
    if coder.model.image_channels == 1:
        if channels != 1:
            raise InputError(f"input image {args.input}: a colour image, but the model codes grey levels "
                             "(--image_channels 1)")
        image = image[..., :1]
    data, _, codes, _ = coder.encode(image, channels)
    atomic_write_bytes(args.output, data)
    if args.verbose:
        h, w = image.shape[:2]
        kl = sum(c.kl for _, c in codes) / (math.log(2) * h * w)
        print(f"{args.input} -> {args.output}: {len(data)} bytes, {container.bpp(len(data), h, w):.4f} bpp "
              f"(KL against the coding priors {kl:.4f} bpp)", file=sys.stderr)


def decompress(args, coder):
    what = f"input file {args.input}"
    try:
        data = Path(args.input).read_bytes()
    except OSError as e:
        raise InputError(f"{what}: {e.strerror}")
    x_hat, channels = coder.decode(data, what)
    image = x_hat if coder.lossless else images.to_uint8(x_hat)
    images.write_png(args.output, images.to_channels(image, channels))


def evaluate(args, coder, run_dir, checkpoint, source):
    from utils import hvae, image_eval
    hvae.check_channels(coder.model, args.dataset)
    if coder.lossless:
        if source is not None:
            raise InputError(f"--dataset {args.dataset}: a lossless model codes 8-bit images, not a GAN source")
        return evaluate_lossless(args, coder, run_dir, checkpoint)
    cast = not args.no_cast_xhat
    levels = coder.model.levels

    def measure(image, channels):
        h, w = image.shape[:2]
        pixels_ln2 = h * w * math.log(2)
        start = time.perf_counter()
        data, x_enc, codes, features = coder.encode(image, channels)
        mid = time.perf_counter()
        x_hat, _ = coder.decode(data, "eval")
        end = time.perf_counter()
        if not np.array_equal(x_hat, x_enc[:h, :w]):
            raise SystemExit(f"error: rec eval: the decoded {h}x{w} image differs from the encoder's reconstruction "
                             f"(by up to {np.max(np.abs(x_hat - x_enc[:h, :w])):.4g}): nothing was written")
        per_level = {i: 0.0 for i in range(levels)}
        for level, c in codes:
            per_level[level] += c.kl
        coding_kl = sum(per_level.values())
        top_coding_kl = per_level[levels - 1]  # the top level is one unit
        per_level[levels - 1] = coder.model.top_kl(features, args.top_samples, coder.seed)
        kl_bpp = sum(per_level.values()) / pixels_ln2
        file_bpp = container.bpp(len(data), h, w)
        x_hat = images.to_uint8(x_hat) if cast else np.clip(x_hat, 0, 255)
        return dict(x_hat=images.to_channels(x_hat, channels) if cast or channels == 3 else x_hat.mean(axis=2),
                    file_bpp=file_bpp, kl_bpp=kl_bpp, overhead=file_bpp / kl_bpp - 1,
                    coding_kl_bpp=coding_kl / pixels_ln2, top_coding_kl_bpp=top_coding_kl / pixels_ln2,
                    log_ratio_bpp=sum(c.log_ratio for _, c in codes) / pixels_ln2,
                    encode_seconds=mid - start, decode_seconds=end - mid,
                    **{f"kl_bpp_level{i}": v / pixels_ln2 for i, v in per_level.items()})

    record = dict(method=SCRIPT, model=MODEL_SCRIPT, rate_type=RATE_TYPE,
                  **image_data.record_fields(args.dataset, source),
                  **{"lambda": args.lmbda}, run=run_dir.name, checkpoint=str(checkpoint), cast_xhat=cast,
                  seed=args.seed, block_size=args.block_size, kl_per_partition=args.kl_per_partition,
                  extra_samples=args.extra_samples, n_beams=args.n_beams, fit_split=args.fit_split)
    items = image_data.eval_items(args.dataset, source, args.batchsize, args.seed)
    npz = image_eval.results_npz(args, run_dir, source)
    npz = npz.with_name(f"{SCRIPT}-{npz.name}")  # beside resnet_vae.py eval's .npz in the run folder
    return image_eval.evaluate_images(items, measure, npz, run_dir / image_eval.RESULTS_NAME, record, args.verbose,
                                      source, rate_key="file_bpp")


def evaluate_lossless(args, coder, run_dir, checkpoint):
    """Per image: every byte of the file in bits per dimension, split into the latents' REC stream and the
    residual's, beside PNG, lossless WebP and the model's negative ELBO."""
    from utils import image_eval
    model = coder.model

    def measure(image, channels):
        dims_ln2 = image.size * math.log(2)
        start = time.perf_counter()
        data, _, codes, _ = coder.encode(image, channels)
        mid = time.perf_counter()
        decoded, _ = coder.decode(data, "eval")
        end = time.perf_counter()
        if not np.array_equal(decoded, image):
            raise SystemExit(f"error: rec eval: the decoded image differs from the source in "
                             f"{int(np.sum(decoded != image))} sub-pixels: nothing was written")
        _, _, (latents, residual) = container.unpack(data, MODEL_SCRIPT, coder.identity)
        kl, nll = model.elbo_bpd(image, args.elbo_samples)
        bpd = {k: 8 * v / image.size for k, v in images.lossless_sizes(images.to_channels(image, channels)).items()}
        return dict(x_hat=images.to_channels(decoded, channels), file_bpd=8 * len(data) / image.size,
                    latent_bpd=8 * len(latents) / image.size, residual_bpd=8 * len(residual) / image.size,
                    coding_kl_bpd=sum(c.kl for _, c in codes) / dims_ln2,
                    nelbo_bpd=kl + nll, kl_bpd=kl, nll_bpd=nll,
                    png_bpd=bpd["png"], webp_bpd=bpd["webp"], encode_seconds=mid - start,
                    decode_seconds=end - mid)

    record = dict(method=SCRIPT, model=MODEL_SCRIPT, likelihood="dlogistic", rate_type=LOSSLESS_RATE_TYPE,
                  **image_data.record_fields(args.dataset, None), run=run_dir.name, checkpoint=str(checkpoint),
                  seed=args.seed,
                  block_size=args.block_size, kl_per_partition=args.kl_per_partition,
                  extra_samples=args.extra_samples, n_beams=args.n_beams, fit_split=args.fit_split,
                  elbo_samples=args.elbo_samples)
    items = image_data.eval_items(args.dataset, None, args.batchsize, args.seed)
    npz = image_eval.results_npz(args, run_dir, None)
    return image_eval.evaluate_images(items, measure, npz.with_name(f"{SCRIPT}-{npz.name}"),
                                      run_dir / image_eval.RESULTS_NAME, record, args.verbose, rate_key="file_bpd")


# ---- flags ----------------------------------------------------------------------------------------

def parse_args(argv):
    p = ArgumentParser(prog=f"{SCRIPT}.py", description=__doc__)
    codec_flags.add_run_flags(p)
    hvae_flags.add_model_flags(p)
    g = p.add_argument_group("relative entropy coding (the defaults are the seed's: lossy B = 10, 1 + eps = 1; "
                             "lossless B = 20, 1 + eps = 1.2; omega = 3)")
    g.add_argument("--block_size", type=positive_int, default=1000, help="latent dimensions per REC block")
    g.add_argument("--kl_per_partition", type=positive_float, default=3.0,
                   help="omega: KL per auxiliary variable, nats")
    g.add_argument("--extra_samples", type=positive_float,
                   help="1 + eps: exp(omega (1 + eps)) candidates per auxiliary variable (default: 1, lossless 1.2)")
    g.add_argument("--n_beams", type=positive_int, help="beams B of the search (default: 10, lossless 20)")
    g.add_argument("--fit_split", action="store_true",
                   help="choose the auxiliary variance split per block (5 bits a block) instead of the paper's")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compress", help="code an image file (PNG, JPEG, ...) into a file",
                       description="Code an image file (PNG, JPEG, ...) into a file.")
    c.add_argument("input", help="the image file")
    c.add_argument("output", help="the file to write")
    add_force_flag(c)
    d = sub.add_parser("decompress", help="decode a file to a PNG", description="Decode a file to a PNG.")
    d.add_argument("input", help="the file that compress wrote")
    d.add_argument("output", help="the PNG file to write")
    add_force_flag(d)
    e = sub.add_parser("eval", help="per image: file bpp, KL bpp, overhead, MSE, PSNR, MS-SSIM",
                       description="Per image: the file's bpp, the KL in bpp, the overhead, MSE, PSNR and MS-SSIM.")
    codec_flags.add_image_eval_flags(e)
    e.add_argument("--top_samples", type=positive_int, default=64,
                   help="samples of the Monte Carlo estimate of the top level's KL under its deep factorized prior")
    e.add_argument("--elbo_samples", type=positive_int, default=16,
                   help="posterior draws averaged into each image's negative ELBO (lossless models)")
    args = p.parse_args(argv)
    runs.adopt_run_flags(args, p)
    hvae_flags.check_model_flags(args)
    lossless = args.likelihood == "dlogistic"
    if args.n_beams is None:
        args.n_beams = 20 if lossless else 10
    if args.extra_samples is None:
        args.extra_samples = 1.2 if lossless else 1.0
    if args.lmb_range is not None:
        raise InputError("--lmb_range: rec.py codes fixed-rate models (a variable-rate model's latents depend on "
                         "the lambda it is run at, which its files would have to carry)")
    if args.flat_z0:
        raise InputError("--flat_z0: rec.py does not code a MAF top prior (it codes against Gaussians; only the "
                         "deep factorized top prior has a map to N(0, 1) here)")
    if not 0 <= args.seed < 2 ** 63:
        raise InputError(f"--seed {args.seed}: the coder's shared randomness needs a non-negative seed")
    from utils import rec  # imports TensorFlow; its Config checks the coder's settings
    args.rec_config = rec.Config(block_size=args.block_size, omega=args.kl_per_partition,
                                 extra_samples=args.extra_samples, n_beams=args.n_beams, fit_split=args.fit_split)
    codec_flags.check_files(args)
    return args


def main(argv):
    args = parse_args(argv)
    import tensorflow as tf
    from utils import hvae, image_eval
    tf.keras.utils.set_random_seed(args.seed)
    tf.config.experimental.enable_op_determinism()  # the decoder must recompute the priors bit for bit
    source = image_data.gan_source(args.dataset, args.data_dim) if args.command == "eval" else None
    run_dir = runs.run_folder(args, run_name(MODEL_SCRIPT, **hvae_flags.run_flags(args)))
    if args.command == "eval":
        image_eval.check_results_file(run_dir)
    model, checkpoint, identity = hvae.open_hvae(args, run_dir)
    coder = Codec(args, model, identity)
    if args.command == "compress":
        return compress(args, coder)
    if args.command == "decompress":
        return decompress(args, coder)
    return evaluate(args, coder, run_dir, checkpoint, source)


if __name__ == "__main__":
    run(main)
