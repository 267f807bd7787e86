"""What the image codec scripts share: the model base class, the eval loop, and compress/decompress.

A codec script (mbt2018.py, ms2020.py) parses its command line with utils/codec_flags.py (no TensorFlow), then
calls `main` with its model (utils/image_models.py). Everything else (training through utils.training.fit,
evaluation with rates from real bytes, the file commands) lives here once.

Images enter the models as float32 in [0, 255]; the loss is bits per pixel + lambda * MSE on that scale.
"""
import json
import sys
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
import tensorflow_compression as tfc
from tensorflow_compression.python.distributions import helpers as tfc_helpers

from utils import Progress, cli, codec_flags, coding, image_data, images, jsonl, training
from utils.cli import InputError
from utils.runs import atomic_save_npz, atomic_write_bytes, run_name
from utils.sources import resolve_path

RESULTS_NAME = "results.jsonl"

# tfc finds a deep factorized prior's tails and median with an Adam loop of thousands of steps, which an eager
# caller (make_coders, tfc.lower_tail) runs step by step in Python: ~20 s per model on 2 cores, and every
# compress, decompress and eval command paid it. Traced, the same loop gives the same tables in ~1 s.
tfc_helpers.estimate_tails = tf.function(tfc_helpers.estimate_tails)

# Largest difference (on [0, 255]) eval accepts between the decoded reconstruction and the model's quantized one:
# float noise between two traced graphs, far below what a single wrongly decoded latent moves.
DECODE_TOLERANCE = 1e-3

# Scale indexes of the Gaussian conditional: NUM_SCALES log-spaced scales in [SCALES_MIN, SCALES_MAX].
SCALES_MIN, SCALES_MAX, NUM_SCALES = 0.11, 256.0, 64


def scale_fn(index):
    """The scale of a (possibly fractional) index: log-linear between SCALES_MIN and SCALES_MAX."""
    step = (np.log(SCALES_MAX) - np.log(SCALES_MIN)) / (NUM_SCALES - 1)
    return tf.exp(np.log(SCALES_MIN) + step * tf.cast(index, tf.float32))


# oneDNN's AVX-512 convolution kernels work on blocks of 16 channels (StridedPointwiseConv).
ONEDNN_CHANNEL_BLOCK = 16


class StridedPointwiseConv(tfc.SignalConv2D):
    """A 1x1 tfc.SignalConv2D with a downsampling stride s. On an input of fewer than 16 channels it is computed
    as x[:, ::s, ::s] through the same 1x1 convolution at unit stride; otherwise as tfc computes it. Both give the
    same outputs (bitwise); the weights and checkpoints are tfc's.

    Why: TensorFlow 2.14's oneDNN computes the weight gradient of a strided 1x1 convolution by first copying the
    strided input to a unit-stride buffer, and when the input has fewer channels than its AVX-512 block (16) it
    writes past that buffer (`jit_avx512_common_1x1_convolution_bwd_weights`, on AVX-512 CPUs). The heap
    corruption aborts the process, or corrupts it silently. The ResNet-VAE's encoder shortcuts are such
    convolutions (the first sees the 3 image channels; at widths below 16, all of them). With 16 channels or more
    tfc's strided form is safe and 2-4x faster than the subsample (bench/pointwise_bench.py), so it is kept there
    (docs/resnet_vae.md, "oneDNN on AVX-512 CPUs").
    """

    def build(self, input_shape):
        super().build(input_shape)
        self.subsample = input_shape[-1] < ONEDNN_CHANNEL_BLOCK  # known here: the kernel's shape needs it

    def call(self, inputs):
        if not self.subsample:
            return super().call(inputs)
        s_h, s_w = self.strides_down
        outputs = tf.nn.conv2d(inputs[:, ::s_h, ::s_w, :], self.kernel, 1, "VALID")
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, self.bias)
        return outputs if self.activation is None else self.activation(outputs)


def conv(filters, kernel, stride=1, activation=None, use_bias=True, kernel_parameter="rdft"):
    """A convolution as both reference implementations define theirs: tfc.SignalConv2D with zero padding and,
    by default, the kernel parameterized by its real DFT (`kernel_parameter="variable"`: plain weights)."""
    layer = StridedPointwiseConv if kernel == 1 and stride > 1 else tfc.SignalConv2D
    return layer(filters, (kernel, kernel), corr=True, strides_down=stride, padding="same_zeros",
                 use_bias=use_bias, kernel_parameter=kernel_parameter, activation=activation)


def deconv(filters, kernel, stride=1, activation=None, use_bias=True, kernel_parameter="rdft"):
    """The transposed convolution (upsampling by `stride`), parameterized as `conv`."""
    return tfc.SignalConv2D(filters, (kernel, kernel), corr=False, strides_up=stride, padding="same_zeros",
                            use_bias=use_bias, kernel_parameter=kernel_parameter, activation=activation)


def analysis_transform(num_filters, latent_depth):
    """The GDN encoder both papers share: four 5x5 stride-2 convolutions, GDN between them (16x downsampling)."""
    return tf.keras.Sequential([
        conv(num_filters, 5, 2, tfc.GDN()),
        conv(num_filters, 5, 2, tfc.GDN()),
        conv(num_filters, 5, 2, tfc.GDN()),
        conv(latent_depth, 5, 2),
    ], name="analysis")


def synthesis_transform(num_filters):
    """Its mirror: four 5x5 stride-2 transposed convolutions with inverse GDN, to 3 channels."""
    return tf.keras.Sequential([
        deconv(num_filters, 5, 2, tfc.GDN(inverse=True)),
        deconv(num_filters, 5, 2, tfc.GDN(inverse=True)),
        deconv(num_filters, 5, 2, tfc.GDN(inverse=True)),
        deconv(3, 5, 2),
    ], name="synthesis")


def count_params(model):
    """The number of trainable parameters (scalars) of a built model."""
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def report_params(model, name=None):
    """Prints the model's trainable-parameter count on one stderr line (every image script does at start-up)."""
    print(f"{name or type(model).__name__}: {count_params(model):,} trainable parameters", file=sys.stderr)


class ImageCodec(training.LossModel):
    """A learned image codec trained on bpp + lambda * MSE, with range coding through fixed-signature functions.

    Subclasses (utils/image_models.py) define `pad_multiple` (the total downsampling factor), `self.hyperprior`
    (the deep factorized density of the hyper-latents z; the latents y are Gaussians with predicted means and
    scale indexes), and
    - `forward(x, ems, training)`: (x_hat, bits per image) for a batch x in [0, 255], with noise when training
      and real quantization otherwise;
    - `latents(x)`: the encoders' continuous latents [y, z] of a padded batch;
    - `encode_latents(latents, ems)`: the list of string tensors (each of shape [batch]) coding them, rounded
      as the entropy models quantize (y around its predicted means, z around the model's offsets);
    - `relaxed(latents, soften, hard)`: (x_hat, bits per image) with every quantization `round(v - o) + o`
      replaced by `soften(v - o) + o`, and the bits the model's density of the softened values; with
      `soften=tf.round, hard=True` this is what `encode_latents` codes (sga.py optimizes the latents through it);
    - `decode(strings, shape, ems)`: the padded reconstruction from those strings, `shape` = padded [H, W]
      (a decoder needs nothing else: the latent shapes follow from it).
    `forward(training=False)` and `encode`/`decode` must quantize identically, so that `estimate` reconstructs
    exactly what `decompress` does.
    """
    METRICS = ("loss", "bpp", "mse")
    range_coded = True  # False: eval, compress and decompress are another script's (bb_sga.py)

    def __init__(self, lmbda, **kwargs):
        super().__init__(**kwargs)
        self.lmbda = float(lmbda)
        self.coders = None

    def entropy_models(self, compression):
        """(z's model, y's model); with `compression`, the range-coding tables are built from the weights."""
        kw = dict(coding_rank=3, compression=compression, stateless=True)
        return (tfc.ContinuousBatchedEntropyModel(self.hyperprior, **kw),
                tfc.LocationScaleIndexedEntropyModel(tfc.NoisyNormal, NUM_SCALES, scale_fn, **kw))

    # ---- training (utils.training.fit calls these) ----

    def losses_of(self, x, training):
        x_hat, bits = self.forward(x, self.entropy_models(compression=False), training)
        num_pixels = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), tf.float32)
        bpp = tf.reduce_sum(bits) / num_pixels
        mse = tf.reduce_mean(tf.math.squared_difference(x, x_hat))
        return dict(loss=bpp + self.lmbda * mse, bpp=bpp, mse=mse)

    def call(self, x, training=False):
        return self.losses_of(x, training)["loss"]

    def reconstruct(self, x):
        return self.forward(x, self.entropy_models(compression=False), training=False)[0]

    def build_weights(self):
        """Creates the variables (a forward pass on a small dummy batch), so checkpoints can be restored."""
        self(tf.zeros([1, self.pad_multiple, self.pad_multiple, 3]))

    def latents(self, x):
        y = self.analysis(x / 255)
        return [y, self.hyper_analysis(y)]

    def encode(self, x, ems):
        return self.encode_latents(self.latents(x), ems)

    # ---- densities of relaxed latents (relaxed) ----

    def relaxed_z(self, z, soften):
        """z softened on the grid the z entropy model quantizes to, and its bits per image under the prior."""
        offset = self.coders[0].quantization_offset
        offset = 0.0 if offset is None else offset
        z_q = soften(z - offset) + offset
        return z_q, bits(self.hyperprior.prob(z_q))

    @staticmethod
    def y_bits(y_q, mean, index):
        """Bits per image of y_q under the Gaussian conditional (convolved with U(-1/2, 1/2)) of `index`."""
        index = tf.clip_by_value(index, 0.0, NUM_SCALES - 1.0)  # as the entropy model clips its indexes
        return bits(tfc.NoisyNormal(loc=mean, scale=scale_fn(index)).prob(y_q))

    # ---- coding ----

    def make_coders(self):
        """Builds the range-coding tables from the current weights; call after restoring a checkpoint."""
        self.coders = self.entropy_models(compression=True)

    def _padded(self, image):
        return images.pad_to_multiple(image[None], self.pad_multiple)

    @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.float32)])
    def compress(self, image):
        """One image [H, W, 3] on [0, 255] (uint8 values, or continuous for a GAN source) -> 1-d string tensor."""
        return tf.concat(self.encode(self._padded(image), self.coders), 0)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string), tf.TensorSpec([2], tf.int32)])
    def decompress(self, strings, shape):
        """Strings and the image's [H, W] -> the float reconstruction [H, W, 3] (to_uint8 makes the image)."""
        m = self.pad_multiple
        padded = (shape + m - 1) // m * m
        return self.decode(strings, padded, self.coders)[0, :shape[0], :shape[1], :]

    def compress_latents(self, latents):
        """The string tensors ([batch] each) coding latents, e.g. refined by sga.py, for `pack`."""
        return self._compress_latents(*latents)

    @tf.function(reduce_retracing=True)
    def _compress_latents(self, *latents):
        return tf.stack(self.encode_latents(list(latents), self.coders), axis=1)

    @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.float32)])
    def estimate(self, image):
        """The quantized reconstruction as floats [H, W, 3] and the model's estimated bits for one image."""
        x_hat, bits = self.forward(self._padded(image), self.coders, training=False)
        shape = tf.shape(image)
        return x_hat[0, :shape[0], :shape[1], :], tf.reduce_sum(bits)


# The floor on a latent's probability, as tfc's entropy models bound their likelihoods: it keeps the bits of a
# softened value far in a tail finite, and its gradient still points towards higher probability.
LIKELIHOOD_BOUND = 1e-9


def bits(prob):
    """Bits per image [batch] of per-element probabilities [batch, h, w, c]."""
    return -tf.reduce_sum(tf.math.log(tfc.lower_bound(prob, LIKELIHOOD_BOUND)), axis=(1, 2, 3)) / np.log(2.0)


# ---- the commands --------------------------------------------------------------------------------

def results_npz(args, run_dir, source):
    """Where eval writes its per-image arrays: see codec_flags.add_image_eval_flags."""
    folder = run_dir
    if args.results_dir:
        folder = Path(args.results_dir)
        if not args.no_sub_dir:
            folder = folder / Path(args.checkpoint_dir).resolve().name
    return folder / f"{run_dir.name}-dataset={image_data.label(args.dataset, source)}.npz"


def check_results_file(run_dir):
    """eval appends to the run folder's results file: refused first if that name is taken by a folder."""
    if run_dir.is_dir():
        cli.output_file(run_dir / RESULTS_NAME, "--checkpoint_dir")


def main(args, script, model_class):
    """Runs the subcommand of `args` (utils/codec_flags.py's parser of `script`) for the codec `model_class`, whose
    constructor takes `lmbda` and the script's architecture flags (these, with lambda, also name the run folder,
    and identify the model)."""
    arch_flags = codec_flags.ARCHITECTURES[script][1]
    training.strategy_from_flags(args)  # before any other TensorFlow work (docs/distributed.md)
    tf.keras.utils.set_random_seed(args.seed)
    arch = {k: getattr(args, k) for k in arch_flags}
    named = {k: v for k, v in arch.items() if v is not None}  # an unset flag takes its default from another
    run_dir = Path(args.checkpoint_dir) / run_name(script, **named, lmbda=args.lmbda)
    if args.command == "eval":
        check_results_file(run_dir)
    source = None
    if args.command == "train":
        if bool(args.train_glob) == bool(args.dataset):
            raise InputError("train: give exactly one of --train_glob and --dataset")
        what = "--train_glob" if args.train_glob else "--dataset"
        source = image_data.gan_source(args.train_glob or args.dataset, args.data_dim, what)
    elif args.command == "eval":
        source = image_data.gan_source(args.dataset, args.data_dim)
    with training.strategy_scope(args):
        model = model_class(lmbda=args.lmbda, **arch)
        model.build_weights()
    report_params(model, script)
    if args.command != "train" and not model.range_coded:
        raise InputError(f"{args.command}: this model (--hyper_posterior gaussian) is coded by bits-back: use "
                         f"bb_sga.py")
    if args.command == "train":
        return train(args, model, run_dir, args.train_glob or args.dataset, source, what)
    restored = restore(model, run_dir, args.verbose)
    identity = identity_of(script, arch, model)
    if args.command == "eval":
        return evaluate_codec(args, script, model, identity, run_dir, restored, source)
    if args.command == "compress":
        return compress_file(script, model, identity, args.input, args.output, args.verbose)
    return decompress_file(script, model, identity, args.input, args.output, args.verbose)


def train(args, model, run_dir, dataset, source, what="--dataset"):
    """`train` for every image model: crops of an image set or whole GAN images, through utils.training."""
    training.check_run_dir(run_dir, args.cont)
    train_ds, val_ds = image_data.training_data(dataset, source, args.patchsize, args.batchsize, args.seed, what)
    records = training.fit_from_flags(args, model, run_dir, train_ds, val_ds)
    if records:
        print(json.dumps(records[-1]))
    return records


def identity_of(script, arch, model):
    """The model's identity for the file header: its script, architecture flags (those set: an unset flag takes
    its default from another, or a later flag's default is the earlier model) and trained weights."""
    return coding.model_id(script, {k: v for k, v in arch.items() if v is not None},
                           [w.numpy() for w in model.trainable_weights])


def restore(model, run_dir, verbose):
    # restore_latest tolerates a partial match; a codec must get every weight, or it would code with fresh ones
    # (a checkpoint of an earlier architecture, for instance).
    try:
        latest = training.restore_latest(model, run_dir, strict=True)
    except (AssertionError, ValueError) as e:
        raise InputError(f"the checkpoint in {run_dir} does not hold this model's weights (another architecture, or "
                         f"one of an earlier version of the code: retrain it): {str(e).splitlines()[0][:200]}")
    model.make_coders()
    if verbose:
        print(f"restored {latest}", file=sys.stderr)
    return latest


# ---- files --------------------------------------------------------------------------------------

def compress_image(script, model, identity, image, channels):
    """The bytes of the compressed file of one image [H, W, 3] on [0, 255]."""
    strings = model.compress(tf.constant(image, tf.float32)).numpy().tolist()
    return coding.pack(script, identity, image.shape[:2], channels, strings)


def to_uint8(x_hat):
    """The image a float reconstruction on [0, 255] decodes to."""
    return np.clip(np.round(x_hat), 0, 255).astype(np.uint8)


def decompress_bytes(script, model, identity, data, what):
    """(float RGB reconstruction on [0, 255] before rounding, channels of the source) from a file's bytes."""
    shape, channels, strings = coding.unpack(data, script, identity, what)
    try:
        x_hat = model.decompress(tf.constant(strings, tf.string), tf.constant(shape, tf.int32)).numpy()
    except tf.errors.InvalidArgumentError as e:
        raise InputError(f"{what}: corrupt file (range decoding failed: {e.message.splitlines()[0]})")
    return x_hat, channels


def compress_file(script, model, identity, src, dst, verbose=False):
    image, channels, note = images.read_image(resolve_path(src, "input image"), "input image")
    if note:
        print(f"note: {note}", file=sys.stderr)
    data = compress_image(script, model, identity, image, channels)
    atomic_write_bytes(dst, data)
    if verbose:
        h, w = image.shape[:2]
        print(f"{src} -> {dst}: {len(data)} bytes, {coding.bpp(len(data), h, w):.4f} bpp", file=sys.stderr)


def decompress_file(script, model, identity, src, dst, verbose=False):
    try:
        data = Path(src).read_bytes()
    except OSError as e:
        raise InputError(f"input file {src}: {e.strerror}")
    x_hat, channels = decompress_bytes(script, model, identity, data, f"input file {src}")
    rgb = to_uint8(x_hat)
    images.write_png(dst, images.to_channels(rgb, channels))
    if verbose:
        print(f"{src} -> {dst}: {rgb.shape[0]}x{rgb.shape[1]}, {'RGB' if channels == 3 else 'grayscale'}",
              file=sys.stderr)


# ---- evaluation ---------------------------------------------------------------------------------

def stderr(values):
    """The standard error of the mean of per-image values (0 for a single image)."""
    return float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0


def evaluate_images(items, measure, npz_path, results_path, record, verbose=False, source=None, rate_key="bpp"):
    """The eval loop every image model shares.

    `items` yields (name, image [H, W, 3] on [0, 255], channels of the source); `measure(image, channels)`
    returns a dict with `x_hat` (the reconstruction in the source's channels, uint8 or float on [0, 255]), `bpp`,
    and any further per-image scalars. Distortion is measured against the image in its source's channels.
    Writes the per-image arrays (names, height, width, bpp, mse, psnr, msssim, and the extras) to `npz_path`,
    appends `record` updated with the averages to `results_path` (JSONL), and returns that record.
    PSNR is averaged over images (the convention of the published Kodak curves); MS-SSIM over the images
    large enough to have one. `rate_key` names the per-image bits per pixel that are the record's `rate` (with
    its standard error `rate_stderr`; `mse_stderr` is the MSE's) and, for a GAN `source`, the point in rdlb.py's
    units: `nats` per image, `rdlb_lamb`, and `rdlb_lagrangian` = nats + rdlb_lamb * MSE on [0, 1], with its
    standard error (the image sandwich's check).
    """
    rows = []
    bar = Progress(None, verbose=verbose, unit="image")  # on a terminal; -V logs get a line per image instead
    for name, image, channels in items:
        source_image = images.to_channels(image, channels)
        out = measure(image, channels)
        x_hat = out.pop("x_hat")
        m = images.mse(source_image, x_hat)
        row = dict(names=name, height=image.shape[0], width=image.shape[1], channels=channels, mse=m,
                   psnr=images.psnr(m),
                   msssim=images.ms_ssim(source_image, x_hat), **out)
        rows.append(row)
        if verbose:
            print(" ".join(f"{k}={v:.5g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
                  file=sys.stderr)
        bar.update(len(rows), **{rate_key: row[rate_key]})
    bar.update(len(rows), finalize=True)
    if not rows:
        raise InputError("the evaluation set is empty")
    arrays = {k: np.array([r[k] for r in rows]) for k in rows[0]}
    atomic_save_npz(npz_path, **arrays)
    dims = {r["channels"] * r["height"] * r["width"] for r in rows}
    record = dict(record)
    record.update(num_images=len(rows), data_dim=dims.pop() if len(dims) == 1 else None)
    for k, v in arrays.items():
        if k in ("names", "height", "width", "channels"):
            continue
        if v.dtype.kind == "b":
            record[k] = bool(np.all(v))
        else:  # MS-SSIM is undefined (NaN) on small images: averaged over the others
            finite = v[np.isfinite(v)]
            record[k] = float(np.mean(finite)) if finite.size else float("nan")
    record.update(rate=record[rate_key], rate_stderr=stderr(arrays[rate_key]), rate_key=rate_key,
                  mse_stderr=stderr(arrays["mse"]), rate_unit="bits", per_dim=False, per_pixel=True,
                  npz=str(npz_path))
    if source is not None:
        lamb = image_data.rdlb_lamb(record["lambda"], source)
        nats = arrays[rate_key] * np.prod(source.shape[:2]) * np.log(2)
        lagrangian = nats + lamb * arrays["mse"] / 255.0 ** 2
        record.update(latent_dim=source.latent_dim, nats=float(np.mean(nats)), rdlb_lamb=lamb,
                      rdlb_lagrangian=float(np.mean(lagrangian)), rdlb_lagrangian_stderr=stderr(lagrangian))
    record.update(time=time.strftime("%Y-%m-%dT%H:%M:%S"))
    jsonl.append(results_path, record)
    print(json.dumps({k: None if isinstance(v, float) and not np.isfinite(v) else v for k, v in record.items()}))
    return record


def evaluate_codec(args, script, model, identity, run_dir, checkpoint, source=None):
    """`eval`: every image is compressed to bytes and decoded, and distortion is measured on what the file
    decodes to (the rounded image; with --no_cast_xhat the float reconstruction, clipped to [0, 255]). The
    decoded reconstruction must be the model's own quantized one (`estimate`): if any image differs, eval
    stops with an error and writes nothing. Per image, `bpp` counts the whole file (header included),
    `bpp_est` the model's bits of the quantized latents, and `file_bits` the file's bits. On a GAN source
    (continuous images, coded as they are) the record's rate and its sandwich fields are the paper's: the
    model's bits of the quantized latents (`bpp_est`), with the file's bits beside them, not mixed in."""
    cast = not args.no_cast_xhat

    def measure(image, channels):
        h, w = image.shape[:2]
        data = compress_image(script, model, identity, image, channels)
        decoded, _ = decompress_bytes(script, model, identity, data, "eval")
        x_est, bits = model.estimate(tf.constant(image, tf.float32))
        gap = float(np.max(np.abs(decoded - x_est.numpy())))
        if not gap <= DECODE_TOLERANCE:
            raise SystemExit(f"error: {script} eval: the decoded image {h}x{w} differs from the model's quantized "
                             f"reconstruction by up to {gap:.4g} (of 255): the range coder and the model disagree; "
                             f"nothing was written")
        x_hat = to_uint8(decoded) if cast else np.clip(decoded, 0, 255)
        return dict(x_hat=images.to_channels(x_hat, channels) if cast or channels == 3 else x_hat.mean(axis=2),
                    bpp=coding.bpp(len(data), h, w), bpp_est=float(bits) / (h * w), file_bits=8.0 * len(data))

    record = dict(method=script, **image_data.record_fields(args.dataset, source), **{"lambda": args.lmbda},
                  run=run_dir.name, checkpoint=str(checkpoint), cast_xhat=cast)
    items = image_data.eval_items(args.dataset, source, args.batchsize, args.seed)
    return evaluate_images(items, measure, results_npz(args, run_dir, source), run_dir / RESULTS_NAME, record,
                           args.verbose, source, rate_key="bpp" if source is None else "bpp_est")
