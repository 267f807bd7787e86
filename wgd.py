"""Upper bound on R(D) by Wasserstein gradient descent on the reproduction distribution (particles).

    python wgd.py -V --samples data/physics/n=2-ppzee-split=train.npy --save_dir checkpoints/physics \\
        --lambda 100 300 1000 --num_particles 1000 --steps 2000

The reproduction distribution is a cloud of --num_particles particles, started at training samples. Each step
draws --batchsize samples, solves the inner BA problem in closed form and moves the particles along the
Wasserstein gradient (SGD or Adam, with the reference's inverse-square-root step decay); --hybrid also updates
the particle weights by a BA step. Several --lambda values (alias --lamb, the paper's spelling) make a sweep, run
from the largest lambda down, each warm-started from the previous particles. The bound is evaluated exactly over
all particles on held-out samples (the file's split=test twin, 20% of the rows of a file without one, or fresh
draws of a built-in source).

Per lambda, `<save_dir>/wgd-lamb=<lamb>-particles=<k>` (plus `-hybrid=True`) gets `log.jsonl` (every --log_every
steps: minibatch means of lagrangian, R, D, and lr, time), `results.jsonl` (the held-out bound, method wgd),
`particles.npz` and `flags.json`. Rates are nats per sample; D is the MSE per dimension.

The algorithm (the particle steps, the exact particle-channel rate and distortion) is utils/wgd.py, this script's
engine.
"""
from utils import startup  # noqa: F401  (first, on purpose: TensorFlow's start-up lines; utils/startup.py)

import time

import numpy as np

from utils import cli, jsonl, runs
from utils.rd import gaussian_rd_at_lambda
from utils.sources import load_samples, make_source, resolve_path, test_twin

BUILTIN = ("gaussian", "banana")
DEFAULT_LR = {"sgd": 0.2, "adam": 0.01}
HOLDOUT = 0.2


def parse_args(argv):
    p = cli.ArgumentParser(description=__doc__)
    p.add_argument("--samples", required=True,
                   help="an .npy of samples [N, n] (a split=train file finds its split=test twin), or a built-in "
                        "source name (gaussian, banana)")
    p.add_argument("--num_samples", type=cli.positive_int, default=100000,
                   help="training samples drawn from a built-in source")
    p.add_argument("--num_test", type=cli.positive_int, default=100000,
                   help="held-out samples for the bound (fresh draws, or at most this many rows of the test data)")
    p.add_argument("--data_dim", type=cli.positive_int,
                   help="dimension of a built-in source (default: 2); checked against a file's samples")
    p.add_argument("--gparams_path", help="the Gaussian's .npz (loc, scale) for --samples gaussian")
    p.add_argument("--lambda", "--lamb", dest="lamb", metavar="LAMBDA", type=cli.positive_float, nargs="+",
                   required=True,
                   help="one or more lambdas (a sweep runs from the largest down, each warm-started from the "
                        "previous particles); --lamb is the same flag")
    p.add_argument("--num_particles", type=cli.positive_int, default=1000, help="particles k")
    p.add_argument("--batchsize", type=cli.positive_int, default=1000, help="source samples per step m")
    p.add_argument("--steps", type=cli.positive_int, default=2000, help="steps per lambda")
    p.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd", help="how the particles move")
    p.add_argument("--lr", type=cli.positive_float,
                   help="step size (default: sgd 0.2, in units of d / (2 lamb), i.e. of a mean-shift step; adam 0.01, "
                        "in units of the data's RMS spread)")
    p.add_argument("--lr_decay", choices=("inv_sqrt", "none"), default="inv_sqrt",
                   help="inv_sqrt: lr / sqrt(1 + t (f^-2 - 1) / steps), down to lr * f at the end (the reference's)")
    p.add_argument("--decay_factor", type=cli.positive_float, default=0.1, help="f, the final fraction of lr")
    p.add_argument("--hybrid", action="store_true", help="also update the particle weights by a BA step each step")
    p.add_argument("--log_every", type=cli.positive_int, default=100, help="steps per log record")
    p.add_argument("--save_dir", default="checkpoints/wgd", help="parent folder of the run folders")
    p.add_argument("--seed", type=int, default=0, help="seeds the samples drawn, the particles and the minibatches")
    p.add_argument("-V", "--verbose", action="store_true", help="print progress")
    return p.parse_args(argv)


def load(args):
    """(train [N, n], held-out [M, n], a description of the held-out data, the Gaussian's variances or None)."""
    if args.samples in BUILTIN:
        dim = args.data_dim
        if dim is None and not args.gparams_path:
            dim = 2
        source = make_source(args.samples, dim, args.gparams_path if args.samples == "gaussian" else None)
        train = source.sample(args.num_samples, seed=args.seed).astype(np.float64)
        test = source.test_set(args.num_test, seed=args.seed).astype(np.float64)
        return train, test, f"{args.num_test} fresh draws", source.gaussian_var
    train = load_samples(args.samples, "--samples")
    if args.data_dim is not None and args.data_dim != train.shape[1]:
        raise cli.InputError(f"--data_dim {args.data_dim} does not match --samples {args.samples}, whose samples "
                             f"have {train.shape[1]} dimensions")
    rng = np.random.default_rng(args.seed)
    twin = test_twin(resolve_path(args.samples, "--samples"))
    if twin is not None:
        test = load_samples(twin, "test twin")
        if test.shape[1] != train.shape[1]:
            raise cli.InputError(f"{twin} has {test.shape[1]} dimensions but --samples has {train.shape[1]}")
        what = str(twin)
    else:  # no twin: hold out a random 20% of the rows
        if len(train) < 10:
            raise cli.InputError(f"--samples {args.samples} has {len(train)} rows and no split=test twin; "
                                 f"at least 10 are needed to hold some out")
        perm = rng.permutation(len(train))
        cut = len(train) - int(HOLDOUT * len(train))
        train, test = train[perm[:cut]], train[perm[cut:]]
        what = f"held-out {HOLDOUT:.0%} of the rows"
    if len(test) > args.num_test:
        test = test[rng.choice(len(test), args.num_test, replace=False)]
    return train, test, what, None


def main(argv):
    args = parse_args(argv)
    cli.output_dir(args.save_dir, "--save_dir")
    if args.gparams_path and args.samples != "gaussian":
        raise cli.InputError("--gparams_path applies only to --samples gaussian")
    if args.decay_factor > 1:
        raise cli.InputError(f"--decay_factor must be at most 1, got {args.decay_factor}")
    train, test, test_what, gaussian_var = load(args)
    lr = args.lr or DEFAULT_LR[args.optimizer]

    from utils import wgd  # TensorFlow is imported only once the input is known to be good
    import tensorflow as tf
    tf.random.set_seed(args.seed)
    rng = np.random.default_rng(args.seed + 1)
    y, log_w = wgd.init_particles(train, args.num_particles, rng)
    trainer = wgd.Trainer(train, y, log_w, optimizer=args.optimizer, lr=lr, decay=args.lr_decay,
                          decay_factor=args.decay_factor, batchsize=args.batchsize, hybrid=args.hybrid,
                          seed=args.seed)
    if args.verbose:
        print(f"{len(train)} training samples in {train.shape[1]}-d, {len(test)} held-out ({test_what}); "
              f"{args.num_particles} particles, {args.optimizer} lr {lr:g}{', hybrid' if args.hybrid else ''}")

    # From the largest lambda down: particles merge as lambda falls, and merged particles would need a push to
    # split again on the way up.
    for index, lamb in enumerate(sorted(args.lamb, reverse=True)):
        key = {"lamb": lamb, "particles": args.num_particles}
        if args.hybrid:
            key["hybrid"] = True
        run_dir = runs.make_run_dir(args.save_dir, runs.run_name("wgd", **key))
        runs.save_flags(run_dir, args)
        started = time.strftime("%Y-%m-%dT%H:%M:%S")
        start = time.time()
        respread = trainer.reset(lamb, args.steps, rng if index > 0 else None)
        done, train_record = 0, {}
        while done < args.steps:
            chunk = min(args.log_every, args.steps - done)
            train_record = trainer.run(chunk)
            done += chunk
            jsonl.append(run_dir / runs.LOG_NAME, {"step": done, **train_record, "time": round(time.time() - start, 3),
                                                    "run_start": started})
            if args.verbose:
                print(f"lamb={lamb:g} step {done}: L={train_record['lagrangian']:.6g} R={train_record['R']:.6g} "
                      f"D={train_record['D']:.6g} lr={train_record['lr']:.3g}")
        train_time = time.time() - start
        y, log_w = trainer.particles()
        _, _, bound = wgd.evaluate(test, y, log_w, lamb)
        summary = {"method": "wgd", "lamb": lamb, **bound, "steps": args.steps, "num_particles": args.num_particles,
                   "batchsize": args.batchsize, "optimizer": args.optimizer, "lr": lr, "lr_decay": args.lr_decay,
                   "hybrid": args.hybrid, "warm_start": index > 0, "respread": respread, "num_samples": len(train),
                   "test_data": test_what, "data_dim": train.shape[1], "rate_unit": "nats", "per_dim": False,
                   "units": "R in nats per sample; D = squared error averaged over dimensions",
                   "train_lagrangian": train_record["lagrangian"], "seed": args.seed,
                   "time": round(train_time, 3), "eval_time": round(time.time() - start - train_time, 3)}
        if gaussian_var is not None:
            truth = gaussian_rd_at_lambda(gaussian_var, lamb)
            summary.update(analytic_R=truth["R"], analytic_D=truth["D"], analytic_lagrangian=truth["lagrangian"],
                           gap=(bound["lagrangian"] - truth["lagrangian"]) / truth["lagrangian"])
        runs.atomic_save_npz(run_dir / "particles.npz", particles=y, log_weights=log_w, lamb=lamb)
        jsonl.append(run_dir / "results.jsonl", summary)
        gap = f", gap {100 * summary['gap']:+.3f}%" if "gap" in summary else ""
        print(f"WGD lamb={lamb:g}: R={bound['R']:.6g}±{bound['R_stderr']:.2g} nats, D={bound['D']:.6g}"
              f"±{bound['D_stderr']:.2g}, R+lamb*D={bound['lagrangian']:.6g}±{bound['lagrangian_stderr']:.2g}{gap} "
              f"({train_time:.1f} s) -> {run_dir}")


if __name__ == "__main__":
    cli.run(main)
