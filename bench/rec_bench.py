"""Speed of the relative entropy coder (utils/rec.py) on one synthetic layer: encode and decode seconds against the
cost of drawing the encoder's candidates, the share of encoding the draws take (on their own thread), and the file
size against the KL.

    python bench/rec_bench.py [--dims 100000] [--kl 20000] [--settings lossy,lossless] [--repeats 1]

The layer: prior N(m, s^2), posterior with sig = 0.8 s and means shifted so that the KL is --kl nats (the
default is the size and KL of one autoregressive slice of the bottom level of a Kodak image coded at ~1 bpp by
the CPU-recipe ResNet-VAE). Settings:
`lossy` is the paper's lossy one (B = 10, 1 + eps = 1, omega = 3), `lossless` its lossless one (B = 20,
1 + eps = 1.2, omega = 3); `lossy-fit` and `lossless-fit` choose the split's exponent per block (fit_split);
blocks of --block_size dimensions. The baseline, measured in the same run, is the
random-number floor: drawing as many float32 normals as the encoder draws, in one op per million. Ratios to it
survive a noisy shared machine better than seconds do.
"""
import argparse
import math
import os
import time

from harness import timed  # first: imports utils before TF

import numpy as np
import tensorflow as tf

from utils import rec
from utils.cli import positive_float

SETTINGS = {"lossy": dict(n_beams=10, extra_samples=1.0), "lossless": dict(n_beams=20, extra_samples=1.2)}
SETTINGS.update({f"{k}-fit": dict(v, fit_split=True) for k, v in list(SETTINGS.items())})


def synthetic_layer(dims, kl, seed=0):
    rng = np.random.default_rng(seed)
    m, s = rng.normal(size=dims), np.exp(rng.normal(0, 0.3, dims))
    sig = 0.8 * s
    kl_scale = dims * (-math.log(0.8) + 0.32 - 0.5)
    if kl <= kl_scale:
        raise SystemExit(f"--kl must exceed {kl_scale:.0f} nats for {dims} dimensions")
    g = rng.normal(size=dims)
    shift = math.sqrt(2 * (kl - kl_scale) / np.sum(g ** 2))
    return m + s * shift * g, sig, m, s


def rng_floor(count):
    """Seconds to draw `count` float32 normals, a million per Philox op."""
    chunk = 1 << 20
    key, counter = tf.constant([1], tf.uint64), tf.constant([0, 0], tf.uint64)
    t = time.perf_counter()
    for i in range(0, count, chunk):
        tf.raw_ops.StatelessRandomNormalV2(shape=[min(chunk, count - i)], key=key, counter=counter, alg=1).numpy()
    return time.perf_counter() - t


class DrawTimer:
    """Wraps rec._draw (the candidates of one step of a group of blocks, on the coder's worker thread) to count
    the normals drawn and their seconds."""

    def __init__(self):
        self.inner, self.seconds, self.draws = rec._draw, 0.0, 0

    def __call__(self, *args):
        t = time.perf_counter()
        noise = self.inner(*args)
        self.seconds += time.perf_counter() - t
        self.draws += noise.size
        return noise


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dims", type=int, default=100000)
    p.add_argument("--kl", type=positive_float, default=20000.0, help="the layer's KL, nats")
    p.add_argument("--block_size", type=int, default=1000)
    p.add_argument("--settings", default="lossy,lossless", help=f"comma-separated, of {', '.join(SETTINGS)}")
    p.add_argument("--repeats", type=int, default=1, help="timed encodes and decodes per setting")
    args = p.parse_args()
    mu, sig, m, s = synthetic_layer(args.dims, args.kl)
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; layer: "
          f"{args.dims} dims, KL {args.kl:.0f} nats, blocks of {args.block_size}")
    for name in args.settings.split(","):
        config = rec.Config(block_size=args.block_size, omega=3.0, **SETTINGS[name])
        timer = DrawTimer()
        rec._draw = timer
        try:
            rec.encode_layer(mu[:50], sig[:50], m[:50], s[:50], seed=1, layer=0, config=config)  # traces
            timer.seconds, timer.draws = 0.0, 0
            result = {}

            def encode():
                result["code"], result["z"] = rec.encode_layer(mu, sig, m, s, seed=1, layer=0, config=config)

            enc = timed(encode, args.repeats)
            share, draws = timer.seconds / (enc * (args.repeats + 1)), timer.draws // (args.repeats + 1)
        finally:
            rec._draw = timer.inner
        code = result["code"]
        data = rec.pack([code], seed=1)
        dec = timed(lambda: rec.Reader(data).decode_layer(m, s, layer=0), args.repeats)
        assert np.array_equal(rec.Reader(data).decode_layer(m, s, layer=0), result["z"])
        floor = rng_floor(draws)
        bits, ideal = 8 * len(data), code.kl * config.extra_samples / math.log(2)
        steps = sum(len(i) for i in code.indices)
        print(f"{name:12s} B={config.n_beams:2d} 1+eps={config.extra_samples} n={config.n_candidates} K={steps} | "
              f"encode {enc:7.2f} s, decode {dec:6.2f} s, RNG floor {floor:6.2f} s for {draws / 1e6:.0f}M normals | "
              f"encode/floor {enc / floor:5.2f}, decode/floor {dec / floor:5.2f}, drawing {100 * share:4.1f}% "
              f"of encoding (on its own thread) | {len(data)} bytes = {bits / ideal:.4f} x KL(1+eps)/ln2, "
              f"log q/p {code.log_ratio:.0f} nats (KL {code.kl:.0f})", flush=True)


if __name__ == "__main__":
    main()
