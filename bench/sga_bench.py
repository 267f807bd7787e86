"""Speed of encoder-side inference (sga.py): seconds per SGA iteration per megapixel.

    RDS_DATA_DIR=/path/to/data python bench/sga_bench.py [--steps 5] [--quick]

For mbt2018 at the CPU recipe's width (64 filters) and the paper's (192; not with --quick), on the first Kodak
image (768x512, one image) and on six 256x256 center crops of it optimized as one batch (as sga.py batches
same-shape images), it prints the seconds per SGA iteration (a relaxed forward pass, its gradient and an Adam
step on y and z) per megapixel, with the amortized encoder's forward pass (the model's quantized
reconstruction and rate, no gradient) timed in the same run as the baseline, so the ratio survives a noisy
shared machine. Fresh weights: the speed does not depend on them.
"""
import argparse
import os

from harness import kodak_image, timed  # first: imports utils before TF

import numpy as np
import tensorflow as tf

from utils import sga
from utils.image_models import MODELS


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=5, help="timed iterations per setting")
    p.add_argument("--quick", action="store_true", help="recipe width only")
    args = p.parse_args()
    image, label = kodak_image()
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs; image: {label}")
    top, left = (image.shape[0] - 256) // 2, (image.shape[1] - 256) // 2
    crops = np.repeat(image[None, top:top + 256, left:left + 256], 6, 0)
    for width in [64] + ([] if args.quick else [192]):
        model = MODELS["mbt2018"].model_class(lmbda=0.01, num_filters=width, latent_depth=None)
        model.build_weights()
        model.make_coders()
        for name, x in [("kodak 768x512", image[None]), ("6 crops 256x256", crops)]:
            opt = sga.LatentOptimizer(model, x.astype(np.float32), 0.01, "sga", 0.005, seed=0)
            megapixels = x.shape[0] * x.shape[1] * x.shape[2] / 1e6
            tau = tf.constant(0.5)
            step = timed(lambda: opt.step(tau).numpy(), args.steps) / megapixels
            forward = timed(lambda: opt.rounded(opt.latents)[0].numpy(), args.steps) / megapixels
            print(f"mbt2018 width {width:3d} {name:16s}: {step:7.3f} s per SGA iteration per megapixel; "
                  f"forward {forward:7.3f} s/MP; ratio {step / forward:5.2f}; 2000 iterations of one Kodak "
                  f"image: {2000 * step * 0.393:6.0f} s")


if __name__ == "__main__":
    main()
