"""Relative entropy coding (iREC, Flamich, Havasi & Hernández-Lobato 2020) of diagonal Gaussian latents.

The encoder turns a posterior q = N(mu, sig^2) and a prior p = N(m, s^2) over one layer of latents into a short
list of integers from which a decoder that knows only p rebuilds, bitwise exactly, a latent z distributed close to
q, at a cost close to KL(q || p) nats. A hierarchical VAE drives it one layer at a time (rec.py does so from
the callback of the ResNet-VAE's own top-down pass, utils/hvae.py's ResNetVAE.top_down; this module knows no
model):

    code, z = encode_layer(post_loc, post_scale, prior_loc, prior_scale, seed=s, layer=l, config=cfg)
    ...  the next layer's prior from z ...
    data = pack([code_0, code_1, ...], seed=s)            # bytes
    reader = Reader(data)
    z = reader.decode_layer(prior_loc, prior_scale, layer=l)   # the same z, layer by layer
    ...
    reader.finish()

How a layer is coded:
- The layer is flattened, shuffled by a permutation keyed by (seed, layer) and cut into blocks of `block_size`
  dimensions (the last one shorter), so that every block holds a similar share of the KL.
- A block with KL nats gets K = ceil(KL / omega) auxiliary variables a_1..a_K, independent under the prior with
  variances v_j summing to s^2 (z = m + a_1 + ... + a_K): step j takes the fraction (K - j)^-0.786 of the variance
  still left, the power law of the seed paper's code, so the last one takes all that remains. With
  fit_split the encoder picks the exponent per block (5 bits) to spread the KL evenly over the steps: the
  paper's exponent front-loads the KL for wide posteriors and back-loads it for narrow ones, and a step whose
  KL exceeds ln n is one the beam cannot match.
- At step j, n = floor(exp(omega * (1 + eps))) candidates for a_j / sqrt(v_j) are drawn as one [n, d] array of
  standard normals, shared by the block's B beams, from TF's stateless Philox normal op (the one under
  tf.random.stateless_normal); the blocks of a layer are searched side by side in groups, one op per group and
  step ([G, n, d], keyed by (seed, layer, group), the step in the counter). Each beam sees the draw through its
  own view, keyed by its index history: the draw's entries rolled by (key mod d), so that the beams' candidates
  differ (with one plain shared draw the beams pile onto the same candidates and land far from the posterior).
  Each candidate partial sum S = a_1 + ... + a_j is scored by log q(S) - log p(S) of its distribution under the
  posterior and the prior; the best B over all beams survive. At the last step S = z - m, so the score is
  log q(z) / p(z); the best beam's K indices are the block's code. The decoder, told the path, draws only the
  chosen row of each step (an op's output row can be drawn alone by moving the Philox counter on).
  The seed code draws one shared array per step too and varies it per beam by a hash of the beam's indices.
- A block whose K would exceed `max_aux` is split in halves (recursively), never truncated: the stream carries
  the split tree.

Everything a decoder rebuilds is float64 formed by the same elementwise operations on both sides (the normal
draws come from TF in float32, the same numbers whether drawn whole or by row, then widen exactly; the
encoder's scores, which only rank, are float32), so encoder and decoder agree bit for bit on one machine and TF
version, provided they are given bitwise the same prior.

Stream (`pack`): a header, then constriction's ANS words (uniform models throughout):

    magic "RDSr" (4 bytes), version, fit_split (1 byte each), n, block_size, seed, layers, payload length
    (varints), crc32 (4 bytes); unframed (inside rec.py's container): fit_split, n, block_size, seed, layers

per layer: the per-block counts K (0 marks a split) as min + fixed-width offsets, then per leaf block its
exponent (fit_split only) and its indices; last, a one-bit end mark.
"""
import collections
import math
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import constriction
import numpy as np
import tensorflow as tf

from utils.ans import bytes_to_words, words_to_bytes
from utils.cli import InputError
from utils.container import HeaderReader, varint

MAGIC = b"RDSr"
VERSION = 3  # 2: the header counts the layers, the stream ends in a one-bit end mark (see pack); 3: the
# beams share each step's draw, and a layer's blocks are drawn together (other latents from the same indices)
RATIO_EXPONENT = 0.7864636765648174  # the seed paper's power law for the auxiliary variance ratios
# exponents a fitted split chooses from, one per block (5 bits): the best one ranges from ~0.55 for narrow
# posteriors (KL piles up at the end) to ~1 for wide ones with shifted means (KL spread evenly over the variance)
FIT_EXPONENTS = np.linspace(0.4, 1.1, 32)
MAX_CANDIDATES = (1 << 24) - 1  # constriction's uniform model holds < 2^24 symbols
MAX_AUX_LIMIT = (1 << 16) - 1  # counts K are coded in at most 16 bits
DRAW_LIMIT = 1 << 22  # normals in one draw (16 MB): a layer's blocks are coded side by side in groups this big
_UNIFORM = constriction.stream.model.Uniform()
_M64 = (1 << 64) - 1


@dataclass(frozen=True)
class Config:
    """The encoder's settings. Only n_candidates and block_size reach the decoder (in the header)."""
    block_size: int = 1000
    omega: float = 3.0  # KL per auxiliary variable, nats (--kl_per_partition)
    extra_samples: float = 1.0  # 1 + eps
    n_beams: int = 10
    max_aux: int = 1024  # a block needing more auxiliary variables is split in halves
    fit_split: bool = False  # choose the power law's exponent per block (5 bits each) instead of the paper's

    def __post_init__(self):
        if not isinstance(self.block_size, (int, np.integer)) or self.block_size < 1:
            raise InputError(f"block_size must be a positive integer, got {self.block_size!r}")
        if not (np.isfinite(self.omega) and self.omega > 0 and np.isfinite(self.extra_samples)
                and self.extra_samples > 0):
            raise InputError(f"kl_per_partition ({self.omega!r}) and extra_samples ({self.extra_samples!r}) must be "
                             "positive finite numbers")
        # The product is checked before n_candidates exponentiates it (math.exp overflows above ~709).
        if not (self.omega * self.extra_samples < math.log(MAX_CANDIDATES + 1) and self.n_candidates >= 2):
            raise InputError(f"--kl_per_partition * --extra_samples = {self.omega * self.extra_samples:.4g} nats: "
                             f"must lie in [ln 2, ln {MAX_CANDIDATES}] (2 to 2^24 - 1 candidates per step)")
        if not isinstance(self.n_beams, (int, np.integer)) or self.n_beams < 1:
            raise InputError(f"n_beams must be a positive integer, got {self.n_beams!r}")
        if not isinstance(self.max_aux, (int, np.integer)) or not 1 <= self.max_aux <= MAX_AUX_LIMIT:
            raise InputError(f"max_aux must be an integer in [1, {MAX_AUX_LIMIT}], got {self.max_aux!r}")

    @property
    def n_candidates(self):
        return int(math.floor(math.exp(self.omega * self.extra_samples)))


@dataclass
class LayerCode:
    """One layer's code: the split tree in pre-order over the top-level blocks (0 = split in halves, else the
    leaf's count K), each leaf block's K candidate indices and, with a fitted split, its exponent. kl and
    log_ratio (nats: the layer's KL and the chosen latent's log q(z)/p(z)) are known to the encoder only."""
    dims: int
    block_size: int
    n_candidates: int
    tree: list
    indices: list
    exponents: list = None  # per leaf block, an index into FIT_EXPONENTS (fit_split), else None
    seed: int = None  # the seed it was made with (the encoder's, or the stream's)
    kl: float = None
    log_ratio: float = None

    def index_bits(self):
        """Bits of the candidate indices alone: sum of K * log2(n)."""
        return sum(len(i) for i in self.indices) * math.log2(self.n_candidates)


# ----------------------------------------------------------------------------------------------------------------
# Shared randomness

def _mix(h, x):
    """A 64-bit hash of (h, x), elementwise on uint64 arrays (splitmix64's finalizer; wraps mod 2^64)."""
    with np.errstate(over="ignore"):
        z = np.asarray(h, np.uint64) + (np.asarray(x, np.uint64) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _check_ids(seed, layer):
    for name, v in (("seed", seed), ("layer", layer)):
        if not isinstance(v, (int, np.integer)) or not 0 <= v <= _M64:
            raise InputError(f"{name} must be an integer in [0, 2^64), got {v!r}")


def _philox(op, shape, key, step, **kw):
    """A TF stateless random op on Philox with our own 64-bit key and the step as the counter's high word (the
    raw op: tf.random.stateless_* re-derives key and counter from a seed pair at ~20x the cost of the draw). On the
    CPU, as _candidates draws: a GPU's kernel need not give the same bits."""
    with tf.device("/CPU:0"):
        return op(shape=shape, key=tf.constant([key], tf.uint64), counter=tf.constant([0, step], tf.uint64), alg=1,
                  **kw).numpy()


def _permutation(dims, seed, layer):
    """The layer's fixed shuffle: argsort of stateless random 64-bit integers keyed by (seed, layer)."""
    bits = _philox(tf.raw_ops.StatelessRandomUniformFullIntV2, [dims], int(_mix(_mix(seed, layer), 0x5EC0DE)), 0,
                   dtype=tf.int64)
    return np.argsort(bits, kind="stable")


def _draw(key, step, shape):
    """Standard normals [G, n, d] float32: the candidates of a group's blocks at one step, shared by all beams."""
    return _philox(tf.raw_ops.StatelessRandomNormalV2, shape, key, step)


def _draws(key, shape, steps):
    """The draws of steps 0, 1, ..., made one step ahead on a worker thread: they do not depend on the search
    (every beam uses the same draw), and TF's op runs without the GIL, so drawing and searching share the cores."""
    with ThreadPoolExecutor(1) as pool:
        ahead = pool.submit(_draw, key, 0, shape)
        for j in range(steps):
            noise = ahead.result()
            if j + 1 < steps:
                ahead = pool.submit(_draw, key, j + 1, shape)
            yield noise


_ROW_DRAWERS = {}  # number of rows G -> the concrete graph drawing G rows at G counters


def _row_drawer(count):
    if count not in _ROW_DRAWERS:
        def draw(key, counters, d):
            # one Philox op per row (unrolled: the graph runs them side by side, with one dispatch per step)
            return tf.stack([tf.raw_ops.StatelessRandomNormalV2(shape=d[None], key=key, counter=counters[r], alg=1)
                             for r in range(count)])

        _ROW_DRAWERS[count] = tf.function(draw, autograph=False).get_concrete_function(
            tf.TensorSpec([1], tf.uint64), tf.TensorSpec([count, 2], tf.uint64), tf.TensorSpec([], tf.int32))
    return _ROW_DRAWERS[count]


def _draw_rows(key, step, rows, n, d):
    """The rows [G, d] (row rows[l] of block l; None: a zero row) of the draw [G, n, d] of one step, drawn alone:
    a Philox op's output element e comes from its counter plus e // 4, so with d a multiple of 4 a row is the
    op's output at the counter moved on by the row's start / 4 (tests/test_rec.py checks it against the draw)."""
    counters = np.array([[(l * n + (i or 0)) * d // 4, step] for l, i in enumerate(rows)], np.uint64)
    with tf.device("/CPU:0"):  # as _philox draws
        out = _row_drawer(len(rows))(tf.constant([key], tf.uint64), tf.constant(counters), tf.constant(d)).numpy()
    out[[i is None for i in rows]] = 0
    return out


def _rows_drawn(key, indices, ks, n, d, ahead=8):
    """The decoder's draws, step by step: only each block's chosen rows, made on a worker thread up to `ahead`
    steps before the sums need them (the indices are all known before decoding)."""
    def submit(j):
        return pool.submit(_draw_rows, key, j, [int(i) if j < k else None for i, k in zip(indices[:, j], ks)], n, d)

    steps = indices.shape[1]
    with ThreadPoolExecutor(1) as pool:
        pending = collections.deque(submit(j) for j in range(min(ahead, steps)))
        for j in range(steps):
            rows = pending.popleft().result()
            if j + ahead < steps:
                pending.append(submit(j + ahead))
            yield rows


def _schedule(prior_var, ks, exponents):
    """Per step j of a group of blocks ([G, d] prior variances, K and exponent per block): the auxiliary variances
    v_j [G, d] and the prior variance left after the step. Step j takes the fraction (K - j)^-a of what is left,
    the last step all of it, and a block whose K steps are done takes nothing."""
    left = prior_var.copy()
    for j in range(int(ks.max())):
        remaining = ks - j
        frac = np.where(remaining > 1, np.maximum(remaining, 1).astype(np.float64) ** -exponents,
                        (remaining == 1).astype(np.float64))
        v = left * frac[:, None]
        left = left - v
        yield v, left


def _shifts(keys, d):
    """Each beam's own view of the shared draw, keyed by its path: entry k of its candidates is entry
    (k + r) mod d of the draw's rows, r = key mod d (without the views the beams crowd together; tests/test_rec.py)."""
    return (keys % np.uint64(d)).astype(np.intp)


def _rolled(x, shift):
    """x [G, d] or [G, B, d] with row (g, ...) read from entry shift[g, ...] on, cyclically: out[..., k] =
    x[..., (k + shift) mod d], copied as contiguous windows of the row doubled (no per-entry gather)."""
    d = x.shape[-1]
    windows = np.lib.stride_tricks.sliding_window_view(np.concatenate([x, x], axis=-1), d, axis=-1)
    lead = np.ogrid[tuple(slice(n) for n in shift.shape)]
    if x.ndim - 1 < shift.ndim:  # one row per block, shared by its beams
        lead = lead[:x.ndim - 1]
    return windows[(*lead, shift)]


def _fit_exponent(mu, sig, m, s, k):
    """The index into FIT_EXPONENTS whose split gives the block's steps the most even KL (the smallest largest
    one). A step's KL is the growth, over the step, of the KL between the posterior's and the prior's laws of the
    partial sum, which at variance fraction t is sum_i (t (r_i - 1 + d_i^2) - log(1 - t (1 - r_i))) / 2 with
    r = sig^2 / s^2 and d = (mu - m) / s."""
    r, d2 = (sig / s) ** 2, ((mu - m) / s) ** 2
    rows = len(FIT_EXPONENTS)
    t = 1 - np.stack([left[:, 0] for _, left in _schedule(np.ones((rows, 1)), np.full(rows, k), FIT_EXPONENTS)])
    kl = 0.5 * (t[..., None] * (r - 1 + d2) - np.log1p(-t[..., None] * (1 - r))).sum(axis=-1)  # [K, exponents]
    return int(np.argmin(np.max(np.diff(kl, axis=0, prepend=0.0), axis=0)))


# ----------------------------------------------------------------------------------------------------------------
# Blocks

def _as_params(name, loc, scale, shape=None):
    loc, scale = np.asarray(loc, np.float64), np.asarray(scale, np.float64)
    if loc.shape != scale.shape or (shape is not None and loc.shape != shape):
        raise ValueError(f"{name}: loc {loc.shape} and scale {scale.shape} must have the same shape"
                         + (f" as the posterior {shape}" if shape is not None else ""))
    if loc.size == 0:
        raise ValueError(f"{name}: empty layer")
    if not (np.all(np.isfinite(loc)) and np.all(np.isfinite(scale)) and np.all(scale > 0)):
        raise ValueError(f"{name}: loc must be finite and scale positive and finite")
    return loc, scale


def _top_blocks(dims, block_size):
    return [(start, min(start + block_size, dims)) for start in range(0, dims, block_size)]


def _block_kl(mu, sig, m, s):
    return float(np.sum(np.log(s / sig) + (sig ** 2 + (mu - m) ** 2) / (2 * s ** 2) - 0.5))


def _split_tree(mu, sig, m, s, start, stop, omega, max_aux, tree, leaves):
    """Appends the pre-order symbols of [start, stop) to tree and its leaf blocks (start, stop, K) to leaves."""
    k = max(1, math.ceil(_block_kl(mu[start:stop], sig[start:stop], m[start:stop], s[start:stop]) / omega))
    if k <= max_aux:
        tree.append(k)
        leaves.append((start, stop, k))
        return
    if stop - start == 1:
        raise InputError(f"one latent dimension has a KL above max_aux * kl_per_partition = {max_aux * omega:.4g} "
                         "nats; raise max_aux or kl_per_partition")
    tree.append(0)
    mid = start + (stop - start) // 2
    _split_tree(mu, sig, m, s, start, mid, omega, max_aux, tree, leaves)
    _split_tree(mu, sig, m, s, mid, stop, omega, max_aux, tree, leaves)


def _groups(leaves, n, block_size):
    """Consecutive leaf blocks coded side by side, so that each step of a group is one draw [G, n, widest leaf]
    of at most DRAW_LIMIT normals."""
    size = max(1, DRAW_LIMIT // (n * block_size))
    return [leaves[i:i + size] for i in range(0, len(leaves), size)]


def _layer_groups(leaves, exponents, n, block_size, seed, layer):
    """The groups of a layer's leaf blocks (start, stop, K) as encoder and decoder both search them: per group,
    (index of its first leaf, its leaves, K [G], the split's exponent [G] (exponents: per leaf an index into
    FIT_EXPONENTS, or None for the paper's), its padded width d, its key). d is the widest block's width rounded
    up to a multiple of 4, so that the decoder can draw a candidate's row alone (_draw_rows)."""
    first = 0
    for g, group in enumerate(_groups(leaves, n, block_size)):
        ks = np.array([k for *_, k in group])
        exps = np.array([RATIO_EXPONENT if e is None else FIT_EXPONENTS[e]
                         for e in exponents[first:first + len(group)]], np.float64)
        d = -(-max(stop - start for start, stop, _ in group) // 4) * 4
        yield first, group, ks, exps, d, _mix(_mix(_mix(seed, layer), g), 0xB10C)
        first += len(group)


def _padded(a, group, width, fill):
    """[G, width]: each block's slice of a, padded with fill."""
    out = np.full((len(group), width), fill, np.float64)
    for row, (start, stop, *_) in enumerate(group):
        out[row, :stop - start] = a[start:stop]
    return out


def _encode_group(mu, sig, m, s, ks, exponents, key, n, beams):
    """Beam search over a group's blocks side by side: [G, d] arrays, each block padded to the widest with the
    prior as its own posterior (no KL, a score of 0). Returns the best path's indices [G, max K] int32 (0 past
    a block's K) and z - m [G, d] float64."""
    (g, d), steps = m.shape, int(ks.max())
    rows = np.arange(g)[:, None]
    s2, sig2, dmu = s ** 2, sig ** 2, mu - m
    sums = np.zeros((g, beams, d))
    keys = np.repeat(_mix(key, np.arange(g, dtype=np.uint64))[:, None], beams, axis=1)
    parents, choices = np.zeros((steps, g, beams), np.intp), np.zeros((steps, g, beams), np.int32)
    for j, ((v, rest), noise) in enumerate(zip(_schedule(s2, ks, exponents), _draws(key, [g, n, d], steps))):
        cum = s2 - rest  # prior variance of the partial sum S_j
        t_mean = dmu * (cum / s2)
        t_var = sig2 * (cum / s2) ** 2 + cum * rest / s2
        # log q(S) - log p(S) = S^2 . alpha + S . beta + const over the dimensions; with S = P + sqrt(v) e for a
        # beam's partial sum P and a candidate's noise e (the draw's row in the beam's view), it is
        # (P^2 . alpha + P . beta + const) + e^2 . (v alpha) + e . (sqrt(v) (beta + 2 alpha P)): scored in float32
        # on the raw draws (ranking needs no more), only the chosen sums are formed, in float64, as the decoder
        # forms them
        alpha = 0.5 / cum - 0.5 / t_var
        beta = t_mean / t_var
        const = 0.5 * np.sum(np.log(cum / t_var), axis=1) - np.sum(t_mean ** 2 / (2 * t_var), axis=1)
        scale = np.sqrt(v)
        shift = _shifts(keys, d)
        back = (d - shift) % d
        # beam b's candidate entry k is the draw's entry (k + shift) mod d: its weights, moved onto the draw's entries
        quad = _rolled((v * alpha).astype(np.float32), back)
        linear = _rolled((scale[:, None] * (beta[:, None] + 2 * alpha[:, None] * sums)).astype(np.float32), back)
        score = (np.matmul(linear, noise.transpose(0, 2, 1)) + np.matmul(quad, (noise * noise).transpose(0, 2, 1))
                 + np.matmul(sums * sums, alpha[:, :, None]) + np.matmul(sums, beta[:, :, None])
                 + const[:, None, None])  # [G, beams, n]
        if j == 0:
            score[:, 1:] = -np.inf  # the beams start as one
        best = np.argsort(-score.reshape(g, -1), axis=1, kind="stable")[:, :beams]
        parent, choice = best // n, (best % n).astype(np.int32)
        chosen = _rolled(noise[rows, choice], shift[rows, parent])
        new_sums = sums[rows, parent] + chosen.astype(np.float64) * scale[:, None]
        new_keys = _mix(keys[rows, parent], choice)
        done = ks <= j
        if done.any():  # blocks whose K steps are over keep their beams
            parent[done], choice[done] = np.arange(beams), 0
            new_sums[done], new_keys[done] = sums[done], keys[done]
        sums, keys, parents[j], choices[j] = new_sums, new_keys, parent, choice
    indices, beam = np.zeros((g, steps), np.int32), np.zeros(g, np.intp)  # beam 0 is the best at the last step
    for j in range(steps - 1, -1, -1):
        indices[:, j] = choices[j, rows[:, 0], beam]
        beam = parents[j, rows[:, 0], beam]
    return indices, sums[:, 0]


def _decode_group(s, ks, exponents, indices, key, n):
    """z - m [G, d] of a group's blocks from their indices [G, max K] (0 past a block's K)."""
    g, d = s.shape
    sums = np.zeros((g, d))
    keys = _mix(key, np.arange(g, dtype=np.uint64))
    for j, ((v, _), chosen) in enumerate(zip(_schedule(s ** 2, ks, exponents), _rows_drawn(key, indices, ks, n, d))):
        # the chosen candidate, the draw's row in the path's view, formed as the encoder formed it
        chosen = _rolled(chosen, _shifts(keys, d))
        new_sums = sums + chosen.astype(np.float64) * np.sqrt(v)
        active = ks > j
        sums = np.where(active[:, None], new_sums, sums)
        keys = np.where(active, _mix(keys, indices[:, j]), keys)
    return sums


def encode_layer(post_loc, post_scale, prior_loc, prior_scale, *, seed, layer, config):
    """Codes one layer: returns (LayerCode, z), z float64 of the input shape, the latent the decoder rebuilds."""
    _check_ids(seed, layer)
    mu, sig = _as_params("posterior", post_loc, post_scale)
    m, s = _as_params("prior", prior_loc, prior_scale, mu.shape)
    perm = _permutation(mu.size, seed, layer)
    mu, sig, m, s = (a.reshape(-1)[perm] for a in (mu, sig, m, s))
    tree, leaves = [], []
    for start, stop in _top_blocks(mu.size, config.block_size):
        _split_tree(mu, sig, m, s, start, stop, config.omega, config.max_aux, tree, leaves)
    exponents = [_fit_exponent(mu[a:b], sig[a:b], m[a:b], s[a:b], k) if config.fit_split else None
                 for a, b, k in leaves]
    z = np.empty(mu.size)
    indices = []
    for _, group, ks, exps, d, key in _layer_groups(leaves, exponents, config.n_candidates, config.block_size,
                                                    seed, layer):
        found, sums = _encode_group(_padded(mu, group, d, 0), _padded(sig, group, d, 1), _padded(m, group, d, 0),
                                    _padded(s, group, d, 1), ks, exps, key, config.n_candidates, config.n_beams)
        for row, (start, stop, k) in enumerate(group):
            indices.append(found[row, :k])
            z[start:stop] = m[start:stop] + sums[row, :stop - start]
    log_ratio = float(np.sum(np.log(s / sig) - (z - mu) ** 2 / (2 * sig ** 2) + (z - m) ** 2 / (2 * s ** 2)))
    code = LayerCode(mu.size, config.block_size, config.n_candidates, tree, indices,
                     exponents if config.fit_split else None, seed, _block_kl(mu, sig, m, s), log_ratio)
    out = np.empty(mu.size)
    out[perm] = z
    return code, out.reshape(np.shape(post_loc))


def _leaves(tree, dims, block_size):
    """The leaf blocks (start, stop) of a pre-order split tree over the layer's top-level blocks."""
    leaves, pos = [], 0

    def walk(start, stop):
        nonlocal pos
        symbol = tree[pos]
        pos += 1
        if symbol:
            leaves.append((start, stop))
        else:
            mid = start + (stop - start) // 2
            walk(start, mid)
            walk(mid, stop)

    for start, stop in _top_blocks(dims, block_size):
        walk(start, stop)
    return leaves


def decode_layer(prior_loc, prior_scale, code, *, seed, layer):
    """The latent z (float64, the prior's shape) that encode_layer returned with this code."""
    _check_ids(seed, layer)
    m, s = _as_params("prior", prior_loc, prior_scale)
    if m.size != code.dims:
        raise InputError(f"the prior has {m.size} dimensions but the code is for {code.dims}")
    shape = m.shape
    perm = _permutation(m.size, seed, layer)
    m, s = m.reshape(-1)[perm], s.reshape(-1)[perm]
    leaves = [(start, stop, len(idx)) for (start, stop), idx in zip(_leaves(code.tree, code.dims, code.block_size),
                                                                     code.indices)]
    z = np.empty(m.size)
    exponents = code.exponents or [None] * len(leaves)
    for first, group, ks, exps, d, key in _layer_groups(leaves, exponents, code.n_candidates, code.block_size,
                                                        seed, layer):
        indices = np.zeros((len(group), int(ks.max())), np.int32)
        for row, k in enumerate(ks):
            indices[row, :k] = code.indices[first + row]
        sums = _decode_group(_padded(s, group, d, 1), ks, exps, indices, key, code.n_candidates)
        for row, (start, stop, _) in enumerate(group):
            z[start:stop] = m[start:stop] + sums[row, :stop - start]
    out = np.empty(m.size)
    out[perm] = z
    return out.reshape(shape)


# ----------------------------------------------------------------------------------------------------------------
# Bytes

def _layer_symbols(code):
    """(symbols, alphabet sizes) of one layer in decoding order; sizes of 1 are left out (nothing to code)."""
    lo, hi = min(code.tree), max(code.tree)
    width = (hi - lo).bit_length()
    nbits = lo.bit_length()
    syms, sizes = [nbits], [17]
    if nbits > 1:
        syms.append(lo - (1 << (nbits - 1)))
        sizes.append(1 << (nbits - 1))
    syms.append(width)
    sizes.append(17)
    if width:
        syms += [t - lo for t in code.tree]
        sizes += [1 << width] * len(code.tree)
    for b, idx in enumerate(code.indices):
        if code.exponents is not None:
            syms.append(code.exponents[b])
            sizes.append(len(FIT_EXPONENTS))
        syms += list(idx)
        sizes += [code.n_candidates] * len(idx)
    return syms, sizes


def pack(codes, *, seed, framed=True):
    """The bytes of a list of layer codes (all made with the same config and this seed). `framed=False` leaves
    out the magic number, version, length and CRC, for a stream inside a container that has its own (rec.py's
    files): the header is then the fit flag, n, the block size, the seed and the layer count, ~6 bytes."""
    if not codes:
        raise ValueError("pack needs at least one layer")
    _check_ids(seed, 0)
    if any(c.seed != seed for c in codes):
        raise ValueError(f"pack(seed={seed}) got codes made with seeds {sorted({c.seed for c in codes})}")
    n, block_size, fit = codes[0].n_candidates, codes[0].block_size, codes[0].exponents is not None
    if any((c.n_candidates, c.block_size, c.exponents is not None) != (n, block_size, fit) for c in codes):
        raise ValueError("all layers of one stream must share n_candidates, block_size and fit_split")
    syms, sizes = [], []
    for c in codes:
        s, z = _layer_symbols(c)
        syms += s
        sizes += z
    # The end mark, a 1 out of 2, is pushed first and popped last: zeros pushed onto an empty coder leave it
    # looking empty, so a stream ending in zero indices would be taken for a truncated one without it.
    syms.append(1)
    sizes.append(2)
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(np.array(syms, np.int32), _UNIFORM, np.array(sizes, np.int32))
    payload = words_to_bytes(coder.get_compressed())
    params = bytes([fit]) + varint(n) + varint(block_size) + varint(seed) + varint(len(codes))
    if not framed:
        return params + payload
    head = MAGIC + bytes([VERSION]) + params + varint(len(payload))
    return head + struct.pack(">I", zlib.crc32(payload, zlib.crc32(head))) + payload


class Reader:
    """Parses and checks a `pack`ed stream, then hands out its layers in order (decode_layer or read_layer)."""

    def __init__(self, data, what="REC stream", framed=True):
        self.what = what
        data = bytes(data)
        r = HeaderReader(data, what)
        if framed:
            if data[:len(MAGIC)] != MAGIC:
                raise InputError(f"{what}: not a relative-entropy-coded stream (wrong magic number)")
            r.take(len(MAGIC))
            version = r.take(1)[0]
            if version != VERSION:
                raise InputError(f"{what}: format version {version}; this code reads version {VERSION}")
        flag = r.take(1)[0]
        self.fit_split = flag == 1
        self.n_candidates, self.block_size, self.seed, self.num_layers = (r.varint() for _ in range(4))
        if framed:
            length = r.varint()
            head_end = r.pos
            if len(data) < head_end + 4 + length:
                raise InputError(f"{what}: truncated ({len(data)} bytes; the header announces "
                                 f"{head_end + 4 + length})")
            (crc,) = struct.unpack(">I", data[head_end:head_end + 4])
            payload = data[head_end + 4:]
            if len(payload) != length or zlib.crc32(payload, zlib.crc32(data[:head_end])) != crc:
                raise InputError(f"{what}: corrupt (checksum or length mismatch)")
            self.header_bytes = head_end + 4
        else:
            self.header_bytes = r.pos
            payload = data[r.pos:]
        if not (2 <= self.n_candidates <= MAX_CANDIDATES and self.block_size >= 1 and flag < 2):
            raise InputError(f"{what}: corrupt header (n = {self.n_candidates}, block size = {self.block_size})")
        self._coder = constriction.stream.stack.AnsCoder(bytes_to_words(payload))
        self._layers = 0

    def _pop(self, size, count=1):
        # constriction silently decodes zeros from an empty stack
        if self._coder.is_empty():
            raise InputError(f"{self.what}: the stream ends inside layer {self._layers} (a different model or "
                             "different layer shapes?)")
        return self._coder.decode(constriction.stream.model.Uniform(size), count)

    def read_layer(self, dims):
        """The next layer's LayerCode; `dims` is its number of latent dimensions (the prior's size)."""
        if self._layers >= self.num_layers:
            raise InputError(f"{self.what}: holds {self.num_layers} layer(s); layer {self._layers} was asked for "
                             "(a different model?)")
        nbits = int(self._pop(17)[0])
        lo = 0 if nbits == 0 else 1 if nbits == 1 else (1 << (nbits - 1)) + int(self._pop(1 << (nbits - 1))[0])
        width = int(self._pop(17)[0])
        tree = []

        def walk(size):
            symbol = lo + (int(self._pop(1 << width)[0]) if width else 0)
            tree.append(symbol)
            if symbol:
                return
            if size < 2:
                raise InputError(f"{self.what}: corrupt layer {self._layers} (a one-dimensional block is split)")
            walk(size // 2)
            walk(size - size // 2)

        for start, stop in _top_blocks(dims, self.block_size):
            walk(stop - start)
        indices, exponents = [], [] if self.fit_split else None
        for k in tree:
            if k:
                if self.fit_split:
                    exponents.append(int(self._pop(len(FIT_EXPONENTS))[0]))
                indices.append(self._pop(self.n_candidates, k))
        self._layers += 1
        return LayerCode(dims, self.block_size, self.n_candidates, tree, indices, exponents, self.seed)

    def decode_layer(self, prior_loc, prior_scale, *, layer):
        """The next layer's latent z (float64, the prior's shape), as the encoder chose it."""
        code = self.read_layer(int(np.size(prior_loc)))
        return decode_layer(prior_loc, prior_scale, code, seed=self.seed, layer=layer)

    def finish(self):
        """Checks that every layer in the stream was read: the end mark comes next, and nothing after it."""
        if self._coder.is_empty() or int(self._pop(2)[0]) != 1 or not self._coder.is_empty():
            raise InputError(f"{self.what}: holds more than the {self._layers} layer(s) decoded (a different model?)")
