"""Wasserstein gradient descent (WGD) on the reproduction distribution (Yang, Eckstein, Nutz & Mandt, 2023).

The reproduction distribution nu is a cloud of k particles y_j with weights w_j. For a fixed nu, the best channel
is Q(y_j | x) = w_j exp(-lamb rho(x, y_j)) / Z(x), Z(x) = sum_j w_j exp(-lamb rho(x, y_j)) (the inner BA step in
closed form), and the BA functional is L(nu) = E_x[phi(x)], phi = -log Z. WGD moves the particles down the
gradient of the first variation psi(y) = -E_x[exp(phi(x) - lamb rho(x, y))] (phi held fixed), estimated on
a minibatch of source samples. `hybrid` also takes a BA step on the weights after every move.

rho is the squared error averaged over the d dimensions (the package's MSE); rates are in nats per sample.

Bound (`evaluate`): for any nu, the channel Q above achieves D = E[sum_j Q(j|x) rho(x, y_j)] at a rate of at
most E[KL(Q(.|x) || nu)] = E[-log Z(x)] - lamb D (KL to nu instead of the channel's own output marginal can only
add). On held-out samples both are unbiased estimates, with standard errors, of a point on or above R(D).
"""
import math

import numpy as np
import tensorflow as tf

_ADAM_B1, _ADAM_B2, _ADAM_EPS = 0.9, 0.999, 1e-8
_MIN_DIM = 8  # the training loop pads the data to at least this many dimensions (see Trainer)


def pairwise_mse(x, y, dim=None):
    """rho(x_i, y_j) = ||x_i - y_j||^2 / d as an [m, k] matrix (expanded form; clipped at 0 against rounding).
    `dim`: the data dimension d, when x and y carry zero padding columns."""
    d = tf.cast(tf.shape(x)[-1] if dim is None else dim, x.dtype)
    xx = tf.reduce_sum(x * x, axis=-1, keepdims=True)
    yy = tf.reduce_sum(y * y, axis=-1)[None, :]
    return tf.maximum(xx - 2.0 * tf.matmul(x, y, transpose_b=True) + yy, 0.0) / d


def inner_ba(x, y, log_w, lamb, dim=None):
    """The closed-form inner step: rho [m, k] and phi_i = -log sum_j w_j exp(-lamb rho(x_i, y_j)) [m]."""
    rho = pairwise_mse(x, y, dim)
    phi = -tf.reduce_logsumexp(log_w[None, :] - lamb * rho, axis=1)
    return rho, phi


def wgrad(x, y, log_w, lamb, dim=None):
    """Wasserstein gradient grad_y psi at every particle [k, d] on a minibatch x [m, d] (uniform weights), with
    the minibatch's BA functional (the Lagrangian R + lamb D of the channel) and its D.

    psi(y) = -(1/m) sum_i a_i(y), a_i(y) = exp(phi_i - lamb rho(x_i, y)), so
    grad psi(y_j) = (2 lamb / d) (sum_i a_ij (y_j - x_i)) / m: one matrix product, no autodiff.
    a_ij = Q(j | x_i) / w_j, with Q the channel; one exp of the [m, k] logits gives both phi and Q."""
    m = tf.cast(tf.shape(x)[0], x.dtype)
    d = tf.cast(tf.shape(x)[1] if dim is None else dim, x.dtype)
    rho = pairwise_mse(x, y, dim)
    logits = log_w[None, :] - lamb * rho
    top = tf.reduce_max(logits, axis=1, keepdims=True)
    e = tf.exp(logits - top)
    total = tf.reduce_sum(e, axis=1, keepdims=True)
    q = e / total  # the channel Q(j | x_i)
    phi = -(top[:, 0] + tf.math.log(total[:, 0]))
    # 1 / w_j overflows float32 below w_j = e^-88 (hybrid weights can get there); such a particle carries no mass,
    # and capping 1 / w_j at e^80 keeps its a_ij (then about 0) from becoming 0 * inf = NaN.
    a = q * (tf.exp(-tf.maximum(log_w, -80.0)) / m)[None, :]
    mass = tf.reduce_sum(a, axis=0)  # the channel's output mass at j over w_j; 1 at a BA fixed point
    grad = (2.0 * lamb / d) * (mass[:, None] * y - tf.matmul(a, x, transpose_a=True))
    distortion = tf.reduce_sum(q * rho) / m
    return grad, tf.reduce_mean(phi), distortion


def ba_weights(x, y, log_w, lamb, dim=None):
    """One BA step on the weights at fixed particles: w_j <- w_j E_x[exp(phi(x) - lamb rho(x, y_j))]."""
    m = tf.cast(tf.shape(x)[0], x.dtype)
    rho, phi = inner_ba(x, y, log_w, lamb, dim)
    new = log_w + tf.reduce_logsumexp(phi[:, None] - lamb * rho, axis=0) - tf.math.log(m)
    return new - tf.reduce_logsumexp(new)  # exact up to rounding; keeps the sum at 1 over many steps


def learning_rate(lr, step, total, decay, factor):
    """The reference's schedule: lr / sqrt(1 + t (factor^-2 - 1) / total), reaching lr * factor at the end."""
    if decay == "none":
        return tf.constant(lr, tf.float32)
    rate = (factor ** -2 - 1.0) / total
    return lr / tf.sqrt(1.0 + tf.cast(step, tf.float32) * rate)


class Trainer(tf.Module):
    """WGD state (particles, log-weights, optimizer moments) and a compiled loop of steps.

    Works in standardized coordinates: x' = (x - centre) / scale with one scalar scale (the data's RMS spread),
    so float32 keeps its precision on sources like the physics data (spread ~0.03) and Adam's step is in units of
    the data's spread. rho' = rho / scale^2 and lamb' = lamb scale^2 give the same channel.
    Fewer than 8 dimensions are padded with zero columns, which stay zero (their gradient is 0): TensorFlow's CPU
    matrix products with an inner dimension of 2 are several times slower than with 8.
    """

    def __init__(self, train_x, particles, log_w, *, optimizer, lr, decay, decay_factor, batchsize, hybrid,
                 seed):
        super().__init__()
        train_x = np.asarray(train_x, np.float64)
        self.centre = train_x.mean(axis=0)
        self.scale = float(np.sqrt(((train_x - self.centre) ** 2).mean())) or 1.0
        self.dim = train_x.shape[1]
        self.data = tf.constant(self._to_internal(train_x), tf.float32)
        self.y = tf.Variable(self._to_internal(particles), dtype=tf.float32)
        self.log_w = tf.Variable(np.asarray(log_w, np.float32))
        self.m1 = tf.Variable(tf.zeros_like(self.y))
        self.m2 = tf.Variable(tf.zeros_like(self.y))
        self.step = tf.Variable(0, dtype=tf.int64)
        self.optimizer, self.lr, self.decay, self.decay_factor = optimizer, lr, decay, decay_factor
        self.batchsize, self.hybrid = batchsize, hybrid
        self.seed = tf.constant(seed, tf.int64)

    def _to_internal(self, x):
        x = (np.asarray(x, np.float64) - self.centre) / self.scale
        return np.pad(x, [(0, 0), (0, max(0, _MIN_DIM - self.dim))])

    def particles(self):
        """(particles [k, d] in data coordinates, float64; log-weights [k], normalized in float64: float32's
        log(1/k) alone would make the weights sum to 1 - 1e-7, a spurious rate of 1e-7 nats)."""
        y = self.y.numpy()[:, :self.dim].astype(np.float64) * self.scale + self.centre
        log_w = self.log_w.numpy().astype(np.float64)
        return y, log_w - np.logaddexp.reduce(log_w)

    def reset(self, lamb, total_steps, rng=None):
        """Starts a new lambda from the current particles: fresh optimizer moments and schedule. With `rng`,
        particles that merged (at a smaller lambda, where fewer distinct points are optimal) are spread again.
        Returns the number of particles moved."""
        moved = 0
        if rng is not None:
            y, moved = spread_duplicates(self.y.numpy()[:, :self.dim], np.ones(self.dim), rng)
            self.y.assign(np.pad(y, [(0, 0), (0, self.y.shape[1] - self.dim)]).astype(np.float32))
        self.lamb = tf.constant(lamb * self.scale ** 2, tf.float32)
        self.total = total_steps
        self.m1.assign(tf.zeros_like(self.y))
        self.m2.assign(tf.zeros_like(self.y))
        self.step.assign(0)
        return moved

    @tf.function
    def _run(self, num_steps, lamb, total):
        n = tf.shape(self.data, out_type=tf.int64)[0]
        sums = tf.zeros([3], tf.float32)
        for _ in tf.range(num_steps):
            idx = tf.random.stateless_uniform([self.batchsize], seed=tf.stack([self.seed, self.step]),
                                              maxval=n, dtype=tf.int64)
            x = tf.gather(self.data, idx)
            grad, loss, dist = wgrad(x, self.y, self.log_w, lamb, self.dim)
            lr = learning_rate(self.lr, self.step, total, self.decay, self.decay_factor)
            if self.optimizer == "sgd":
                # Step in units of d / (2 lamb): at lr 1, a particle holding its full mass jumps to the weighted
                # mean of the samples it attracts (a mean-shift step), so one lr suits every lambda and d.
                self.y.assign_sub(lr * self.dim / (2.0 * lamb) * grad)
            else:
                t = tf.cast(self.step + 1, tf.float32)
                self.m1.assign(_ADAM_B1 * self.m1 + (1 - _ADAM_B1) * grad)
                self.m2.assign(_ADAM_B2 * self.m2 + (1 - _ADAM_B2) * grad * grad)
                m_hat = self.m1 / (1 - _ADAM_B1 ** t)
                v_hat = self.m2 / (1 - _ADAM_B2 ** t)
                self.y.assign_sub(lr * m_hat / (tf.sqrt(v_hat) + _ADAM_EPS))
            if self.hybrid:
                self.log_w.assign(ba_weights(x, self.y, self.log_w, lamb, self.dim))
            self.step.assign_add(1)
            sums += tf.stack([loss, dist, lr])
        return sums / tf.cast(num_steps, tf.float32)

    def run(self, num_steps):
        """Runs num_steps steps; returns the minibatch means over them: lagrangian, R, D (data units), lr."""
        loss, dist, lr = self._run(tf.constant(num_steps, tf.int32), self.lamb, tf.constant(self.total, tf.float32)
                                   ).numpy().astype(np.float64)
        D = dist * self.scale ** 2
        lamb = float(self.lamb.numpy()) / self.scale ** 2
        return {"lagrangian": loss, "R": loss - lamb * D, "D": D, "lr": lr}


def spread_duplicates(y, spread, rng):
    """Moves all but one of each group of coinciding particles (equal to ~1e-6 of `spread`) by N(0, (0.01 spread)^2):
    coinciding particles receive identical gradients and would stay together for good."""
    y = np.array(y, np.float64)
    _, first = np.unique(np.round(y / (1e-6 * spread)), axis=0, return_index=True)
    repeated = np.ones(len(y), bool)
    repeated[first] = False
    if repeated.any():
        y[repeated] += 0.01 * spread * rng.standard_normal((int(repeated.sum()), y.shape[1]))
    return y, int(repeated.sum())


def init_particles(train_x, k, rng):
    """k particles at distinct training samples (with replacement only when k exceeds them), uniform weights."""
    n = len(train_x)
    y = train_x[rng.choice(n, size=k, replace=k > n)]
    y, _ = spread_duplicates(y, train_x.std(axis=0), rng)
    return y, np.full(k, -math.log(k))


@tf.function(reduce_retracing=True)
def _evaluate_chunk(x, y, log_w, lamb):
    rho, phi = inner_ba(x, y, log_w, lamb)
    q = tf.exp(log_w[None, :] - lamb * rho + phi[:, None])  # the channel Q(j | x), rows sum to 1
    return phi, tf.reduce_sum(q * rho, axis=1)


def evaluate(x, y, log_w, lamb, chunk=None):
    """The particle channel's per-sample -log Z(x) and distortion d(x) on samples x, exactly over all particles
    (float64, in chunks of rows), and the summary: R = mean(-log Z - lamb d), D = mean(d), lagrangian, with
    standard errors of the mean."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    centre = x.mean(axis=0)  # centred data keeps the expanded squared distance exact to rounding
    x, y = x - centre, y - centre
    log_w = np.asarray(log_w, np.float64)
    chunk = chunk or max(1, int(2 ** 24 // max(1, len(y))))
    neg_log_z, dist = [], []
    for start in range(0, len(x), chunk):
        a, b = _evaluate_chunk(tf.constant(x[start:start + chunk]), tf.constant(y), tf.constant(log_w),
                               tf.constant(lamb, tf.float64))
        neg_log_z.append(a.numpy())
        dist.append(b.numpy())
    neg_log_z, dist = np.concatenate(neg_log_z), np.concatenate(dist)
    return neg_log_z, dist, summarize(neg_log_z, dist, lamb)


def summarize(neg_log_z, dist, lamb):
    n = len(dist)
    se = (lambda v: float(v.std(ddof=1) / math.sqrt(n))) if n > 1 else (lambda v: float("nan"))
    rate = neg_log_z - lamb * dist
    return {"R": float(rate.mean()), "D": float(dist.mean()), "lagrangian": float(neg_log_z.mean()),
            "R_stderr": se(rate), "D_stderr": se(dist), "lagrangian_stderr": se(neg_log_z), "num_test": n}
