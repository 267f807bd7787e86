#!/usr/bin/env python
"""R-D lower bound from Csiszar's dual characterization, with a trained "log u" network (Yang & Mandt, ICLR 2022).

For a slope lambda (--lambda, the package's Lagrangian R + lambda * D with D the MSE per dimension, rates in nats),
a network log u gives a line R(D) >= R_L(lambda) - lambda * D whose intercept R_L is estimated from batches of k
samples; the algorithm (the bound, its batch estimate xi, the inner ascent for C_k and the paper's training loss)
is described in utils/rdlb.py, which holds it.

`train` fits log u at --lambda (or sweeps lambda up to it with --anneal_lamb) in the run folder
<checkpoint_dir>/rdlb-data_dim=<n>-model=<m>-units=<u>-lamb=<lambda>-batchsize=<k>: checkpoints
step=<step>-lamb=<lambda>-kerasckpt.*, log.jsonl (every --log_interval steps) and flags.json; --cont resumes.

`eval` draws --num_Ck_samples held-out batches (the sample file's split=test twin, or fresh draws of a built-in
source) and sets alpha for draw j to the mean of the other draws' C_k (leave-one-out: alpha is independent of draw
j, close to the optimal E[C_k], and costs no extra draws); C_k is heavy-tailed, so its 95% interval is
`utils.rd.lb_interval`'s, whose coverage bench/rdlb_coverage.py measures. It appends a record (R_lb, its stderr and
interval) to the run folder's results.jsonl and writes the draws to an .npz there. The ascent starts from every
batch point (exhaustive) unless --y_init quick --allow_quick. Every estimate is at most log k nats: evaluate with
a larger --batchsize where the intercept approaches log k.
"""
from utils import startup  # noqa: F401  (first, on purpose: TensorFlow's start-up lines; utils/startup.py)

import argparse
import glob
import math
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

# TensorFlow (and utils.rdlb, which imports it) is imported inside the commands, so that bad input fails in a second
from utils import jsonl, rd, runs, train_flags
from utils.progress import Progress
from utils.cli import (ArgumentParser, InputError, finite_float, float_list, int_list, nonnegative_float, output_dir,
                       positive_float, positive_int, run)
from utils.sources import make_source

MODELS = ("mlp", "cnn")
CKPT_SUFFIX = "-kerasckpt"


# ---- runs and checkpoints ------------------------------------------------------------------------

def run_dir_name(args, data_dim, lamb, batchsize):
    """The paper's run names, e.g. rdlb-data_dim=16-model=mlp-units=200_200_200-lamb=100.0-batchsize=2048."""
    return runs.run_name("rdlb", data_dim=data_dim, model=args.model, units=args.units, lamb=float(lamb),
                         batchsize=batchsize)


def ckpt_prefix(run_dir, step, lamb):
    """Checkpoints in a run folder: step=<step>-lamb=<lamb>-kerasckpt.{index,data-*} (the lamb it was trained at)."""
    return str(Path(run_dir) / f"step={step}-lamb={float(lamb)!r}{CKPT_SUFFIX}")


def list_ckpts(run_dir):
    """[(step, prefix)] of the complete checkpoints in a folder (the .index file is written last), by step."""
    found = []
    for index in glob.glob(os.path.join(glob.escape(str(run_dir)), f"step=*{CKPT_SUFFIX}.index")):
        m = re.match(r"step=(\d+)-", os.path.basename(index))
        if m:
            found.append((int(m.group(1)), index[:-len(".index")]))
    return sorted(found)


_LAMB = re.compile(r"lamb=([0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?)")


def lamb_from_path(path):
    """The lambda named last in a checkpoint path (its file name, else its run folder), or None."""
    found = _LAMB.findall(str(path))
    return float(found[-1]) if found else None


def resolve_ckpts(pattern):
    """--ckpt: a checkpoint (prefix or .index), a run folder (its latest checkpoint), or a glob of these."""
    paths = sorted(glob.glob(pattern)) or ([pattern] if os.path.exists(pattern + ".index") else [])
    prefixes = []
    for p in paths:
        if os.path.isdir(p):
            ckpts = list_ckpts(p)
            if not ckpts:
                raise InputError(f"--ckpt: {p} holds no rdlb checkpoint (step=*{CKPT_SUFFIX}.index)")
            prefixes.append(ckpts[-1][1])
        elif p.endswith(".index"):
            prefixes.append(p[:-len(".index")])
        elif os.path.exists(p + ".index"):
            prefixes.append(p)
    if not prefixes:
        raise InputError(f"--ckpt {pattern!r} matches no checkpoint (a run folder, a step=*{CKPT_SUFFIX} prefix "
                         f"or its .index file)")
    return list(dict.fromkeys(prefixes))


# ---- commands ------------------------------------------------------------------------------------

def train(args, source):
    from utils import training
    strategy = training.strategy_from_flags(args)  # before any other TensorFlow work (docs/distributed.md)
    import tensorflow as tf
    from utils.rdlb import DualBound, LaggingAlpha, anneal_schedule, make_train_step, restore, step_decay
    tf.keras.utils.set_random_seed(args.seed)
    k, m = args.batchsize, args.num_Ck_samples
    if m % strategy.num_replicas_in_sync:
        raise InputError(f"--num_Ck_samples {m}: the draws are shared out among the {strategy.num_replicas_in_sync} "
                         f"replicas of --strategy {args.strategy}; give a multiple of that")
    chief = training.is_chief(strategy)
    targets = None
    if args.anneal_lamb:
        if not args.target_lambs or min(args.target_lambs) <= 0:
            raise InputError("--anneal_lamb needs --target_lambs, a comma-separated list of positive lambdas")
        if max(args.target_lambs) > args.lamb:
            raise InputError(f"--target_lambs go up to {max(args.target_lambs)}, above the final --lambda {args.lamb}")
        targets = sorted(set(args.target_lambs) | {args.lamb})
        if args.last_step < 2 * len(targets):
            raise InputError(f"--last_step {args.last_step} is too short to anneal through {len(targets)} lambdas")
        lamb_at, target_steps = anneal_schedule(targets, args.last_step)
    run_dir = Path(args.checkpoint_dir) / run_dir_name(args, args.data_dim or source.dim, args.lamb, k)
    existing = list_ckpts(run_dir) if run_dir.is_dir() else []
    if existing and not args.cont:
        raise InputError(f"{run_dir} already holds checkpoints; pass --cont to resume it or choose another "
                         f"--checkpoint_dir")

    with strategy.scope():
        bound = DualBound(args, getattr(source, "shape", (source.dim,)), targets[0] if targets else args.lamb)
        lr = step_decay(args.lr, args.last_step) if args.lr_schedule else args.lr
        optimizer = tf.keras.optimizers.Adam(lr, global_clipnorm=args.global_clipnorm)
        step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        alpha = LaggingAlpha(args.beta, args.log_E_Ck_max_delta)
    state = dict(step=step_var, log_alpha=alpha.log_alpha, prev_log_mean_Ck=alpha.prev, alpha_started=alpha.started)
    bound.adapt(source.sample(min(10000, 10 * k), seed=args.seed))
    if existing:
        restore(bound, existing[-1][1], optimizer, state)
        if args.verbose:
            print(f"resuming {existing[-1][1]}")
    if chief:
        runs.make_run_dir(args.checkpoint_dir, run_dir.name)
        runs.save_flags(run_dir, args)
    saver = tf.train.Checkpoint(log_u=bound.net, optimizer=optimizer, **state)
    train_step = make_train_step(bound, optimizer, m, alpha, strategy)
    tb = tf.summary.create_file_writer(str(run_dir / training.TB_NAME)) if args.tensorboard and chief else None
    batches = iter(source.dataset(k * m, seed=args.seed + int(step_var.numpy())))
    log_path = run_dir / runs.LOG_NAME
    t0 = time.time()
    for step in range(int(step_var.numpy()) + 1, args.last_step + 1):
        lamb = lamb_at(step) if targets else args.lamb
        bound.lamb.assign(lamb)
        lr_now = float(lr(step - 1)) if args.lr_schedule else lr  # before the step advances the optimizer's count
        out = train_step(next(batches))
        step_var.assign(step)
        if not np.isfinite(out["objective"].numpy()):
            raise FloatingPointError(f"the objective became {out['objective'].numpy()} at step {step}; lower --lr")
        if step % args.log_interval == 0 or step == args.last_step:
            record = dict(step=step, lamb=lamb, **{k_: float(v) for k_, v in out.items()}, lr=lr_now,
                          time=time.time() - t0)
            if chief:
                jsonl.append(log_path, record)
                if tb is not None:
                    with tb.as_default():
                        for key in ("objective", "log_mean_Ck", "log_alpha", "y_iters", "lr", "lamb"):
                            tf.summary.scalar(key, record[key], step=step)
                    tb.flush()
            if args.verbose and chief:
                print(" ".join(f"{k_}={v:.5g}" if isinstance(v, float) else f"{k_}={v}" for k_, v in record.items()))
        at_target = targets is not None and step in target_steps
        if chief and (step % args.checkpoint_interval == 0 or step == args.last_step or at_target):
            prefix = saver.write(ckpt_prefix(run_dir, step, lamb))
            if args.verbose:
                print(f"saved {prefix}")
    return run_dir


def evaluate(args, source):
    if args.ckpt:
        prefixes = resolve_ckpts(args.ckpt)
    else:
        if args.lamb is None:
            raise InputError("eval needs --lambda (with --checkpoint_dir) or --ckpt")
        pattern = run_dir_name(args, args.data_dim or source.dim, args.lamb, "*")
        dirs = sorted(glob.glob(os.path.join(glob.escape(args.checkpoint_dir), pattern)))
        if len(dirs) != 1:
            raise InputError(f"{len(dirs)} run folders match {os.path.join(args.checkpoint_dir, pattern)}; "
                             f"{'name one with --ckpt' if dirs else 'train first or check the flags'}")
        prefixes = resolve_ckpts(dirs[0])
    for prefix in prefixes:
        lamb = args.lamb if args.lamb is not None else lamb_from_path(prefix)
        if lamb is None or not lamb > 0:
            raise InputError(f"no lambda in {prefix}; give --lambda")
        evaluate_ckpt(args, source, prefix, lamb)


def eval_draws(source):
    """(draw(k, seed) -> a batch of k samples, the split they come from) for eval: the held-out split of a sample
    file (rows at random, with replacement only when k exceeds them), fresh draws of a sampler, or, for a file
    without a held-out twin, its training samples (with a warning)."""
    from utils.sources import ImageFile, SampleFile
    if isinstance(source, SampleFile):
        rows, split = source.test, source.test_split
    elif isinstance(source, ImageFile):
        rows, split = source.images, "train"
    else:  # samplers draw from a numpy stream, apart from training's TensorFlow stream
        return source.sample, "fresh"
    if split == "train":
        print(f"warning: {source.path} has no held-out split (split=test twin): eval draws from the training "
              f"samples", file=sys.stderr)
    return (lambda k, seed: rows[np.random.default_rng(seed).choice(len(rows), k, replace=k > len(rows))]), split


def evaluate_ckpt(args, source, prefix, lamb):
    import tensorflow as tf
    from utils.rdlb import DualBound, restore
    tf.keras.utils.set_random_seed(args.seed)
    bound = DualBound(args, getattr(source, "shape", (source.dim,)), lamb)
    restore(bound, prefix)
    k, m = args.batchsize, args.num_Ck_samples
    draw, split = eval_draws(source)
    log_ck, neg_log_u, iters, capped = np.zeros(m), np.zeros(m), np.zeros(m), np.zeros(m, bool)
    t0 = time.time()
    bar = Progress(m, verbose=args.verbose, unit="draw")
    for j in range(m):
        x = tf.constant(draw(k, [args.seed, j]), tf.float32)
        lc, nlu, it, cap = bound.draw(x)
        log_ck[j], neg_log_u[j], iters[j], capped[j] = lc.numpy(), nlu.numpy(), it.numpy(), cap.numpy()
        if args.verbose:
            print(f"draw {j + 1}/{m}: log C_k={log_ck[j]:.5g} E[-log u]={neg_log_u[j]:.5g} iters={int(iters[j])}")
        bar.update(j + 1, log_Ck=log_ck[j])
    if capped.any():
        # A start stopped before converging may have missed the sup: C_k too small, the estimate too high.
        print(f"warning: {int(capped.sum())} of {m} draws hit --y_steps {args.y_steps} before every start "
              f"converged; raise --y_steps", file=sys.stderr)
    xi, log_alpha = rd.lb_xi(log_ck, neg_log_u)
    ci = rd.lb_interval(log_ck, neg_log_u)
    run_dir = Path(prefix).parent
    step = int(re.match(r"step=(\d+)", Path(prefix).name).group(1))
    npz = run_dir / f"rd-step={step}-lamb={float(lamb)!r}-seed={args.seed}-k={k}-M={m}-{args.y_init}.npz"
    runs.atomic_save_npz(npz, lamb=np.float64(lamb), xi=xi, log_Ck=log_ck, neg_log_u=neg_log_u, log_alpha=log_alpha)
    record = dict(method="rdlb", data_dim=args.data_dim or source.dim, rate_unit="nats", per_dim=False, lamb=lamb,
                  R_lb=float(xi.mean()), R_lb_stderr=float(xi.std(ddof=1) / math.sqrt(m)), R_lb_lo=ci["lo"],
                  R_lb_hi=ci["hi"], interval=ci["method"], num_xi=int(xi.size), step=step, ckpt=prefix,
                  dataset=args.dataset, eval_split=split, seed=args.seed, batchsize=k, y_init=args.y_init,
                  y_iters=float(iters.mean()), y_capped=int(capped.sum()), npz=npz.name, time=time.time() - t0)
    if getattr(source, "gaussian_var", None) is not None:
        record["analytic_intercept"] = rd.gaussian_rd_at_lambda(source.gaussian_var, lamb)["lagrangian"]
    jsonl.append(run_dir / "results.jsonl", record)
    truth = f" (analytic {record['analytic_intercept']:.4f})" if "analytic_intercept" in record else ""
    print(f"lamb={lamb:g} R_lb={record['R_lb']:.4f} nats, 95% interval [{ci['lo']:.4f}, {ci['hi']:.4f}]{truth}  "
          f"<- {prefix}")
    return record


# ---- flags ---------------------------------------------------------------------------------------

def parse_args(argv):
    p = ArgumentParser(description=__doc__)
    p.add_argument("-V", "--verbose", action="store_true", help="progress and messages on stderr")
    p.add_argument("--dataset", required=True, help="'gaussian', 'banana', or an .npy of samples [N, n] or "
                                                    "images [N, H, W, C]")
    p.add_argument("--data_dim", type=positive_int, help="source dimension n (checked against files)")
    p.add_argument("--gparams_path", help="Gaussian parameters .npz (loc, scale) for --dataset gaussian")
    p.add_argument("--model", default="mlp", help="log u network: mlp or cnn")
    p.add_argument("--units", type=int_list, default=[200, 200, 200],
                   help="hidden sizes; for cnn the first len(--kernel_dims) are conv channels")
    p.add_argument("--kernel_dims", type=int_list, default=[9, 5, 3], help="cnn kernel sizes")
    p.add_argument("--activation", default="selu", help="hidden activation (the paper's: selu)")
    p.add_argument("--lambda", "--lamb", dest="lamb", metavar="LAMBDA", type=finite_float,
                   help="lambda, the slope of the bounding line (per-dimension MSE); --lamb is the same flag")
    p.add_argument("--chunksize", type=positive_int, help="starting points per pairwise-distance chunk (memory)")
    p.add_argument("--checkpoint_dir", default="checkpoints", help="run folders go under here")
    p.add_argument("--seed", type=int, default=0, help="seeds numpy and TensorFlow")
    sub = p.add_subparsers(dest="command", required=True)

    inner = argparse.ArgumentParser(add_help=False)
    inner.add_argument("--batchsize", type=positive_int, default=1024, help="k, samples per draw of C_k")
    inner.add_argument("--y_init", choices=("quick", "exhaustive"),
                       help="starts: the top --y_quick_topn batch points, or every batch point (default: quick "
                            "for train, exhaustive for eval)")
    inner.add_argument("--y_quick_topn", type=positive_int, default=10, help="starts of --y_init quick")
    inner.add_argument("--y_steps", type=positive_int, default=1000,
                       help="most ascent steps per start (the paper's: 1000)")
    inner.add_argument("--y_lr", type=finite_float, default=1.0,
                       help="ascent step as a fraction of the mean-shift step, in (0, 2)")
    inner.add_argument("--y_tol", type=nonnegative_float, default=1e-6,
                       help="a start stops when its relative improvement of f falls below this")

    t = sub.add_parser("train", parents=[inner], help="train log u at --lambda",
                       description="Train log u at --lambda.")
    t.add_argument("--num_Ck_samples", type=positive_int, default=2,
                   help="M, draws of C_k per step (shared out among the replicas of --strategy)")
    t.add_argument("--last_step", type=positive_int, default=1000, help="training steps")
    t.add_argument("--checkpoint_interval", type=positive_int, default=1000, help="steps between checkpoints")
    t.add_argument("--log_interval", type=positive_int, default=50, help="steps between log records")
    t.add_argument("--lr", type=positive_float, default=5e-4, help="learning rate")
    t.add_argument("--lr_schedule", action="store_true",
                   help="the paper's step decay: --lr x0.2 after 1/2, 3/4 and 7/8 of --last_step")
    t.add_argument("--global_clipnorm", type=positive_float, default=100.0,
                   help="gradient norm clip (the paper's: 100)")
    t.add_argument("--beta", type=finite_float, default=0.2,
                   help="share of the old alpha kept in its lagging average, in [0, 1) (the paper's: 0.2)")
    t.add_argument("--log_E_Ck_max_delta", type=positive_float, default=1.0,
                   help="most nats the batch's log mean C_k may move from the previous step's in the loss")
    t.add_argument("--anneal_lamb", action="store_true",
                   help="sweep lambda up through --target_lambs to --lambda, checkpointing at each target")
    t.add_argument("--target_lambs", type=float_list,
                   help="with --anneal_lamb: the lambdas passed on the way to --lambda, comma-separated")
    t.add_argument("--cont", action="store_true", help="resume the run's latest checkpoint")

    train_flags.add_run_flags(t)  # --strategy, --cpu_devices, --tensorboard

    e = sub.add_parser("eval", parents=[inner], help="estimate the intercept R_lb with a 95%% interval",
                       description="Estimate the intercept R_lb with a 95%% interval.")
    e.add_argument("--num_Ck_samples", type=positive_int, default=10, help="M, draws of C_k (and of xi)")
    e.add_argument("--ckpt", help="a checkpoint, a run folder or a glob; lambda comes from the name unless --lambda")
    e.add_argument("--allow_quick", action="store_true",
                   help="accept --y_init quick, which may miss the sup and so overstate the bound")
    args = p.parse_args(argv)
    if args.y_init is None:
        args.y_init = "quick" if args.command == "train" else "exhaustive"
    output_dir(args.checkpoint_dir, "--checkpoint_dir")
    return args


def check_args(args):
    if args.model not in MODELS:
        raise InputError(f"--model {args.model!r} is unknown; choose one of {', '.join(MODELS)}")
    if args.lamb is not None and not args.lamb > 0:
        raise InputError(f"--lambda must be a positive finite number, got {args.lamb}")
    if args.command == "train" and args.lamb is None:
        raise InputError("train needs --lambda")
    if not args.units or min(args.units) < 1:
        raise InputError(f"--units {args.units}: need positive layer sizes")
    if not 0 < args.y_lr < 2:
        raise InputError(f"--y_lr {args.y_lr}: must lie in (0, 2), where an ascent step cannot overshoot")
    if args.command == "train":
        if not 0 <= args.beta < 1:
            raise InputError(f"--beta {args.beta}: must lie in [0, 1)")
    else:
        if args.num_Ck_samples < 2:
            raise InputError("--num_Ck_samples must be >= 2 for eval (alpha and the interval need several draws)")
        if args.y_init == "quick" and not args.allow_quick:
            raise InputError("eval --y_init quick starts the ascent from a few points only and may miss the sup, "
                             "which would overstate the bound; pass --allow_quick to accept that")


def main(argv):
    args = parse_args(argv)
    check_args(args)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    source = make_source(args.dataset, args.data_dim, args.gparams_path)
    if args.command == "train":
        train(args, source)
    else:
        evaluate(args, source)


if __name__ == "__main__":
    run(main)
