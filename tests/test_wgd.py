"""Wasserstein gradient descent: the closed-form inner step and the Wasserstein gradient against brute force, the
exact bound against an independent numpy evaluation, the bound above the analytic Gaussian R(D), and the CLI."""
import math

import numpy as np
import pytest
from scipy.special import logsumexp

from conftest import run_script
from utils import jsonl
from utils.rd import gaussian_rd, gaussian_rd_at_lambda
from utils.sources import make_source

tf = pytest.importorskip("tensorflow")
from utils import wgd  # noqa: E402


def numpy_channel(x, y, log_w, lamb):
    """The particle channel evaluated directly: per-sample -log Z(x) and E_Q[rho], with explicit differences."""
    rho = ((x[:, None, :] - y[None, :, :]) ** 2).mean(axis=2)
    logits = log_w[None, :] - lamb * rho
    log_z = logsumexp(logits, axis=1)
    q = np.exp(logits - log_z[:, None])
    return -log_z, (q * rho).sum(axis=1)


def test_rate_vanishes_as_lambda_goes_to_zero():
    x = np.random.default_rng(0).standard_normal((300, 3)) * [1.0, 2.0, 0.5] + 4.0
    log_w = np.full(len(x), -math.log(len(x)))
    rates = [wgd.evaluate(x, x, log_w, lamb)[2]["R"] for lamb in (1e-1, 1e-2, 1e-3, 1e-4)]
    assert all(r >= -1e-12 for r in rates)
    assert all(b < a for a, b in zip(rates, rates[1:]))
    assert rates[-1] < 1e-6  # R = O(lamb^2) as lamb -> 0


def test_inner_step_and_gradient_match_brute_force():
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((3, 2)), rng.standard_normal((4, 2))
    w = rng.uniform(0.1, 1.0, 4)
    w /= w.sum()
    lamb = 2.5
    phi_brute = [-math.log(sum(w[j] * math.exp(-lamb * sum((x[i, t] - y[j, t]) ** 2 for t in range(2)) / 2)
                               for j in range(4))) for i in range(3)]
    _, phi = wgd.inner_ba(tf.constant(x), tf.constant(y), tf.constant(np.log(w)), lamb)
    np.testing.assert_allclose(phi.numpy(), phi_brute, rtol=1e-12)

    # grad psi by autodiff of psi_sum(y) = -(1/m) sum_ij exp(phi_i - lamb rho(x_i, y_j)), phi held fixed.
    yv = tf.Variable(y)
    with tf.GradientTape() as tape:
        rho = wgd.pairwise_mse(tf.constant(x), yv)
        psi_sum = -tf.reduce_sum(tf.exp(tf.constant(phi_brute, tf.float64)[:, None] - lamb * rho)) / 3
    grad, loss, dist = wgd.wgrad(tf.constant(x), tf.constant(y), tf.constant(np.log(w)), lamb)
    np.testing.assert_allclose(grad.numpy(), tape.gradient(psi_sum, yv).numpy(), rtol=1e-10)
    neg_log_z, d = numpy_channel(x, y, np.log(w), lamb)
    assert loss.numpy() == pytest.approx(neg_log_z.mean(), rel=1e-12)
    assert dist.numpy() == pytest.approx(d.mean(), rel=1e-12)


def test_ba_weight_step_is_normalized_and_matches_numpy():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((50, 2)), rng.standard_normal((7, 2))
    log_w = np.log(np.full(7, 1 / 7))
    new = wgd.ba_weights(tf.constant(x), tf.constant(y), tf.constant(log_w), 4.0).numpy()
    neg_log_z, _ = numpy_channel(x, y, log_w, 4.0)
    rho = ((x[:, None] - y[None]) ** 2).mean(axis=2)
    q = np.exp(log_w[None] - 4.0 * rho + neg_log_z[:, None])  # the channel; its output marginal is the new nu
    np.testing.assert_allclose(np.exp(new), q.mean(axis=0), rtol=1e-10)
    assert np.exp(new).sum() == pytest.approx(1.0, abs=1e-12)


def test_evaluate_matches_independent_numpy():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2000, 3)) * 0.03 + 0.5  # small spread far from 0, as the physics data
    y = x[:60] + 0.01 * rng.standard_normal((60, 3))
    log_w = np.log(rng.dirichlet(np.ones(60)))
    lamb = 3000.0
    neg_log_z, dist, summary = wgd.evaluate(x, y, log_w, lamb, chunk=700)
    ref_nlz, ref_d = numpy_channel(x, y, log_w, lamb)
    np.testing.assert_allclose(neg_log_z, ref_nlz, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(dist, ref_d, rtol=1e-8, atol=1e-15)
    assert summary["R"] == pytest.approx((ref_nlz - lamb * ref_d).mean(), rel=1e-8)
    assert summary["D"] == pytest.approx(ref_d.mean(), rel=1e-8)
    assert summary["R_stderr"] == pytest.approx((ref_nlz - lamb * ref_d).std(ddof=1) / math.sqrt(2000), rel=1e-6)


@pytest.mark.parametrize("optimizer, hybrid", [("sgd", False), ("adam", True)])
def test_bound_stays_above_the_analytic_gaussian_rd(optimizer, hybrid):
    """A short run on N(0, I_2) at lamb = 3 (R* = ln 2 + ...): the held-out bound must not fall below the analytic
    optimum beyond 3 standard errors, and must be near it (within 3%), or the method is useless."""
    source = make_source("gaussian", 2)
    train, test = source.sample(20000, seed=0), source.test_set(20000, seed=0)
    y, log_w = wgd.init_particles(train, 100, np.random.default_rng(0))
    trainer = wgd.Trainer(train, y, log_w, optimizer=optimizer, lr=0.2 if optimizer == "sgd" else 0.02,
                          decay="inv_sqrt", decay_factor=0.1, batchsize=500, hybrid=hybrid, seed=0)
    trainer.reset(3.0, 400)
    trainer.run(400)
    assert not trainer.y.numpy()[:, 2:].any()  # the zero padding columns stay zero
    y, log_w = trainer.particles()
    assert np.exp(log_w).sum() == pytest.approx(1.0, abs=1e-5)
    _, _, bound = wgd.evaluate(test, y, log_w, 3.0)
    truth = gaussian_rd_at_lambda(np.ones(2), 3.0)
    assert bound["lagrangian"] >= truth["lagrangian"] - 3 * bound["lagrangian_stderr"]
    assert bound["R"] >= gaussian_rd(np.ones(2), bound["D"])[0] - 3 * bound["R_stderr"]
    assert bound["lagrangian"] == pytest.approx(truth["lagrangian"], rel=0.03)


def test_cli_sweep_writes_records_that_match_numpy(tmp_path):
    out = tmp_path / "out"
    run_script("wgd.py", "--samples", "gaussian", "--data_dim", 2, "--num_samples", 5000, "--num_test", 3000,
               "--lamb", 3, 10, "--num_particles", 100, "--batchsize", 200, "--steps", 200, "--save_dir", out,
               check=True)
    test = make_source("gaussian", 2).test_set(3000, seed=0).astype(np.float64)
    for index, lamb in enumerate((10.0, 3.0)):  # the sweep runs from the largest lambda down
        run_dir = out / f"wgd-lamb={lamb}-particles=100"
        log = jsonl.read(run_dir / "log.jsonl")
        (result,) = jsonl.read(run_dir / "results.jsonl")
        assert [r["step"] for r in log] == [100, 200]
        assert result["method"] == "wgd" and result["warm_start"] == (index > 0)
        assert result["R"] + lamb * result["D"] == pytest.approx(result["lagrangian"], rel=1e-9)
        assert {"R_stderr", "D_stderr", "lagrangian_stderr", "analytic_lagrangian", "gap"} <= set(result)
        with np.load(run_dir / "particles.npz") as p:
            neg_log_z, dist = numpy_channel(test, p["particles"], p["log_weights"], lamb)
        assert result["R"] == pytest.approx((neg_log_z - lamb * dist).mean(), rel=1e-9)
        assert result["D"] == pytest.approx(dist.mean(), rel=1e-9)
        assert result["lagrangian"] >= result["analytic_lagrangian"] - 3 * result["lagrangian_stderr"]

    import plot_rd
    groups = plot_rd.collect(out)
    curves, rows, _ = plot_rd.build_curves(groups, 1.0)
    assert [r["method"] for r in rows] == ["wgd", "wgd"]
    assert rows[0]["R"] == pytest.approx(jsonl.read(out / "wgd-lamb=3.0-particles=100/results.jsonl")[0]["R"])


@pytest.mark.parametrize("setup, args, message", [
    (np.zeros((20, 2)), ["--lamb", "1", "--num_particles", "0"], "--num_particles: must be >= 1"),
    (np.zeros((20, 2)), ["--lamb", "0"], "--lamb: must be a positive"),
    (np.zeros((20, 2)), ["--lamb", "-2"], "--lamb: must be a positive"),
    (np.zeros((20, 2)), ["--lamb", "1", "--data_dim", "3"], "--data_dim 3 does not match"),
    (np.array([[0.0, 1.0], [np.nan, 0.0]] * 10), ["--lamb", "1"], "NaN or inf"),
    (None, ["--samples", "missing.npy", "--lamb", "1"], "not found: missing.npy"),
])
def test_cli_rejects_bad_input(tmp_path, setup, args, message):
    if setup is not None:
        np.save(tmp_path / "x.npy", setup)
        args = ["--samples", tmp_path / "x.npy", *args]
    proc = run_script("wgd.py", *args, "--save_dir", tmp_path / "out", check=False)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()[-1]) > 0
    assert not (tmp_path / "out").exists()


def test_cli_rejects_a_gaussian_of_another_dimension(tmp_path):
    np.savez(tmp_path / "g.npz", loc=np.zeros(3), scale=np.ones(3))
    proc = run_script("wgd.py", "--samples", "gaussian", "--gparams_path", tmp_path / "g.npz", "--data_dim", 2,
                      "--lamb", 1, "--save_dir", tmp_path / "out", check=False)
    assert proc.returncode == 2 and "--data_dim 2 does not match" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_merged_particles_are_spread_at_a_warm_start():
    rng = np.random.default_rng(4)
    y = np.repeat(rng.standard_normal((3, 2)), [5, 1, 4], axis=0)
    spread, moved = wgd.spread_duplicates(y, np.ones(2), rng)
    assert moved == 7 and len(np.unique(spread, axis=0)) == 10
    assert np.abs(spread - y).max() < 0.1  # a small push, not a new start


# ---- --lambda and its alias --lamb ------------------------------------------------------------------------

def test_lambda_and_its_alias_parse_alike(capsys):
    import wgd as script
    common = ["--samples", "gaussian", "--num_particles", "10"]
    for spelling in ("--lamb", "--lam"):  # the paper's flag, and an abbreviation that still works
        assert vars(script.parse_args([*common, spelling, "3", "10"])) == vars(script.parse_args([*common, "--lambda",
                                                                                                   "3", "10"]))
    with pytest.raises(SystemExit):
        script.parse_args(["--help"])
    assert "--lambda LAMBDA [LAMBDA ...], --lamb LAMBDA [LAMBDA ...]" in capsys.readouterr().out


def test_lambda_and_lamb_runs_write_the_same_folder_and_numbers(tmp_path, capsys):
    import wgd as script
    for spelling in ("--lambda", "--lamb"):
        script.main(["--samples", "gaussian", "--num_samples", "500", "--num_test", "500", spelling, "3",
                     "--num_particles", "10", "--batchsize", "50", "--steps", "4", "--log_every", "2",
                     "--save_dir", str(tmp_path / spelling)])
    name = "wgd-lamb=3.0-particles=10"
    assert [p.name for p in (tmp_path / "--lambda").iterdir()] == [name]
    assert [p.name for p in (tmp_path / "--lamb").iterdir()] == [name]
    timing = {"time", "eval_time", "started"}
    new, old = (jsonl.read(tmp_path / s / name / "results.jsonl")[0] for s in ("--lambda", "--lamb"))
    assert {k: v for k, v in new.items() if k not in timing} == {k: v for k, v in old.items() if k not in timing}
