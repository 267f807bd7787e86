"""How fast rdub_mlp.py reaches the analytic R-D optimum of a Gaussian: steps/s and the gap after fixed budgets.

For each source dimension n (16: unit variances; 1000: the paper's parameters), each recipe and each step budget
this trains the beta-VAE without decoder (gmm_1 prior, linear encoder) through the real command line, with the
learning-rate schedule fitted to the budget, evaluates it on fresh samples, and prints the relative gap
(loss - L*) / L* to the analytic optimum L* of rate + lambda * MSE, with its standard error. Two recipes run in
the same session, so their ratio survives a noisy machine: the paper's (Adam at 5e-4, batch 64; the paper
spends 80 epochs x 1000 steps) and a faster one (peak rate 5e-3 and batch 256, under the same step decay).

  python bench/rdub_bench.py                       # n = 16 and 1000; about 20 minutes on 2 CPU cores
  python bench/rdub_bench.py --dims 16 --budgets 1000,2000,5000
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from utils import jsonl  # noqa: E402
from utils.cli import float_list, int_list, positive_float, positive_int  # noqa: E402

GPARAMS = {1000: "data/gaussian_params-dim=1000.npz"}  # other n: zero mean, unit variances
PAPER_LR, PAPER_BATCHSIZE = 5e-4, 64


def rdub(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, str(ROOT / "rdub_mlp.py"), *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"rdub_mlp.py {' '.join(map(str, args))} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout


def epochs_of(budget):
    return 8 * max(1, budget // 8000)


def one_run(work, n, lamb, lr, budget, batchsize, num_samples, seed):
    model = ["--dataset", "gaussian", "--data_dim", n, "--latent_dim", n, "--decoder_units", 0,
             "--prior_type", "gmm_1", "--posterior_type", "gaussian", "--encoder_activation", "none",
             "--decoder_activation", "none", "--lambda", lamb, "--rpd", "--seed", seed,
             "--checkpoint_dir", work / f"n={n}-lambda={lamb}-lr={lr}-batch={batchsize}-steps={budget}"]
    if n in GPARAMS:
        model[2:2] = ["--gparams_path", GPARAMS[n]]
    # 8 epochs at least: the step decay acts at epoch boundaries (1/2, 3/4, 7/8 of the run), and fewer epochs
    # would skip its last drop; the first epoch, which pays for tracing, is left out of steps/s.
    epochs = epochs_of(budget)
    rdub(*model, "train", "--epochs", epochs, "--steps_per_epoch", budget // epochs, "--lr", lr,
         "--batchsize", batchsize, "--max_validation_steps", 1)
    result = json.loads(rdub(*model, "eval", "--num_samples", num_samples).strip().splitlines()[-1])
    (run_dir,) = Path(model[-1]).iterdir()
    log = jsonl.read(run_dir / "log.jsonl")
    # Steps/s after the first epoch, which also pays for tracing the graph.
    a, b = (log[0], log[-1]) if len(log) > 1 else ({"step": 0, "time": 0.0}, log[-1])
    return {"n": n, "lambda": lamb, "lr": lr, "batchsize": batchsize, "steps": budget,
            "steps_per_s": (b["step"] - a["step"]) / (b["time"] - a["time"]),
            "gap_pct": 100 * result["gap"], "gap_stderr_pct": 100 * result["loss_stderr"] / result["analytic_loss"],
            "loss": result["loss"], "analytic_loss": result["analytic_loss"], "rate": result["rate"],
            "analytic_rate": result["analytic_rate"], "mse": result["mse"], "analytic_mse": result["analytic_mse"]}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dims", type=int_list, default=[16, 1000])
    p.add_argument("--lambdas", type=float_list, default=[10.0], help="lambda (rate in bits per dimension)")
    p.add_argument("--budgets", type=int_list, default=[2000, 5000, 10000], help="step budgets, fast recipe")
    p.add_argument("--paper_budgets", type=int_list, default=[5000], help="step budgets of the paper's recipe")
    p.add_argument("--lr", type=positive_float, default=5e-3, help="peak learning rate of the fast recipe")
    p.add_argument("--batchsize", type=positive_int, default=256, help="batch size of the fast recipe")
    p.add_argument("--num_samples", type=positive_int, default=20000, help="evaluation samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="also append the records to this JSONL file")
    args = p.parse_args()
    if any(b % epochs_of(b) for b in args.budgets + args.paper_budgets):
        sys.exit("a budget must split into equal epochs: 8 of them, or 8 per 8000 steps above 16000")

    with tempfile.TemporaryDirectory(prefix="rdub_bench-") as tmp:
        work = Path(tmp)
        print(f"{'n':>5} {'lambda':>7} {'recipe lr/batch':>16} {'steps':>6} {'steps/s':>8} {'gap %':>8} {'+-se %':>7}", flush=True)
        for n in args.dims:
            for lamb in args.lambdas:
                reached = {}
                recipes = (("paper", PAPER_LR, PAPER_BATCHSIZE, args.paper_budgets),
                           ("fast", args.lr, args.batchsize, args.budgets))
                for recipe, lr, batchsize, budgets in recipes:
                    for budget in sorted(budgets):
                        r = one_run(work, n, lamb, lr, budget, batchsize, args.num_samples, args.seed)
                        r["recipe"] = recipe
                        print(f"{n:>5} {lamb:>7g} {f'{recipe} {lr:g}/{batchsize}':>16} {budget:>6} {r['steps_per_s']:>8.0f} "
                              f"{r['gap_pct']:>8.3f} {r['gap_stderr_pct']:>7.3f}", flush=True)
                        if args.out:
                            jsonl.append(args.out, r)
                        if recipe not in reached and r["gap_pct"] < 1.0:
                            reached[recipe] = budget
                for recipe in ("paper", "fast"):
                    print(f"      n={n} lambda={lamb:g} {recipe}: 1% gap "
                          + (f"reached within {reached[recipe]} steps" if recipe in reached
                             else "not reached in the budgets tried"), flush=True)


if __name__ == "__main__":
    main()
