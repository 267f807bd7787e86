"""Times one rdlb training step: the batched, compiled inner optimization vs. a start-by-start Python loop.

The paper's Gaussian n = 2 recipe: k = 1024, M = 2 draws of C_k, quick starts from the top 10 batch points,
MLP 200,200,200. Both forms run the same ascent (same starts, updates and stopping rule, so the same C_k) and the
same compiled gradient step; only the inner optimization differs. Prints medians over repetitions and their ratio,
for the whole step and for the inner optimization alone.

    .venv/bin/python bench/rdlb_bench.py [--lamb 10] [--reps 7]
"""
import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils import startup  # noqa: E402,F401  (before TensorFlow: it filters its start-up lines)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import rdlb  # noqa: E402  (the command line: parse_args)
from utils import rdlb as engine  # noqa: E402  (the algorithm)
from utils.cli import positive_float  # noqa: E402


def loop_log_sup(x, a, beta, topn, y_lr, y_tol, y_steps):
    """The baseline: the same ascent as utils.rdlb.log_sup, one start at a time and one step at a time, in eager
    Python."""
    k = x.shape[0]
    center = tf.reduce_mean(x, 0)
    x = x - center
    b = a - beta * tf.reduce_sum(tf.square(x), 1)
    scores = engine._kernel_sums(x, x, b, beta, with_target=False)  # scores of all batch points, as batched
    best_lse, best_y, total_steps = -math.inf, None, 0
    for s in tf.math.top_k(scores, k=min(topn, k)).indices.numpy():
        y = x[s:s + 1]
        lse, target = engine._kernel_sums(y, x, b, beta)
        lse = float(lse[0])
        for _ in range(y_steps):
            total_steps += 1
            y_new = y + y_lr * (target - y)
            lse_new, target_new = engine._kernel_sums(y_new, x, b, beta)
            lse_new = float(lse_new[0])
            if not lse_new > lse:
                break
            gain = math.expm1(lse_new - lse)
            y, lse, target = y_new, lse_new, target_new
            if not gain > y_tol:
                break
        if lse > best_lse:
            best_lse, best_y = lse, y[0]
    return best_y + center, total_steps


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lamb", type=positive_float, default=10.0)
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--seed", type=int, default=0)
    b = p.parse_args()
    n, k, m = 2, 1024, 2
    args = rdlb.parse_args(["--dataset", "gaussian", "--data_dim", str(n), "--units", "200,200,200",
                            "--lamb", str(b.lamb), "train", "--batchsize", str(k), "--num_Ck_samples", str(m),
                            "--y_init", "quick", "--y_quick_topn", "10"])
    tf.keras.utils.set_random_seed(b.seed)
    batched = engine.DualBound(args, (n,), b.lamb)
    looped = engine.DualBound(args, (n,), b.lamb)
    looped.net.set_weights(batched.net.get_weights())
    opt_b, opt_l = tf.keras.optimizers.Adam(args.lr), tf.keras.optimizers.Adam(args.lr)
    batched_step = engine.make_train_step(batched, opt_b, m, engine.LaggingAlpha(args.beta, args.log_E_Ck_max_delta),
                                          tf.distribute.get_strategy())
    alpha_l = engine.LaggingAlpha(args.beta, args.log_E_Ck_max_delta)
    beta = b.lamb / n

    @tf.function
    def grad_step(x, ys):  # the baseline's gradient step (the same loss), given the maximizers found by the loop
        with tf.GradientTape() as tape:
            a = -tf.reshape(looped.log_u(x), [m, k])
            xf = tf.reshape(x, [m, k, n])
            log_ck = tf.stack([engine.log_mean_kernel(xf[j], a[j], ys[j], beta) for j in range(m)])
            log_mean_ck = tf.reduce_logsumexp(log_ck) - math.log(m)
            loss, log_alpha, clipped, slope = alpha_l.loss(tf.stop_gradient(tf.reduce_mean(a)),
                                                           tf.stop_gradient(log_mean_ck))
            surrogate = slope * log_mean_ck - tf.reduce_mean(a)  # the loss's gradient (see utils.rdlb.make_train_step)
        grads = tape.gradient(surrogate, looped.net.trainable_variables)
        opt_l.apply_gradients(zip(grads, looped.net.trainable_variables))
        alpha_l.update(log_alpha, clipped)
        return -loss, tf.reduce_logsumexp(log_ck) - math.log(m)

    def looped_step(x):
        a = -tf.reshape(looped.log_u(x), [m, k])
        t0 = time.perf_counter()
        found = [loop_log_sup(x[j * k:(j + 1) * k], a[j], beta, args.y_quick_topn, args.y_lr, args.y_tol,
                              args.y_steps) for j in range(m)]
        inner = time.perf_counter() - t0
        objective, log_ck = grad_step(x, tf.stack([y for y, _ in found]))
        return objective, log_ck, sum(s for _, s in found), inner

    @tf.function
    def batched_sups(x, a):  # the batched inner optimization alone, as inside batched_step
        xf = tf.reshape(x, [m, k, n])
        return tf.stack([engine.log_sup(xf[j], a[j], beta, args.y_quick_topn, **batched.sup_kw)[0] for j in range(m)])

    rng = np.random.default_rng(b.seed)
    times_b, times_l, inner_b, inner_l, diffs = [], [], [], [], []
    for rep in range(b.reps + 1):  # rep 0 compiles and warms up
        x = tf.constant(rng.standard_normal((m * k, n)), tf.float32)
        looped.net.set_weights(batched.net.get_weights())  # both forms start each step from the same network
        a = -tf.reshape(batched.log_u(x), [m, k])
        t0 = time.perf_counter()
        batched_sups(x, a).numpy()
        t_inner = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = batched_step(x)
        obj_b, lck_b = float(out["objective"]), float(out["log_mean_Ck"])
        t1 = time.perf_counter()
        obj_l, lck_l, loop_steps, loop_inner = looped_step(x)
        obj_l = float(obj_l)
        t2 = time.perf_counter()
        if rep:
            times_b.append(t1 - t0)
            times_l.append(t2 - t1)
            inner_b.append(t_inner)
            inner_l.append(loop_inner)
            diffs.append(max(abs(obj_b - obj_l), abs(float(lck_b) - float(lck_l))))
            print(f"rep {rep}: batched {1e3 * (t1 - t0):.1f} ms, loop {1e3 * (t2 - t1):.1f} ms "
                  f"({loop_steps} ascent steps over {m * args.y_quick_topn} starts), |diff| {diffs[-1]:.2e}")
    tb, tl = statistics.median(times_b), statistics.median(times_l)
    print(f"gaussian n={n} lamb={b.lamb:g} k={k} M={m} quick top-{args.y_quick_topn} mlp 200,200,200, "
          f"{b.reps} reps, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    print(f"median step: batched {1e3 * tb:.1f} ms, python loop {1e3 * tl:.1f} ms, ratio {tl / tb:.1f}x; "
          f"max |objective or log C_k difference| {max(diffs):.1e}")
    ib, il = statistics.median(inner_b), statistics.median(inner_l)
    print(f"median inner optimization alone (both draws): batched {1e3 * ib:.1f} ms, python loop {1e3 * il:.1f} ms, "
          f"ratio {il / ib:.1f}x")


if __name__ == "__main__":
    main()
