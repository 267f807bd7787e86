"""Relaxed rounding for encoder-side inference (Yang, Bamler & Mandt, NeurIPS 2020): what sga.py puts in place
of the quantizer while it optimizes an image's latents.

Every function maps values v, already shifted so that the entropy model's grid is the integers (the model
passes v = y - mean or z - offset and adds the shift back), to relaxed values; hard rounding is `tf.round`.

- SGA (stochastic Gumbel annealing): v goes down to floor(v) or up to floor(v) + 1 with a Gumbel-softmax
  relaxation of that two-way choice. The logits are -atanh(d) / tau for the distance d to each neighbour
  (d in [0, 1]: the nearer neighbour has the larger logit, and a neighbour at distance 1 has none), and the
  relaxed one-hot sample at temperature tau weighs the two neighbours. As tau -> 0 the sample tends to round(v).
- deterministic annealing: the same weights without the Gumbel noise (the softmax of the logits).
- STE: round forward, identity backward. Uniform noise: v + U(-1/2, 1/2). MAP: no rounding (identity).
"""
import numpy as np
import tensorflow as tf
import tensorflow_compression as tfc

# atanh(1) is infinite: distances are clipped just below 1 (and the logit of a neighbour at distance 1, that is
# v on the grid, is then -atanh(1 - EPS) / tau, about -7.3 / tau: its weight vanishes as it should).
EPS = 1e-6


def sga_temperature(t, t0=700, rate=1e-3, tau_max=0.5, tau_min=1e-8):
    """The paper's schedule: tau_max for the first t0 iterations, then exponential decay at `rate`."""
    return float(min(max(tau_max * np.exp(-rate * (t - t0)), tau_min), tau_max))


def annealing_temperature(t, rate=4e-3, tau_max=0.2, tau_min=1e-8):
    """Deterministic annealing's schedule: exp(-rate t), capped at tau_max."""
    return float(min(max(np.exp(-rate * t), tau_min), tau_max))


def _neighbour_logits(v, tau):
    """(floor(v), logit of rounding down, logit of rounding up)."""
    lower = tf.floor(v)
    frac = v - lower
    down = -tf.math.atanh(tf.clip_by_value(frac, 0.0, 1.0 - EPS)) / tau
    up = -tf.math.atanh(tf.clip_by_value(1.0 - frac, 0.0, 1.0 - EPS)) / tau
    return lower, down, up


def sga_round(v, tau, generator):
    """One SGA sample of v at temperature tau (a relaxed one-hot sample over {floor(v), floor(v) + 1}).

    For two outcomes the Gumbel-softmax weight of "up" is sigmoid((l_up + g_up - l_down - g_down) / tau) with
    g_* independent Gumbel(0, 1); their difference is a standard logistic variable, drawn here directly."""
    lower, down, up = _neighbour_logits(v, tau)
    u = generator.uniform(tf.shape(v), minval=1e-7, maxval=1.0 - 1e-7)
    logistic = tf.math.log(u) - tf.math.log1p(-u)
    return lower + tf.sigmoid((up - down + logistic) / tau)


def annealed_round(v, tau):
    """Deterministic annealing: floor(v) + the softmax weight of rounding up, with no noise."""
    lower, down, up = _neighbour_logits(v, tau)
    return lower + tf.sigmoid(up - down)


def ste_round(v):
    """Rounds forward; the gradient passes as if it were the identity (tfc's straight-through rounding)."""
    return tfc.round_st(v)


def uniform_noise(v, generator):
    return v + generator.uniform(tf.shape(v), minval=-0.5, maxval=0.5)
