"""The image codec contract: `ImageCodec`, the base class of the range-coded models (utils/image_models.py), and
the Gaussian conditional's scale table and bit counts they share.

Images enter the models as float32 in [0, 255]; the loss is bits per pixel + lambda * MSE on that scale. The
commands that train, evaluate and code with a model are utils/codec_commands.py's.
"""
import hashlib

import numpy as np
import tensorflow as tf
import tensorflow_compression as tfc
from tensorflow_compression.python.distributions import helpers as tfc_helpers

from utils import images, training

# tfc finds a deep factorized prior's tails and median with an Adam loop of thousands of steps, which an eager
# caller (make_coders, tfc.lower_tail) runs step by step in Python: ~20 s per model on 2 cores, and every
# compress, decompress and eval command paid it. Traced, the same loop gives the same tables in ~1 s.
tfc_helpers.estimate_tails = tf.function(tfc_helpers.estimate_tails)

# Scale indexes of the Gaussian conditional: NUM_SCALES log-spaced scales in [SCALES_MIN, SCALES_MAX].
SCALES_MIN, SCALES_MAX, NUM_SCALES = 0.11, 256.0, 64


def scale_fn(index):
    """The scale of a (possibly fractional) index: log-linear between SCALES_MIN and SCALES_MAX."""
    step = (np.log(SCALES_MAX) - np.log(SCALES_MIN)) / (NUM_SCALES - 1)
    return tf.exp(np.log(SCALES_MIN) + step * tf.cast(index, tf.float32))


def y_entropy_model(compression):
    """y's entropy model: Gaussians of the indexed scales, convolved with U(-1/2, 1/2), around predicted means."""
    return tfc.LocationScaleIndexedEntropyModel(tfc.NoisyNormal, NUM_SCALES, scale_fn, coding_rank=3,
                                                compression=compression, stateless=True)


class ImageCodec(training.LossModel):
    """A learned image codec trained on bpp + lambda * MSE, with range coding through fixed-signature functions.

    Subclasses (utils/image_models.py) define `pad_multiple` (the total downsampling factor), `self.hyperprior`
    (the deep factorized density of the hyper-latents z; the latents y are Gaussians with predicted means and
    scale indexes), and
    - `forward(x, ems, training)`: (x_hat, bits per image) for a batch x in [0, 255], with noise when training
      and real quantization otherwise;
    - `latents(x)`: the encoders' continuous latents [y, z] of a padded batch;
    - `encode_latents(latents, ems)`: (the list of string tensors, each of shape [batch], coding them, z's
      first; the list of the scale indexes each of y's strings was coded with, in order), rounded as the entropy
      models quantize (y around its predicted means, z around the model's offsets);
    - `relaxed(latents, soften, hard)`: (x_hat, bits per image) with every quantization `round(v - o) + o`
      replaced by `soften(v - o) + o`, and the bits the model's density of the softened values; with
      `soften=tf.round, hard=True` this is what `encode_latents` codes (sga.py optimizes the latents through it);
    - `decode(strings, shape, ems, check)`: the padded reconstruction from those strings, `shape` = padded
      [H, W] (a decoder needs nothing else: the latent shapes follow from it), each of y's strings decoded by
      `decode_y` (which checks its scale indexes against the file's `check` first).
    `forward(training=False)` and `encode`/`decode` must quantize identically, so that `estimate` reconstructs
    exactly what `decompress` does.

    A file's strings end with a check (`coded_strings`): TABLES_BYTES bytes fingerprinting the range-coding
    tables, then INDEX_BYTES per y string fingerprinting the scale indexes it was coded with. The decoder's
    indexes come from floating-point networks; where they differ from the encoder's (another machine, thread count
    or kernel library), tfc's range decoder returns other symbols or, on some inputs, runs for hours. So the
    decoder compares each fingerprint before it decodes: a file coded with other tables or indexes is refused
    (TABLES_MESSAGE, INDEX_MESSAGE) before any wrong decoding. With the same tables and indexes, range decoding
    is exact integer arithmetic.
    """
    METRICS = ("loss", "bpp", "mse")
    range_coded = True  # False: eval, compress and decompress are another script's (bb_sga.py)

    def __init__(self, lmbda, **kwargs):
        super().__init__(**kwargs)
        self.lmbda = float(lmbda)
        self.coders = self.estimators = None  # make_coders: the range coders, and the models estimate uses

    def entropy_models(self, compression):
        """(z's model, y's model); with `compression`, the range-coding tables are built from the weights."""
        return (tfc.ContinuousBatchedEntropyModel(self.hyperprior, coding_rank=3, compression=compression,
                                                  stateless=True), y_entropy_model(compression))

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

    def make_coders(self, tables=None):
        """Builds the range-coding tables from the current weights (call after restoring a checkpoint), or, given
        `tables` (what `coding_tables` returned, saved with the run), codes with those without building any.

        z's quantization offsets come from an iterative search for its prior's medians, whose last digits change
        with the CPU's kernels (oneDNN on or off); recomputed by the decoder, they move z's grid by ~1e-6 and with
        it every parameter of y. The saved tables make encoder and decoder share them exactly, and spare every
        later command the search (~1 s on 2 cores)."""
        if tables is None:
            self.coders = self.entropy_models(compression=True)
            tables = self.coding_tables()
        prior_shape = self.hyperprior.batch_shape
        # z's offsets as a tensor: tfc leaves out all-zero offsets, and without them it would search again.
        offset = tf.constant(tables["z_offset"]) if "z_offset" in tables else tf.zeros(prior_shape)
        kw = dict(coding_rank=3, stateless=True, quantization_offset=offset)
        # z is coded by a model of the saved tables alone (no prior: nothing to compute at start-up) and
        # estimated by the prior's model on the same grid. y's tables (a few normals) are cheap: its saved ones
        # replace them through _init_compression, tfc's own SavedModel path, and the same model estimates y.
        em_z = tfc.ContinuousBatchedEntropyModel(prior_shape=prior_shape, cdf=tf.constant(tables["z_cdf"]),
                                                 cdf_offset=tf.constant(tables["z_cdf_offset"]), compression=True,
                                                 **kw)
        em_y = y_entropy_model(compression=True)
        em_y._init_compression(tf.constant(tables["y_cdf"]), tf.constant(tables["y_cdf_offset"]), None)
        self.coders = em_z, em_y
        self.estimators = tfc.ContinuousBatchedEntropyModel(self.hyperprior, compression=False, **kw), em_y
        digest = hashlib.sha256()
        for name, array in sorted(self.coding_tables().items()):
            digest.update(name.encode() + np.ascontiguousarray(array).tobytes())
        self.tables_check = digest.digest()[:TABLES_BYTES]

    def coding_tables(self):
        """The range-coding tables of `make_coders`, as numpy arrays (saved with the run)."""
        em_z, em_y = self.coders
        tables = dict(z_cdf=em_z.cdf.numpy(), z_cdf_offset=em_z.cdf_offset.numpy(), y_cdf=em_y.cdf.numpy(),
                      y_cdf_offset=em_y.cdf_offset.numpy())
        if em_z.quantization_offset is not None:
            tables["z_offset"] = em_z.quantization_offset.numpy()
        return tables

    def _padded(self, image):
        return images.pad_to_multiple(image[None], self.pad_multiple)

    def coded_strings(self, latents):
        """The strings [batch, n] coding latents, the last of each image its check."""
        strings, indexes = self.encode_latents(latents, self.coders)
        tables = tf.fill(tf.shape(strings[0]), self.tables_check)
        return tf.stack(strings + [tf.strings.join([tables] + [index_check(i) for i in indexes])], axis=1)

    def decode_y(self, em_y, strings, index, mean, k, check):
        """y's k-th string decoded, once its scale indexes are found to be the encoder's (else the file is
        refused: range decoding with other indexes can run for hours)."""
        expected = tf.strings.substr(check, TABLES_BYTES + INDEX_BYTES * k, INDEX_BYTES)
        same = tf.equal(index_check(index)[0], expected)
        with tf.control_dependencies([tf.debugging.Assert(same, [INDEX_MESSAGE])]):
            return em_y.decompress(strings, index, loc=mean)

    @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.float32)])
    def compress(self, image):
        """One image [H, W, 3] on [0, 255] (uint8 values, or continuous for a GAN source) -> 1-d string tensor."""
        return self.coded_strings(self.latents(self._padded(image)))[0]

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string), tf.TensorSpec([2], tf.int32)])
    def decompress(self, strings, shape):
        """Strings and the image's [H, W] -> the float reconstruction [H, W, 3] (to_uint8 makes the image)."""
        m = self.pad_multiple
        padded = (shape + m - 1) // m * m
        check = strings[-1]
        # The asserts take a scalar condition: comparing the strings themselves would print their bytes, which TF's
        # error message cannot hold.
        same = tf.equal(tf.strings.substr(check, 0, TABLES_BYTES), self.tables_check)
        with tf.control_dependencies([tf.debugging.Assert(same, [TABLES_MESSAGE])]):
            x_hat = self.decode(strings[:-1], padded, self.coders, check)
        return x_hat[0, :shape[0], :shape[1], :]

    def compress_latents(self, latents):
        """The strings [batch, n] coding latents, e.g. refined by sga.py, for `pack`."""
        return self._compress_latents(*latents)

    @tf.function(reduce_retracing=True)
    def _compress_latents(self, *latents):
        return self.coded_strings(list(latents))

    @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.float32)])
    def estimate(self, image):
        """The quantized reconstruction as floats [H, W, 3] and the model's estimated bits for one image."""
        x_hat, bits = self.forward(self._padded(image), self.estimators, training=False)
        shape = tf.shape(image)
        return x_hat[0, :shape[0], :shape[1], :], tf.reduce_sum(bits)


# A file's last string, the check: the first TABLES_BYTES bytes of a SHA-256 of the range-coding tables, then
# for each y string the first INDEX_BYTES bytes of the FarmHash fingerprint of its scale indexes as int32
# (tf.fingerprint gives the same bytes on every platform). A mismatch passes unnoticed with probability 2^-32 for
# the tables and 2^-16 for one string's indexes: few bytes, as ms2020 has one per slice.
TABLES_BYTES, INDEX_BYTES = 4, 2
# No quote marks in these: TF's error message escapes them.
TABLES_MESSAGE = ("the range-coding tables differ from the encoder ones (a copy of the run whose coding tables "
                  "were built apart from the encoder ones)")
INDEX_MESSAGE = ("this decoder computed other scale indexes than the encoder did (floating-point differences "
                 "between their machines, kernels or devices)")
_BYTES = [bytes([i]) for i in range(256)]


def index_check(index):
    """The INDEX_BYTES-byte check string [batch] of scale indexes [batch, ...], as the entropy model clips
    and rounds them."""
    index = tf.cast(tf.round(tf.clip_by_value(index, 0.0, NUM_SCALES - 1.0)), tf.int32)
    digest = tf.fingerprint(tf.reshape(index, [tf.shape(index)[0], -1]))[:, :INDEX_BYTES]
    return tf.strings.reduce_join(tf.gather(tf.constant(_BYTES), tf.cast(digest, tf.int32)), axis=1)


# The floor on a latent's probability, as tfc's entropy models bound their likelihoods: it keeps the bits of a
# softened value far in a tail finite, and its gradient still points towards higher probability.
LIKELIHOOD_BOUND = 1e-9


def bits(prob):
    """Bits per image [batch] of per-element probabilities [batch, h, w, c]."""
    return -tf.reduce_sum(tf.math.log(tfc.lower_bound(prob, LIKELIHOOD_BOUND)), axis=(1, 2, 3)) / np.log(2.0)
