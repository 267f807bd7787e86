"""Rate-distortion arithmetic: the analytic Gaussian R(D), lower-bound aggregation, intervals, BD-rate.

Conventions (see README): D is the squared error averaged over the n data dimensions; R is per sample in
nats (or bits), optionally divided by n ("per dimension"); the Lagrangian is R + lamb * D.
"""
import math

import numpy as np
from scipy import stats

LN2 = math.log(2.0)


def _variances(var):
    var = np.asarray(var, dtype=np.float64).ravel()
    if var.size == 0 or not np.all(var > 0) or not np.all(np.isfinite(var)):
        raise ValueError("variances must be positive and finite")
    return var


def _rate_scale(n, nats, per_dim):
    return (1.0 if nats else 1.0 / LN2) / (n if per_dim else 1.0)


def water_level(var, D):
    """The reverse water-filling level theta with mean_i min(theta, var_i) = D, for each D in (0, mean(var)]."""
    var = np.sort(_variances(var))
    n = var.size
    D = np.atleast_1d(np.asarray(D, dtype=np.float64))
    if np.any(D <= 0):
        raise ValueError("distortion must be positive")
    # With the k smallest variances fully "submerged", the total is cumsum[k] + (n - k) * theta.
    prefix = np.concatenate([[0.0], np.cumsum(var)])  # prefix[k] = sum of k smallest
    k = np.arange(n + 1)
    # Total distortion when theta equals var[k-1] (the k-th smallest): prefix[k] + (n - k) * var[k-1].
    at_knots = prefix[1:] + (n - k[1:]) * var
    idx = np.searchsorted(at_knots, n * D)  # number of variances below theta
    idx = np.minimum(idx, n)
    theta = np.where(idx < n, (n * D - prefix[idx]) / np.maximum(n - idx, 1), var[-1])
    return np.minimum(theta, var[-1])


def gaussian_rd(var, D, nats=True, per_dim=False):
    """R(D) of N(mu, diag(var)) under per-dimension MSE D (an array of distortions), by reverse water-filling."""
    var = _variances(var)
    theta = water_level(var, D)
    rate = 0.5 * np.log(np.maximum(var[None, :] / theta[:, None], 1.0)).sum(axis=1)
    return rate * _rate_scale(var.size, nats, per_dim)


def gaussian_rd_curve(var, num=200, nats=True, per_dim=False, d_min_frac=1e-3):
    """(D, R) over D from d_min_frac * mean(var) to mean(var) (where R reaches 0), log-spaced."""
    var = _variances(var)
    D = np.geomspace(d_min_frac * var.mean(), var.mean(), num)
    return D, gaussian_rd(var, D, nats=nats, per_dim=per_dim)


def gaussian_rd_at_lambda(var, lamb, nats=True, per_dim=False):
    """The point (R, D) of the Gaussian R(D) minimizing R + lamb * D, and that minimum.

    The slope of R(D) is -n / (2 theta) nats per unit of per-dimension MSE, so the water level is
    theta = s / (2 lamb) with s the rate's scale factor (n nats per sample -> n; bits -> n / ln 2; per dim -> 1).
    """
    var = _variances(var)
    if not lamb > 0:
        raise ValueError("lambda must be positive")
    scale = _rate_scale(var.size, nats, per_dim)
    theta = var.size * scale / (2.0 * lamb)
    D = np.minimum(theta, var).mean()
    R = 0.5 * np.log(np.maximum(var / theta, 1.0)).sum() * scale
    return {"R": float(R), "D": float(D), "lagrangian": float(R + lamb * D)}


def mean_ci(samples, level=0.95):
    """Sample mean, its standard error, and a Student-t confidence interval."""
    x = np.asarray(samples, dtype=np.float64).ravel()
    if x.size < 2:
        raise ValueError("need at least 2 samples for a confidence interval")
    mean = x.mean()
    stderr = x.std(ddof=1) / math.sqrt(x.size)
    half = stats.t.ppf(0.5 + level / 2, df=x.size - 1) * stderr
    return {"mean": float(mean), "stderr": float(stderr), "lo": float(mean - half), "hi": float(mean + half)}


def aggregate_lb_results(files):
    """Pools lower-bound evaluations: {lamb: all xi samples} over `.npz` files holding `lamb` and `xi`.

    Files of the same lambda (different seeds) are concatenated, so their samples form one estimate.
    """
    pooled = {}
    for f in files:
        with np.load(f) as data:
            lamb = float(np.asarray(data["lamb"]).item())
            pooled.setdefault(lamb, []).append(np.asarray(data["xi"], dtype=np.float64).ravel())
    return {lamb: np.concatenate(parts) for lamb, parts in sorted(pooled.items())}


def lower_bound_curve(lambs, intercepts, D):
    """R_L(D) = max(0, max_lamb (R_lb(lamb) - lamb * D)): each lambda gives a supporting line of slope -lamb."""
    lambs = np.asarray(lambs, dtype=np.float64)
    intercepts = np.asarray(intercepts, dtype=np.float64)
    D = np.atleast_1d(np.asarray(D, dtype=np.float64))
    lines = intercepts[None, :] - lambs[None, :] * D[:, None]
    return np.maximum(lines.max(axis=1), 0.0)


def bd_rate(rate_ref, psnr_ref, rate_test, psnr_test):
    """Bjontegaard delta rate in percent (negative: the test codec needs fewer bits at equal PSNR).

    Fits log-rate as a cubic in PSNR for each curve and compares the integrals over the common PSNR range.
    """
    rate_ref, psnr_ref, rate_test, psnr_test = (np.asarray(a, dtype=np.float64)
                                                for a in (rate_ref, psnr_ref, rate_test, psnr_test))
    if min(rate_ref.size, rate_test.size) < 4:
        raise ValueError("BD-rate needs at least 4 points per curve")
    lo = max(psnr_ref.min(), psnr_test.min())
    hi = min(psnr_ref.max(), psnr_test.max())
    if not hi > lo:
        raise ValueError("the two curves do not overlap in PSNR")
    p_ref = np.polyint(np.polyfit(psnr_ref, np.log(rate_ref), 3))
    p_test = np.polyint(np.polyfit(psnr_test, np.log(rate_test), 3))
    area_ref = np.polyval(p_ref, hi) - np.polyval(p_ref, lo)
    area_test = np.polyval(p_test, hi) - np.polyval(p_test, lo)
    return float((math.exp((area_test - area_ref) / (hi - lo)) - 1.0) * 100.0)
