"""Speed of resnet_vae.py: training steps/s and eval seconds per Kodak image, at the paper's width and the CPU recipe's.

    RDS_DATA_DIR=/path/to/data python bench/resnet_vae_bench.py [--steps 2] [--images 2] [--quick]

- train: one optimizer step (forward, KL, backward, Adam) on random crops, batch 8, timed over --steps steps after a
  compiling step: the paper's model (num_filters 256, latent_channels 4,8,16,32,64,128, AR prior on 4 levels with
  8 slices) on 256x256 crops, and the CPU recipe's (num_filters 64, latent_channels 4,8,16,32, AR prior on 2 levels
  with 4 slices) on 128x128 crops, which is also timed on 256x256 crops;
- eval: `estimate` on one Kodak image (768x512; random pixels without $RDS_DATA_DIR), the whole per-image cost of
  `eval` but the metrics.
The ratios to the recipe's 256x256 step, measured in the same run, survive the noise of a shared machine better than
the absolute figures. Weights are freshly initialized: speed does not depend on them. `--quick` skips the paper's
width (its steps take many seconds each on a CPU).
"""
import argparse

from harness import kodak_image, load_script, timed, train_step_seconds  # first: imports utils before TF

import tensorflow as tf

from utils import hvae
from utils.layers import count_params

LATENTS = "4,8,16,32,64,128"
CONFIGS = {  # name: model flags
    "paper": ["--num_filters", "256", "--latent_channels", LATENTS, "--ar_prior_levels", "4", "--ar_slices", "8"],
    "recipe": ["--num_filters", "64", "--latent_channels", "4,8,16,32", "--ar_prior_levels", "2", "--ar_slices", "4"],
}


def build(rv, flags):
    model = hvae.build(rv.parse_args([*flags, "--lambda", "0.01", "eval"]))
    model.build_weights()
    return model


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=2, help="timed training steps per setting (after one compiling step)")
    p.add_argument("--images", type=int, default=2, help="timed eval passes per model (after one compiling pass)")
    p.add_argument("--quick", action="store_true", help="skip the paper's width")
    args = p.parse_args()
    rv = load_script("resnet_vae")
    tf.keras.utils.set_random_seed(0)
    image, label = kodak_image()
    print(f"TensorFlow {tf.__version__}, {tf.config.threading.get_intra_op_parallelism_threads() or 'all'} "
          f"intra-op threads; Kodak image: {label}")
    names = ["recipe"] + ([] if args.quick else ["paper"])
    settings = {"recipe": [(128, 8), (256, 8)], "paper": [(256, 8)]}
    base = None
    for name in names:
        model = build(rv, CONFIGS[name])
        print(f"{name}: {' '.join(CONFIGS[name])} ({count_params(model):,} trainable parameters)")
        for patch, batch in settings[name]:
            _, s = train_step_seconds(model, patch, batch, args.steps)
            base = s if (name, patch) == ("recipe", 256) else base
            ratio = f", {s / base:.1f}x the recipe's 256x256 step" if base and (name, patch) != ("recipe", 256) else ""
            print(f"  train {patch}x{patch} batch {batch}: {1 / s:.3f} steps/s ({s:.2f} s/step over {args.steps} "
                  f"steps{ratio})")
        e = timed(lambda: model.estimate(tf.constant(image, tf.float32), model.lmbda)[1].numpy(), args.images)
        print(f"  eval one Kodak image ({label}): {e:.2f} s/image (over {args.images})")


if __name__ == "__main__":
    main()
