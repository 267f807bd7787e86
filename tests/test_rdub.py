"""rdub_mlp.py: the bound meets the analytic Gaussian R(D), NTC bitstreams decode exactly, --cont, bad input."""
import json
import math
import shutil

import numpy as np
import pytest

import gen_gaussian_params
import rdub_mlp
from conftest import run_script
from utils import jsonl, training
from utils.cli import InputError
from utils.rdub_mlp import ntc_bitstream

GAUSS4 = ["--dataset", "gaussian", "--data_dim", "4", "--decoder_units", "0", "--prior_type", "gmm_1",
          "--encoder_activation", "none", "--lambda", "10"]


def run_main(tmp_path, flags, command):
    rdub_mlp.main([*flags, "--checkpoint_dir", str(tmp_path), *command])
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    return run_dir


def test_gaussian_bound_meets_analytic_optimum(tmp_path, capsys):
    run_dir = run_main(tmp_path, GAUSS4, ["train", "--epochs", "4", "--steps_per_epoch", "500", "--lr", "3e-3",
                                          "--batchsize", "64"])
    rdub_mlp.main([*GAUSS4, "--checkpoint_dir", str(tmp_path), "eval", "--num_samples", "50000"])
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert r == jsonl.read(run_dir / "results.jsonl")[-1]
    assert (r["method"], r["rate_unit"], r["per_dim"], r["num_samples"]) == ("rdub", "bits", False, 50000)
    assert r["eval_split"] == "fresh"  # new draws from the sampler, apart from the training stream
    # An upper bound: never below the optimum beyond sampling error, and close to it after short training.
    assert r["loss"] > r["analytic_loss"] - 3 * r["loss_stderr"]
    assert r["loss"] < 1.05 * r["analytic_loss"]
    assert r["rate"] + 10 * r["mse"] == pytest.approx(r["loss"])
    log = jsonl.read(run_dir / "log.jsonl")
    assert [e["epoch"] for e in log] == [1, 2, 3, 4]
    assert {"loss", "rate", "mse", "val_loss", "val_rate", "val_mse", "lr", "time", "step"} <= set(log[0])


def water_filling_bits_per_dim(var, lmbda):
    """The optimum of rate + lmbda * MSE in bits per dimension, by reverse water-filling (written here apart from
    utils.rd): minimizing (1/n) sum_i [log2(var_i / D_i) / 2 + lmbda D_i] over 0 < D_i <= var_i gives
    D_i = min(theta, var_i) with the water level theta = 1 / (2 lmbda ln 2). Returns (R, D, theta)."""
    theta = 1 / (2 * lmbda * math.log(2))
    d = np.minimum(theta, var)
    return float(np.mean(0.5 * np.log2(var / d))), float(d.mean()), theta


def rd_bits_per_dim(var, mse):
    """R(D) of the Gaussian at D = mse (bits per dimension) and its slope dR/dD = -1 / (2 theta ln 2), the water
    level theta found by bisection on mean(min(theta, var)) = mse."""
    lo, hi = 0.0, float(var.max())
    for _ in range(100):
        theta = (lo + hi) / 2
        lo, hi = (theta, hi) if np.minimum(theta, var).mean() < mse else (lo, theta)
    return float(np.mean(0.5 * np.log2(var / np.minimum(theta, var)))), -1 / (2 * theta * math.log(2))


def test_papers_gaussian_command_at_n8(tmp_path, capsys):
    """The paper's Gaussian command (docs/paper_commands.md: gen_gaussian_params.py, then --gparams_path, gmm_1
    prior, Gaussian posterior, linear encoder, no decoder, --rpd) at n = 8 instead of 1000, for 1000 steps of
    batch 256 at lr 2e-2. The point (rate, mse) is on or above R(D) and the loss above the optimum, beyond sampling
    error (3 standard errors), and the loss is within 2% of the optimum: measured within 0.2% for training seeds
    0-3, while a rate without --rpd's 1/n is 8x, a bits/nats mix-up 31-44% off. The Gaussian's seed 2 puts
    every variance above the water level 0.072: below it the optimal posterior is a point mass, which training
    only approaches (2 such dimensions of 8 with seed 0: 1.7% after these steps). Then --rpd divides the
    per-sample rate of the same weights and draws by n exactly."""
    gen_gaussian_params.main(["--save_dir", str(tmp_path), "--dim", "8", "--seed", "2"])
    gparams = tmp_path / "gaussian_params-dim=8.npz"
    with np.load(gparams) as p:
        var = p["scale"].astype(np.float64) ** 2  # the source's variances, as the sampler draws them
    flags = ["--dataset", "gaussian", "--gparams_path", str(gparams), "--data_dim", "8", "--latent_dim", "8",
             "--prior_type", "gmm_1", "--posterior_type", "gaussian", "--encoder_activation", "none",
             "--decoder_activation", "none", "--decoder_units", "0", "--lambda", "10"]
    ckpt = tmp_path / "ckpt"
    run_dir = run_main(ckpt, [*flags, "--rpd"], ["train", "--epochs", "8", "--steps_per_epoch", "125", "--lr", "2e-2",
                                                 "--batchsize", "256", "--max_validation_steps", "1"])
    rdub_mlp.main([*flags, "--rpd", "--checkpoint_dir", str(ckpt), "eval", "--num_samples", "20000"])
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (r["data_dim"], r["per_dim"], r["rate_unit"], r["eval_split"]) == (8, True, "bits", "fresh")
    R, D, _ = water_filling_bits_per_dim(var, 10.0)
    assert (r["analytic_rate"], r["analytic_mse"]) == pytest.approx((R, D), rel=1e-9)
    assert r["analytic_loss"] == pytest.approx(R + 10 * D, rel=1e-9)
    assert np.all(var > water_filling_bits_per_dim(var, 10.0)[2])
    assert r["analytic_loss"] - 3 * r["loss_stderr"] < r["loss"] < 1.02 * r["analytic_loss"]
    r_at_mse, slope = rd_bits_per_dim(var, r["mse"])
    assert r["rate"] > r_at_mse - 3 * (r["rate_stderr"] + abs(slope) * r["mse_stderr"])

    # The same weights without --rpd: a copy of the run whose flags.json says so (the weights do not depend on it).
    other = tmp_path / "per_sample" / run_dir.name
    shutil.copytree(run_dir, other)
    saved = json.loads((other / "flags.json").read_text())
    (other / "flags.json").write_text(json.dumps(dict(saved, rpd=False)))
    rdub_mlp.main([*flags, "--checkpoint_dir", str(other.parent), "eval", "--num_samples", "20000"])
    b = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    with np.load(run_dir / "eval.npz") as e, np.load(other / "eval.npz") as f:  # eval's seed: the same draws
        np.testing.assert_array_equal(e["mse"], f["mse"])
        np.testing.assert_allclose(f["rate"], 8 * e["rate"], rtol=1e-12)
    assert b["per_dim"] is False and b["rate"] == pytest.approx(8 * r["rate"], rel=1e-12)
    assert b["analytic_loss"] - 3 * b["loss_stderr"] < b["loss"]  # a bound in these units too
    # And the run itself refuses to be scored in other units than it was trained in (it was, silently).
    with pytest.raises(InputError, match="trained with --rpd"):
        rdub_mlp.main([*flags, "--checkpoint_dir", str(ckpt), "eval", "--num_samples", "2000"])
    with pytest.raises(InputError, match="trained without --nats"):
        rdub_mlp.main([*flags, "--rpd", "--nats", "--checkpoint_dir", str(ckpt), "eval", "--num_samples", "2000"])


def test_a_run_folder_is_opened_from_its_flags_and_restored_strictly(tmp_path, capsys):
    """eval --run DIR takes the model flags and lambda from the run's flags.json and scores what naming the run by
    its flags scores; a flag given another value than the run's is refused; and a run whose checkpoint lacks some
    of the model's weights (its flags.json edited to another prior) is refused, not evaluated with fresh ones."""
    run_dir = run_main(tmp_path, GAUSS4, ["train", "--epochs", "1", "--steps_per_epoch", "20", "--batchsize", "64"])
    rdub_mlp.main([*GAUSS4, "--checkpoint_dir", str(tmp_path), "eval", "--num_samples", "2000"])
    by_flags = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rdub_mlp.main(["--run", str(run_dir), "eval", "--num_samples", "2000"])
    by_run = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert by_run["lambda"] == 10 and by_run["loss"] == by_flags["loss"] and by_run["rate"] == by_flags["rate"]
    with pytest.raises(InputError, match=r"--lambda 3.0: the run .* was trained with 10"):
        rdub_mlp.parse_args(["--run", str(run_dir), "--lambda", "3", "eval"])
    flags = json.loads((run_dir / "flags.json").read_text())
    (run_dir / "flags.json").write_text(json.dumps(dict(flags, prior_type="gmm_3")))
    with pytest.raises(InputError, match="does not hold this model's weights"):
        rdub_mlp.main(["--run", str(run_dir), "eval", "--num_samples", "2000"])


def test_ntc_bitstream_is_exact_and_matches_estimate(tmp_path, capsys):
    flags = ["--dataset", "banana", "--data_dim", "2", "--prior_type", "deep", "--posterior_type", "uniform",
             "--encoder_units", "32", "--decoder_units", "32", "--nats", "--lambda", "3"]
    run_dir = run_main(tmp_path, flags, ["train", "--epochs", "2", "--steps_per_epoch", "300", "--lr", "3e-3",
                                         "--batchsize", "256"])
    rdub_mlp.main([*flags, "--checkpoint_dir", str(tmp_path), "eval", "--num_samples", "20000"])
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert r["method"] == "ntc" and r["num_samples"] == 20000
    # eval raises if the decode differs; here the bitstream is also checked against the model's own rates:
    # within 1% (+ 64 bytes of coder overhead) of the information content of the quantized latents, and within
    # 10% of the uniform-noise estimate that training minimizes.
    overhead = 64 * 8 / 20000 * np.log(2)
    assert abs(r["bitstream_rate"] - r["quantized_rate"]) <= 0.01 * r["quantized_rate"] + overhead
    assert abs(r["bitstream_rate"] - r["rate"]) <= 0.10 * r["rate"]
    assert r["bitstream_rate"] * 20000 == pytest.approx(r["bitstream_bytes"] * 8 * np.log(2))

    # And the round trip itself, on fresh data, from the restored model.
    args = rdub_mlp.parse_args([*flags, "--checkpoint_dir", str(tmp_path), "eval"])
    source, _ = rdub_mlp.setup(args)
    model = rdub_mlp.make_model(args)
    training.restore_latest(model, run_dir)
    x = source.test_set(2000, seed=5)
    nbytes, _, mse = ntc_bitstream(model, x)
    assert nbytes > 0 and mse.shape == (2000,)
    # Its decoded MSE is eval's (bitstream_mse, 20000 other draws, the same model) within 4 standard errors of the
    # difference, sqrt(s^2 / 2000 + s^2 / 20000) with s the per-sample spread here (~2% of the MSE each); and the
    # uniform-noise estimate that training minimizes is close to it (rounding errors are near-uniform at this
    # scale: measured 3% apart; a decode through the wrong latents or weights is off by far more than 10%).
    assert abs(mse.mean() - r["bitstream_mse"]) < 4 * mse.std(ddof=1) * np.sqrt(1 / 2000 + 1 / 20000)
    assert abs(r["bitstream_mse"] - r["mse"]) < 0.10 * r["mse"]


def test_papers_step_decay_and_eval_split(tmp_path, capsys):
    # The paper's schedule by default: x0.2 at epochs 4, 6 and 7 of 8 (1/2, 3/4, 7/8; 0-based), no warm-up ramp.
    train = tmp_path / "x-split=train.npy"
    np.save(train, np.random.default_rng(0).normal(size=(200, 3)))
    flags = ["--dataset", str(train), "--lambda", "1", "--checkpoint_dir", str(tmp_path / "ckpt")]
    run_dir = run_main(tmp_path / "ckpt", flags[:-2], ["train", "--epochs", "8", "--steps_per_epoch", "5",
                                                       "--lr", "1e-3", "--batchsize", "50"])
    lrs = [e["lr"] for e in jsonl.read(run_dir / "log.jsonl")]
    assert lrs == pytest.approx([1e-3] * 4 + [2e-4] * 2 + [4e-5, 8e-6])
    # Without a split=test twin eval scores the training samples, and says so; with the twin, the test split.
    with pytest.warns(UserWarning, match="eval_split=train"):
        rdub_mlp.main([*flags, "eval"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["eval_split"] == "train"
    np.save(tmp_path / "x-split=test.npy", np.random.default_rng(1).normal(size=(100, 3)))
    rdub_mlp.main([*flags, "eval"])
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (r["eval_split"], r["num_samples"]) == ("test", 100)
    assert [x["eval_split"] for x in jsonl.read(run_dir / "results.jsonl")] == ["train", "test"]


def test_cont_resumes_and_refusal_cli(tmp_path):
    flags = [*GAUSS4, "--checkpoint_dir", tmp_path]
    run_script("rdub_mlp.py", *flags, "train", "--epochs", "1", "--steps_per_epoch", "50", check=True)
    again = run_script("rdub_mlp.py", *flags, "train", "--epochs", "2", "--steps_per_epoch", "50", check=False)
    assert again.returncode == 2 and "--cont" in again.stderr and "Traceback" not in again.stderr
    run_script("rdub_mlp.py", *flags, "train", "--epochs", "2", "--steps_per_epoch", "50", "--cont", check=True)
    (run_dir,) = list(tmp_path.iterdir())
    log = jsonl.read(run_dir / "log.jsonl")
    assert [e["epoch"] for e in log] == [1, 2] and [e["step"] for e in log] == [50, 100]
    assert log[1]["time"] > log[0]["time"]
    missing = run_script("rdub_mlp.py", "--dataset", "data/nowhere/x-split=train.npy", "--lambda", "1",
                         "--checkpoint_dir", tmp_path, "train", check=False)
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines()[-1].startswith("error: --dataset not found: data/nowhere")


@pytest.mark.parametrize("flags, message", [
    (["--dataset", "{npy}", "--data_dim", "5"], "--data_dim 5 does not match"),
    (["--dataset", "gaussian", "--data_dim", "4", "--latent_dim", "3", "--decoder_units", "0"],
     "--decoder_units 0 .* needs --latent_dim = --data_dim"),
    (["--dataset", "gaussian", "--data_dim", "4", "--prior_type", "gmm_0"], "--prior_type 'gmm_0' is unknown"),
    (["--dataset", "gaussian", "--data_dim", "4", "--prior_type", "flow"], "--prior_type 'flow' is unknown"),
    (["--dataset", "gaussian", "--data_dim", "4", "--prior_type", "maf", "--posterior_type", "uniform"],
     "needs a factorized prior"),
    (["--dataset", "{tmp}/missing.npy"], "--dataset not found"),
])
def test_bad_input(tmp_path, flags, message):
    npy = tmp_path / "x-split=train.npy"
    np.save(npy, np.random.default_rng(0).normal(size=(100, 3)))
    flags = [f.format(npy=npy, tmp=tmp_path) for f in flags]
    ckpt = tmp_path / "ckpt"
    with pytest.raises(InputError, match=message):
        rdub_mlp.main([*flags, "--lambda", "1", "--checkpoint_dir", str(ckpt), "train"])
    assert not ckpt.exists()  # nothing half-written


def test_cont_refuses_other_model_flags(tmp_path):
    run_main(tmp_path, GAUSS4, ["train", "--epochs", "1", "--steps_per_epoch", "10"])
    with pytest.raises(InputError, match="--rpd"):
        rdub_mlp.main([*GAUSS4, "--rpd", "--checkpoint_dir", str(tmp_path), "train", "--epochs", "2", "--cont"])
