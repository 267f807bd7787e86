"""Speed of the image codecs: seconds per training step, compile seconds, and encode/decode seconds per Kodak
image.

    RDS_DATA_DIR=/path/to/data python bench/codec_bench.py [--steps 5] [--images 2] [--quick]

For mbt2018 and ms2020, at the paper's width and at the CPU recipe's width, it prints
- the number of trainable parameters;
- seconds per train step on random 256x256 crops, batch 8 (the paper's setting) and on the recipe's 128x128,
  batch 8, and the compile seconds of the first step (its time less a later step's);
- seconds to compress and to decompress one Kodak image (768x512), and the seconds of their first call's tracing
  (the same difference), with the eval forward pass (the model's
  quantized reconstruction, no range coding) timed alongside as the baseline, so the ratios survive noisy
  shared machines. Weights are freshly initialized: the speed of the transforms does not depend on them, and
  range coding is a small part of the time (see the ratios).
"""
import argparse
import os

from harness import first_and_timed, kodak_image, timed, train_step_seconds  # first: utils before TF

import tensorflow as tf

from utils.layers import count_params
from utils.image_models import MODELS


PAPER = {"mbt2018": dict(num_filters=192, latent_depth=None),
         "ms2020": dict(num_filters=192, latent_depth=320, hyperprior_depth=192, num_slices=10, max_support_slices=5)}
RECIPE = {"mbt2018": dict(num_filters=64, latent_depth=None),
          "ms2020": dict(num_filters=64, latent_depth=160, hyperprior_depth=64, num_slices=10, max_support_slices=5)}


def coding_speed(model, image, repeats):
    """((first call, seconds per later call) of compress, the same of decompress, seconds of the quantized
    forward pass) on one image; a first call traces the function."""
    model.make_coders()
    x = tf.constant(image, tf.float32)
    enc = first_and_timed(lambda: model.compress(x).numpy(), repeats)
    strings, shape = model.compress(x), tf.constant(image.shape[:2], tf.int32)
    dec = first_and_timed(lambda: model.decompress(strings, shape).numpy(), repeats)
    fwd = timed(lambda: model.estimate(x)[0].numpy(), repeats)
    return enc, dec, fwd


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=3, help="timed training steps per setting")
    p.add_argument("--images", type=int, default=1, help="timed encode/decode repeats")
    p.add_argument("--quick", action="store_true", help="recipe width only")
    args = p.parse_args()
    image, label = kodak_image()
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs; Kodak image: {label}")
    widths = [("recipe", RECIPE)] + ([] if args.quick else [("paper", PAPER)])
    for name in ("mbt2018", "ms2020"):
        cls = MODELS[name].model_class
        for label, table in widths:
            model = cls(lmbda=0.01, **table[name])
            model.build_weights()
            params = count_params(model)
            (c256, s256), (c128, s128) = (train_step_seconds(model, p, 8, args.steps) for p in (256, 128))
            (enc0, enc), (dec0, dec), fwd = coding_speed(model, image, args.images)
            print(f"{name:8s} {label:6s} {params:11,d} trainable params | train s/step: {s256:6.3f} (256px, batch 8)"
                  f" {s128:6.3f} (128px, batch 8), compile {c256 - s256:5.1f} s | Kodak image: encode {enc:6.2f} s,"
                  f" decode {dec:6.2f} s, tracing {enc0 - enc:4.1f} s + {dec0 - dec:4.1f} s, forward {fwd:6.2f} s "
                  f"(encode/forward {enc / fwd:4.2f}, decode/forward {dec / fwd:4.2f})", flush=True)


if __name__ == "__main__":
    main()
