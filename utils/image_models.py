"""The image codecs' networks: mbt2018's mean-scale hyperprior and ms2020's channel-wise autoregressive model.

They live here, not in their scripts, because several scripts use them: mbt2018.py / ms2020.py train, evaluate
and code with them, and sga.py / bb_sga.py refine their latents per image. Each model is a `codec.ImageCodec`
(its contract is there); `MODELS` names them with their architecture flags (utils/codec_flags.py). Layers,
widths, biases, activations and kernel parameterizations are those of the paper's code and tfc's models
(tfc.SignalConv2D throughout).
"""
import functools
from typing import NamedTuple

import numpy as np
import tensorflow as tf
import tensorflow_compression as tfc

from utils import codec, codec_flags, layers
from utils.cli import InputError


# ---- the GDN transforms both papers share -------------------------------------------------------

def analysis_transform(num_filters, latent_depth):
    """The GDN encoder both papers share: four 5x5 stride-2 convolutions, GDN between them (16x downsampling)."""
    return tf.keras.Sequential([
        layers.conv(num_filters, 5, 2, tfc.GDN()),
        layers.conv(num_filters, 5, 2, tfc.GDN()),
        layers.conv(num_filters, 5, 2, tfc.GDN()),
        layers.conv(latent_depth, 5, 2),
    ], name="analysis")


def synthesis_transform(num_filters):
    """Its mirror: four 5x5 stride-2 transposed convolutions with inverse GDN, to 3 channels."""
    return tf.keras.Sequential([
        layers.deconv(num_filters, 5, 2, tfc.GDN(inverse=True)),
        layers.deconv(num_filters, 5, 2, tfc.GDN(inverse=True)),
        layers.deconv(num_filters, 5, 2, tfc.GDN(inverse=True)),
        layers.deconv(3, 5, 2),
    ], name="synthesis")


# ---- mbt2018: mean-scale hyperprior (Minnen, Ballé & Toderici, NeurIPS 2018) --------------------

def mbt2018_hyper_analysis(num_filters, outputs=None):
    """`outputs` channels at the end (default num_filters; the bits-back model's posterior needs two per z)."""
    return tf.keras.Sequential([
        layers.conv(num_filters, 3, 1, tf.nn.relu),
        layers.conv(num_filters, 5, 2, tf.nn.relu),
        layers.conv(outputs or num_filters, 5, 2, use_bias=False),
    ], name="hyper_analysis")


def mbt2018_hyper_synthesis(num_filters, latent_depth):
    """Outputs 2 * latent_depth channels: the means, then the log scale indexes. Plain (not DFT) kernels."""
    deconv = functools.partial(layers.deconv, kernel_parameter="variable")
    return tf.keras.Sequential([
        deconv(num_filters, 5, 2, tf.nn.relu),
        deconv(num_filters * 3 // 2, 5, 2, tf.nn.relu),
        deconv(2 * latent_depth, 3, 1),
    ], name="hyper_synthesis")


class MeanScaleHyperprior(codec.ImageCodec):
    pad_multiple = 64  # 2^4 in the transforms, 2^2 more in the hyper transforms

    def __init__(self, lmbda, num_filters, latent_depth):
        super().__init__(lmbda)
        latent_depth = latent_depth or num_filters
        self.analysis = analysis_transform(num_filters, latent_depth)
        self.synthesis = synthesis_transform(num_filters)
        self.hyper_analysis = mbt2018_hyper_analysis(num_filters)
        self.hyper_synthesis = mbt2018_hyper_synthesis(num_filters, latent_depth)
        self.hyperprior = tfc.NoisyDeepFactorized(batch_shape=[num_filters])

    def hyper_params(self, z_hat, training):
        """Means and scale indexes of y. The index is the exponential of the network's output, as in the paper's
        code (the entropy model clips it to the table); the coder (and evaluation) use integer indexes."""
        mean, log_index = tf.split(self.hyper_synthesis(z_hat), 2, axis=-1)
        index = tf.exp(log_index)
        return mean, index if training else tf.round(index)

    def forward(self, x, ems, training):
        em_z, em_y = ems
        y = self.analysis(x / 255)
        z_tilde, z_bits = em_z(self.hyper_analysis(y), training=training)
        mean, index = self.hyper_params(z_tilde, training)
        y_tilde, y_bits = em_y(y, index, loc=mean, training=training)
        return self.synthesis(y_tilde) * 255, y_bits + z_bits

    def relaxed(self, latents, soften, hard=False):
        y, z = latents
        z_q, z_bits = self.relaxed_z(z, soften)
        mean, index = self.hyper_params(z_q, training=not hard)
        y_q = soften(y - mean) + mean
        return self.synthesis(y_q) * 255, self.y_bits(y_q, mean, index) + z_bits

    def encode_latents(self, latents, ems):
        em_z, em_y = ems
        y, z = latents
        mean, index = self.hyper_params(em_z.quantize(z), training=False)
        return [em_z.compress(z), em_y.compress(y, index, loc=mean)], [index]

    def decode(self, strings, shape, ems, check):
        em_z, em_y = ems
        z_hat = em_z.decompress(strings[:1], shape // self.pad_multiple)
        mean, index = self.hyper_params(z_hat, training=False)
        return self.synthesis(self.decode_y(em_y, strings[1:2], index, mean, 0, check)) * 255


class BitsBackHyperprior(codec.ImageCodec):
    """mbt2018 with a Gaussian hyper-posterior, for lossy bits-back coding (the NeurIPS 2020 paper's mbt2018_bb).

    Generative model: z ~ p(z) (a deep factorized density), y_hat ~ Gaussian(mu(z), sigma(z)) convolved with
    U(-1/2, 1/2) on the integers, x_hat = g_s(y_hat). Inference: y = g_a(x) rounded (uniform noise in
    training), and z ~ q(z | y_hat) = Gaussian(mean, exp(logvar / 2)) from the hyper-analysis of y_hat.
    The rate is the bits-back net rate, -log p(y_hat | z) - log p(z) + log q(z | y_hat), with one sample of z:
    bb_sga.py codes exactly this with an ANS stack (z discretized on a fine grid). Its y grid is the integers,
    not the predicted means, since those depend on z, which is drawn given y_hat. Not range coded: mbt2018.py
    trains it, bb_sga.py codes it.
    """
    pad_multiple = 64
    range_coded = False

    def __init__(self, lmbda, num_filters, latent_depth):
        super().__init__(lmbda)
        self.latent_depth = latent_depth = latent_depth or num_filters
        self.analysis = analysis_transform(num_filters, latent_depth)
        self.synthesis = synthesis_transform(num_filters)
        self.hyper_analysis = mbt2018_hyper_analysis(num_filters, outputs=2 * num_filters)
        self.hyper_synthesis = mbt2018_hyper_synthesis(num_filters, latent_depth)
        self.hyperprior = tfc.DeepFactorized(batch_shape=[num_filters])

    def entropy_models(self, compression):
        return None  # bits-back coding builds its own tables (bb_sga.py)

    def posterior(self, y_hat):
        """The mean and log-variance of q(z | y_hat)."""
        return tf.split(self.hyper_analysis(y_hat), 2, axis=-1)

    def conditional(self, z):
        """The mean and scale of p(y_hat | z); the scale is continuous (no index table: ANS takes any)."""
        mean, log_index = tf.split(self.hyper_synthesis(z), 2, axis=-1)
        index = tf.clip_by_value(tf.exp(log_index), 0.0, codec.NUM_SCALES - 1.0)
        return mean, codec.scale_fn(index)

    def sample_z(self, z_mean, z_logvar, noise):
        return z_mean + tf.exp(0.5 * z_logvar) * noise

    def net_bits(self, y_hat, z, z_mean, z_logvar):
        """-log2 p(y_hat | z) - log2 p(z) + log2 q(z | y_hat), per image."""
        mean, scale = self.conditional(z)
        y_bits = codec.bits(tfc.NoisyNormal(loc=mean, scale=scale).prob(y_hat))
        z_bits = codec.bits(self.hyperprior.prob(z))
        log_q = -0.5 * (z_logvar + np.log(2 * np.pi) + tf.square(z - z_mean) * tf.exp(-z_logvar))
        return y_bits + z_bits + tf.reduce_sum(log_q, axis=(1, 2, 3)) / np.log(2.0)

    def forward(self, x, ems, training):
        y = self.analysis(x / 255)
        y_hat = y + tf.random.uniform(tf.shape(y), -0.5, 0.5) if training else tf.round(y)
        z_mean, z_logvar = self.posterior(y_hat)
        z = self.sample_z(z_mean, z_logvar, tf.random.normal(tf.shape(z_mean)))
        return self.synthesis(y_hat) * 255, self.net_bits(y_hat, z, z_mean, z_logvar)

    def latents(self, x):
        """[y, mean and log-variance of q(z | y)]: what bb_sga.py optimizes."""
        y = self.analysis(x / 255)
        return [y, *self.posterior(y)]

    def relaxed(self, latents, soften, hard=False):
        """x_hat and the net bits with y softened on the integers and one draw of z from the given q."""
        y, z_mean, z_logvar = latents
        y_q = soften(y)
        z = self.sample_z(z_mean, z_logvar, tf.random.normal(tf.shape(z_mean)))
        return self.synthesis(y_q) * 255, self.net_bits(y_q, z, z_mean, z_logvar)


def make_mbt2018(lmbda, num_filters, latent_depth, hyper_posterior=None):
    """The mean-scale hyperprior, or with `hyper_posterior="gaussian"` its bits-back variant."""
    cls = BitsBackHyperprior if hyper_posterior == "gaussian" else MeanScaleHyperprior
    return cls(lmbda, num_filters, latent_depth)


# ---- ms2020: channel-wise autoregressive model (Minnen & Singh, ICIP 2020) ----------------------

def ms2020_hyper_analysis(num_filters, latent_depth, hyperprior_depth):
    """320 -> 256 -> 192 channels at the paper's widths; the last layer has no bias."""
    return tf.keras.Sequential([
        layers.conv(latent_depth, 3, 1, tf.nn.relu),
        layers.conv(num_filters * 4 // 3, 5, 2, tf.nn.relu),
        layers.conv(hyperprior_depth, 5, 2, use_bias=False),
    ], name="hyper_analysis")


def ms2020_hyper_synthesis(num_filters, latent_depth, name):
    """192 -> 256 -> 320 channels, ReLU after every layer (the output is a feature map for the slice networks,
    not a mean or a scale), plain kernels."""
    deconv = functools.partial(layers.deconv, activation=tf.nn.relu, kernel_parameter="variable")
    return tf.keras.Sequential([
        deconv(num_filters, 5, 2),
        deconv(num_filters * 4 // 3, 5, 2),
        deconv(latent_depth, 3, 1),
    ], name=name)


def ms2020_slice_transform(num_filters, slice_depth, name):
    """The small per-slice network (mean, scale index, or residual prediction): 224, 128 channels at 192."""
    deconv = functools.partial(layers.deconv, kernel_parameter="variable")
    return tf.keras.Sequential([
        deconv(num_filters * 7 // 6, 5, 1, tf.nn.relu),
        deconv(num_filters * 2 // 3, 5, 1, tf.nn.relu),
        deconv(slice_depth, 3, 1),
    ], name=name)


class ChannelwiseAutoregressive(codec.ImageCodec):
    pad_multiple = 64  # 2^4 in the transforms, 2^2 more in the hyper transforms

    def __init__(self, lmbda, num_filters, latent_depth, hyperprior_depth, num_slices, max_support_slices):
        super().__init__(lmbda)
        if latent_depth % num_slices:
            raise InputError(f"--latent_depth {latent_depth} must be a multiple of --num_slices {num_slices}")
        self.num_slices = num_slices
        self.max_support = num_slices if max_support_slices < 0 else max_support_slices
        depth = latent_depth // num_slices
        self.analysis = analysis_transform(num_filters, latent_depth)
        self.synthesis = synthesis_transform(num_filters)
        self.hyper_analysis = ms2020_hyper_analysis(num_filters, latent_depth, hyperprior_depth)
        self.hyper_mean = ms2020_hyper_synthesis(num_filters, latent_depth, "hyper_mean")
        self.hyper_scale = ms2020_hyper_synthesis(num_filters, latent_depth, "hyper_scale")
        self.mean_nets = [ms2020_slice_transform(num_filters, depth, f"mean_{k}") for k in range(num_slices)]
        self.scale_nets = [ms2020_slice_transform(num_filters, depth, f"scale_{k}") for k in range(num_slices)]
        self.lrp_nets = [ms2020_slice_transform(num_filters, depth, f"lrp_{k}") for k in range(num_slices)]
        self.hyperprior = tfc.NoisyDeepFactorized(batch_shape=[hyperprior_depth])

    def slices(self, z_hat, code_slice, training):
        """Runs the slices in order. `code_slice(k, mean, index)` codes or decodes slice k, returning the
        rounded slice (with straight-through gradient) and its bits; returns y_hat and the total bits."""
        mean_base, scale_base = self.hyper_mean(z_hat), self.hyper_scale(z_hat)
        decoded, bits = [], 0.0
        for k in range(self.num_slices):
            support = decoded[:self.max_support]
            mean_support = tf.concat([mean_base] + support, -1)
            mean = self.mean_nets[k](mean_support)
            index = self.scale_nets[k](tf.concat([scale_base] + support, -1))
            y_hat, slice_bits = code_slice(k, mean, index if training else tf.round(index))
            lrp = self.lrp_nets[k](tf.concat([mean_support, y_hat], -1))
            decoded.append(y_hat + 0.5 * tf.tanh(lrp))
            bits += slice_bits
        return tf.concat(decoded, -1), bits

    def forward(self, x, ems, training):
        em_z, em_y = ems
        y = self.analysis(x / 255)
        y_slices = tf.split(y, self.num_slices, axis=-1)
        z = self.hyper_analysis(y)
        _, z_bits = em_z(z, training=training)

        def code_slice(k, mean, index):
            _, bits = em_y(y_slices[k], index, loc=mean, training=training)
            return tfc.round_st(y_slices[k] - mean) + mean, bits

        # The rate of z is that of noisy z in training, but the hyper-synthesis sees the rounded z (with a
        # straight-through gradient) in training too, as in the paper's code and tfc's.
        y_hat, y_bits = self.slices(em_z.quantize(z), code_slice, training)
        return self.synthesis(y_hat) * 255, y_bits + z_bits

    def relaxed(self, latents, soften, hard=False):
        y, z = latents
        y_slices = tf.split(y, self.num_slices, axis=-1)
        z_q, z_bits = self.relaxed_z(z, soften)

        def code_slice(k, mean, index):
            y_q = soften(y_slices[k] - mean) + mean
            return y_q, self.y_bits(y_q, mean, index)

        y_hat, y_bits = self.slices(z_q, code_slice, training=not hard)
        return self.synthesis(y_hat) * 255, y_bits + z_bits

    def encode_latents(self, latents, ems):
        em_z, em_y = ems
        y, z = latents
        y_slices = tf.split(y, self.num_slices, axis=-1)
        strings, indexes = [em_z.compress(z)], []

        def code_slice(k, mean, index):
            strings.append(em_y.compress(y_slices[k], index, loc=mean))
            indexes.append(index)
            return tf.round(y_slices[k] - mean) + mean, 0.0

        self.slices(em_z.quantize(z), code_slice, training=False)
        return strings, indexes

    def decode(self, strings, shape, ems, check):
        em_z, em_y = ems
        z_hat = em_z.decompress(strings[:1], shape // self.pad_multiple)

        def code_slice(k, mean, index):
            return self.decode_y(em_y, strings[k + 1:k + 2], index, mean, k, check), 0.0

        y_hat, _ = self.slices(z_hat, code_slice, training=False)
        return self.synthesis(y_hat) * 255


class ModelSpec(NamedTuple):
    model_class: type
    arch_flags: tuple  # with --lambda, these name the run folder (and are the constructor's arguments)


MODELS = {name: ModelSpec(model_class, codec_flags.ARCHITECTURES[name][1])
          for name, model_class in (("mbt2018", make_mbt2018), ("ms2020", ChannelwiseAutoregressive))}
