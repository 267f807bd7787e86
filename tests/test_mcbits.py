"""mcbits.py, its engine utils/mcbits.py and utils/ans.py: exact count-table inverses, lossless round trips of
every coder (the stack back at its initial words), the coded information against the discretized bound rebuilt
independently and against the continuous -ELBO, the released checkpoints on MNIST against the ideal rate,
training with the IWAE bound, and bad input."""
import json
import math
import os
import subprocess
import sys
from statistics import NormalDist

import numpy as np
import pytest

from conftest import ROOT, data_path, run_script
from utils import ans, mnist
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


def _phi(t):
    """The standard normal cdf through math.erfc: an implementation apart from the coder's scipy ndtr."""
    return 0.5 * np.vectorize(math.erfc, otypes=[np.float64])(-np.asarray(t, np.float64) / math.sqrt(2.0))


def _bucket_model(arrays, log_num_bucket=8, prop_mprec=20, cond_mprec=16):
    """The BB-ELBO discretization, rebuilt from its definition (docs/mcbits.md) with none of the coder's functions:
    posterior counts per latent dimension, their information, and each image's pixel cost at the bucket medians."""
    n = 1 << log_num_bucket
    std = NormalDist()
    edges = np.array([-math.inf] + [std.inv_cdf(i / n) for i in range(1, n)] + [math.inf])
    centres = np.array([std.inv_cdf((i + 0.5) / n) for i in range(n)])
    a = {k: v.astype(np.float64) for k, v in arrays.items()}

    def posterior(x):
        h = np.tanh(np.tanh(x @ a["enc_fc1_w"] + a["enc_fc1_b"]) @ a["enc_fc2_w"] + a["enc_fc2_b"])
        return h @ a["enc_fc31_w"] + a["enc_fc31_b"], np.exp(h @ a["enc_fc32_w"] + a["enc_fc32_b"])

    def counts(mu, sigma):  # [..., n]: one count per bucket, the other 2^p - n shared by mass on the cumulative scale
        cdf = _phi((edges - mu[..., None]) / sigma[..., None])
        return np.diff(np.rint(cdf * ((1 << prop_mprec) - n)), axis=-1) + 1

    def logits(z):
        g = np.tanh(np.tanh(z @ a["dec_fc1_w"] + a["dec_fc1_b"]) @ a["dec_fc2_w"] + a["dec_fc2_b"])
        return g @ a["dec_fc3_w"] + a["dec_fc3_b"]

    def pixel_bits(buckets, x):  # -log2 P(x | bucket medians) under the 16-bit Bernoulli counts, summed over pixels
        p = 1.0 / (1.0 + np.exp(-logits(centres[buckets])))
        ones = np.floor(p * ((1 << cond_mprec) - 2)) + 1
        return (cond_mprec - np.log2(np.where(x == 1, ones, (1 << cond_mprec) - ones))).sum(-1)

    def nats(z, x):  # -log p(x|z) of the continuous model
        lg = logits(z)
        return (np.logaddexp(0.0, lg) - x * lg).sum(-1)

    return posterior, counts, pixel_bits, nats, edges


def test_bb_elbo_info_bits_is_the_discretized_bound():
    """stack.info_bits is the discretized BB-ELBO rate, rebuilt here from the bucket masses; below the continuous
    -ELBO by the data-processing gap of the KL term (and the bucket medians' effect on the likelihood).

    Per image, -ELBO = E_q[-log p(x|z)] + KL(q || p). Coding draws a bucket b ~ Q (q's mass per bucket, as counts)
    and costs -log P(x | median(b)) + log2 256 per dimension + log Q(b): in expectation E_Q[-log P(x|b)] + KL(Q || P),
    P uniform over the equal-mass buckets. KL(Q || P) <= KL(q || p) (data processing; at most 8 bits per dimension
    here), so discretizing saves dKL = KL(q||p) - KL(Q||P) >= 0, large where q is much wider than the prior (its mass
    goes to the two unbounded end buckets) or much narrower than a bucket; the likelihood at the medians adds dlik.
    The random model has sigma up to ~15: on 400 images dKL = 20.3 bits/image and dlik = -2.9, so the
    discretized bound is 23.2 bits below -ELBO (919.6). Coded in sequence the images cost 8.7 bits more than that,
    14.6 below -ELBO: each pop reads the previous image's latents, pushed raw under the
    uniform prior, and this model's latents are far from uniform (26% in the two end buckets), so the pops are not
    exact draws from Q. Coded on fresh stacks of random words they are (-0.1 +- 0.9 bits from the bound). With
    trained weights (aggregate posterior ~ prior) the sequential excess vanishes: -0.06 +- 0.27 bits/image on 500
    MNIST digits with the released ELBO model."""
    arrays = random_arrays(2)
    codec = engine.Codec(engine.Net(arrays), "bb_elbo")
    x = random_images(200, seed=4)
    n, latent = len(x), LATENT

    class Recording(ans.Stack):  # keeps the popped buckets, to recompute their cost independently
        def pop(self, table):
            symbols = super().pop(table)
            self.popped.append(symbols)
            return symbols

    stack = Recording(ans.seed_words(codec.max_pop_bits() + 64, 0))
    stack.popped = []
    start, per_image = stack.bits, []
    for xi in x:
        before = stack.info_bits
        codec.encode(stack, xi, codec.posterior(xi))
        per_image.append(stack.info_bits - before)
    # The stack grows by the information content, up to the whole bits counted at either end (1 bit each) and
    # rANS' approximation: a push or pop changes the 32-64-bit state by its -log2 p to ~2^24 / state relative,
    # which these latents, pushed as raw bytes and popped again, bias by ~0.024 bits/image (3e-5 bits/dim, measured
    # on 800 images; the released models' messages stay within 1e-6 bits/dim)
    assert abs((stack.bits - start) - stack.info_bits) < 2 + 5e-5 * x.size

    posterior, counts, pixel_bits, nats, edges = _bucket_model(arrays)
    mu, sigma = posterior(x.astype(np.float64))
    c = counts(mu, sigma)  # [n, L, 256]
    assert (c >= 1).all() and (c.sum(-1) == 1 << 20).all()
    z = np.array(stack.popped)
    q_bits = 20 - np.log2(np.take_along_axis(c, z[..., None], -1)[..., 0])
    expected = pixel_bits(z, x) + 8 * latent - q_bits.sum(1)
    # the same sums in another order: equal to float rounding (measured 3e-14 relative; one count short in every
    # posterior table gives 3e-6, a median at the 0.4 quantile 1.5e-3)
    np.testing.assert_allclose(per_image, expected, rtol=1e-9)

    # on fresh random words the pops are exact draws from Q: their mean cost is the discretized bound
    fresh = np.zeros(n)
    for i, xi in enumerate(x):
        s = ans.Stack.seeded(codec.max_pop_bits() + 64, seed=1000 + i)
        codec.encode(s, xi, codec.posterior(xi))
        fresh[i] = s.info_bits
    # E_Q[-log P(x|b)] and E_q[-log p(x|z)] by coupled draws: one uniform u gives z = q's quantile and b = Q's
    # (bucket of cumulative count > u 2^20); KL terms exact (KL(q || N(0, 1)) analytic, KL(Q || P) by summation)
    draws = 40
    u = np.random.default_rng(7).random((draws, n, latent))
    b = (np.cumsum(c, -1) <= (u * (1 << 20))[..., None]).sum(-1)
    zq = mu + sigma * np.vectorize(NormalDist().inv_cdf, otypes=[np.float64])(u)
    lik_disc = pixel_bits(b, x).mean(0)
    lik_cont = nats(zq, x).mean(0) / math.log(2)
    big_q = c / float(1 << 20)
    kl_disc = (big_q * np.log2(big_q * 256)).sum(-1)  # [n, L] bits
    kl_cont = (0.5 * (mu ** 2 + sigma ** 2 - 1) - np.log(sigma)) / math.log(2)
    mass = np.diff(_phi((edges - mu[..., None]) / sigma[..., None]), axis=-1)
    kl_mass = (mass * np.log2(np.maximum(mass, 1e-300) * 256)).sum(-1)
    assert (kl_mass <= kl_cont + 1e-9).all() and (kl_mass <= 8 + 1e-9).all()  # data processing; log2 256
    # the counts (1 each, the rest by mass) move KL(Q || P) by ~256 / 2^20 relative (measured < 1e-3 bits per dim)
    assert np.abs(kl_disc - kl_mass).max() < 0.01
    d_kl, d_lik = (kl_cont - kl_disc).sum(1), lik_disc - lik_cont
    # -ELBO as the script's ideal rate computes it (TensorFlow, 200 draws per image)
    model = engine.make_model(HIDDEN, LATENT, arrays=arrays)
    elbo, _ = engine.continuous_bounds(model, x, mu, np.log(sigma), 1, 200, seed=0)
    gap = fresh + elbo / math.log(2)  # coded bits minus -ELBO in bits, per image
    # E[coded] - (-ELBO) = dlik - dKL; 4 standard errors of the per-image gap (one coded draw per image dominates)
    assert abs(gap.mean() - (d_lik - d_kl).mean()) < 4 * gap.std(ddof=1) / math.sqrt(n)
    assert d_kl.mean() > 10  # most of the gap to -ELBO: the KL term's data-processing saving


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
    # (-X importtime lists every module the process imports, on stderr.)
    argv = ["mcbits.py", *map(str, ARCH), "--weights", str(weights), "decompress", str(message), "--output",
            str(tmp_path / "d2.npy")]
    proc = subprocess.run([sys.executable, "-X", "importtime", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert proc.returncode == 0 and "numpy" in imported and "tensorflow" not in imported, proc.stderr[-2000:]

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


def test_train_iwae_on_mnist_logs_the_iwae_bound(tmp_path):
    data_path("mnist/train-images-idx3-ubyte.gz")
    data_path("mnist/t10k-images-idx3-ubyte.gz")
    k = 5
    out = run_script("mcbits.py", "--dataset", "mnist", "train", "--bound", "iwae", "--num_particles", k, "--epochs", 1,
                     "--steps_per_epoch", 40, "--checkpoint_dir", tmp_path, "--max_validation_steps", 1, check=True)
    run_dir = json.loads(out.stdout.strip().splitlines()[-1])["run_dir"]
    assert "dataset=mnist-bound=iwae-num_particles=5" in run_dir
    log = [json.loads(line) for line in open(f"{run_dir}/log.jsonl")]
    assert [(r["epoch"], r["step"]) for r in log] == [(1, 40)]
    # the decoder's bias starts at the logit of the training mean, so even a short run is no worse than coding
    # every pixel with its marginal (mean binary entropy of the pixels; a zero-bias start would be ~1 bit/dim)
    p = np.clip(mnist.greys("mnist", "train").mean(0), 1e-6, 1 - 1e-6)
    marginal = float(np.mean(-p * np.log2(p) - (1 - p) * np.log2(1 - p)))
    assert log[-1]["val_bpd"] < marginal + 0.02

    # The logged validation loss (one batch: the first 500 binarized test images) is -IWAE_5 of the saved weights,
    # not their -ELBO: both recomputed here in NumPy, 4 draws of 5 particles per image. On this run -ELBO is
    # ~6 nats above -IWAE_5; the log's value (one draw of 5 per image) has a standard error of ~0.15 nats.
    a = {key: v.astype(np.float64) for key, v in engine.load_weights(f"{run_dir}/weights.npz", 200, 50).items()}
    x = mnist.test_images("mnist", 500).astype(np.float64)
    h = np.tanh(np.tanh(x @ a["enc_fc1_w"] + a["enc_fc1_b"]) @ a["enc_fc2_w"] + a["enc_fc2_b"])
    mu, log_sig = h @ a["enc_fc31_w"] + a["enc_fc31_b"], h @ a["enc_fc32_w"] + a["enc_fc32_b"]
    eps = np.random.default_rng(0).standard_normal((4, k) + mu.shape)
    z = mu + np.exp(log_sig) * eps
    g = np.tanh(np.tanh(z @ a["dec_fc1_w"] + a["dec_fc1_b"]) @ a["dec_fc2_w"] + a["dec_fc2_b"])
    logits = g @ a["dec_fc3_w"] + a["dec_fc3_b"]
    log_w = (x * logits - np.logaddexp(0.0, logits)).sum(-1) + (-0.5 * z ** 2 + 0.5 * eps ** 2 + log_sig).sum(-1)
    iwae = np.logaddexp.reduce(log_w, axis=1) - math.log(k)  # [4 draws, 500 images]
    elbo = log_w.mean((0, 1))
    n = x.shape[0]
    # per-draw sd pooled over the images; standard error of the log's one draw per image and of our four
    se = math.sqrt(iwae.var(0, ddof=1).mean() * (1 / n + 1 / (4 * n)))
    val = log[-1]["val_loss"]
    assert abs(val + iwae.mean()) < 4 * se
    assert val < -elbo.mean() - 4 * se


# ---- the released McBits checkpoints on real digits ----------------------------------------------------------

RELEASED_LATENT = 50


def run_main(capsys, *argv):
    """mcbits.py's main in this process (TensorFlow loads once for the whole file); its JSON record."""
    before = os.environ.get("OPENBLAS_NUM_THREADS")
    import mcbits as script  # it sets OPENBLAS_NUM_THREADS=1 for itself; other tests' subprocesses keep theirs
    if before is None:
        os.environ.pop("OPENBLAS_NUM_THREADS", None)
    script.main([str(a) for a in argv])
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.parametrize("coder,num,k,n", [("bb_elbo", 1, 1, 200), ("bb_is", 5, 5, 200), ("bb_cis", 5, 5, 200),
                                         ("bb_cis", 50, 50, 100)])
def test_released_checkpoints_code_mnist_at_the_ideal_rate(tmp_path, capsys, coder, num, k, n):
    """The first n binarized MNIST test digits (fewer for K = 50, to bound the time), coded with the released
    checkpoint trained for K (on EMNIST-MNIST; classic MNIST is what the shared data holds): decoding restores them,
    net_bpd is the coder's discretized rate disc_bpd and within the stated margin of ideal_bpd (docs/mcbits.md,
    Initial bits, net and total rate)."""
    weights = data_path(f"mcbits/train_bin_emnist_split=mnist_num={num}.npz")
    data_path("mnist/t10k-images-idx3-ubyte.gz")
    message, decoded = tmp_path / "m.mcb", tmp_path / "d.npy"
    r = run_main(capsys, "--dataset", "mnist", "--weights", weights, "compress", "--coder", coder, "--num_particles", k,
                 "--num_compress", n, "--results_dir", tmp_path / "res", "--output", message)
    run_main(capsys, "--weights", weights, "decompress", message, "--output", decoded)
    assert np.array_equal(np.load(decoded).reshape(n, engine.DIM), mnist.test_images("mnist", n))
    assert r["num_images"] == n and r["num_particles"] == k

    if coder == "bb_elbo":
        # docs/mcbits.md's -ELBO of this model on the first 100 test images: 0.2083 bits/dim (5 draws per image).
        # Tolerance: 4 standard errors of that figure (per-draw sd 5.3 bits, i.e. 0.0068 bits/dim, over 500 draws:
        # 3.0e-4) and of ours (100 draws: 6.8e-5), plus its rounding (5e-5): 1.3e-3, rounded up to 0.0015 bits/dim.
        per_image = np.load(next((tmp_path / "res").glob("*.npz")))["ideal_bits"]
        assert abs(per_image[:100].mean() / engine.DIM - 0.2083) < 0.0015

    dims = n * engine.DIM
    # net = disc up to the whole bits counted at either end of the stack (1 bit each) and rANS' approximation
    # (<= 1e-6 bits/dim on these models); BB-CIS pushes each latent's position inside its bucket with constriction's
    # 24-bit Uniform, which gives all but the last position floor(2^24 / count) quanta, so each costs
    # log2(r / floor(r)) bits more than log2(count) (r = 2^24 / count >= 16: at most log2(17/16), measured 7e-4
    # per latent dimension on average)
    excess = 1e-3 * RELEASED_LATENT * n if coder == "bb_cis" else 0.0
    assert -2 - 1e-6 * dims < (r["net_bpd"] - r["disc_bpd"]) * dims < 2 + 1e-6 * dims + excess
    # The stated margin: 1% of the ideal bound for the discretization (buckets, medians, 20-bit counts: +0.6% to
    # +0.8% on the 10,000 test digits, reproduction.md) plus 4 paired standard errors of net - ideal over the images
    # (the Monte Carlo noise of one coded draw per image, ~0.25% of the rate here). Prior-coded latents of a trained
    # model are near uniform bits, so coding in sequence adds nothing measurable
    # (test_bb_elbo_info_bits_is_the_discretized_bound).
    assert abs(r["net_bpd"] - r["ideal_bpd"]) < 0.01 * r["ideal_bpd"] + 4 * r["net_minus_ideal_se_bpd"]
    # the initial bits: counted in total_bpd only, amortized over the n images
    assert r["total_bpd"] - r["net_bpd"] == pytest.approx(r["initial_bits"] / dims, rel=1e-9)


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
