"""Mean-scale hyperprior image codec (Minnen, Ballé & Toderici, NeurIPS 2018), without the autoregressive context.

    x -> g_a -> y -> h_a -> z                       z is coded with a deep factorized prior
                       z_hat -> h_s -> (mu, sigma)  y is coded as Gaussian(mu, sigma) convolved with U(-1/2, 1/2)
    y_hat -> g_s -> x_hat

The transforms are four 5x5 stride-2 convolutions with GDN (analysis) or IGDN (synthesis), shared with ms2020
in utils/codec.py; the hyper transforms use ReLUs, and the hyper-synthesis predicts both the mean and the scale
(as an index into a table of log-spaced scales) of every latent. Layers, widths, biases, activations and kernel
parameterizations are those of the paper's code (tfc.SignalConv2D throughout). Training replaces quantization
with additive uniform noise.

    python mbt2018.py -V --checkpoint_dir ckpt --lambda 0.01 train --dataset bsds500 --epochs 100
    python mbt2018.py --checkpoint_dir ckpt --lambda 0.01 eval --dataset kodak
    python mbt2018.py --checkpoint_dir ckpt --lambda 0.01 compress kodim01.png kodim01.tfci
    python mbt2018.py --checkpoint_dir ckpt --lambda 0.01 decompress kodim01.tfci kodim01-decoded.png
"""
import utils  # noqa: F401  (before TensorFlow: sets its C++ log level)
import functools

import tensorflow as tf
import tensorflow_compression as tfc

from utils import codec
from utils.cli import positive_int, run


def hyper_analysis_transform(num_filters):
    return tf.keras.Sequential([
        codec.conv(num_filters, 3, 1, tf.nn.relu),
        codec.conv(num_filters, 5, 2, tf.nn.relu),
        codec.conv(num_filters, 5, 2, use_bias=False),
    ], name="hyper_analysis")


def hyper_synthesis_transform(num_filters, latent_depth):
    """Outputs 2 * latent_depth channels: the means, then the log scale indexes. Plain (not DFT) kernels."""
    deconv = functools.partial(codec.deconv, kernel_parameter="variable")
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
        self.analysis = codec.analysis_transform(num_filters, latent_depth)
        self.synthesis = codec.synthesis_transform(num_filters)
        self.hyper_analysis = hyper_analysis_transform(num_filters)
        self.hyper_synthesis = hyper_synthesis_transform(num_filters, latent_depth)
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

    def encode(self, x, ems):
        em_z, em_y = ems
        y = self.analysis(x / 255)
        z = self.hyper_analysis(y)
        mean, index = self.hyper_params(em_z.quantize(z), training=False)
        return [em_z.compress(z), em_y.compress(y, index, loc=mean)]

    def decode(self, strings, shape, ems):
        em_z, em_y = ems
        z_hat = em_z.decompress(strings[:1], shape // self.pad_multiple)
        mean, index = self.hyper_params(z_hat, training=False)
        return self.synthesis(em_y.decompress(strings[1:2], index, loc=mean)) * 255


ARCH_FLAGS = ("num_filters", "latent_depth")  # with --lambda, these name the run folder


def add_model_flags(parser):
    parser.add_argument("--num_filters", type=positive_int, default=192,
                        help="channels of the transforms and of the hyper-latents")
    parser.add_argument("--latent_depth", type=positive_int,
                        help="channels of the latents (default: --num_filters; the paper uses 320 at high rates)")


def main(argv):
    codec.main(argv, "mbt2018", MeanScaleHyperprior, add_model_flags, ARCH_FLAGS, __doc__.split("\n")[0])


if __name__ == "__main__":
    run(main)
