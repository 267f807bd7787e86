"""Blahut-Arimoto on a histogram of samples, under squared error averaged over dimensions.

Discretization (as in the paper): the samples' n-d histogram with `bins` bins per dimension gives the source
alphabet (occupied bins, with their frequencies p) and the reproduction alphabet (all B^n bin centres).

Two forms of the same iteration:
- `fast` (default): squared error is a sum over dimensions, so the kernel exp(-lamb * rho(x, y)) is a tensor
  product of per-dimension B x B kernels, and every sum over the grid is n small matrix products
  (O(n B^(n+1)) work, O(B^n) memory).
- `dense`: the |X| x |Y| matrix of the textbook algorithm; kept for cross-checks.

Both work with log-probabilities, so nothing underflows at large lambda: the fast form scales each fibre by
its maximum before the matrix product and recomputes with logsumexp the rare entries whose scaled sum
underflowed, which keeps every sum exact to rounding.

One iteration from the reproduction marginal q_t: Z(x) = sum_y q_t(y) K(x, y); the channel
Q(y|x) = q_t(y) K(x, y) / Z(x); the new marginal q_{t+1}(y) = q_t(y) sum_x p(x) K(x, y) / Z(x).
Reported for Q with its output marginal q_{t+1}: D = E[rho], R = I(X; Y) = -E_p[log Z] - KL(q_{t+1} || q_t)
- lamb * D (nats per sample). The Lagrangian R + lamb * D never increases across iterations.
"""
import math
import os

import numpy as np
from scipy.special import logsumexp

from utils.cli import InputError

# A scaled sum below this may have lost terms to underflow (doubles keep ~1e-308); recompute it exactly.
_TINY = 1e-280
# Terms below e^-690 of their fibre's maximum are set to exactly 0 before the matrix product: subnormal doubles
# slow it down many times over, and such terms change no sum above _TINY.
_FLUSH = -690.0
BYTES = 8
MAX_MEMORY_GIB = 16.0  # ba.py's --max_memory: the stated limit on one iteration's arrays


class Histogram:
    """The discretized source: bin centres per dimension and log-frequencies on the full grid."""

    def __init__(self, samples, bins):
        if bins < 2:
            raise InputError(f"--bins must be at least 2, got {bins}")
        counts, edges = np.histogramdd(samples, bins=bins)
        self.centres = [0.5 * (e[:-1] + e[1:]) for e in edges]
        self.dim = samples.shape[1]
        self.bins = bins
        with np.errstate(divide="ignore"):
            self.log_p = np.log(counts / counts.sum())
        self.occupied = np.isfinite(self.log_p)

    def points(self, mask=None):
        """Grid points [m, n] in C order (all, or where `mask` is true)."""
        grids = np.meshgrid(*self.centres, indexing="ij")
        pts = np.stack([g.ravel() for g in grids], axis=1)
        return pts if mask is None else pts[mask.ravel()]


def available_memory():
    """Bytes of memory available now (Linux /proc/meminfo), or total physical memory elsewhere."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def memory_needed(method, bins, dim, num_occupied):
    """Peak bytes of one iteration, roughly: a dozen grid-sized arrays (fast) or four |X| x |Y| ones (dense)."""
    grid = float(bins) ** dim
    if method == "fast":
        return 12 * grid * BYTES
    return (2 + 4 * num_occupied) * grid * BYTES


def check_memory(method, bins, dim, num_occupied=0, limit_gib=MAX_MEMORY_GIB):
    """Refuses a discretization over the stated limit (`limit_gib`, --max_memory), whatever the machine has free,
    or, under the limit, over 80% of the memory available now. Called before the histogram (num_occupied unknown:
    0) and, for the dense form, again once the occupied bins are counted."""
    need = memory_needed(method, bins, dim, num_occupied)
    what = (f"{bins}^{dim} = {float(bins) ** dim:.3g} grid points" if num_occupied == 0 else
            f"a {num_occupied} x {float(bins) ** dim:.3g} matrix (occupied bins x grid points)")
    hint = "fewer --bins" if method == "fast" else "--method fast or fewer --bins"
    start = f"--method {method} with --bins {bins} in {dim}-d needs about {need / 2**30:.3g} GiB for {what}"
    if need > limit_gib * 2**30:
        raise InputError(f"{start}, over --max_memory {limit_gib:g} GiB. Use {hint}, or a larger --max_memory.")
    have = available_memory()
    if need > 0.8 * have:
        raise InputError(f"{start}; {have / 2**30:.3g} GiB is available. Use {hint}.")


class FastBA:
    """BA with separable per-dimension kernels on the full grid."""

    def __init__(self, hist, lamb):
        self.hist, self.lamb, n = hist, lamb, hist.dim
        sq = [(c[:, None] - c[None, :]) ** 2 for c in hist.centres]  # per-dimension squared differences
        with np.errstate(divide="ignore"):
            log_k = [-(lamb / n) * s for s in sq]
            log_krho = [lk + np.log(s / n) for lk, s in zip(log_k, sq)]  # kernel times rho_d
        # Each kernel in both domains: linear for the matrix product, log for the exact fallback.
        self.k = [(lk, np.exp(lk)) for lk in log_k]
        self.krho = [(lk, np.exp(lk)) for lk in log_krho]

    @staticmethod
    def _contract(L, kernel, axis):
        """log sum_j exp(log_k[i, j] + L[..., j, ...]) along `axis`, exact in the log domain."""
        log_k, k = kernel
        moved = np.moveaxis(L, axis, 0)
        F = moved.reshape(moved.shape[0], -1)
        m = F.max(axis=0)
        empty = ~np.isfinite(m)  # an all -inf fibre (no mass) stays -inf
        m[empty] = 0.0
        shifted = F - m
        shifted[shifted < _FLUSH] = -np.inf
        S = k @ np.exp(shifted)
        with np.errstate(divide="ignore"):
            out = np.log(S) + m
        bad = (S < _TINY) & ~empty
        if bad.any():  # underflow may have lost terms here: the exact sum, entry by entry
            i, r = np.nonzero(bad)
            out[i, r] = logsumexp(log_k[i, :] + F[:, r].T, axis=1)
        return np.moveaxis(out.reshape(moved.shape), 0, axis)

    def _contract_all(self, L, kernels):
        for axis, kernel in enumerate(kernels):
            L = self._contract(L, kernel, axis)
        return L

    def step(self, log_q):
        hist, n = self.hist, self.hist.dim
        # Z by contracting one axis at a time; the prefixes are reused for the distortion numerators.
        prefixes = [log_q]
        for axis in range(n):
            prefixes.append(self._contract(prefixes[-1], self.k[axis], axis))
        log_z = prefixes[-1]
        log_w = np.where(hist.occupied, hist.log_p - log_z, -np.inf)
        distortion = 0.0
        for d in range(n):
            L = self._contract(prefixes[d], self.krho[d], d)
            for axis in range(d + 1, n):
                L = self._contract(L, self.k[axis], axis)
            distortion += np.exp(log_w + L)[hist.occupied].sum()
        log_g = self._contract_all(log_w, self.k)  # kernels are symmetric
        return _finish(log_q, log_g, hist.log_p[hist.occupied], log_z[hist.occupied], distortion, self.lamb)


class DenseBA:
    """The textbook form on the |X| x |Y| matrix (occupied bins x all grid points)."""

    def __init__(self, hist, lamb):
        self.hist, self.lamb = hist, lamb
        x, y = hist.points(hist.occupied), hist.points()
        self.rho = ((x[:, None, :] - y[None, :, :]) ** 2).mean(axis=2)
        self.log_k = -lamb * self.rho
        self.log_px = hist.log_p[hist.occupied]

    def step(self, log_q):
        flat = log_q.ravel()
        log_joint = flat[None, :] + self.log_k  # log q(y) K(x, y)
        log_z = logsumexp(log_joint, axis=1)
        log_w = self.log_px - log_z
        distortion = (np.exp(self.log_px[:, None] + log_joint - log_z[:, None]) * self.rho).sum()
        log_g = logsumexp(log_w[:, None] + self.log_k, axis=0).reshape(log_q.shape)
        return _finish(log_q, log_g, self.log_px, log_z, distortion, self.lamb)


def _finish(log_q, log_g, log_px, log_zx, distortion, lamb):
    """New marginal and the (R, D, Lagrangian) of the channel just applied, from the pieces of one step."""
    log_q_new = log_q + log_g
    log_q_new -= logsumexp(log_q_new)  # sums to 1 up to rounding; keep it exact
    q_new = np.exp(log_q_new)
    kl = np.sum(q_new * np.where(q_new > 0, log_q_new - log_q, 0.0))
    lagrangian = -np.sum(np.exp(log_px) * log_zx) - kl
    return log_q_new, {"R": float(lagrangian - lamb * distortion), "D": float(distortion),
                       "lagrangian": float(lagrangian)}


METHODS = {"fast": FastBA, "dense": DenseBA}


def run_ba(hist, lamb, steps, tol, method="fast", log_q=None, callback=None):
    """Iterates BA until the relative decrease of the Lagrangian is below `tol` (0: all steps).

    `log_q` warm-starts from a previous solution (a lambda sweep). `callback(step, record)` sees every
    iteration. Returns (log_q, last record, number of steps, converged).
    """
    solver = METHODS[method](hist, lamb)
    if log_q is None:  # uniform over the reproduction grid
        log_q = np.full(hist.log_p.shape, -hist.dim * math.log(hist.bins))
    prev, record, converged = None, None, False
    for step in range(1, steps + 1):
        log_q, record = solver.step(log_q)
        if callback is not None:
            callback(step, record)
        cur = record["lagrangian"]
        if tol > 0 and prev is not None and (prev - cur) <= tol * abs(cur):
            converged = True
            break
        prev = cur
    return log_q, record, step, converged
