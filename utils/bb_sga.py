"""Lossy bits-back coding of a mean-scale hyperprior model's z, bb_sga.py's engine (Yang, Bamler & Mandt,
NeurIPS 2020): y_hat under p(y_hat | z) and z under p(z) on one ANS stack (utils/ans.py), z popped from
q(z | y_hat) first, so that z costs the net -log p(z) + log q(z | y_hat).

- `ZGrid`: z's coding grid (buckets of a power-of-2 width over the prior's central mass) and p(z) on it, one count
  table per channel; q's Gaussians in grid units.
- `RatePosterior`: q(z | y_hat) from the hyper-analysis, then optionally Adam on its mean and log-variance for the
  expected net rate, with seeded draws: one traced graph that encoder and decoder run identically.
- `encode` / `decode`: the stack's pops and pushes (random initial words, redrawn if a popped z lands beyond
  MAX_SIGMAS of q), and the decoder's mirror, which restores the initial words.
- `expected_net_bits`: the model's net rate in expectation over q, what the stack's growth should match.
- `latent_shapes`, `zgrid`, `rate_posterior`: the shapes of an image's z and y, and one grid and one q per setting.

It imports TensorFlow at the top: bb_sga.py imports it inside its commands.
"""
import functools

import numpy as np
import tensorflow as tf
import tensorflow_compression as tfc

from utils import ans
from utils.cli import InputError

Y_RANGE = 1023  # y_hat is coded on [-Y_RANGE, Y_RANGE]; each of its 2047 integers keeps >= 2^-24 of the mass
TAIL_MASS = 1e-6  # the z grid spans the prior's central 1 - TAIL_MASS, padded by one unit
MC_DRAWS = 16  # draws of z for the expected net rate
MAX_SIGMAS, MAX_ATTEMPTS = 8.0, 32  # a popped z beyond 8 standard deviations of q: other initial bits (encode)


# ---- the coding grid of z, and p(z) on it -------------------------------------------------------

class ZGrid:
    """z's coding grid: n buckets of width `width` from `lo`; p(z) as one count table per channel."""

    def __init__(self, model, width):
        prior = model.hyperprior
        self.lo = float(np.floor(tfc.lower_tail(prior, TAIL_MASS).numpy().min())) - 1.0
        hi = float(np.ceil(tfc.upper_tail(prior, TAIL_MASS).numpy().max())) + 1.0
        self.width, self.n = width, int(round((hi - self.lo) / width))
        centres = self.values(np.arange(self.n))
        density = prior.prob(tf.constant(np.repeat(centres[:, None], prior.batch_shape[0], 1), tf.float32))
        # A bucket's mass is the density at its centre times the width (normalized): exact enough at widths
        # far below the prior's scale, and free of the cancellation of cdf differences.
        self.tables = [ans.categorical_table(w, ans.MAX_PRECISION) for w in np.asarray(density, np.float64).T]

    def values(self, symbols):
        return self.lo + (np.asarray(symbols, np.float64) + 0.5) * self.width

    def q_params(self, z_mean, z_logvar):
        """q's Gaussians in grid units: bucket k is [k - 1/2, k + 1/2) there."""
        mean = (np.asarray(z_mean, np.float64) - self.lo) / self.width - 0.5
        std = np.exp(0.5 * np.asarray(z_logvar, np.float64)) / self.width
        return mean.ravel(), std.ravel()


# ---- q(z | y_hat) for coding: what the decoder can repeat --------------------------------------

class RatePosterior:
    """q(z | y_hat) from the hyper-analysis, then (iterations > 0) Adam on its mean and log-variance for the
    expected net rate, with draws seeded by (seed, step). Adam is written out so that the whole loop is one
    traced graph, run identically by encoder and decoder on a batch of one image."""

    def __init__(self, model, iterations, lr, seed):
        self.model, self.iterations, self.lr, self.seed = model, iterations, lr, seed
        # Traced per instance: the graph closes over this setting's iterations, lr and seed.
        self._optimize = tf.function(self._optimize_steps, reduce_retracing=True)

    def __call__(self, y_hat):
        z_mean, z_logvar = self._optimize(tf.constant(y_hat, tf.float32))
        return z_mean.numpy(), z_logvar.numpy()

    def _optimize_steps(self, y_hat):
        z_mean, z_logvar = self.model.posterior(y_hat)
        if self.iterations == 0:
            return z_mean, z_logvar
        params = [z_mean, z_logvar]
        m = [tf.zeros_like(p) for p in params]
        v = [tf.zeros_like(p) for p in params]
        b1, b2, eps = 0.9, 0.999, 1e-7
        for t in tf.range(self.iterations):
            noise = tf.random.stateless_normal(tf.shape(z_mean), seed=tf.stack([self.seed, t]))
            with tf.GradientTape() as tape:
                tape.watch(params)
                z = self.model.sample_z(params[0], params[1], noise)
                loss = tf.reduce_sum(self.model.net_bits(y_hat, z, params[0], params[1]))
            grads = tape.gradient(loss, params)
            step = tf.cast(t + 1, tf.float32)
            rate = self.lr * tf.sqrt(1 - b2 ** step) / (1 - b1 ** step)
            m = [b1 * mi + (1 - b1) * g for mi, g in zip(m, grads)]
            v = [b2 * vi + (1 - b2) * g * g for vi, g in zip(v, grads)]
            params = [p - rate * mi / (tf.sqrt(vi) + eps) for p, mi, vi in zip(params, m, v)]
        return params[0], params[1]


# ---- the bits-back coder ------------------------------------------------------------------------

def conditional(model, z):
    mean, scale = model.conditional(tf.constant(z, tf.float32))
    return mean.numpy().ravel(), scale.numpy().ravel()


def encode(model, grid, y_hat, q, seed):
    """(stack words, initial words, net bits) coding y_hat [1, h, w, c] (integers) with bits-back on z: the net
    bits are those the stack grew by (pushes minus the pop)."""
    if np.abs(y_hat).max() > Y_RANGE:
        raise InputError(f"a latent of {np.abs(y_hat).max():.0f} is outside the coder's range +-{Y_RANGE}")
    q_mean, q_std = grid.q_params(*q)
    # Initial bits for the pop of z: its expected information under q plus a margin of 8 standard deviations
    # (about 1 bit each), so that `require` never trips in practice.
    need = np.sum(np.maximum(np.log2(q_std * np.sqrt(2 * np.pi * np.e)), 0.0)) + 8 * np.sqrt(q_std.size) + 128
    for attempt in range(MAX_ATTEMPTS):
        stack = ans.Stack.seeded(int(need) + 64, [seed, attempt])  # `require` keeps 64 bits of slack
        initial, initial_bits = stack.words(), stack.bits
        stack.require(int(need))
        z_symbols = stack.pop_gaussian(q_mean, q_std, 0, grid.n - 1)
        # The coder's Gaussians are leaky (every bucket of the grid keeps >= 2^-24): over ~1000 draws, one may
        # land far in a tail, and such a z costs p(y_hat | z) dearly. Other random initial words then (the
        # decoder restores whichever were used; it needs no seed).
        if np.max(np.abs(z_symbols - q_mean) / q_std) <= MAX_SIGMAS:
            break
    z_symbols = z_symbols.reshape(q[0].shape)
    mean, scale = conditional(model, grid.values(z_symbols))
    stack.push_gaussian(y_hat.ravel(), mean, scale, -Y_RANGE, Y_RANGE)
    for c, table in enumerate(grid.tables):
        stack.push_iid(z_symbols[..., c], table)
    return stack.words(), initial, stack.bits - initial_bits


def decode(model, grid, words, z_shape, y_shape, rate_posterior):
    """(y_hat, the initial words restored) from the stack words of one image."""
    stack = ans.Stack(words)
    z_symbols = np.zeros(z_shape, np.int64)
    for c in reversed(range(len(grid.tables))):  # last pushed, first popped
        z_symbols[..., c] = stack.pop_iid(int(np.prod(z_shape[:-1])), grid.tables[c]).reshape(z_shape[:-1])
    mean, scale = conditional(model, grid.values(z_symbols))
    y_hat = stack.pop_gaussian(mean, scale, -Y_RANGE, Y_RANGE).reshape(y_shape).astype(np.float32)
    q_mean, q_std = grid.q_params(*rate_posterior(y_hat))
    stack.push_gaussian(z_symbols.ravel(), q_mean, q_std, 0, grid.n - 1)
    return y_hat, stack.words()


def expected_net_bits(model, y_hat, q, seed):
    """The model's net bits of y_hat [1, h, w, c] in expectation over q = (z_mean, z_logvar): the mean over
    MC_DRAWS draws of z (seeded by `seed`), with continuous densities."""
    z_mean = tf.constant(np.repeat(q[0], MC_DRAWS, 0))
    z_logvar = tf.constant(np.repeat(q[1], MC_DRAWS, 0))
    y_rep = tf.constant(np.repeat(y_hat, MC_DRAWS, 0))
    noise = tf.random.stateless_normal(tf.shape(z_mean), seed=[seed, -1])
    return model.net_bits(y_rep, model.sample_z(z_mean, z_logvar, noise), z_mean, z_logvar).numpy().mean()


# ---- shapes, and one grid and one q per setting -------------------------------------------------

def latent_shapes(model, h, w):
    """The shapes of z and y_hat (batch of 1) of an h x w image, padded as the model pads it."""
    m = model.pad_multiple
    hp, wp = -(-h // m) * m, -(-w // m) * m
    return (1, hp // m, wp // m, model.hyperprior.batch_shape[0]), (1, hp // 16, wp // 16, model.latent_depth)


@functools.lru_cache(maxsize=8)
def zgrid(model, width):
    return ZGrid(model, width)


@functools.lru_cache(maxsize=8)
def rate_posterior(model, iterations, lr, seed):
    """One RatePosterior per setting (its traced graph is reused by every image of that setting)."""
    return RatePosterior(model, iterations, lr, seed)
