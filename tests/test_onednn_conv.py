"""The strided 1x1 convolution that TensorFlow 2.14's oneDNN mishandles on AVX-512 CPUs (utils.layers.
StridedPointwiseConv): the same outputs as tfc's layer, exact weight gradients, and trainings at the sizes that
crashed.

Without the fix, the subprocess checks below abort or segfault on AVX-512 machines: oneDNN's 1x1 backward-weights
kernel writes past its unit-stride copy of the input when the input has fewer than 16 channels. They run in
subprocesses so that a crash fails one test instead of killing the test worker.
"""
import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_compression as tfc

from conftest import ROOT, run_script
from utils import layers

# Run as a child process: N gradient steps of a 3-channel, stride-2 1x1 convolution at 64x64 (each step's weight
# gradient against the same contraction written as a matmul), then one line of JSON.
GRADIENT_CHILD = """
import json, sys
sys.path.insert(0, {root!r})
import numpy as np, tensorflow as tf
from utils import layers
layer = layers.conv(8, 1, 2, kernel_parameter="variable")
x = tf.constant(np.random.default_rng(0).normal(size=(1, 64, 64, 3)), tf.float32)
layer(x)

@tf.function
def step(x):
    with tf.GradientTape() as tape:
        y = layer(x)
        loss = tf.reduce_sum(tf.sin(y))
    dw, db = tape.gradient(loss, [layer.kernel_parameter, layer.bias_parameter])
    # d loss / d kernel[0, 0, i, o] = sum over batch and output pixels of x[:, ::2, ::2, i] * cos(y)[..., o]
    expected = tf.einsum("bhwi,bhwo->io", x[:, ::2, ::2, :], tf.cos(y))
    return tf.reduce_max(tf.abs(dw[0, 0] - expected)), tf.reduce_max(tf.abs(expected))

errors = [step(x + 0.01 * i) for i in range(50)]
print(json.dumps({{"error": max(float(e) for e, _ in errors), "scale": float(errors[0][1])}}))
"""


@pytest.mark.parametrize("shape", [(2, 8, 8, 3), (2, 7, 9, 5), (1, 64, 64, 3), (1, 16, 16, 32)])
def test_strided_pointwise_equals_tfc(shape):
    x = tf.constant(np.random.default_rng(1).normal(size=shape), tf.float32)
    ours = layers.conv(8, 1, 2, kernel_parameter="variable")
    theirs = tfc.SignalConv2D(8, (1, 1), corr=True, strides_down=2, padding="same_zeros", use_bias=True,
                              kernel_parameter="variable")
    ours(x), theirs(x)
    assert isinstance(ours, layers.StridedPointwiseConv)
    rng = np.random.default_rng(2)
    for a, b in zip(ours.weights, theirs.weights, strict=True):
        value = rng.normal(size=a.shape).astype(np.float32)
        a.assign(value), b.assign(value)
    # tfc's forward pass is safe (only the weight gradient is not): the two agree to the bit, odd sizes included.
    np.testing.assert_array_equal(ours(x).numpy(), theirs(x).numpy())
    # Other convolutions stay tfc's own layer.
    assert type(layers.conv(8, 3, 2)) is tfc.SignalConv2D and type(layers.conv(8, 1, 1)) is tfc.SignalConv2D


def test_strided_pointwise_gradient_is_exact_and_survives():
    proc = subprocess.run([sys.executable, "-c", GRADIENT_CHILD.format(root=str(ROOT))], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{proc.stderr[-2000:]}"
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    # float32 sums of 1,024 products of size ~1: a few ulps of the gradient's scale (~30)
    assert result["error"] <= 1e-5 * result["scale"], result


def test_resnet_vae_trains_at_64px(tmp_path):
    # The smallest script-level run that crashed: 8 filters (every shortcut below 16 channels), 64 px patches.
    images = np.random.default_rng(3).integers(0, 256, size=(4, 96, 96, 3), dtype=np.uint8)
    np.save(tmp_path / "imgs.npy", images)
    flags = ["--num_filters", "8", "--latent_channels", "4,8", "--lambda", "0.01", "--checkpoint_dir", tmp_path]
    run_script("resnet_vae.py", *flags, "train", "--dataset", tmp_path / "imgs.npy", "--patchsize", "64",
               "--batchsize", "1", "--epochs", "1", "--steps_per_epoch", "20",
               check=True)
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    (record,) = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert record["step"] == 20 and np.isfinite(record["loss"])
