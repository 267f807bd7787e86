"""The shared foundations: analytic R(D), lower-bound arithmetic, BD-rate, logs, atomic files, sources."""
import json
import math
import os

import numpy as np
import pytest
from scipy.optimize import brentq

from utils import cli, jsonl, rd, runs, sources


# ---- analytic Gaussian R(D) ---------------------------------------------------------------------

def brute_force_rd(var, D):
    """Reverse water-filling by root-finding on the water level."""
    theta = brentq(lambda t: np.minimum(t, var).mean() - D, 1e-12, var.max(), xtol=1e-15)
    return 0.5 * np.log(np.maximum(var / theta, 1.0)).sum()


def test_water_filling_matches_brute_force():
    var = np.array([0.05, 0.3, 1.0, 2.0, 4.0])
    for D in [0.01, 0.04, 0.2, 0.7, 1.3]:
        assert rd.gaussian_rd(var, D)[0] == pytest.approx(brute_force_rd(var, D), rel=1e-9)


def test_rd_is_zero_at_mean_variance_and_decreasing():
    var = np.array([0.5, 1.0, 2.0])
    D, R = rd.gaussian_rd_curve(var, num=50)
    assert np.all(np.diff(R) < 0)
    assert R[-1] == pytest.approx(0.0, abs=1e-12)


def test_lambda_optimum_is_the_minimum_of_the_lagrangian():
    var = np.random.default_rng(0).uniform(0.1, 2.0, 16)
    for lamb in [0.3, 3.0, 30.0]:
        opt = rd.gaussian_rd_at_lambda(var, lamb)
        D = np.geomspace(1e-4, var.mean(), 20000)
        assert opt["lagrangian"] == pytest.approx(np.min(rd.gaussian_rd(var, D) + lamb * D), rel=1e-5)


def test_lambda_optimum_units():
    # N(0, I_n) with lamb = n/2 * c: intercept n/2 (1 + ln c) nats per sample.
    n, c = 4, 10.0
    assert rd.gaussian_rd_at_lambda(np.ones(n), n / 2 * c)["lagrangian"] == pytest.approx(n / 2 * (1 + math.log(c)))
    # Bits per dimension: the same point, with R scaled by 1 / (n ln 2).
    nats = rd.gaussian_rd_at_lambda(np.ones(n), 3.0)
    bits_pd = rd.gaussian_rd_at_lambda(np.ones(n), 3.0 / (n * math.log(2)), nats=False, per_dim=True)
    assert bits_pd["D"] == pytest.approx(nats["D"])
    assert bits_pd["R"] == pytest.approx(nats["R"] / (n * math.log(2)))


def test_lower_bound_curve_is_max_of_lines():
    lambs, intercepts = np.array([1.0, 10.0]), np.array([1.0, 3.0])
    D = np.array([0.0, 0.1, 0.5, 5.0])
    expected = [3.0, 2.0, 0.5, 0.0]  # max(1 - D, 3 - 10 D, 0)
    assert rd.lower_bound_curve(lambs, intercepts, D) == pytest.approx(expected)


def test_lower_bound_curve_of_true_intercepts_is_the_gaussian_rd():
    lambs = np.geomspace(0.6, 200, 400)
    intercepts = [rd.gaussian_rd_at_lambda(np.ones(2), l)["lagrangian"] for l in lambs]
    D = np.array([0.01, 0.1, 0.5])
    assert rd.lower_bound_curve(lambs, intercepts, D) == pytest.approx(rd.gaussian_rd(np.ones(2), D), abs=2e-3)


def test_aggregate_lb_results_pools_seeds(tmp_path):
    for seed, lamb in [(0, 3.0), (1, 3.0), (0, 10.0)]:
        np.savez(tmp_path / f"rd-{lamb}-{seed}.npz", lamb=lamb, xi=np.full(5, lamb + seed))
    pooled = rd.aggregate_lb_results(sorted(tmp_path.glob("*.npz")))
    assert sorted(pooled) == [3.0, 10.0]
    assert pooled[3.0].size == 10 and pooled[3.0].mean() == pytest.approx(3.5)


def test_mean_ci_covers_the_mean():
    x = np.random.default_rng(1).normal(2.0, 1.0, 400)
    ci = rd.mean_ci(x)
    assert ci["lo"] < 2.0 < ci["hi"]
    assert ci["stderr"] == pytest.approx(1 / 20, rel=0.15)


@pytest.mark.parametrize("method", rd.BD_METHODS)
def test_bd_rate_shifts(method):
    psnr = np.array([30.0, 32.0, 34.0, 36.0])
    rate = np.array([0.2, 0.35, 0.6, 1.0])
    assert rd.bd_rate(rate, psnr, rate, psnr, method) == pytest.approx(0.0, abs=1e-9)
    assert rd.bd_rate(rate, psnr, rate / 2, psnr, method) == pytest.approx(-50.0, abs=1e-9)
    assert rd.bd_rate(rate / 2, psnr, rate, psnr, method) == pytest.approx(100.0, abs=1e-9)


def log_rate(psnr):
    """A smooth, increasing ln bpp as a cubic in PSNR, shaped like the published Kodak curves."""
    t = (psnr - 34.0) / 10.0
    return -1.1 + 2.6 * t - 0.3 * t ** 2 + 0.4 * t ** 3


def test_bd_rate_on_different_grids_with_partial_overlap():
    # The anchor on 7 evenly spaced PSNRs over 26-38 dB, the test on 9 uneven ones over 30-44 dB, needing 20%
    # less rate everywhere: they share only 30-38 dB. ln rate is a cubic, so the cubic method is exact there.
    pa = np.linspace(26.0, 38.0, 7)
    pt = np.array([30.0, 30.8, 32.5, 33.1, 35.0, 37.9, 39.0, 41.7, 44.0])
    ra, rt = np.exp(log_rate(pa)), 0.8 * np.exp(log_rate(pt))
    assert rd.psnr_overlap(pa, pt) == (30.0, 38.0)
    assert rd.bd_rate(ra, pa, rt, pt) == pytest.approx(-20.0, abs=1e-9)
    assert rd.bd_rate(rt, pt, ra, pa) == pytest.approx(25.0, abs=1e-9)
    # Points in any order give the same figure; PCHIP interpolates the cubic between different knots, so it
    # is only close (measured: -20.02%).
    shuffle = np.random.default_rng(0).permutation(len(pt))
    assert rd.bd_rate(ra, pa, rt[shuffle], pt[shuffle]) == pytest.approx(-20.0, abs=1e-9)
    assert rd.bd_rate(ra, pa, rt, pt, "pchip") == pytest.approx(-20.0, abs=0.3)


def test_bd_rate_refusals():
    pa, ra = np.linspace(26.0, 32.0, 5), np.exp(log_rate(np.linspace(26.0, 32.0, 5)))
    pb = np.linspace(32.0, 40.0, 5)
    rb = np.exp(log_rate(pb))
    for method in rd.BD_METHODS:
        with pytest.raises(ValueError, match="do not overlap"):  # touching at 32 dB is no overlap
            rd.bd_rate(ra, pa, rb, pb, method)
        with pytest.raises(ValueError, match="do not overlap"):
            rd.bd_rate(ra, pa, rb, pb + 1, method)
    with pytest.raises(ValueError, match="at least 4 points"):
        rd.bd_rate(ra[:3], pa[:3], ra, pa)
    with pytest.raises(ValueError, match="distinct PSNRs"):
        rd.bd_rate(np.r_[ra, ra[-1]], np.r_[pa, pa[-1]], ra, pa, "pchip")
    with pytest.raises(ValueError, match="positive"):
        rd.bd_rate(np.r_[ra[:-1], 0.0], pa, ra, pa)
    with pytest.raises(ValueError, match="5 rates but 4"):
        rd.bd_rate(ra, pa[:4], ra, pa)
    with pytest.raises(ValueError, match="unknown BD-rate method"):
        rd.bd_rate(ra, pa, ra, pa, "akima")


# ---- logs and files -----------------------------------------------------------------------------

def test_jsonl_is_append_only_and_survives_a_cut_line(tmp_path):
    path = tmp_path / "log.jsonl"
    jsonl.append(path, {"step": 1, "loss": np.float32(0.5)})
    with open(path, "a") as f:
        f.write('{"step": 2, "lo')  # a crash mid-write
    jsonl.append(path, {"step": 3, "loss": float("nan")})
    with pytest.warns(UserWarning, match="damaged"):
        records = jsonl.read(path)
    assert records == [{"step": 1, "loss": 0.5}, {"step": 3, "loss": None}]


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    path = tmp_path / "x.npz"
    runs.atomic_save_npz(path, a=np.arange(3))

    class Boom:
        def __array__(self, *a, **k):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        runs.atomic_save_npz(path, a=Boom())
    with np.load(path) as data:
        assert list(data["a"]) == [0, 1, 2]
    assert sorted(os.listdir(tmp_path)) == ["x.npz"]  # no temporary left behind


def test_run_name_and_flags(tmp_path):
    assert runs.run_name("ba", lamb=100, bins=60) == "ba-lamb=100-bins=60"
    assert runs.run_name("ba", lamb=100.0, units=[200, 200]) == "ba-lamb=100.0-units=200_200"
    runs.save_flags(tmp_path, {"lamb": 1.0})
    assert json.loads((tmp_path / runs.FLAGS_NAME).read_text()) == {"lamb": 1.0}


# ---- sources ------------------------------------------------------------------------------------

def test_resolve_path_falls_back_to_data_dir(tmp_path, monkeypatch):
    (tmp_path / "physics").mkdir()
    f = tmp_path / "physics" / "x.npy"
    np.save(f, np.zeros((3, 2)))
    monkeypatch.setenv(sources.DATA_ENV, str(tmp_path))
    monkeypatch.chdir(tmp_path / "physics")  # no local data/ folder here
    assert sources.resolve_path("data/physics/x.npy") == f
    with pytest.raises(cli.InputError, match="RDS_DATA_DIR"):
        sources.resolve_path("data/physics/missing.npy")


@pytest.mark.parametrize("array, message", [
    (np.arange(6).reshape(3, 2), "floating"),
    (np.zeros(5), "2-d"),
    (np.array([[0.0, 1.0], [np.nan, 2.0]]), "NaN"),
])
def test_load_samples_rejects_bad_arrays(tmp_path, array, message):
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(cli.InputError, match=message):
        sources.load_samples(tmp_path / "bad.npy")


def test_sample_file_finds_its_test_twin(tmp_path):
    np.save(tmp_path / "toy-split=train.npy", np.zeros((10, 3)))
    np.save(tmp_path / "toy-split=test.npy", np.ones((4, 3)))
    src = sources.make_source(str(tmp_path / "toy-split=train.npy"))
    assert src.dim == 3 and src.test_set().shape == (4, 3) and src.test_set().mean() == 1.0
    with pytest.raises(cli.InputError, match="--data_dim 5"):
        sources.make_source(str(tmp_path / "toy-split=train.npy"), data_dim=5)
    assert src.test_split == "test"
    # a split=test file named itself (the paper's eval commands do) is held-out data, not training rows
    held_out = sources.make_source(str(tmp_path / "toy-split=test.npy"))
    assert held_out.test_split == "test" and held_out.test_set().mean() == 1.0
    np.save(tmp_path / "lone.npy", np.zeros((10, 3)))
    with pytest.warns(UserWarning, match="no split=test twin"):
        assert sources.make_source(str(tmp_path / "lone.npy")).test_split == "train"


def test_gaussian_source_moments_and_params(tmp_path):
    np.savez(tmp_path / "g.npz", loc=np.array([1.0, -2.0]), scale=np.array([0.5, 2.0]))
    src = sources.make_source("gaussian", 2, str(tmp_path / "g.npz"))
    x = src.sample(200000, seed=0)
    assert x.mean(0) == pytest.approx([1.0, -2.0], abs=0.02)
    assert x.std(0) == pytest.approx([0.5, 2.0], rel=0.01)
    assert src.gaussian_var == pytest.approx([0.25, 4.0])
    with pytest.raises(cli.InputError, match="--data_dim 3"):
        sources.make_source("gaussian", 3, str(tmp_path / "g.npz"))


def test_banana_numpy_and_tensorflow_samplers_agree_in_distribution():
    src = sources.make_source("banana", 2)
    a = src.sample(200000, seed=0)
    b = next(iter(src.dataset(200000, seed=0))).numpy()
    assert a.mean(0) == pytest.approx(b.mean(0), abs=0.05)
    assert np.cov(a.T) == pytest.approx(np.cov(b.T), abs=0.1)
    # The banana: variance mostly along its long (curved) axis, like the N(0, diag(9, 0.25)) it comes from.
    assert np.trace(np.cov(a.T)) == pytest.approx(9 + 0.25 + 2 * 0.01 * 81, rel=0.05)


def test_banana_embedding_is_fixed_and_seed_independent():
    a = sources.make_source("banana", 8)
    b = sources.make_source("banana", 8)
    assert a.sample(5, seed=3) == pytest.approx(b.sample(5, seed=3))
    assert a.sample(5, seed=3).shape == (5, 8)
