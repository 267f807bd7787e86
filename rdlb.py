#!/usr/bin/env python
"""R-D lower bound from Csiszar's dual characterization, with a trained "log u" network (Yang & Mandt, ICLR 2022).

Distortion rho(x, y) = ||x - y||^2 / n, the MSE over the n data dimensions; lamb multiplies it (the package's
Lagrangian R + lamb * D, the same lambda as the paper's commands: for N(0, I_n), lamb = n/2 * c has the true
intercept min_D R(D) + lamb * D = n/2 * (1 + ln c) nats). For any u > 0 and every D,
    R(D) >= R_L(lamb) - lamb * D,  R_L(lamb) = E[-log u(X)] - log c,  c = sup_y E_X[exp(-lamb rho(X, y)) / u(X)].
With a batch of k samples, C_k = sup_y (1/k) sum_i exp(-lamb rho(x_i, y) - log u(x_i)) has E[C_k] >= c, and since
log c <= c / alpha + log alpha - 1 for every alpha > 0, each batch gives
    xi = -(1/k) sum_i log u(x_i) - C_k / alpha - log alpha + 1,   E[xi] <= R_L(lamb) <= the true intercept,
an unbiased estimate of a valid lower bound. `eval` draws M held-out batches and sets alpha for draw j to the mean
of the other M - 1 draws' C_k (leave-one-out: alpha is then independent of draw j, close to the optimal
alpha = E[C_k], and costs no extra draws); C_k is heavy-tailed, so its interval is `utils.rd.lb_interval`'s, whose
coverage bench/rdlb_coverage.py measures. Training maximizes, with M batches per step, the paper's objective
    mean_{j,i}(-log u(x_ji)) - log (1/M) sum_j C_k^(j)
with log of the mean C_k linearized around a lagging average of earlier steps' (`LaggingAlpha`, the paper's loss);
C_k's gradient is taken at its maximizer y*, by Danskin's theorem. Everything is in the log domain.

C_k: multi-start ascent on log f(y), f(y) = (1/k) sum_i exp(a_i - beta ||x_i - y||^2), a_i = -log u(x_i),
beta = lamb / n. The step y <- y + y_lr * (m(y) - y), m(y) the softmax(a - beta ||x - y||^2)-weighted mean of the
batch, is gradient ascent with step y_lr / (2 beta) (y_lr = 1 is the mean-shift fixed point step, which never
decreases f; no step-size tuning across lambdas). Starts: the --y_quick_topn batch points with the largest f
(quick) or every batch point (exhaustive). All starts run as one batch in one compiled while loop; each start stops
once its relative improvement of f falls below --y_tol. Since C_k >= exp(a_j) / k for every batch point, every
estimate is at most log k nats: evaluate with a larger --batchsize where the intercept approaches log k.
"""
import argparse
import glob
import math
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

from utils import Progress, jsonl, rd, runs, train_flags  # TensorFlow is imported where needed, so that bad input fails in a second
from utils.cli import (ArgumentParser, InputError, finite_float, float_list, int_list, nonnegative_float, output_dir,
                       positive_float, positive_int, run)
from utils.sources import make_source

MODELS = ("mlp", "cnn")
CKPT_SUFFIX = "-kerasckpt"
STEP_DECAY = 0.2


# ---- the inner optimization: C_k ----------------------------------------------------------------

def _kernel_sums(tf, y, x, b, beta, with_target=True):
    """For each row of y: log sum_i exp(a_i - beta ||x_i - y||^2), and the softmax-weighted batch mean (the ascent
    target). b = a - beta ||x||^2 is precomputed: the logits are b_i + 2 beta y.x_i - beta ||y||^2."""
    logits = (b[None, :] + tf.matmul(2.0 * beta * y, x, transpose_b=True)
              - beta * tf.reduce_sum(tf.square(y), 1, keepdims=True))
    lse = tf.reduce_logsumexp(logits, axis=1)
    if not with_target:
        return lse
    return lse, tf.matmul(tf.exp(logits - lse[:, None]), x)


def _in_chunks(tf, fn, y, chunksize, signature):
    """fn over row chunks of y (bounds the [rows, k] pairwise memory); chunksize None means one chunk."""
    if chunksize is None:
        return fn(y)
    rows = tf.shape(y)[0]

    def chunked():
        chunks = tf.reshape(tf.pad(y, [[0, (-rows) % chunksize], [0, 0]]), [-1, chunksize, y.shape[-1]])
        out = tf.map_fn(fn, chunks, fn_output_signature=signature)
        return tf.nest.map_structure(lambda t: tf.reshape(t, [-1] + t.shape[2:].as_list())[:rows], out)
    return tf.cond(rows <= chunksize, lambda: fn(y), chunked)


def log_sup(x, a, beta, topn=None, y_lr=1.0, y_tol=1e-6, y_steps=1000, chunksize=None):
    """log C_k = log max_y f(y) by batched multi-start ascent; returns (log C_k, y*, iterations, whether some start
    was still improving when --y_steps stopped it).

    x: [k, d] flat batch, a: [k] = -log u(x). Starts: the `topn` batch points with the largest f (quick), or every
    batch point (topn None: exhaustive). Call inside a tf.function.
    """
    import tensorflow as tf
    k = tf.shape(x)[0]
    center = tf.reduce_mean(x, 0)  # distances are shift-invariant; centering keeps the expansion accurate
    x = x - center
    b = a - beta * tf.reduce_sum(tf.square(x), 1)
    y = x
    if topn is not None:
        scores = _in_chunks(tf, lambda y: _kernel_sums(tf, y, x, b, beta, with_target=False), x, chunksize, tf.float32)
        y = tf.gather(x, tf.math.top_k(scores, k=tf.minimum(topn, k)).indices)
    step = lambda y: _in_chunks(tf, lambda c: _kernel_sums(tf, c, x, b, beta), y, chunksize,  # noqa: E731
                                (tf.float32, tf.float32))
    lse, target = step(y)
    active = tf.ones_like(lse, tf.bool)

    def body(i, y, lse, target, active):
        idx = tf.where(active)[:, 0]
        y_a, lse_a, target_a = tf.gather(y, idx), tf.gather(lse, idx), tf.gather(target, idx)
        y_new = y_a + y_lr * (target_a - y_a)
        lse_new, target_new = step(y_new)
        better = lse_new > lse_a
        rel_gain = tf.math.expm1(lse_new - lse_a)
        at = idx[:, None]
        y = tf.tensor_scatter_nd_update(y, at, tf.where(better[:, None], y_new, y_a))
        lse = tf.tensor_scatter_nd_update(lse, at, tf.where(better, lse_new, lse_a))
        target = tf.tensor_scatter_nd_update(target, at, tf.where(better[:, None], target_new, target_a))
        active = tf.tensor_scatter_nd_update(active, at, better & (rel_gain > y_tol))
        return i + 1, y, lse, target, active

    iters, y, lse, _, active = tf.while_loop(lambda i, y, lse, t, active: (i < y_steps) & tf.reduce_any(active),
                                             body, [tf.constant(0), y, lse, target, active])
    best = tf.argmax(lse)
    return lse[best] - tf.math.log(tf.cast(k, tf.float32)), y[best] + center, iters, tf.reduce_any(active)


def log_mean_kernel(x, a, y, beta):
    """log f(y) = log (1/k) sum_i exp(a_i - beta ||x_i - y||^2) at one point y, by exact differences.

    Differentiable in a (the training gradient); also gives eval's final, exact C_k."""
    import tensorflow as tf
    logits = a - beta * tf.reduce_sum(tf.square(x - y[None, :]), 1)
    return tf.reduce_logsumexp(logits) - tf.math.log(tf.cast(tf.shape(x)[0], tf.float32))


# ---- the log u network ---------------------------------------------------------------------------

class DualBound:
    """The log u network with lamb, and the compiled pieces: the training step and one draw of (log C_k, E[-log u])."""

    def __init__(self, args, shape, lamb):
        import tensorflow as tf
        from utils.nn import get_activation, make_cnn, make_mlp
        self.tf = tf
        self.shape = tuple(shape)
        self.n = int(np.prod(self.shape))
        activation = get_activation(args.activation)
        if args.model == "mlp":
            self.net = make_mlp(args.units, activation, output_units=1, name="log_u")
        else:
            if len(self.shape) != 3:
                raise InputError(f"--model cnn needs an image source ([N, H, W, C] .npy); --dataset gives vectors "
                                 f"of dimension {self.n}")
            if not args.kernel_dims or len(args.kernel_dims) > len(args.units):
                raise InputError(f"--kernel_dims {args.kernel_dims}: need one to {len(args.units)} entries, one per "
                                 f"conv layer (the first entries of --units)")
            c = len(args.kernel_dims)
            self.net = make_cnn(args.units[:c], args.kernel_dims, args.units[c:], activation, name="log_u")
        # Inputs are standardized by the source's mean and scale (set by `adapt` before training, then saved in
        # checkpoints): sources such as the physics data have scales ~0.03 that a freshly initialized net cannot see.
        axis = -1 if len(self.shape) == 1 else None
        self.net = tf.keras.Sequential([tf.keras.layers.Normalization(axis=axis, name="standardize"), self.net],
                                       name="log_u_net")
        self.net(tf.zeros((1,) + self.input_shape))
        self.lamb = tf.Variable(float(lamb), trainable=False, dtype=tf.float32, name="lamb")
        self.topn = None if args.y_init == "exhaustive" else args.y_quick_topn
        self.sup_kw = dict(y_lr=args.y_lr, y_tol=args.y_tol, y_steps=args.y_steps, chunksize=args.chunksize)
        self.draw = tf.function(self._draw)

    def adapt(self, x):
        """Sets the input standardization from samples x of the source."""
        self.net.layers[0].adapt(np.reshape(x, (-1,) + self.input_shape))

    @property
    def input_shape(self):
        return self.shape if len(self.shape) == 3 else (self.n,)

    def log_u(self, x):
        return self.net(self.tf.reshape(x, (-1,) + self.input_shape))[:, 0]

    def _draw(self, x):
        """One batch: (log C_k, mean of -log u, ascent iterations, whether the ascent hit --y_steps)."""
        tf = self.tf
        a = -self.log_u(x)
        xf = tf.reshape(x, [-1, self.n])
        beta = self.lamb / self.n
        _, y, iters, capped = log_sup(xf, a, beta, self.topn, **self.sup_kw)
        return log_mean_kernel(xf, a, y, beta), tf.reduce_mean(a), iters, capped

    def terms(self, x, num_draws):
        """From M = num_draws batches stacked in x: mean of -log u, log of the mean of the draws' C_k (differentiable
        in log u, through C_k at its maximizer y*: Danskin), the draws' log C_k and their ascent iterations."""
        tf = self.tf
        beta = self.lamb / self.n
        a = -tf.reshape(self.log_u(x), [num_draws, -1])
        xf = tf.reshape(x, [num_draws, -1, self.n])
        log_ck, iters = [], []
        for j in range(num_draws):  # M is small and static: M independent while loops in one graph
            _, y, it, _ = log_sup(xf[j], tf.stop_gradient(a[j]), beta, self.topn, **self.sup_kw)
            log_ck.append(log_mean_kernel(xf[j], a[j], tf.stop_gradient(y), beta))
            iters.append(it)
        log_ck = tf.stack(log_ck)
        log_mean_ck = tf.reduce_logsumexp(log_ck) - math.log(num_draws)
        return tf.reduce_mean(a), log_mean_ck, log_ck, tf.stack(iters)


class LaggingAlpha:
    """The paper's training loss and its state (saved in checkpoints, so --cont continues it).

    The objective E[-log u] - log E[C_k] is unchanged when a constant is added to log u, so nothing holds that
    constant and Adam lets it drift far (log mean C_k ~ +50 within 100 steps). As the paper's code does, log E[C_k] is
    replaced by its linearization exp(log C - log alpha) + log alpha - 1 around a lagging average alpha of earlier
    steps' mean C_k (alpha <- beta alpha + (1 - beta) previous mean; the update is skipped when the two are more than
    10 nats apart). A shift of log u now changes the loss until alpha catches up, which pins the constant near its
    history. The batch's log mean C_k is held within max_delta nats of the previous step's: above, its value is
    capped but its gradient kept; below, the gradient that would lower it further is dropped."""

    def __init__(self, tf, beta, max_delta):
        self.tf, self.beta, self.max_delta = tf, float(beta), float(max_delta)
        self.log_alpha = tf.Variable(0.0, trainable=False, name="log_alpha")
        self.prev = tf.Variable(0.0, trainable=False, name="prev_log_mean_Ck")
        self.started = tf.Variable(False, trainable=False, name="alpha_started")

    def loss(self, mean_neg_log_u, log_mean_ck):
        """(loss, log alpha used, the clipped log mean C_k, d loss / d log mean C_k), from values (no gradient
        flows here: make_train_step applies the slope); call update(...) with the 2nd and 3rd after the step."""
        tf = self.tf
        first = tf.logical_not(self.started)
        prev = tf.where(first, log_mean_ck, self.prev)  # the first step expands around itself
        log_alpha = tf.where(first, prev, self.log_alpha)
        mixed = tf.reduce_logsumexp(tf.stack([log_alpha + math.log(self.beta) if self.beta > 0 else -np.inf,
                                              prev + math.log1p(-self.beta)]))
        log_alpha = tf.where(tf.abs(prev - log_alpha) <= 10.0, mixed, log_alpha)
        # Capped above, the value is held but the gradient kept; floored below, the gradient is dropped.
        floored = log_mean_ck < prev - self.max_delta
        clipped = tf.clip_by_value(log_mean_ck, prev - self.max_delta, prev + self.max_delta)
        linearized = tf.exp(clipped - log_alpha) + log_alpha - 1.0  # >= log mean C_k
        slope = tf.where(floored, 0.0, tf.exp(clipped - log_alpha))
        return linearized - mean_neg_log_u, log_alpha, clipped, slope

    def update(self, log_alpha, clipped):
        self.log_alpha.assign(log_alpha)
        self.prev.assign(clipped)
        self.started.assign(True)


def make_train_step(bound, optimizer, num_draws, alpha, strategy):
    """One training step on a global batch of num_draws x k samples, its draws shared out among the strategy's
    replicas (each must get as many).

    The loss couples the draws through log mean C_k, so each replica gathers every draw's log C_k (values) and
    differentiates a surrogate with the same gradient: slope * sum_j w_j log C_j - E[-log u] / R over its own
    draws, with w_j the softmax weight of draw j among all and slope = d loss / d log mean C_k. The optimizer
    sums the replicas' gradients: the full loss's gradient, on one device or several."""
    tf = bound.tf
    replicas = strategy.num_replicas_in_sync
    per_replica = num_draws // replicas
    variables = bound.net.trainable_variables

    def replica_step(x):
        ctx = tf.distribute.get_replica_context()
        with tf.GradientTape() as tape:
            mean_a, _, log_ck, iters = bound.terms(x, per_replica)
            all_log_ck = ctx.all_gather(tf.stop_gradient(log_ck), axis=0)
            log_total = tf.reduce_logsumexp(all_log_ck)
            global_mean_a = ctx.all_reduce("sum", tf.stop_gradient(mean_a)) / replicas
            loss, log_alpha, clipped, slope = alpha.loss(global_mean_a, log_total - math.log(num_draws))
            weights = tf.stop_gradient(tf.exp(log_ck - log_total))
            surrogate = slope * tf.reduce_sum(weights * log_ck) - mean_a / replicas
        optimizer.apply_gradients(zip(tape.gradient(surrogate, variables), variables))
        all_iters = ctx.all_gather(tf.cast(iters, tf.float32), axis=0)
        return dict(objective=-loss, log_mean_Ck=log_total - math.log(num_draws), log_alpha=log_alpha,
                    y_iters=tf.reduce_mean(all_iters), clipped=clipped)

    @tf.function
    def step(x):
        out = strategy.experimental_local_results(strategy.run(replica_step, args=(x,)))[0]  # equal on all
        alpha.update(out["log_alpha"], out.pop("clipped"))
        return out

    def split(x):
        """The global batch [num_draws * k, ...] as each replica's consecutive share of the draws."""
        if replicas == 1:
            return x
        rows = tf.shape(x)[0] // replicas
        return strategy.experimental_distribute_values_from_function(
            lambda ctx: x[ctx.replica_id_in_sync_group * rows:(ctx.replica_id_in_sync_group + 1) * rows])

    return lambda x: step(split(x))


def step_decay(lr, last_step):
    """The paper's schedule: lr for the first half of the run, then x0.2 after 1/2, 3/4 and 7/8 of --last_step.

    A Keras schedule of the optimizer's step counter (t - 1 during step t), so a resumed run stays on it: step t
    (1-based) runs at lr * 0.2^j, j the number of fractions f in (1/2, 3/4, 7/8) with t > f * last_step."""
    import tensorflow as tf
    bounds = [math.floor(f * last_step) - 1 for f in (0.5, 0.75, 0.875)]
    return tf.keras.optimizers.schedules.PiecewiseConstantDecay(bounds, [lr * STEP_DECAY ** j for j in range(4)])


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


def restore(bound, prefix, optimizer=None, state=None):
    """Loads the network; with `optimizer`, also the optimizer and the training `state` ({name: variable})."""
    tf = bound.tf
    objects = dict(log_u=bound.net)
    if optimizer is not None:
        optimizer.build(bound.net.trainable_variables)
        objects.update(optimizer=optimizer, **state)
    try:
        status = tf.train.Checkpoint(**objects).read(prefix).assert_existing_objects_matched()
        if optimizer is None:
            status.expect_partial()  # eval needs the network only, not the optimizer's state
        bound.net.layers[0].finalize_state()  # the standardization reads its restored statistics
    except (ValueError, AssertionError, tf.errors.OpError) as e:
        tf.get_logger().setLevel("ERROR")  # the failed restore would warn about its leftovers at exit
        raise InputError(f"checkpoint {prefix} does not fit this model (--model/--units/--kernel_dims/--data_dim "
                         f"must match training): {str(e).splitlines()[0]}")


# ---- commands ------------------------------------------------------------------------------------

def anneal_schedule(targets, last_step):
    """lamb(step) for --anneal_lamb: the run is split into one segment per target; each ramps log-linearly from the
    previous target over its first half and holds the target for its second half, checkpointed at its end."""
    seg = last_step / len(targets)
    ends = [round((j + 1) * seg) for j in range(len(targets))]

    def lamb(step):
        j = min(int((step - 1) / seg), len(targets) - 1)
        frac = min(1.0, 2.0 * ((step - 1) - j * seg) / seg)
        lo, hi = targets[max(j - 1, 0)], targets[j]
        return lo * (hi / lo) ** frac
    return lamb, set(ends)


def train(args, source):
    from utils import training
    strategy = training.strategy_from_flags(args)  # before any other TensorFlow work (docs/distributed.md)
    import tensorflow as tf
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
            raise InputError(f"--target_lambs go up to {max(args.target_lambs)}, above the final --lamb {args.lamb}")
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
        alpha = LaggingAlpha(tf, args.beta, args.log_E_Ck_max_delta)
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
            raise InputError("eval needs --lamb (with --checkpoint_dir) or --ckpt")
        pattern = run_dir_name(args, args.data_dim or source.dim, args.lamb, "*")
        dirs = sorted(glob.glob(os.path.join(glob.escape(args.checkpoint_dir), pattern)))
        if len(dirs) != 1:
            raise InputError(f"{len(dirs)} run folders match {os.path.join(args.checkpoint_dir, pattern)}; "
                             f"{'name one with --ckpt' if dirs else 'train first or check the flags'}")
        prefixes = resolve_ckpts(dirs[0])
    for prefix in prefixes:
        lamb = args.lamb if args.lamb is not None else lamb_from_path(prefix)
        if lamb is None or not lamb > 0:
            raise InputError(f"no lambda in {prefix}; give --lamb")
        evaluate_ckpt(args, source, prefix, lamb)


def eval_draws(source):
    """(draw(k, seed) -> a batch of k samples, the split they come from) for eval: the held-out split of a sample
    file (rows at random, with replacement only when k exceeds them), fresh draws of a sampler, or, for a file
    without a held-out twin, its training samples (with a warning)."""
    from utils.sources import ImageFile, SampleFile
    if isinstance(source, SampleFile):
        rows, split = source.test, ("train" if source.test is source.train else "test")
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
    p.add_argument("--lamb", type=finite_float, help="lambda, the slope of the bounding line (per-dimension MSE)")
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

    t = sub.add_parser("train", parents=[inner], help="train log u at --lamb",
                       description="Train log u at --lamb.")
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
                   help="sweep lambda up through --target_lambs to --lamb, checkpointing at each target")
    t.add_argument("--target_lambs", type=float_list,
                   help="with --anneal_lamb: the lambdas passed on the way to --lamb, comma-separated")
    t.add_argument("--cont", action="store_true", help="resume the run's latest checkpoint")

    train_flags.add_run_flags(t)  # --strategy, --cpu_devices, --tensorboard

    e = sub.add_parser("eval", parents=[inner], help="estimate the intercept R_lb with a 95%% interval",
                       description="Estimate the intercept R_lb with a 95%% interval.")
    e.add_argument("--num_Ck_samples", type=positive_int, default=10, help="M, draws of C_k (and of xi)")
    e.add_argument("--ckpt", help="a checkpoint, a run folder or a glob; lambda comes from the name unless --lamb")
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
        raise InputError(f"--lamb must be a positive finite number, got {args.lamb}")
    if args.command == "train" and args.lamb is None:
        raise InputError("train needs --lamb")
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
