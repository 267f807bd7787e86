"""Rate-distortion arithmetic: the analytic Gaussian R(D), lower-bound aggregation, intervals, BD-rate.

Conventions (see README): D is the squared error averaged over the n data dimensions; R is per sample in
nats (or bits), optionally divided by n ("per dimension"); the Lagrangian is R + lamb * D.
"""
import math

import numpy as np

# SciPy is imported in the functions that use it: scipy.stats takes about a second to import, and most scripts
# import this module before they parse their command line, --help included.

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
    from scipy import stats
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


BD_METHODS = ("cubic", "pchip")


def _bd_points(rate, psnr, what, method):
    """(PSNR ascending, ln rate) of one curve, checked."""
    rate, psnr = np.asarray(rate, dtype=np.float64).ravel(), np.asarray(psnr, dtype=np.float64).ravel()
    if rate.size != psnr.size:
        raise ValueError(f"{what}: {rate.size} rates but {psnr.size} PSNRs")
    if not (np.all(np.isfinite(rate)) and np.all(np.isfinite(psnr)) and np.all(rate > 0)):
        raise ValueError(f"{what}: rates must be positive and finite, PSNRs finite")
    order = np.argsort(psnr, kind="stable")
    psnr, log_rate = psnr[order], np.log(rate[order])
    # A cubic needs 4 points; PCHIP interpolates, so it needs distinct PSNRs (2 at least).
    needed = 4 if method == "cubic" else 2
    if psnr.size < needed:
        raise ValueError(f"{what}: the {method} method needs at least {needed} points, got {psnr.size}")
    if method == "pchip" and np.any(np.diff(psnr) <= 0):
        raise ValueError(f"{what}: the pchip method needs distinct PSNRs (a repeated point?)")
    return psnr, log_rate


def psnr_overlap(psnr_ref, psnr_test):
    """The common PSNR interval [lo, hi] of two curves, over which BD-rate compares them."""
    lo = max(np.min(psnr_ref), np.min(psnr_test))
    hi = min(np.max(psnr_ref), np.max(psnr_test))
    if not hi > lo:
        raise ValueError(f"the two curves do not overlap in PSNR: the anchor spans {np.min(psnr_ref):.3f} to "
                         f"{np.max(psnr_ref):.3f} dB, the test {np.min(psnr_test):.3f} to {np.max(psnr_test):.3f} dB")
    return float(lo), float(hi)


def _mean_log_rate(psnr, log_rate, lo, hi, method):
    """The mean of ln rate over PSNR in [lo, hi], from a cubic least-squares fit or a PCHIP interpolant."""
    if method == "pchip":
        from scipy.interpolate import PchipInterpolator
        return float(PchipInterpolator(psnr, log_rate).integrate(lo, hi)) / (hi - lo)
    center = psnr.mean()  # fitting around the mean keeps the cubic's normal equations well conditioned
    antiderivative = np.polyint(np.polyfit(psnr - center, log_rate, 3))
    return float(np.polyval(antiderivative, hi - center) - np.polyval(antiderivative, lo - center)) / (hi - lo)


def bd_rate(rate_ref, psnr_ref, rate_test, psnr_test, method="cubic"):
    """Bjontegaard delta rate of the test curve against the reference (anchor), in percent; negative: the test
    needs fewer bits at equal PSNR.

    ln rate is modelled as a function of PSNR for each curve, by a least-squares cubic (Bjontegaard's method,
    the default) or a piecewise-cubic Hermite interpolant ("pchip"), and the two are averaged over the common
    PSNR range (`psnr_overlap`): BD-rate = exp(mean_test - mean_ref) - 1. The curves may be sampled at
    different PSNRs; curves that do not overlap are refused (ValueError).
    """
    if method not in BD_METHODS:
        raise ValueError(f"unknown BD-rate method {method!r}; choose one of {', '.join(BD_METHODS)}")
    psnr_r, log_r = _bd_points(rate_ref, psnr_ref, "anchor curve", method)
    psnr_t, log_t = _bd_points(rate_test, psnr_test, "test curve", method)
    lo, hi = psnr_overlap(psnr_r, psnr_t)
    diff = _mean_log_rate(psnr_t, log_t, lo, hi, method) - _mean_log_rate(psnr_r, log_r, lo, hi, method)
    return float(math.expm1(diff) * 100.0)


# ---- the lower bound's estimator and its interval (rdlb.py eval, plot_rd.py, bench/rdlb_coverage.py) ----------

def lb_xi(log_ck, neg_log_u):
    """rdlb's estimator for each of M draws: xi_j = mean(-log u)_j - C_j / alpha_j - log alpha_j + 1, with alpha_j
    the mean of the other draws' C_k (leave-one-out, so alpha_j is independent of draw j). Returns (xi, log alpha)."""
    log_ck = np.asarray(log_ck, np.float64).ravel()
    m = log_ck.size
    if m < 2:
        raise ValueError("the lower-bound estimator needs at least 2 draws of C_k")
    others = np.array([np.delete(log_ck, j) for j in range(m)])
    log_alpha = np.logaddexp.reduce(others, axis=1) - math.log(m - 1)
    return np.asarray(neg_log_u, np.float64).ravel() - np.exp(log_ck - log_alpha) - log_alpha + 1.0, log_alpha


def lb_interval(log_ck, neg_log_u, level=0.95):
    """A `level` interval for the bound E[-log u] - log E[C_k] from M draws (log C_k, mean -log u), whose point
    estimate is the mean of `lb_xi`.

    C_k is right-skewed, so the mean of a few draws of C_k is usually below E[C_k] and a Student-t interval on xi
    lies above the bound more often than it should. Here log C_k is taken as normal (mean mu, variance s^2), so
    log E[C_k] = mu + s^2 / 2, with the modified-Cox interval mu_hat + s^2/2 +- t sqrt(s^2/M + s^4/(2(M - 1)));
    the mean of -log u gets its Student-t interval, and the two half-widths add. Coverage measured by
    bench/rdlb_coverage.py (README, rdlb section)."""
    log_ck = np.asarray(log_ck, np.float64).ravel()
    a = np.asarray(neg_log_u, np.float64).ravel()
    m = log_ck.size
    if m < 2:
        raise ValueError("an interval needs at least 2 draws of C_k")
    from scipy import stats
    q = stats.t.ppf(0.5 + level / 2, df=m - 1)
    s2 = log_ck.var(ddof=1)
    center = a.mean() - (log_ck.mean() + s2 / 2)
    half = q * (math.sqrt(s2 / m + s2 ** 2 / (2 * (m - 1))) + a.std(ddof=1) / math.sqrt(m))
    return {"lo": float(center - half), "hi": float(center + half), "method": "lognormal"}
