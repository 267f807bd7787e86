"""mcbits.py, its engine utils/mcbits.py and utils/ans.py: exact count-table inverses, lossless round trips of
every coder (the stack back at its initial words), the net rate against the discretized bound, and bad input."""
import json
import subprocess
import sys
import math

import numpy as np
import pytest

from conftest import ROOT, data_path, run_script
from utils import ans
from utils import mcbits as engine

HIDDEN, LATENT = 24, 6


def random_arrays(seed=0, scale=0.4):
    rng = np.random.default_rng(seed)
    out = {}
    for name, (n_in, n_out) in engine.layer_shapes(HIDDEN, LATENT).items():
        out[f"{name}_w"] = (rng.standard_normal((n_in, n_out)) * scale / math.sqrt(n_in) * 3).astype(np.float32)
        out[f"{name}_b"] = (rng.standard_normal(n_out) * 0.5).astype(np.float32)
    return out


def random_images(n, seed=1):
    rng = np.random.default_rng(seed)
    p = rng.random(engine.DIM) * 0.5
    return (rng.random((n, engine.DIM)) < p).astype(np.uint8)


# ---- count tables -----------------------------------------------------------------------------------

def check_exact_inverse(table):
    counts = table.counts
    assert (counts >= 1).all()
    assert (counts.sum(1) == 1 << table.precision).all()
    m, n = counts.shape
    for s in range(n):
        sym = np.full(m, s)
        start = table.cdf(sym)
        assert (table.ppf(start) == s).all()
        assert (table.ppf(start + table.count(sym) - 1) == s).all()  # the last integer of the interval


def test_count_tables_cdf_ppf_exact_inverses():
    rng = np.random.default_rng(0)
    edges, centres = ans.standard_normal_buckets(5)
    assert np.allclose(np.diff(ans.gaussian_table([0.0], [1.0], edges, 20).counts), 0, atol=2)  # equal mass
    mu = np.concatenate([rng.normal(size=20) * 2, [0.0, 6.0, -9.0]])
    sigma = np.concatenate([np.exp(rng.normal(size=20) - 1), [1e-6, 1e-3, 30.0]])  # spikes, far tails, flat
    for precision in (8, 16, 20):
        check_exact_inverse(ans.gaussian_table(mu, sigma, edges, precision))
    check_exact_inverse(ans.bernoulli_table(rng.normal(size=50) * 40, 16))
    check_exact_inverse(ans.categorical_table(np.exp(rng.normal(size=50) * 20), 16))
    check_exact_inverse(ans.uniform_table(3, 5))
    # the information content is -log2 of the count's share
    t = ans.bernoulli_table([0.0], 16)
    assert t.info(np.array([1]))[0] == pytest.approx(1.0, abs=1e-4)


def test_stack_round_trip_and_underflow_guard():
    rng = np.random.default_rng(0)
    edges, _ = ans.standard_normal_buckets(8)
    q = ans.gaussian_table(rng.normal(size=10), np.exp(rng.normal(size=10)), edges, 20)
    lik = ans.bernoulli_table(rng.normal(size=784), 16)
    stack = ans.Stack.seeded(2000, seed=3)
    initial = stack.words()
    x = (rng.random(784) < 0.3).astype(int)
    z = stack.pop(q)  # bits back
    stack.push(x, lik)
    stack.push_uniform([5, 0, 7], [9, 1, 8])  # a size-1 row carries nothing
    stack.push(z, q.tile(1))
    assert stack.pop(q.tile(1)).tolist() == z.tolist()
    assert stack.pop_uniform([9, 1, 8]).tolist() == [5, 0, 7]
    assert stack.pop(lik).tolist() == x.tolist()
    stack.push(z, q)
    assert np.array_equal(stack.words(), initial)
    assert abs(stack.info_bits) < 1e-9
    with pytest.raises(ans.StackUnderflow):
        ans.Stack.seeded(100, seed=0).require(500)


# ---- the coders ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("coder,k,refine", [("bb_elbo", 1, 0), ("bb_is", 4, 0), ("bb_cis", 4, 0),
                                            ("bb_cis", 1, 0), ("bb_is", 3, 3)])
def test_coders_round_trip_and_restore_initial_words(coder, k, refine):
    net = engine.Net(random_arrays())
    codec = engine.Codec(net, coder, k, refine_steps=refine, refine_lr=0.05)
    x = random_images(12)
    stack = ans.Stack.seeded(codec.max_pop_bits() + 64, seed=5)
    initial = stack.words()
    posteriors = [codec.posterior(xi) for xi in x]
    for xi, post in zip(x, posteriors):
        codec.encode(stack, xi, post)
    message = stack.words()
    decoder = ans.Stack(message)
    for i in reversed(range(len(x))):
        xi, post = codec.decode(decoder)
        assert np.array_equal(xi, x[i])
        assert np.array_equal(post[0], posteriors[i][0])  # the refinement repeats bit for bit
    assert np.array_equal(decoder.words(), initial)


def test_bb_elbo_net_rate_matches_discretized_bound():
    codec = engine.Codec(engine.Net(random_arrays(2)), "bb_elbo")
    x = random_images(40, seed=4)
    stack = ans.Stack.seeded(codec.max_pop_bits() + 64, seed=0)
    start = stack.bits
    for xi in x:
        codec.encode(stack, xi, codec.posterior(xi))
    dims = x.size
    assert abs((stack.bits - start) / dims - stack.info_bits / dims) < 5e-5
    # and the discretized bound is the sum over images of -log P(x|z) - log P(z) + log Q(z) (bits > 0)
    assert stack.info_bits > 0


def test_iwae_bound_above_elbo():
    model = engine.make_model(HIDDEN, LATENT, arrays=random_arrays(1))
    x = random_images(40, seed=2)
    mu, log_sig = engine.Net(random_arrays(1)).encode(x.astype(np.float64))
    elbo, iwae = engine.continuous_bounds(model, x, mu, log_sig, 10, 200, seed=0)
    assert iwae.mean() > elbo.mean()
    assert np.isfinite(elbo).all()


# ---- the script ---------------------------------------------------------------------------------------

ARCH = ("--hidden_units", HIDDEN, "--latent_dim", LATENT)


def test_cli_compress_decompress_and_bad_input(tmp_path):
    weights = tmp_path / "w.npz"
    np.savez(weights, **random_arrays(3))
    images = tmp_path / "x.npy"
    np.save(images, random_images(6).reshape(6, 28, 28))
    results, message, decoded = tmp_path / "res", tmp_path / "m.mcb", tmp_path / "d.npy"
    out = run_script("mcbits.py", *ARCH, "--dataset", images, "--weights", weights, "compress", "--coder", "bb_cis",
                     "--num_particles", 3, "--num_compress", 6, "--results_dir", results, "--output", message,
                     "--ideal_samples", 30, check=True)
    record = json.loads(out.stdout.strip().splitlines()[-1])
    assert record["num_images"] == 6 and record["decode_check"]
    assert record["total_bpd"] > record["net_bpd"] > 0
    assert record["message_bytes"] * 8 >= record["total_bpd"] * 6 * 784
    assert len((results / "mcbits.jsonl").read_text().splitlines()) == 1
    run_script("mcbits.py", *ARCH, "--weights", weights, "decompress", message, "--output", decoded, check=True)
    assert np.array_equal(np.load(decoded), np.load(images))
    # Decoding is numpy and constriction only: TensorFlow is never imported (start-up in a fraction of a second).
    argv = ["mcbits.py", *map(str, ARCH), "--weights", str(weights), "decompress", str(message), "--output",
            str(tmp_path / "d2.npy")]
    code = (f"import runpy, sys; sys.argv = {argv!r}; runpy.run_path('mcbits.py', run_name='__main__'); "
            f"print('tensorflow' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().splitlines()[-1] == "False", proc.stderr

    def refused(*args, says):
        proc = run_script("mcbits.py", *args, check=False)
        assert proc.returncode == 2 and says in proc.stderr, proc.stderr
        assert not (tmp_path / "bad").exists()

    bad = tmp_path / "bad"
    other = tmp_path / "other.npz"
    np.savez(other, **random_arrays(3) | {"dec_fc3_w": np.zeros((HIDDEN, 100), np.float32)})
    refused(*ARCH, "--dataset", images, "--weights", other, "compress", "--results_dir", bad, says="dec_fc3_w")
    grey = tmp_path / "grey.npy"
    np.save(grey, (random_images(2) * 200).astype(np.uint8))
    refused(*ARCH, "--dataset", grey, "--weights", weights, "compress", "--results_dir", bad, says="not binary")
    refused(*ARCH, "--dataset", images, "--weights", weights, "compress", "--coder", "bb_is", "--num_particles", 0,
            "--results_dir", bad, says="--num_particles")
    cut = tmp_path / "cut.mcb"
    cut.write_bytes(message.read_bytes()[:-5])
    refused(*ARCH, "--weights", weights, "decompress", cut, "--output", bad, says="truncated")
    refused(*ARCH, "--weights", weights, "decompress", images, "--output", bad, says="not a compressed")
    refused(*ARCH, "--weights", other, "decompress", message, "--output", bad, says="dec_fc3_w")


def test_train_starts_at_the_pixel_marginals(tmp_path):
    data_path("mnist/train-images-idx3-ubyte.gz")
    out = run_script("mcbits.py", "train", "--epochs", 1, "--steps_per_epoch", 40, "--checkpoint_dir", tmp_path,
                     "--max_validation_steps", 1, check=True)
    run_dir = json.loads(out.stdout.strip().splitlines()[-1])["run_dir"]
    log = [json.loads(line) for line in open(f"{run_dir}/log.jsonl")]
    # the decoder's bias starts at the logit of the training mean, so even a short run is no worse than coding
    # every pixel with its marginal (mean binary entropy of the pixels; a zero-bias start would be ~1 bit/dim)
    from utils import mnist
    p = np.clip(mnist.greys("mnist", "train").mean(0), 1e-6, 1 - 1e-6)
    marginal = float(np.mean(-p * np.log2(p) - (1 - p) * np.log2(1 - p)))
    assert log[-1]["val_bpd"] < marginal + 0.02
    engine.load_weights(f"{run_dir}/weights.npz", 200, 50)


def test_data_paths_fall_back_to_rds_data_dir(tmp_path, monkeypatch):
    # --weights and --dataset data/mcbits/... follow the package's rule for data/ paths: when absent where the
    # command runs, they are looked up under $RDS_DATA_DIR (the README's mcbits command runs as written).
    store, work = tmp_path / "store", tmp_path / "work"
    (store / "mcbits").mkdir(parents=True)
    work.mkdir()
    np.savez(store / "mcbits" / "w.npz", **random_arrays(4))
    np.save(store / "mcbits" / "x.npy", random_images(3).reshape(3, 28, 28))
    monkeypatch.setenv("RDS_DATA_DIR", str(store))
    out = run_script("mcbits.py", *ARCH, "--dataset", "data/mcbits/x.npy", "--weights", "data/mcbits/w.npz",
                     "compress", "--coder", "bb_elbo", "--num_compress", 3, "--results_dir", work / "res",
                     "--ideal_samples", 5, cwd=work, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1])["num_images"] == 3
    proc = run_script("mcbits.py", *ARCH, "--weights", "data/mcbits/none.npz", "decompress", work / "m.mcb",
                      "--output", work / "d.npy", cwd=work, check=False)
    assert proc.returncode == 2 and "--weights" in proc.stderr and str(store / "mcbits" / "none.npz") in proc.stderr
