"""Calibrates rdlb.py eval's 95% interval: how often an M-draw evaluation's interval covers E[xi].

Draws --num_draws values of (log C_k, mean -log u) from one trained model (default: the 2-d Gaussian at lambda = 10
with k = 1024, exhaustive ascent, held-out draws, as `rdlb.py eval` makes them), takes their pooled bound
    T = mean(-log u) - log mean(C_k)    (xi's mean at the optimal alpha = E[C_k], from all draws)
as E[xi], and forms --resamples evaluations of M draws each (without replacement) for every M in --num_evals. For
each interval method it prints how often the interval covers T, lies entirely above T (the failure that matters
for a lower bound) or entirely below it, its median width, and the point estimate's bias (mean - T) and median
offset. The Student-t interval on the xi draws (the former eval interval) is the baseline.

    .venv/bin/python bench/rdlb_coverage.py --ckpt <run folder or checkpoint> [--save draws.npz]
    .venv/bin/python bench/rdlb_coverage.py --draws draws.npz        # re-analyse saved draws (seconds)

Without --ckpt or --draws it first trains the paper's n = 2 recipe (200,200,200, --last_step steps) in a temporary
folder.
"""
import argparse
import math
import os
import tempfile
import time

import numpy as np

from harness import load_script

from utils import rd  # noqa: E402
from utils.cli import positive_float  # noqa: E402


def draw_from_model(ckpt, num_draws, batchsize, lamb, units, activation, seed):
    """num_draws (log C_k, mean -log u) pairs of held-out batches, as rdlb.py eval draws them."""
    import tensorflow as tf
    rdlb = load_script("rdlb")
    from utils import rdlb as engine
    args = rdlb.parse_args(["--dataset", "gaussian", "--data_dim", "2", "--units", units, "--activation", activation,
                            "--lamb", str(lamb), "--seed", str(seed), "eval", "--batchsize", str(batchsize)])
    source = rdlb.make_source("gaussian", 2)
    (prefix,) = rdlb.resolve_ckpts(ckpt)[-1:]
    bound = engine.DualBound(args, (2,), lamb)
    engine.restore(bound, prefix)
    draw, _ = rdlb.eval_draws(source)
    log_ck, nlu = np.zeros(num_draws), np.zeros(num_draws)
    t0 = time.time()
    for j in range(num_draws):
        lc, a, _, capped = bound.draw(tf.constant(draw(batchsize, [seed, j]), tf.float32))
        if capped.numpy():
            raise RuntimeError(f"draw {j} hit --y_steps; the draws would understate C_k")
        log_ck[j], nlu[j] = lc.numpy(), a.numpy()
        if (j + 1) % 50 == 0:
            print(f"  {j + 1}/{num_draws} draws, {time.time() - t0:.0f} s", flush=True)
    return log_ck, nlu, prefix


def train_paper_recipe(folder, lamb, last_step, units):
    rdlb = load_script("rdlb")
    rdlb.main(["--dataset", "gaussian", "--data_dim", "2", "--checkpoint_dir", folder, "--units", units,
               "--lamb", str(lamb), "train", "--num_Ck_samples", "2", "--batchsize", "1024", "--last_step",
               str(last_step), "--checkpoint_interval", str(last_step), "--y_init", "quick", "--y_quick_topn", "10",
               "--lr", "5e-4", "--lr_schedule"])
    return folder + "/rdlb-*"


def calibrate(log_ck, nlu, num_evals, resamples, seed):
    """{(method, M): figures} over `resamples` M-subsets of the draws."""
    target = float(nlu.mean() - (np.logaddexp.reduce(log_ck) - math.log(log_ck.size)))
    rng = np.random.default_rng(seed)
    out = {}
    for m in num_evals:
        rows = {}
        for _ in range(resamples):
            idx = rng.choice(log_ck.size, m, replace=False)
            lc, a = log_ck[idx], nlu[idx]
            xi, _ = rd.lb_xi(lc, a)
            point = xi.mean()
            t, ci = rd.mean_ci(xi), rd.lb_interval(lc, a)
            intervals = {"student-t on xi (old)": (t["lo"], t["hi"]), ci["method"]: (ci["lo"], ci["hi"])}
            for name, (lo, hi) in intervals.items():
                rows.setdefault(name, []).append((lo, hi, point))
        for name, v in rows.items():
            lo, hi, point = map(np.array, zip(*v))
            out[name, m] = dict(cover=np.mean((lo <= target) & (target <= hi)), above=np.mean(lo > target),
                                below=np.mean(hi < target), width=np.median(hi - lo),
                                bias=point.mean() - target, median_offset=np.median(point) - target)
    return target, out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", help="an rdlb run folder or checkpoint of the 2-d Gaussian (default: train one)")
    p.add_argument("--draws", help="an .npz saved by --save (log_Ck, neg_log_u): skip drawing")
    p.add_argument("--save", help="write the draws to this .npz")
    p.add_argument("--lamb", type=positive_float, default=10.0)
    p.add_argument("--units", default="200,200,200")
    p.add_argument("--activation", default="selu", help="the --ckpt model's")
    p.add_argument("--last_step", type=int, default=3000, help="training steps when no --ckpt is given")
    p.add_argument("--batchsize", type=int, default=1024, help="k")
    p.add_argument("--num_draws", type=int, default=400)
    p.add_argument("--num_evals", default="5,10,30", help="M values")
    p.add_argument("--resamples", type=int, default=4000)
    p.add_argument("--seed", type=int, default=1)
    b = p.parse_args()
    t0 = time.time()
    if b.draws:
        with np.load(b.draws) as f:
            log_ck, nlu, source = f["log_Ck"], f["neg_log_u"], b.draws
    else:
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = b.ckpt or train_paper_recipe(tmp, b.lamb, b.last_step, b.units)
            log_ck, nlu, source = draw_from_model(ckpt, b.num_draws, b.batchsize, b.lamb, b.units, b.activation,
                                                     b.seed)
        if b.save:
            np.savez(b.save, log_Ck=log_ck, neg_log_u=nlu)
    target, out = calibrate(log_ck, nlu, [int(m) for m in b.num_evals.split(",")], b.resamples, b.seed)
    analytic = rd.gaussian_rd_at_lambda(np.ones(2), b.lamb)["lagrangian"]
    c = np.exp(log_ck - log_ck.max())
    print(f"{log_ck.size} draws of C_k from {source} ({time.time() - t0:.0f} s, load average "
          f"{os.getloadavg()[0]:.1f}); E[xi] = {target:.4f} nats (analytic intercept {analytic:.4f}); "
          f"log C_k sd {log_ck.std(ddof=1):.3f}, the largest C_k is {c.max() / c.sum():.1%} of their sum")
    print(f"{'interval':28s} {'M':>3s} {'covers':>7s} {'above':>6s} {'below':>6s} {'width':>7s} "
          f"{'width/t':>7s} {'bias':>8s} {'median':>8s}")
    for (name, m), r in sorted(out.items(), key=lambda kv: (kv[0][1], kv[0][0] != "student-t on xi (old)")):
        base = out["student-t on xi (old)", m]["width"]
        print(f"{name:28s} {m:3d} {r['cover']:7.1%} {r['above']:6.1%} {r['below']:6.1%} {r['width']:7.4f} "
              f"{r['width'] / base:7.2f} {r['bias']:+8.4f} {r['median_offset']:+8.4f}")


if __name__ == "__main__":
    main()
