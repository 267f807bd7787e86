"""Channel-wise autoregressive image codec (Minnen & Singh, ICIP 2020), with latent residual prediction.

    x -> g_a -> y -> h_a -> z                       z is coded with a deep factorized prior
                       z_hat -> h_s^mu, h_s^sigma   two hyper-synthesis branches
    y is split along channels into slices y_1 .. y_K, coded in order: slice k is Gaussian(mu_k, sigma_k)
    convolved with U(-1/2, 1/2), where mu_k and sigma_k come from the hyper branches and the decoded slices
    before it (at most --max_support_slices of them). Latent residual prediction then adds
    0.5 tanh(LRP_k(support, y_hat_k)) to each decoded slice, undoing part of the quantization error.
    y_hat -> g_s -> x_hat

g_a and g_s are the GDN transforms shared with mbt2018 (utils/codec.py). Layers, widths, biases, activations
and kernel parameterizations follow the paper's code and tfc's models/ms2020.py (tfc.SignalConv2D throughout):
at the default widths h_a is 320 -> 256 -> 192 channels, each h_s 192 -> 256 -> 320 with ReLUs, each slice
network 224 -> 128 -> 32. Training codes the rate of noisy z and noisy slices, but feeds the rounded z to the
hyper-synthesis and the rounded slices to the slice networks and the synthesis (straight-through gradients),
as the paper does.

    python ms2020.py -V --checkpoint_dir ckpt --lambda 0.01 train --dataset bsds500 --epochs 100
    python ms2020.py --checkpoint_dir ckpt --lambda 0.01 eval --dataset kodak
    python ms2020.py --checkpoint_dir ckpt --lambda 0.01 compress kodim01.png kodim01.tfci
    python ms2020.py --checkpoint_dir ckpt --lambda 0.01 decompress kodim01.tfci kodim01-decoded.png
"""
import utils  # noqa: F401  (before TensorFlow: sets its C++ log level)
import functools

import tensorflow as tf
import tensorflow_compression as tfc

from utils import codec
from utils.cli import InputError, positive_int, run


def hyper_analysis_transform(num_filters, latent_depth, hyperprior_depth):
    """320 -> 256 -> 192 channels at the paper's widths; the last layer has no bias."""
    return tf.keras.Sequential([
        codec.conv(latent_depth, 3, 1, tf.nn.relu),
        codec.conv(num_filters * 4 // 3, 5, 2, tf.nn.relu),
        codec.conv(hyperprior_depth, 5, 2, use_bias=False),
    ], name="hyper_analysis")


def hyper_synthesis_transform(num_filters, latent_depth, name):
    """192 -> 256 -> 320 channels, ReLU after every layer (the output is a feature map for the slice networks,
    not a mean or a scale), plain kernels."""
    deconv = functools.partial(codec.deconv, activation=tf.nn.relu, kernel_parameter="variable")
    return tf.keras.Sequential([
        deconv(num_filters, 5, 2),
        deconv(num_filters * 4 // 3, 5, 2),
        deconv(latent_depth, 3, 1),
    ], name=name)


def slice_transform(num_filters, slice_depth, name):
    """The small per-slice network (mean, scale index, or residual prediction): 224, 128 channels at 192."""
    deconv = functools.partial(codec.deconv, kernel_parameter="variable")
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
        self.analysis = codec.analysis_transform(num_filters, latent_depth)
        self.synthesis = codec.synthesis_transform(num_filters)
        self.hyper_analysis = hyper_analysis_transform(num_filters, latent_depth, hyperprior_depth)
        self.hyper_mean = hyper_synthesis_transform(num_filters, latent_depth, "hyper_mean")
        self.hyper_scale = hyper_synthesis_transform(num_filters, latent_depth, "hyper_scale")
        self.mean_nets = [slice_transform(num_filters, depth, f"mean_{k}") for k in range(num_slices)]
        self.scale_nets = [slice_transform(num_filters, depth, f"scale_{k}") for k in range(num_slices)]
        self.lrp_nets = [slice_transform(num_filters, depth, f"lrp_{k}") for k in range(num_slices)]
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

    def encode(self, x, ems):
        em_z, em_y = ems
        y = self.analysis(x / 255)
        y_slices = tf.split(y, self.num_slices, axis=-1)
        z = self.hyper_analysis(y)
        strings = [em_z.compress(z)]

        def code_slice(k, mean, index):
            strings.append(em_y.compress(y_slices[k], index, loc=mean))
            return tf.round(y_slices[k] - mean) + mean, 0.0

        self.slices(em_z.quantize(z), code_slice, training=False)
        return strings

    def decode(self, strings, shape, ems):
        em_z, em_y = ems
        z_hat = em_z.decompress(strings[:1], shape // self.pad_multiple)

        def code_slice(k, mean, index):
            return em_y.decompress(strings[k + 1:k + 2], index, loc=mean), 0.0

        y_hat, _ = self.slices(z_hat, code_slice, training=False)
        return self.synthesis(y_hat) * 255


ARCH_FLAGS = ("num_filters", "latent_depth", "hyperprior_depth", "num_slices",
              "max_support_slices")  # with --lambda, these name the run folder


def add_model_flags(parser):
    parser.add_argument("--num_filters", type=positive_int, default=192, help="channels of the transforms")
    parser.add_argument("--latent_depth", type=positive_int, default=320, help="channels of the latents y")
    parser.add_argument("--hyperprior_depth", type=positive_int, default=192, help="channels of the hyper-latents z")
    parser.add_argument("--num_slices", type=positive_int, default=10, help="slices of y coded in sequence")
    parser.add_argument("--max_support_slices", type=int, default=5,
                        help="decoded slices each slice is conditioned on (-1: all before it)")


def main(argv):
    codec.main(argv, "ms2020", ChannelwiseAutoregressive, add_model_flags, ARCH_FLAGS, __doc__.split("\n")[0])


if __name__ == "__main__":
    run(main)
