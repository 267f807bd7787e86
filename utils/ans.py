"""Stack (LIFO) entropy coding on constriction's ANS coder, with integer count tables for bits-back coding.

A `CountTable` holds m independent discrete distributions over n symbols as integer counts that sum to
2^precision in every row (each count >= 1, so every symbol stays codable). Its cdf and ppf are exact integer
inverses of each other, which bits-back coders need when they map a uniform integer to a symbol and back
(BB-CIS). The tables are built here from continuous models: equal-mass buckets of the standard normal for a
latent, a Gaussian over those buckets for a posterior, a Bernoulli per pixel, a categorical from weights.

`Stack` wraps `constriction.stream.stack.AnsCoder` (32-bit words, 24-bit model precision): `push` codes a
vector of symbols, each with its own row of a table, in one call; `pop` is its exact inverse. constriction
re-quantizes the tables to its 24-bit precision (`Categorical(perfect=False)`, deterministic, so encoder and
decoder agree); for tables of <= 16 bits this changes a symbol's information content by < 1e-4 bits.
The stack also sums the information content of everything pushed minus everything popped under our own
tables (`info_bits`), the discretized rate that the real one (`bits`) should match.

Bits-back needs bits to pop before anything is pushed: `seeded` starts a stack on random words, and
`require` refuses to pop from a stack that could run dry, since constriction would silently decode zeros.
"""
import functools
import math

import constriction
import numpy as np
from scipy.special import ndtr, ndtri

MAX_PRECISION = 22  # our tables' precision limit; constriction requantizes them to 24 bits
_CATEGORICAL = constriction.stream.model.Categorical(perfect=False)
_UNIFORM = constriction.stream.model.Uniform()


class CountTable:
    """m distributions over n symbols: int64 counts [m, n], each row summing to 2^precision.

    Symbol arguments are [m] (one per row) or [..., m] (several draws of every row, broadcast)."""

    def __init__(self, counts, precision):
        counts = np.asarray(counts, dtype=np.int64)
        self.counts = counts[None] if counts.ndim == 1 else counts
        self.precision = precision

    def __len__(self):
        return len(self.counts)

    @functools.cached_property
    def cum(self):
        return np.concatenate([np.zeros((len(self), 1), np.int64), np.cumsum(self.counts, axis=1)], axis=1)

    @functools.cached_property
    def probs(self):
        """What constriction gets; exact in float32 (integers below 2^24 over a power of two)."""
        return (self.counts / float(1 << self.precision)).astype(np.float32)

    def tile(self, k):
        """The m rows repeated k times, for pushing or popping k draws of every row in one call."""
        return _Tiled(self, k)

    def cdf(self, symbols):
        """The start of each symbol's interval in its row."""
        return self.cum[np.arange(len(self)), symbols]

    def count(self, symbols):
        return self.counts[np.arange(len(self)), symbols]

    def ppf(self, u):
        """The symbol s of each row with cum[s] <= u < cum[s + 1], for integers 0 <= u < 2^precision."""
        return (self.cum[:, 1:] <= np.asarray(u)[..., None]).sum(axis=-1)

    def info(self, symbols):
        """Information content in bits of each symbol under its row."""
        return self.precision - np.log2(self.count(symbols).astype(np.float64))


class _Tiled:
    """What Stack needs of a CountTable repeated k times, without copying its counts."""

    def __init__(self, table, k):
        self.table, self.k = table, k
        self.probs = np.tile(table.probs, (k, 1))

    def info(self, symbols):
        return self.table.info(np.reshape(symbols, (self.k, len(self.table)))).ravel()


def _counts_from_cdf(cdf, precision):
    """Counts [m, n] from continuous cdf values [m, n + 1] (first column 0, last 1): every symbol gets one
    count, the other 2^precision - n are shared in proportion to the mass, rounded on the cumulative scale."""
    n = cdf.shape[1] - 1
    free = (1 << precision) - n
    if free < 0:
        raise ValueError(f"{n} symbols do not fit in {precision} bits")
    cum = np.rint(np.clip(cdf, 0.0, 1.0) * free).astype(np.int64)
    cum[:, 0], cum[:, -1] = 0, free
    return np.diff(cum, axis=1) + 1


def standard_normal_buckets(log_num_bucket):
    """Edges [n + 1] (with -inf, +inf) of 2^log_num_bucket equal-mass buckets of N(0, 1), and their centres [n]
    (the bucket medians), where the networks evaluate a bucketed latent."""
    n = 1 << log_num_bucket
    edges = ndtri(np.arange(n + 1) / n)
    centres = ndtri((np.arange(n) + 0.5) / n)
    return edges, centres


def uniform_table(num_rows, log_num_bucket):
    """The prior over equal-mass buckets: exactly log_num_bucket bits per row."""
    return CountTable(np.ones((num_rows, 1 << log_num_bucket), np.int64), log_num_bucket)


def cdf_table(cdf, precision):
    """One row per distribution from its cdf at the symbols' edges [m, n + 1] (first column 0, last 1)."""
    return CountTable(_counts_from_cdf(cdf, precision), precision)


def gaussian_table(mu, sigma, edges, precision):
    """N(mu_r, sigma_r^2) over the buckets given by `edges` ([n + 1], with infinite ends), one row per mu_r."""
    mu, sigma = np.asarray(mu, np.float64).ravel(), np.asarray(sigma, np.float64).ravel()
    cdf = ndtr((edges[None, :] - mu[:, None]) / sigma[:, None])
    cdf[:, 0], cdf[:, -1] = 0.0, 1.0
    return cdf_table(cdf, precision)


def _bernoulli_ones(logits, precision):
    p = 0.5 * (1.0 + np.tanh(0.5 * np.asarray(logits, np.float64)))  # sigmoid without overflow
    return np.floor(p * ((1 << precision) - 2)).astype(np.int64) + 1


def bernoulli_table(logits, precision):
    """One row (1 - p, p) per logit, p = sigmoid(logit); each outcome has at least one count."""
    ones = _bernoulli_ones(np.ravel(logits), precision)
    return CountTable(np.stack([(1 << precision) - ones, ones], axis=1), precision)


def bernoulli_info(logits, x, precision):
    """bernoulli_table(logits).info(x) without building the table, for any matching shapes."""
    ones = _bernoulli_ones(logits, precision)
    return precision - np.log2(np.where(x == 1, ones, (1 << precision) - ones).astype(np.float64))


def categorical_table(weights, precision):
    """One row from non-negative weights [n] (not all 0): one count each, the rest in proportion, the
    rounding remainder to the largest weight."""
    w = np.asarray(weights, np.float64)
    n = len(w)
    free = (1 << precision) - n
    if free < 0:
        raise ValueError(f"{n} symbols do not fit in {precision} bits")
    counts = np.floor(w / w.sum() * free).astype(np.int64) + 1
    counts[np.argmax(w)] += (1 << precision) - counts.sum()
    return CountTable(counts, precision)


def words_to_bytes(words):
    """Little-endian bytes of an ANS coder's 32-bit words, without the last word's high zero bytes (they carry
    nothing; bytes_to_words pads them back)."""
    data = np.asarray(words, np.uint32).astype("<u4").tobytes()
    return data[:len(data) - 3] + data[len(data) - 3:].rstrip(b"\0")


def bytes_to_words(data):
    """The 32-bit words of words_to_bytes' bytes."""
    data = bytes(data) + b"\0" * (-len(data) % 4)
    return np.frombuffer(data, "<u4").astype(np.uint32)


def seed_words(num_bits, seed):
    """Random 32-bit words carrying at least num_bits (plus the coder's 64-bit head); none is zero, so an
    unsealed AnsCoder on them gives them back word for word once everything pushed has been popped."""
    n = math.ceil(num_bits / 32) + 2
    return np.random.default_rng(seed).integers(1, 1 << 32, size=n, dtype=np.uint64).astype(np.uint32)


def _f64(a):
    return np.ascontiguousarray(np.asarray(a, np.float64).ravel())


def gaussian_info(symbols, means, stds):
    """Bits of integers under Gaussians integrated over [s - 1/2, s + 1/2] (float64; each tail is taken on its
    own side, where the cdf difference keeps its precision)."""
    s = np.asarray(symbols, np.float64).ravel()
    hi, lo = (s + 0.5 - means) / stds, (s - 0.5 - means) / stds
    upper = s > means  # above the mean: the difference of survival functions, ndtr(-lo) - ndtr(-hi)
    mass = np.where(upper, ndtr(-lo) - ndtr(-hi), ndtr(hi) - ndtr(lo))
    return -np.log2(np.maximum(mass, 2.0 ** -24))


class StackUnderflow(RuntimeError):
    """A pop could read past the bottom of the stack (more initial bits are needed)."""


class Stack:
    """A LIFO ANS stack of 32-bit words; pushes and pops of symbol vectors under count tables."""

    def __init__(self, words=None):
        self.coder = constriction.stream.stack.AnsCoder(
            None if words is None else np.asarray(words, np.uint32))
        self.info_bits = 0.0

    @classmethod
    def seeded(cls, num_bits, seed):
        return cls(seed_words(num_bits, seed))

    @property
    def bits(self):
        """Bits on the stack now (the coder's valid bits: words plus the occupied part of its head)."""
        return self.coder.num_valid_bits()

    def words(self):
        return self.coder.get_compressed().copy()

    def require(self, bits):
        """Refuse to go on when the next pops (at most `bits`) could exhaust the stack."""
        if self.bits < bits + 64:
            raise StackUnderflow(f"the stack holds {self.bits} bits, the next pops may take {bits}: "
                                 "seed it with more initial bits")

    def push(self, symbols, table):
        symbols = np.asarray(symbols, np.int32).ravel()
        self.coder.encode_reverse(symbols, _CATEGORICAL, table.probs)
        self.info_bits += float(table.info(symbols).sum())

    def pop(self, table):
        symbols = self.coder.decode(_CATEGORICAL, table.probs)
        self.info_bits -= float(table.info(symbols).sum())
        return symbols.astype(np.int64)

    def push_iid(self, symbols, table):
        """Symbols all drawn from the one row of `table` (one model for the whole vector: no per-symbol rows)."""
        symbols = np.asarray(symbols, np.int32).ravel()
        self.coder.encode_reverse(symbols, constriction.stream.model.Categorical(table.probs[0], perfect=False))
        self.info_bits += float(table.info(symbols[:, None]).sum())

    def pop_iid(self, count, table):
        symbols = self.coder.decode(constriction.stream.model.Categorical(table.probs[0], perfect=False), count)
        self.info_bits -= float(table.info(symbols[:, None]).sum())
        return symbols.astype(np.int64)

    def push_gaussian(self, symbols, means, stds, lo, hi):
        """Integers in [lo, hi], each a Gaussian (its own mean and std, float64) integrated over [s - 1/2, s + 1/2]:
        constriction's QuantizedGaussian, leaky (every integer in range keeps a nonzero probability)."""
        symbols = np.asarray(symbols, np.int32).ravel()
        means, stds = _f64(means), _f64(stds)
        self.coder.encode_reverse(symbols, constriction.stream.model.QuantizedGaussian(lo, hi), means, stds)
        self.info_bits += float(gaussian_info(symbols, means, stds).sum())

    def pop_gaussian(self, means, stds, lo, hi):
        means, stds = _f64(means), _f64(stds)
        symbols = self.coder.decode(constriction.stream.model.QuantizedGaussian(lo, hi), means, stds)
        self.info_bits -= float(gaussian_info(symbols, means, stds).sum())
        return symbols.astype(np.int64)

    def push_uniform(self, symbols, sizes):
        """Each symbol uniform on [0, size); rows of size 1 carry no information and are skipped."""
        symbols, sizes = np.asarray(symbols, np.int64).ravel(), np.asarray(sizes, np.int64).ravel()
        keep = sizes > 1
        if keep.any():
            self.coder.encode_reverse(symbols[keep].astype(np.int32), _UNIFORM, sizes[keep].astype(np.int32))
            self.info_bits += float(np.log2(sizes[keep].astype(np.float64)).sum())

    def pop_uniform(self, sizes):
        sizes = np.asarray(sizes, np.int64).ravel()
        symbols = np.zeros(len(sizes), np.int64)
        keep = sizes > 1
        if keep.any():
            symbols[keep] = self.coder.decode(_UNIFORM, sizes[keep].astype(np.int32))
            self.info_bits -= float(np.log2(sizes[keep].astype(np.float64)).sum())
        return symbols
