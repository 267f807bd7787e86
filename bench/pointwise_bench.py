"""Cost of the strided 1x1 convolution's two forms, forward and backward: a subsample then a unit-stride 1x1
convolution (what `utils.layers.conv` computes below 16 input channels: StridedPointwiseConv), against tfc's own
strided layer (what it computes from 16 channels on).

    python bench/pointwise_bench.py [--steps 50]

tfc's form is timed only where oneDNN's strided 1x1 weight gradient is safe, at 16 input channels or more (below
16 it writes past its buffer on AVX-512 CPUs: docs/resnet_vae.md); the rows with 3 channels (the first encoder
block's shortcut) time the subsample alone. Each row is one ResNet-VAE shortcut: input channels, side, batch,
output channels. Printed: milliseconds per gradient step of each, and subsample / tfc (above 1: the subsample is
slower).
"""
import argparse

from harness import timed  # first: imports utils before TF

import tensorflow as tf
import tensorflow_compression as tfc

from utils import layers

SHORTCUTS = [  # (input channels, input side, batch, output channels)
    (3, 256, 8, 256),    # the paper's first encoder block, 256 px crops
    (256, 128, 8, 256),  # its second
    (3, 128, 8, 64),     # the CPU recipe's first
    (64, 64, 8, 64),     # its second
    (32, 256, 4, 32),
]


class Subsampled(layers.StridedPointwiseConv):
    """The subsample form at any channel count."""

    def call(self, inputs):
        s_h, s_w = self.strides_down
        return tf.nn.bias_add(tf.nn.conv2d(inputs[:, ::s_h, ::s_w, :], self.kernel, 1, "VALID"), self.bias)


def step_ms(layer, x, steps):
    layer(x)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(layer(x)))
        return tape.gradient(loss, layer.trainable_variables)

    return 1000 * timed(lambda: [g.numpy() for g in step()], steps)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=50, help="timed gradient steps per layer (after one tracing step)")
    args = p.parse_args()
    print(f"{'in':>4} {'side':>5} {'batch':>5} {'out':>4} | {'sub ms':>8} {'tfc ms':>8} {'sub/tfc':>8}")
    for cin, side, batch, cout in SHORTCUTS:
        x = tf.random.normal([batch, side, side, cin], seed=1)
        sub = step_ms(Subsampled(cout, (1, 1), corr=True, strides_down=2, padding="same_zeros", use_bias=True,
                                  kernel_parameter="variable"), x, args.steps)
        if cin < 16:
            print(f"{cin:4d} {side:5d} {batch:5d} {cout:4d} | {sub:8.2f} {'unsafe':>8} {'':>8}")
            continue
        theirs = step_ms(tfc.SignalConv2D(cout, (1, 1), corr=True, strides_down=2, padding="same_zeros",
                                          use_bias=True, kernel_parameter="variable"), x, args.steps)
        print(f"{cin:4d} {side:5d} {batch:5d} {cout:4d} | {sub:8.2f} {theirs:8.2f} {sub / theirs:8.3f}")


if __name__ == "__main__":
    main()
