"""utils/rec.py, the relative entropy coder: bitwise exact round trips through bytes, the code length against the
KL, the chosen latent's log q/p against the KL, block splitting, several layers in one stream, and refused input.

Synthetic layers: prior N(m, s^2) with s around 1, posterior N(mu, sig^2) with mu a prior draw and sig/s in
[e^-2.5, e^-1]: about 2 nats per dimension, so 50-100 dimensions make 100-250 nats, 30-90 coding steps.
"""
import math

import numpy as np
import pytest

from utils import rec
from utils.cli import InputError

LOSSLESS = rec.Config(omega=3.0, extra_samples=1.2, n_beams=20)  # the seed's lossless settings


def layer(dims, seed, shape=None):
    rng = np.random.default_rng(seed)
    m = rng.normal(size=dims)
    s = np.exp(rng.normal(0, 0.3, dims))
    mu = m + s * rng.normal(size=dims)
    sig = s * np.exp(rng.uniform(-2.5, -1, dims))
    shape = shape or (dims,)
    return tuple(a.reshape(shape) for a in (mu, sig, m, s))


def round_trip(params, seed, config, layer_id=0):
    mu, sig, m, s = params
    code, z = rec.encode_layer(mu, sig, m, s, seed=seed, layer=layer_id, config=config)
    data = rec.pack([code], seed=seed)
    reader = rec.Reader(data)
    z_dec = reader.decode_layer(m, s, layer=layer_id)
    reader.finish()
    return code, z, z_dec, data, reader


def test_seed_paper_case_1d():
    """The seed code's own test: target N(5.1, 0.001^2), prior N(0, 1), omega = 6, B = 10, 1 + eps = 1."""
    config = rec.Config(omega=6.0, n_beams=10)
    code, z, z_dec, _, _ = round_trip(([5.1], [0.001], [0.0], [1.0]), 69420, config)
    assert z.dtype == np.float64 and np.array_equal(z, z_dec)
    assert code.tree == [math.ceil(code.kl / 6.0)] == [4]  # KL = 19.4 nats
    # 403^4 candidate paths for a target that holds e^-19.4 of the prior mass: the beam lands inside it
    assert abs(z[0] - 5.1) < 5 * 0.001


@pytest.mark.parametrize("dims,shape,seed", [(50, (50,), 1), (100, (4, 5, 5), 2), (75, (3, 25), 3)])
def test_round_trip_bitwise_and_code_length(dims, shape, seed):
    """decode(encode) is bitwise exact, and the bytes after the header cost KL (1 + eps) / ln 2 bits within:
    below, the floor in n = floor(exp(omega (1 + eps))) (about 0.5% here); above, the ceil in K (at most
    omega (1 + eps) / ln 2 bits per block), the counts K (at most 24 + 16 bits per block) and ANS's final state
    (at most 32 bits, plus the byte rounding)."""
    code, z, z_dec, data, reader = round_trip(layer(dims, seed, shape), seed, LOSSLESS, layer_id=seed)
    assert z.shape == shape and np.array_equal(z, z_dec)
    ideal = code.kl * LOSSLESS.extra_samples / math.log(2)
    step_bits = LOSSLESS.omega * LOSSLESS.extra_samples / math.log(2)
    n = LOSSLESS.n_candidates
    blocks = len(code.indices)
    assert ideal * math.log(n) / (LOSSLESS.omega * LOSSLESS.extra_samples) <= code.index_bits() <= \
        ideal + blocks * step_bits
    payload_bits = 8 * (len(data) - reader.header_bytes)
    assert code.index_bits() <= payload_bits <= code.index_bits() + 24 + 16 * blocks + 32 + 8
    assert reader.header_bytes <= 16


def test_log_ratio_close_to_kl():
    """eps = 0.2, B = 20: the chosen latent's log q(z)/p(z) is within 10% of the KL, as a posterior sample's is."""
    for seed in (11, 12, 13):
        mu, sig, m, s = layer(100, seed)
        code, z = rec.encode_layer(mu, sig, m, s, seed=seed, layer=0, config=LOSSLESS)
        recomputed = np.sum(np.log(s / sig) - (z - mu) ** 2 / (2 * sig ** 2) + (z - m) ** 2 / (2 * s ** 2))
        assert code.log_ratio == pytest.approx(recomputed, rel=1e-9)
        assert abs(code.log_ratio - code.kl) <= 0.1 * code.kl, (code.log_ratio, code.kl)


def test_fitted_split_round_trips_and_helps_narrow_posteriors():
    """Posteriors ~e^-5.5 times narrower than the prior: with the paper's fixed exponent the last steps carry far
    more than ln n nats each and the beam misses the posterior; choosing the exponent per block fixes that."""
    rng = np.random.default_rng(40)
    m, s = rng.normal(size=50), np.exp(rng.normal(0, 0.3, 50))
    mu, sig = m + s * rng.normal(size=50), s * np.exp(rng.uniform(-6, -5, 50))
    paper, _ = rec.encode_layer(mu, sig, m, s, seed=40, layer=0, config=LOSSLESS)
    fitted_config = rec.Config(omega=3.0, extra_samples=1.2, n_beams=20, fit_split=True)
    fitted, z = rec.encode_layer(mu, sig, m, s, seed=40, layer=0, config=fitted_config)
    assert fitted.log_ratio >= 0.75 * fitted.kl and fitted.log_ratio > paper.log_ratio + 0.5 * fitted.kl
    # the exponents travel in the stream (5 bits a block); several blocks, and a split one
    mu, sig, m, s = layer(90, 41)
    config = rec.Config(block_size=40, n_beams=3, max_aux=15, fit_split=True)
    code, z, z_dec, _, reader = round_trip((mu, sig, m, s), 41, config)
    assert reader.fit_split and np.array_equal(z, z_dec)
    assert len(code.exponents) == len(code.indices) >= 3 and 0 in code.tree


def test_the_latent_depends_on_seed_and_layer_not_on_the_beams_at_decode():
    params = layer(60, 5)
    mu, sig, m, s = params
    config = rec.Config(block_size=25, n_beams=3)
    code, z = rec.encode_layer(mu, sig, m, s, seed=9, layer=1, config=config)
    again, z_again = rec.encode_layer(mu, sig, m, s, seed=9, layer=1, config=config)
    assert np.array_equal(z, z_again) and rec.pack([code], seed=9) == rec.pack([again], seed=9)
    # the decoder needs neither omega nor B: they are the encoder's business
    assert np.array_equal(rec.decode_layer(m, s, code, seed=9, layer=1), z)
    # another seed or layer id redraws everything
    assert not np.array_equal(rec.decode_layer(m, s, code, seed=10, layer=1), z)
    assert not np.array_equal(rec.decode_layer(m, s, code, seed=9, layer=2), z)
    # so a stream states the seed its codes were made with, and pack refuses to state another
    with pytest.raises(ValueError, match="seed"):
        rec.pack([code], seed=10)


def test_each_beam_sees_the_shared_draw_in_its_own_order():
    """The beams of a block share one draw per step (all the decoder redraws is the chosen row), each through its
    own cyclic shift of the draw's entries keyed by its path: forward and inverse are inverse permutations,
    the decoder's single path gets the encoder's order, other paths other orders (without the views the beams
    crowd together: the quality tests above fail), and a row drawn alone is the row of the whole draw."""
    keys = rec._mix(np.arange(12, dtype=np.uint64).reshape(3, 4), 7)
    shift = rec._shifts(keys, 12)
    rows = np.arange(3 * 12, dtype=np.float64).reshape(3, 12)
    seen = rec._rolled(rows, shift)  # each block's row as each of its beams sees it
    for g in range(3):
        for b in range(4):
            assert np.array_equal(seen[g, b], np.roll(rows[g], -int(keys[g, b] % np.uint64(12))))
            assert np.array_equal(rec._rolled(seen[g:g + 1, b], (12 - shift[g:g + 1, b]) % 12)[0], rows[g])
    assert len({tuple(r) for r in seen.reshape(12, 12)}) > 6
    assert np.array_equal(rec._rolled(rows, rec._shifts(keys[:, 2], 12)), seen[:, 2])  # the decoder's path
    draw = rec._draw(99, 5, [3, 7, 12])
    assert np.array_equal(rec._draw_rows(99, 5, [4, None, 6], 7, 12), [draw[0, 4], np.zeros(12), draw[2, 6]])


def test_a_layer_drawn_in_several_groups_round_trips(monkeypatch):
    """A layer's blocks are searched side by side in groups (one draw per step per group); the grouping is part
    of the format: decoded with another, the latents differ."""
    monkeypatch.setattr(rec, "DRAW_LIMIT", 3 * 20 * 25)  # groups of three 25-wide blocks at n = 20
    mu, sig, m, s = layer(170, 50)  # seven blocks, the last 20 wide: groups of 3, 3, 1
    config = rec.Config(block_size=25, n_beams=4)
    code, z, z_dec, _, _ = round_trip((mu, sig, m, s), 50, config)
    assert np.array_equal(z, z_dec) and len(code.indices) == 7
    assert [len(g) for g in rec._groups([(0, 1, 1)] * 7, config.n_candidates, 25)] == [3, 3, 1]
    monkeypatch.setattr(rec, "DRAW_LIMIT", 1 << 22)
    assert not np.array_equal(rec.decode_layer(m, s, code, seed=50, layer=0), z)


def test_block_too_large_for_max_aux_is_split():
    mu, sig, m, s = layer(80, 7)
    config = rec.Config(block_size=40, omega=3.0, n_beams=4, max_aux=12)
    code, z, z_dec, _, _ = round_trip((mu, sig, m, s), 4, config)
    assert np.array_equal(z, z_dec)
    assert 0 in code.tree and max(code.tree) <= 12
    # every leaf codes ceil(KL / omega) of its own dimensions: nothing is dropped
    assert sum(len(i) for i in code.indices) >= code.kl / 3.0
    assert len(code.indices) == sum(1 for k in code.tree if k) > 2


def test_several_layers_in_one_stream():
    layers = [layer(30, 20, (5, 6)), layer(70, 21), layer(1, 22)]
    config = rec.Config(block_size=32, n_beams=5)
    codes, latents = [], []
    for i, (mu, sig, m, s) in enumerate(layers):
        code, z = rec.encode_layer(mu, sig, m, s, seed=3, layer=i, config=config)
        codes.append(code)
        latents.append(z)
    data = rec.pack(codes, seed=3)
    reader = rec.Reader(data)
    assert (reader.seed, reader.n_candidates, reader.block_size) == (3, config.n_candidates, 32)
    for i, (_, _, m, s) in enumerate(layers):
        assert np.array_equal(reader.decode_layer(m, s, layer=i), latents[i])
    reader.finish()
    # stopping early, or asking for one layer too many, is an error, not garbage
    short = rec.Reader(data)
    short.decode_layer(layers[0][2], layers[0][3], layer=0)
    with pytest.raises(InputError, match="more than the 1 layer"):
        short.finish()
    more = rec.Reader(data)
    for i, (_, _, m, s) in enumerate(layers):
        more.decode_layer(m, s, layer=i)
    with pytest.raises(InputError, match="holds 3 layer"):
        more.decode_layer(layers[1][2], layers[1][3], layer=3)


def test_damaged_or_foreign_bytes_fail_clearly():
    mu, sig, m, s = layer(50, 30)
    code, _ = rec.encode_layer(mu, sig, m, s, seed=1, layer=0, config=rec.Config(n_beams=2))
    data = rec.pack([code], seed=1)
    for cut in (0, 3, 5, 9, len(data) // 2, len(data) - 1):
        with pytest.raises(InputError, match="truncated|wrong magic"):
            rec.Reader(data[:cut])
    flipped = bytearray(data)
    flipped[-2] ^= 0x10
    with pytest.raises(InputError, match="corrupt"):
        rec.Reader(bytes(flipped))
    with pytest.raises(InputError, match="corrupt"):
        rec.Reader(data + b"\0")
    with pytest.raises(InputError, match="wrong magic"):
        rec.Reader(b"RDSc" + data[4:])  # a compressed image of the package, not a REC stream
    with pytest.raises(InputError, match="wrong magic"):
        rec.Reader(np.random.default_rng(0).bytes(64))
    with pytest.raises(InputError, match="version"):
        rec.Reader(data[:4] + bytes([rec.VERSION + 1]) + data[5:])
    # a prior of another size than the code's: refused, not decoded
    with pytest.raises(InputError, match="dimensions"):
        rec.decode_layer(m[:40], s[:40], code, seed=1, layer=0)


@pytest.mark.parametrize("kwargs,match", [
    (dict(block_size=0), "block_size"), (dict(block_size=-3), "block_size"), (dict(block_size=2.5), "block_size"),
    (dict(omega=0.5), "candidates"), (dict(omega=20.0), "candidates"), (dict(extra_samples=-1.0), "positive"),
    (dict(n_beams=0), "n_beams"), (dict(max_aux=0), "max_aux"), (dict(max_aux=1 << 16), "max_aux")])
def test_bad_config_refused(kwargs, match):
    with pytest.raises(InputError, match=match):
        rec.Config(**kwargs)


def test_bad_latents_refused():
    config = rec.Config()
    with pytest.raises(ValueError, match="same shape"):
        rec.encode_layer(np.zeros(3), np.ones(3), np.zeros(4), np.ones(4), seed=0, layer=0, config=config)
    with pytest.raises(ValueError, match="positive"):
        rec.encode_layer(np.zeros(3), np.zeros(3), np.zeros(3), np.ones(3), seed=0, layer=0, config=config)
    with pytest.raises(ValueError, match="finite"):
        rec.encode_layer(np.array([0, np.nan, 0]), np.ones(3), np.zeros(3), np.ones(3), seed=0, layer=0,
                         config=config)
    with pytest.raises(InputError, match="seed"):
        rec.encode_layer(np.zeros(3), np.ones(3), np.zeros(3), np.ones(3), seed=-1, layer=0, config=config)


def test_unframed_stream_is_the_framed_one_without_its_frame():
    """framed=False (inside rec.py's container) drops the magic, version, length and CRC: the same payload after
    a shorter header, decoded to the same latent."""
    mu, sig, m, s = layer(60, 40)
    code, z = rec.encode_layer(mu, sig, m, s, seed=4, layer=2, config=rec.Config(n_beams=2))
    framed, bare = rec.pack([code], seed=4), rec.pack([code], seed=4, framed=False)
    head = rec.Reader(framed).header_bytes
    reader = rec.Reader(bare, framed=False)
    assert bare[reader.header_bytes:] == framed[head:] and len(framed) - len(bare) == head - reader.header_bytes
    assert reader.header_bytes <= 6 and reader.seed == 4
    np.testing.assert_array_equal(reader.decode_layer(m, s, layer=2), z)
    reader.finish()


def test_a_stream_ending_in_zero_indices_decodes():
    """Zeros pushed first onto an empty ANS coder leave it looking empty: without the stream's end mark, a last
    block whose indices are all 0 (a block of tiny KL, as a lossless model's lower level can have) read as
    truncated. Its layers come back, and finish() accepts the stream."""
    codes = [rec.LayerCode(10, 1000, 20, [3], [np.array([4, 0, 7])], seed=0),
             rec.LayerCode(1500, 1000, 20, [1, 1], [np.array([0]), np.array([0])], seed=0)]
    for framed in (True, False):
        reader = rec.Reader(rec.pack(codes, seed=0, framed=framed), framed=framed)
        for c in codes:
            got = reader.read_layer(c.dims)
            assert got.tree == c.tree and all(np.array_equal(a, b) for a, b in zip(got.indices, c.indices))
        reader.finish()
