"""WGD (wgd.py): speed, and the figures of docs/wgd.md.

    python bench/wgd_bench.py speed                      # steps/s, k = m = 1000, 2-d and 16-d, vs numpy
    python bench/wgd_bench.py gaussian --dims 2,4        # gap to the analytic optimum, beside rdub_mlp.py
    python bench/wgd_bench.py sphere --dims 2,5,10       # the sphere source against a Monte Carlo I(X; Y)
    python bench/wgd_bench.py compare checkpoints/banana # WGD against BA, lambda by lambda, from results.jsonl

`speed` times the compiled TensorFlow step against the same step in numpy (float32, one process, same data):
the ratio is the figure, since the absolute rate depends on the machine's load.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from scipy.special import gammaln, ive

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from utils import jsonl  # noqa: E402
from utils.cli import int_list, positive_float  # noqa: E402

# The paper's lambda grid for the Gaussian source: lambda = n/2 * c, water level 1/c, c = 1, 3, 10, 30, 100.
PAPER_LAMBS = {n: [n / 2 * c for c in (1, 3, 10, 30, 100)] for n in (2, 4, 8, 16)}


def script(name, *args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, str(ROOT / name), *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{name} {' '.join(map(str, args))} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout


def wgd_sweep(samples, lambs, save_dir, *extra):
    script("wgd.py", "--samples", samples, "--lamb", *lambs, "--save_dir", save_dir, *extra)
    return {r["lamb"]: r for p in sorted(Path(save_dir).glob("wgd-*/results.jsonl")) for r in jsonl.read(p)[-1:]}


# ---- speed ----------------------------------------------------------------------------------------

def numpy_step(x, y, lamb, lr):
    """The same WGD step (uniform weights, SGD in mean-shift units) in numpy float32: the baseline."""
    rho = ((x * x).sum(1)[:, None] - 2 * x @ y.T + (y * y).sum(1)[None]) / x.shape[1]
    logits = -lamb * rho
    top = logits.max(1, keepdims=True)
    e = np.exp(logits - top)
    q = e / e.sum(1, keepdims=True)
    a = q * (len(y) / len(x))
    return y - lr * (a.sum(0)[:, None] * y - a.T @ x)


def speed(args):
    """Alternates blocks of TensorFlow and numpy steps (`--rounds` of each), so both see the same machine load;
    reports the median rate of each and their ratio."""
    from utils import wgd
    k = m = 1000
    for d in (2, 16):
        rng = np.random.default_rng(0)
        x = rng.standard_normal((100000, d)).astype(np.float32)
        y, log_w = wgd.init_particles(x, k, rng)
        lamb = 5.0 * d
        trainer = wgd.Trainer(x, y, log_w, optimizer="sgd", lr=0.2, decay="none", decay_factor=1.0, batchsize=m,
                              hybrid=False, seed=0)
        trainer.reset(lamb, args.steps)
        trainer.run(10)  # tracing
        y32 = y.astype(np.float32)
        tf_rates, np_rates = [], []
        for _ in range(args.rounds):
            start = time.perf_counter()
            trainer.run(args.steps)
            tf_rates.append(args.steps / (time.perf_counter() - start))
            start = time.perf_counter()
            for _ in range(args.numpy_steps):
                y32 = numpy_step(x[rng.integers(0, len(x), m)], y32, np.float32(lamb), np.float32(0.2))
            np_rates.append(args.numpy_steps / (time.perf_counter() - start))
        tf_rate, np_rate = np.median(tf_rates), np.median(np_rates)
        print(f"{d:2d}-d, k={k}, m={m}: TensorFlow {tf_rate:7.1f} steps/s, numpy {np_rate:7.1f} steps/s, "
              f"ratio {tf_rate / np_rate:.2f}x (medians of {args.rounds} alternating rounds)", flush=True)


# ---- the Gaussian ruler -------------------------------------------------------------------------------

def rdub(work, n, lamb, seed):
    """rdub_mlp.py at its README recipe (2000 steps of Adam 5e-3, batch 256, linear encoder, no decoder, gmm_1
    prior), in nats per sample so that lambda means what it means for wgd.py."""
    model = ["--dataset", "gaussian", "--data_dim", n, "--decoder_units", 0, "--prior_type", "gmm_1",
             "--encoder_activation", "none", "--nats", "--lambda", lamb, "--seed", seed,
             "--checkpoint_dir", work / f"rdub-n={n}"]
    script("rdub_mlp.py", *model, "train", "--epochs", 4, "--steps_per_epoch", 500, "--lr", 5e-3,
           "--batchsize", 256)
    result = json.loads(script("rdub_mlp.py", *model, "eval", "--num_samples", 100000).strip().splitlines()[-1])
    (log_path,) = [p for p in (work / f"rdub-n={n}").glob(f"*lmbda={float(lamb)!r}-*/log.jsonl")]
    return result, jsonl.read(log_path)[-1]["time"]


def gaussian(args):
    extra = " beta-VAE gap % | ± s.e. % | beta-VAE s |" if args.rdub else ""
    print("| n | lambda | L* | WGD gap % | ± s.e. % | WGD s |" + extra)
    print("| --- " * (6 + 3 * args.rdub) + "|")
    for n in args.dims:
        lambs = PAPER_LAMBS[n]
        found = wgd_sweep("gaussian", lambs, args.work / f"wgd-n={n}", "--data_dim", n, "--seed", args.seed,
                          *args.wgd_flags.split())
        for lamb in lambs:
            w = found[lamb]
            line = (f"| {n} | {lamb:g} | {w['analytic_lagrangian']:.4f} | {100 * w['gap']:+.2f} | "
                    f"{100 * w['lagrangian_stderr'] / w['analytic_lagrangian']:.2f} | {w['time']:.0f} |")
            if args.rdub:
                r, seconds = rdub(args.work, n, lamb, args.seed)
                line += f" {100 * r['gap']:+.2f} | {100 * r['loss_stderr'] / r['analytic_loss']:.2f} | {seconds:.0f} |"
            print(line, flush=True)


# ---- the sphere source --------------------------------------------------------------------------------

def sphere_samples(n, d, sigma2, rng):
    u = rng.standard_normal((n, d))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    return u + math.sqrt(sigma2) * rng.standard_normal((n, d))


def log_sphere_kernel_mean(x, sigma2):
    """log E_Y[exp(-||x - Y||^2 / (2 sigma2))] for Y uniform on the unit sphere, in closed form:
    E_Y exp(kappa e.Y) = Gamma(d/2) (kappa/2)^(1 - d/2) I_{d/2-1}(kappa), kappa = ||x|| / sigma2."""
    d = x.shape[1]
    r = np.linalg.norm(x, axis=1)
    kappa = r / sigma2
    nu = d / 2 - 1
    log_mgf = gammaln(d / 2) - nu * np.log(kappa / 2) + np.log(ive(nu, kappa)) + kappa
    return -(r ** 2 + 1) / (2 * sigma2) + log_mgf


def log_sphere_mgf_quad(kappa, d):
    """log E_Y exp(kappa e.Y) by quadrature over t = e.Y, whose density on [-1, 1] is proportional to
    (1 - t^2)^((d - 3) / 2): an independent check of the Bessel form."""
    from scipy.integrate import quad
    w = (d - 3) / 2
    log_norm = gammaln(d / 2) - 0.5 * math.log(math.pi) - gammaln((d - 1) / 2)
    value, _ = quad(lambda t: math.exp(kappa * (t - 1)), -1, 1, weight="alg", wvar=(w, w), epsabs=0, epsrel=1e-12)
    return math.log(value) + kappa + log_norm


def sphere_optimum(d, sigma2, num, seed):
    """The optimal Lagrangian at lambda = d / (2 sigma2) (MSE units), where nu* is uniform on the sphere:
    L* = -E_X log E_Y exp(-||X - Y||^2 / (2 sigma2)) and I(X; Y) = L* - d/2 (D = sigma2), by Monte Carlo over
    `num` draws of X (the inner expectation exactly), with its standard error. Also returns the largest
    difference of the closed form from quadrature, over 20 of the draws."""
    rng = np.random.default_rng(seed)
    x = sphere_samples(num, d, sigma2, rng)
    values = -log_sphere_kernel_mean(x, sigma2)
    r = np.linalg.norm(x[:20], axis=1)
    quad = np.array([-(ri ** 2 + 1) / (2 * sigma2) + log_sphere_mgf_quad(ri / sigma2, d) for ri in r])
    check = float(np.max(np.abs(quad + values[:20])))
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(num)), check


def sphere(args):
    print("| d | lambda | L* (MC) | I(X;Y) = L* - d/2 | WGD L | WGD R | WGD D | gap % | ± s.e. % | s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for d in args.dims:
        rng = np.random.default_rng(args.seed)
        folder = args.work / f"sphere-d={d}"
        folder.mkdir(parents=True, exist_ok=True)
        for split in ("train", "test"):
            np.save(folder / f"sphere-d={d}-split={split}.npy", sphere_samples(100000, d, args.sigma2, rng))
        lamb = d / (2 * args.sigma2)
        w = wgd_sweep(folder / f"sphere-d={d}-split=train.npy", [lamb], folder / "runs", "--seed", args.seed,
                      *args.wgd_flags.split())[lamb]
        L, se, check = sphere_optimum(d, args.sigma2, args.mc_samples, args.seed + 1)
        print(f"| {d} | {lamb:g} | {L:.4f} ± {se:.4f} | {L - d / 2:.4f} | {w['lagrangian']:.4f} | {w['R']:.4f} | "
              f"{w['D']:.4f} | {100 * (w['lagrangian'] - L) / L:+.2f} | {100 * w['lagrangian_stderr'] / L:.2f} | "
              f"{w['time']:.0f} |  (closed form vs quadrature: {check:.1e})", flush=True)


# ---- WGD against BA -----------------------------------------------------------------------------------

def compare(args):
    """WGD's and BA's Lagrangians at every lambda both have under a folder."""
    records = {}
    for path in sorted(Path(args.dir).rglob("results.jsonl")):
        for r in jsonl.read(path)[-1:]:
            if r.get("method") in ("ba", "wgd"):
                records.setdefault(r["lamb"], {})[r["method"]] = r
    print("| lambda | BA R | BA D | BA L | WGD R | WGD D | WGD L ± s.e. | (WGD - BA) / BA % |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for lamb, both in sorted(records.items()):
        if len(both) == 2:
            b, w = both["ba"], both["wgd"]
            print(f"| {lamb:g} | {b['R']:.4f} | {b['D']:.4g} | {b['lagrangian']:.4f} | {w['R']:.4f} | {w['D']:.4g} | "
                  f"{w['lagrangian']:.4f} ± {w['lagrangian_stderr']:.4f} | "
                  f"{100 * (w['lagrangian'] - b['lagrangian']) / b['lagrangian']:+.2f} |")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--steps", type=int, default=200)
    s.add_argument("--numpy_steps", type=int, default=30)
    s.add_argument("--rounds", type=int, default=3)
    for name, dims in (("gaussian", "2,4,8,16"), ("sphere", "2,5,10")):
        s = sub.add_parser(name)
        s.add_argument("--dims", type=int_list, default=int_list(dims))
        s.add_argument("--work", type=Path, default=Path("results/wgd_bench"))
        s.add_argument("--seed", type=int, default=0)
        s.add_argument("--wgd_flags", default="", help="extra wgd.py flags, e.g. '--steps 4000'")
    sub.choices["gaussian"].add_argument("--no_rdub", dest="rdub", action="store_false")
    sub.choices["sphere"].add_argument("--sigma2", type=positive_float, default=0.1)
    sub.choices["sphere"].add_argument("--mc_samples", type=int, default=1000000)
    s = sub.add_parser("compare")
    s.add_argument("dir")
    args = p.parse_args()
    {"speed": speed, "gaussian": gaussian, "sphere": sphere, "compare": compare}[args.command](args)


if __name__ == "__main__":
    main()
