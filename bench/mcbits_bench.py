"""Speed of mcbits.py's coders: images per second for encoding and decoding, per coder and number of particles.

Each coder codes the same binarized MNIST test images as one message and decodes it (checking every image).
The baseline, measured in the same run, is one plain forward pass per image (encoder, then decoder at the
posterior mean) through the same NumPy networks, image by image as a sequential coder must run them; each
coder's speed is also printed as a fraction of it, which survives a busy machine better than images/s.

  python bench/mcbits_bench.py                   # the released K=5 checkpoint, 1000 images; about 2 minutes
  python bench/mcbits_bench.py --weights W.npz --num_images 300 --configs bb_elbo:1,bb_is:50
"""
import argparse
import json
import os
import sys
import time

# The coding path's setting, as mcbits.py makes it: single-threaded BLAS, set before NumPy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import harness  # noqa: E402,F401  (the repository on sys.path)

import numpy as np  # noqa: E402

from utils import ans, mnist  # noqa: E402
from utils import mcbits  # noqa: E402  (the engine: Net, load_weights, Codec)
from utils.sources import data_dir  # noqa: E402

DEFAULT_WEIGHTS = "mcbits/train_bin_emnist_split=mnist_num=5.npz"


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", help=f"default: $RDS_DATA_DIR/{DEFAULT_WEIGHTS}")
    p.add_argument("--num_images", type=int, default=1000)
    p.add_argument("--configs", default="bb_elbo:1,bb_is:5,bb_cis:5,bb_is:50,bb_cis:50", help="coder:K,...")
    return p.parse_args(argv)


def images_per_second(fn, n):
    t = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t)


def main(argv):
    args = parse_args(argv)
    weights = args.weights or data_dir() / DEFAULT_WEIGHTS
    net = mcbits.Net(mcbits.load_weights(weights, 200, 50))
    x = mnist.test_images("mnist", args.num_images)
    n = len(x)

    def forward():
        for xi in x:
            mu, _ = net.encode(xi[None].astype(np.float64))
            net.logits(mu)

    baseline = images_per_second(forward, n)
    print(json.dumps({"baseline": "one forward pass per image", "images_per_s": baseline, "num_images": n,
                      "weights": str(weights)}))
    rows = []
    for config in args.configs.split(","):
        coder, k = config.split(":")
        codec = mcbits.Codec(net, coder, int(k))
        stack = ans.Stack.seeded(codec.max_pop_bits() + 64, seed=0)
        start = stack.bits

        def encode():
            for xi in x:
                codec.encode(stack, xi, codec.posterior(xi))

        enc = images_per_second(encode, n)
        net_bpd = (stack.bits - start) / x.size
        decoded = []

        def decode():
            for _ in range(n):
                decoded.append(codec.decode(stack)[0])

        dec = images_per_second(decode, n)
        if not np.array_equal(np.stack(decoded[::-1]), x):
            sys.exit(f"{config}: decoding failed")
        row = {"coder": coder, "num_particles": int(k), "encode_images_per_s": enc, "decode_images_per_s": dec,
               "encode_vs_forward": enc / baseline, "decode_vs_forward": dec / baseline, "net_bpd": net_bpd}
        rows.append(row)
        print(json.dumps(row))
    print(f"\n{'coder':10s} {'K':>3s} {'enc img/s':>10s} {'dec img/s':>10s} {'enc/fwd':>8s} {'dec/fwd':>8s}")
    for r in rows:
        print(f"{r['coder']:10s} {r['num_particles']:3d} {r['encode_images_per_s']:10.1f} "
              f"{r['decode_images_per_s']:10.1f} {r['encode_vs_forward']:8.3f} {r['decode_vs_forward']:8.3f}")
    print(f"baseline: {baseline:.1f} forward passes per second")


if __name__ == "__main__":
    main(sys.argv[1:])
