"""Blahut-Arimoto R-D of a low-dimensional source, from samples (histogram discretization).

    python ba.py -V --samples data/physics/n=2-ppzee-split=test.npy --save_dir checkpoints/physics \\
        --bins 60 --steps 2000 --tol 1e-5 --lambda 100

Several --lambda values (alias --lamb, the paper's spelling) sweep the curve, each warm-started from the previous
solution. Per lambda, a run folder `<save_dir>/ba-lamb=<lamb>-bins=<bins>` gets `log.jsonl` (one record per
iteration: step, R, D, lagrangian) and `results.jsonl` (the final point). Rates are nats per sample; D is the MSE
per dimension. On a terminal, a progress bar per lambda (iterations, with the current R, D and Lagrangian) runs on
stderr; -V shows the bars also when stderr is a log (one line per lambda, when it is done).

The algorithm (the histogram discretization and the Blahut-Arimoto iterations) is utils/ba.py, this script's engine.
"""
from utils import startup  # noqa: F401  (first, on purpose: TensorFlow's start-up lines; utils/startup.py)

import time

import numpy as np

from utils import cli, jsonl, runs
from utils.progress import Progress
from utils.ba import MAX_MEMORY_GIB, METHODS, Histogram, check_memory, run_ba
from utils.sources import load_samples, make_source

BUILTIN = ("gaussian", "banana")


def parse_args(argv):
    p = cli.ArgumentParser(description=__doc__)
    p.add_argument("--samples", required=True,
                   help="an .npy of samples [N, n], or a built-in source name (gaussian, banana) with --num_samples")
    p.add_argument("--num_samples", type=cli.positive_int, default=100000,
                   help="samples to draw from a built-in source")
    p.add_argument("--data_dim", type=cli.positive_int, default=2, help="dimension of a built-in source")
    p.add_argument("--lambda", "--lamb", dest="lamb", metavar="LAMBDA", type=cli.positive_float, nargs="+",
                   required=True, help="one or more lambdas (a sweep warm-starts each from the previous solution); "
                                       "--lamb is the same flag")
    p.add_argument("--bins", type=int, default=60, help="histogram bins per dimension")
    p.add_argument("--steps", type=cli.positive_int, default=2000, help="maximum iterations per lambda")
    p.add_argument("--tol", type=cli.nonnegative_float, default=1e-5,
                   help="stop when the Lagrangian decreases by less than this fraction (0: run all steps)")
    p.add_argument("--method", choices=sorted(METHODS), default="fast",
                   help="fast: separable per-dimension kernels; dense: the full |X| x |Y| matrix (cross-checks)")
    p.add_argument("--max_memory", type=cli.positive_float, default=MAX_MEMORY_GIB, metavar="GIB",
                   help="refuse a discretization whose arrays need more than this many GiB (and, under it, more "
                        "than 80%% of the memory free now)")
    p.add_argument("--save_dir", default="checkpoints/ba", help="parent folder of the run folders")
    p.add_argument("--seed", type=int, default=0, help="seed of the samples drawn from a built-in source")
    p.add_argument("-V", "--verbose", action="store_true",
                   help="the histogram's occupancy; progress bars on stderr even when it is not a terminal; "
                        "TensorFlow's start-up log lines")
    return p.parse_args(argv)


def load(args):
    if args.samples in BUILTIN:
        return make_source(args.samples, args.data_dim).sample(args.num_samples, seed=args.seed).astype(np.float64)
    return load_samples(args.samples, "--samples")


def main(argv):
    args = parse_args(argv)
    if args.bins < 2:
        raise cli.InputError(f"--bins must be at least 2, got {args.bins}")
    cli.output_dir(args.save_dir, "--save_dir")
    samples = load(args)
    check_memory(args.method, args.bins, samples.shape[1], limit_gib=args.max_memory)
    hist = Histogram(samples, args.bins)
    if args.method == "dense":
        check_memory(args.method, args.bins, hist.dim, int(hist.occupied.sum()), limit_gib=args.max_memory)
    if args.verbose:
        print(f"{len(samples)} samples in {hist.dim}-d; {int(hist.occupied.sum())} of {args.bins ** hist.dim} "
              f"bins occupied; method {args.method}")

    log_q = None
    for lamb in args.lamb:
        key = {"lamb": lamb, "bins": args.bins}
        if args.method != "fast":
            key["method"] = args.method
        run_dir = runs.make_run_dir(args.save_dir, runs.run_name("ba", **key))
        runs.save_flags(run_dir, args)
        log_path = run_dir / runs.LOG_NAME
        bar = Progress(args.steps, args.verbose, unit="iteration", values=("lamb", "R", "D", "L"))
        start = time.time()  # after the bar, whose first use imports TensorFlow
        started = time.strftime("%Y-%m-%dT%H:%M:%S")

        def log(step, record):
            jsonl.append(log_path, {"step": step, **record, "run_start": started})
            # Not finalized here: a converged run stops before --steps, and the bar is closed once, below.
            bar.update(step, finalize=False, lamb=lamb, R=record["R"], D=record["D"], L=record["lagrangian"])

        log_q, record, steps, converged = run_ba(hist, lamb, args.steps, args.tol, args.method, log_q, log)
        bar.update(steps, finalize=True)
        summary = {"method": "ba", "lamb": lamb, **record, "steps": steps, "converged": converged,
                   "bins": args.bins, "num_samples": len(samples), "data_dim": hist.dim, "rate_unit": "nats",
                   "per_dim": False, "units": "R in nats per sample; D = squared error averaged over dimensions",
                   "ba_method": args.method, "time": round(time.time() - start, 3)}
        jsonl.append(run_dir / "results.jsonl", summary)
        print(f"BA lamb={lamb:g}: R={record['R']:.6g} nats, D={record['D']:.6g}, "
              f"R+lamb*D={record['lagrangian']:.6g} after {steps} steps"
              f"{' (converged)' if converged else ''} -> {run_dir}")


if __name__ == "__main__":
    cli.run(main)
