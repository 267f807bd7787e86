"""The R-D lower bound of Csiszar's dual characterization with a trained "log u" network (Yang & Mandt, ICLR 2022):
the engine that rdlb.py's `train` and `eval` commands run.

Distortion rho(x, y) = ||x - y||^2 / n, the MSE over the n data dimensions; lamb multiplies it (the package's
Lagrangian R + lamb * D, the same lambda as the paper's commands: for N(0, I_n), lamb = n/2 * c has the true
intercept min_D R(D) + lamb * D = n/2 * (1 + ln c) nats). For any u > 0 and every D,
    R(D) >= R_L(lamb) - lamb * D,  R_L(lamb) = E[-log u(X)] - log c,  c = sup_y E_X[exp(-lamb rho(X, y)) / u(X)].
With a batch of k samples, C_k = sup_y (1/k) sum_i exp(-lamb rho(x_i, y) - log u(x_i)) has E[C_k] >= c, and since
log c <= c / alpha + log alpha - 1 for every alpha > 0, each batch gives
    xi = -(1/k) sum_i log u(x_i) - C_k / alpha - log alpha + 1,   E[xi] <= R_L(lamb) <= the true intercept,
an unbiased estimate of a valid lower bound (`DualBound.draw` gives one batch's log C_k and mean -log u; the
estimate and its interval from M draws are `utils.rd.lb_xi` and `utils.rd.lb_interval`). Training maximizes, with
M batches per step, the paper's objective
    mean_{j,i}(-log u(x_ji)) - log (1/M) sum_j C_k^(j)
with log of the mean C_k linearized around a lagging average of earlier steps' (`LaggingAlpha`, the paper's loss);
C_k's gradient is taken at its maximizer y*, by Danskin's theorem (`make_train_step`). Everything is in the log
domain.

C_k (`log_sup`): multi-start ascent on log f(y), f(y) = (1/k) sum_i exp(a_i - beta ||x_i - y||^2),
a_i = -log u(x_i), beta = lamb / n. The step y <- y + y_lr * (m(y) - y), m(y) the softmax(a - beta ||x - y||^2)-
weighted mean of the batch, is gradient ascent with step y_lr / (2 beta) (y_lr = 1 is the mean-shift fixed point
step, which never decreases f; no step-size tuning across lambdas). Starts: the `topn` batch points with the
largest f (quick) or every batch point (exhaustive). All starts run as one batch in one compiled while loop; each
start stops once its relative improvement of f falls below y_tol. Since C_k >= exp(a_j) / k for every batch point,
every estimate is at most log k nats.

What is here and what is rdlb.py's: this module holds what computes the bound and trains the network, including
what a checkpoint holds and how it is read back into the network (`restore`: the objects log_u, optimizer and the
training state, which change with the engine), and the schedules of lr and lambda. The script holds what the
command line decides: flags and their checks, run folder and checkpoint file names and how --ckpt finds them,
which samples eval draws, the training loop's logging and saving, and the records it writes. TensorFlow is
imported at the top here; rdlb.py imports this module only inside its commands, so that --help and bad flags
answer without loading TensorFlow.
"""
import math

import numpy as np
import tensorflow as tf

from utils.cli import InputError
from utils.nn import get_activation, make_cnn, make_mlp

STEP_DECAY = 0.2  # the factor of the paper's lr schedule (`step_decay`)


# ---- the inner optimization: C_k ----------------------------------------------------------------

def _kernel_sums(y, x, b, beta, with_target=True):
    """For each row of y: log sum_i exp(a_i - beta ||x_i - y||^2), and the softmax-weighted batch mean (the ascent
    target). b = a - beta ||x||^2 is precomputed: the logits are b_i + 2 beta y.x_i - beta ||y||^2."""
    logits = (b[None, :] + tf.matmul(2.0 * beta * y, x, transpose_b=True)
              - beta * tf.reduce_sum(tf.square(y), 1, keepdims=True))
    lse = tf.reduce_logsumexp(logits, axis=1)
    if not with_target:
        return lse
    return lse, tf.matmul(tf.exp(logits - lse[:, None]), x)


def _in_chunks(fn, y, chunksize, signature):
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
    k = tf.shape(x)[0]
    center = tf.reduce_mean(x, 0)  # distances are shift-invariant; centering keeps the expansion accurate
    x = x - center
    b = a - beta * tf.reduce_sum(tf.square(x), 1)
    y = x
    if topn is not None:
        scores = _in_chunks(lambda y: _kernel_sums(y, x, b, beta, with_target=False), x, chunksize, tf.float32)
        y = tf.gather(x, tf.math.top_k(scores, k=tf.minimum(topn, k)).indices)
    step = lambda y: _in_chunks(lambda c: _kernel_sums(c, x, b, beta), y, chunksize,  # noqa: E731
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
    logits = a - beta * tf.reduce_sum(tf.square(x - y[None, :]), 1)
    return tf.reduce_logsumexp(logits) - tf.math.log(tf.cast(tf.shape(x)[0], tf.float32))


# ---- the log u network ---------------------------------------------------------------------------

class DualBound:
    """The log u network with lamb, and the compiled pieces: the training step and one draw of (log C_k, E[-log u])."""

    def __init__(self, args, shape, lamb):
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
        return self.net(tf.reshape(x, (-1,) + self.input_shape))[:, 0]

    def _draw(self, x):
        """One batch: (log C_k, mean of -log u, ascent iterations, whether the ascent hit --y_steps)."""
        a = -self.log_u(x)
        xf = tf.reshape(x, [-1, self.n])
        beta = self.lamb / self.n
        _, y, iters, capped = log_sup(xf, a, beta, self.topn, **self.sup_kw)
        return log_mean_kernel(xf, a, y, beta), tf.reduce_mean(a), iters, capped

    def terms(self, x, num_draws):
        """From M = num_draws batches stacked in x: mean of -log u, log of the mean of the draws' C_k (differentiable
        in log u, through C_k at its maximizer y*: Danskin), the draws' log C_k and their ascent iterations."""
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

    def __init__(self, beta, max_delta):
        self.beta, self.max_delta = float(beta), float(max_delta)
        self.log_alpha = tf.Variable(0.0, trainable=False, name="log_alpha")
        self.prev = tf.Variable(0.0, trainable=False, name="prev_log_mean_Ck")
        self.started = tf.Variable(False, trainable=False, name="alpha_started")

    def loss(self, mean_neg_log_u, log_mean_ck):
        """(loss, log alpha used, the clipped log mean C_k, d loss / d log mean C_k), from values (no gradient
        flows here: make_train_step applies the slope); call update(...) with the 2nd and 3rd after the step."""
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
    bounds = [math.floor(f * last_step) - 1 for f in (0.5, 0.75, 0.875)]
    return tf.keras.optimizers.schedules.PiecewiseConstantDecay(bounds, [lr * STEP_DECAY ** j for j in range(4)])



# ---- checkpoint contents ------------------------------------------------------------------------

def restore(bound, prefix, optimizer=None, state=None):
    """Loads the network; with `optimizer`, also the optimizer and the training `state` ({name: variable})."""
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



# ---- the lambda schedule of --anneal_lamb ----------------------------------------------------------

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
