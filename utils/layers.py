"""The convolutions every image model is built from (tfc.SignalConv2D, as both reference implementations define
theirs), with the oneDNN workaround for strided 1x1 convolutions, and the parameter count the scripts report."""
import sys

import numpy as np
import tensorflow as tf
import tensorflow_compression as tfc


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


def count_params(model):
    """The number of trainable parameters (scalars) of a built model."""
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def report_params(model, name=None):
    """Prints the model's trainable-parameter count on one stderr line (every image script does at start-up)."""
    print(f"{name or type(model).__name__}: {count_params(model):,} trainable parameters", file=sys.stderr)
