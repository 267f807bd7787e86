"""sga.py and utils/rounding.py: the paper's temperature schedule, SGA's limit, the relaxed model's contract
(hard rounding is exactly what the coder codes), files that plain `mbt2018.py decompress` decodes to the
reconstruction eval scored, a lower loss than the amortized encoder, and bad input.

Tiny models (8 filters) trained for 2 steps on synthetic images; sga.py runs in-process through main(argv).
"""
import argparse
import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import mbt2018
import ms2020
import sga
from conftest import run_script
from test_codecs import smooth_image
from utils import codec_commands, images, rounding
from utils import sga as sga_engine  # the script is `sga`
from utils.cli import InputError

TINY = {"mbt2018": ["--num_filters", "8"],
        "ms2020": ["--num_filters", "8", "--latent_depth", "8", "--hyperprior_depth", "8", "--num_slices", "2",
                   "--max_support_slices", "1"]}
SCRIPTS = {"mbt2018": mbt2018, "ms2020": ms2020}


def test_sga_temperature_schedule_is_the_papers():
    assert rounding.sga_temperature(0) == 0.5
    assert rounding.sga_temperature(700) == 0.5
    # The paper's schedule: 0.5 for 700 iterations, then 0.5 exp(-1e-3 (t - 700)): at t = 1999, 0.5 exp(-1.299)
    # = 0.13640; far on, the floor 1e-8.
    assert rounding.sga_temperature(1999) == pytest.approx(0.5 * np.exp(-1.299), rel=1e-12)
    assert rounding.sga_temperature(1999) == pytest.approx(0.13640, abs=5e-6)
    assert rounding.sga_temperature(30000) == 1e-8
    assert rounding.annealing_temperature(0) == 0.2
    assert rounding.annealing_temperature(1000) == pytest.approx(np.exp(-4.0))


def test_sga_sample_tends_to_rounding_as_the_temperature_vanishes():
    """On a shifted grid (v = y - mean, as the model passes it), the SGA sample at a small temperature is
    round(v) except within a hair of the midpoints; at a large one it is spread between the neighbours."""
    rng = np.random.default_rng(0)
    v = rng.uniform(-5, 5, 20000)
    v = v[np.abs(v - np.floor(v) - 0.5) > 0.02]
    gen = tf.random.Generator.from_seed(1)
    cold = rounding.sga_round(tf.constant(v, tf.float32), 1e-3, gen).numpy()
    np.testing.assert_allclose(cold, np.round(v), atol=1e-3)
    warm = rounding.sga_round(tf.constant(v, tf.float32), 0.5, gen).numpy()
    assert np.all((warm >= np.floor(v) - 1e-5) & (warm <= np.floor(v) + 1 + 1e-5))
    assert np.mean(np.abs(warm - np.round(v)) > 0.1) > 0.2  # not yet rounded
    # Deterministic annealing is SGA's weight without noise; STE rounds forward and passes gradients.
    np.testing.assert_allclose(rounding.annealed_round(tf.constant(v, tf.float32), 1e-3).numpy(), np.round(v),
                               atol=1e-3)
    x = tf.constant(v[:10], tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        r = rounding.ste_round(x)
        total = tf.reduce_sum(r * np.arange(10))
    np.testing.assert_array_equal(r.numpy(), np.round(v[:10]).astype(np.float32))
    np.testing.assert_array_equal(tape.gradient(total, x).numpy(), np.arange(10, dtype=np.float32))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny trained mbt2018 and ms2020 runs, and a folder of three images of two shapes."""
    base = tmp_path_factory.mktemp("sga")
    imgs = base / "imgs"
    imgs.mkdir()
    for i, (h, w) in enumerate([(64, 96), (64, 96), (70, 64)]):
        Image.fromarray(smooth_image(h, w, 20 + i)).save(imgs / f"im{i}.png")
    for script, module in SCRIPTS.items():
        module.main(["--checkpoint_dir", str(base / "ckpt"), "--lambda", "0.01", *TINY[script], "train",
                     "--train_glob", str(imgs / "*.png"), "--patchsize", "64", "--batchsize", "2", "--epochs", "1",
                     "--steps_per_epoch", "2", "--lr", "1e-3"])
    names = {p.name.split("-")[0]: p.name for p in (base / "ckpt").iterdir()}
    return base, names


@pytest.mark.parametrize("script", list(SCRIPTS))
def test_hard_relaxation_is_what_the_coder_codes(runs, script):
    """relaxed(latents, round, hard) gives the model's own quantized reconstruction and estimated bits (eval's
    `estimate`), so the loss sga.py optimizes ends, after rounding, at what the file holds."""
    base, names = runs
    model, _, _ = codec_commands.open_codec(argparse.Namespace(verbose=False), base / "ckpt" / names[script], script)
    image = smooth_image(64, 128, 5).astype(np.float32)
    latents = model.latents(tf.constant(image[None]))
    x_hat, bits = model.relaxed(latents, tf.round, hard=True)
    x_est, bits_est = model.estimate(tf.constant(image))
    np.testing.assert_allclose(x_hat.numpy()[0], x_est.numpy(), atol=1e-3)
    assert float(bits[0]) == pytest.approx(float(bits_est), rel=1e-4)


def test_run_name_may_be_the_run_folders_path(runs):
    """RUN_NAME is a run folder of --checkpoint_dir or, when it is not one, a run folder's own path; the model
    and lambda come from that run's flags.json."""
    base, names = runs
    folder = base / "ckpt" / names["mbt2018"]
    args = argparse.Namespace(checkpoint_dir=str(base / "elsewhere"), run_name=str(folder), model="mbt2018",
                              num_filters=None, lmbda=None, verbose=False)
    model, _, run_dir, _, lmbda = sga_engine.load_run(args)
    assert run_dir == folder and lmbda == 0.01 and model.lmbda == 0.01


def sga_argv(base, run_name, *extra, method="sga", iterations="30", imgs="*.png"):
    return ["--checkpoint_dir", str(base / "ckpt"), "--method", method, "--iterations", iterations, *extra,
            "compress", run_name, str(base / "imgs" / imgs), "--results_dir", str(base / f"res-{method}")]


def test_sga_files_decode_with_plain_decompress_and_beat_the_amortized_encoder(runs):
    """Every image's file decodes, with the unchanged `mbt2018.py decompress`, to the image whose MSE eval
    recorded (to the last bit); both batches (two shapes) are coded; the rate is the file's bytes; and the
    optimized latents have a lower estimated loss than the encoder's on every image."""
    base, names = runs
    record = sga.main(sga_argv(base, names["mbt2018"]))
    res = base / "res-sga"
    (npz,) = res.glob("*.npz")
    arrays = np.load(npz)
    assert list(arrays["names"]) == ["im0.png", "im1.png", "im2.png"] and record["num_images"] == 3
    for k, name in enumerate(arrays["names"]):
        stem = name[:-4]
        out = base / f"{stem}-decoded.png"
        mbt2018.main(["--checkpoint_dir", str(base / "ckpt"), "--lambda", "0.01", *TINY["mbt2018"], "decompress",
                      str(res / f"{stem}.tfci"), str(out)])
        decoded = np.asarray(Image.open(out))
        source = np.asarray(Image.open(base / "imgs" / name))
        assert images.mse(source, decoded) == arrays["mse"][k]
        size = (res / f"{stem}.tfci").stat().st_size
        assert arrays["bpp"][k] == pytest.approx(8 * size / source.shape[0] / source.shape[1])
    lmbda = 0.01
    loss = arrays["bpp_est"] + lmbda * arrays["mse"]
    base_loss = arrays["base_bpp_est"] + lmbda * arrays["base_mse"]
    assert np.all(loss < base_loss), (loss, base_loss)
    (anchor,) = [json.loads(line) for line in (res / sga.BASELINE_NAME).read_text().splitlines()]
    assert anchor["inference"] == "amortized" and anchor["dataset"] == record["dataset"] == "imgs"
    assert anchor["bpp"] == pytest.approx(np.mean(arrays["base_bpp"])) and anchor["psnr"] == record["base_psnr"]
    traj = [json.loads(line) for line in (res / sga_engine.TRAJECTORY_NAME).read_text().splitlines()]
    assert sorted({r["iteration"] for r in traj}) == [10, 20, 30] and len(traj) == 9
    assert traj[0]["tau"] == 0.5 and traj[0]["inference"] == "sga"


@pytest.mark.parametrize("method", ["map", "ste", "unoise", "danneal"])
def test_other_methods_code_real_files(runs, method, monkeypatch):
    """Each method of the paper's ablation codes a file that decodes exactly (code_image checks it) and lowers
    the objective it optimizes: its relaxed loss at its temperature (unoise: the mean over 8 noise draws, the
    same draws for both latents) is lower at the refined latents than at the encoder's. Each relaxes as defined:
    unoise is random, the others deterministic; danneal runs at its schedule's temperature; STE's forward pass
    is hard rounding and its gradient passes. MAP and STE stop at the first rise of the rounded loss and never
    end above the encoder's (up to the rounding of the reconstruction to uint8, which the loss does not see)."""
    base, names = runs
    seen = {}
    optimize = sga_engine.optimize

    def spy(opt, *args):  # keeps the optimizer and the temperature of every step
        step, seen["taus"] = opt.step, []
        opt.step = lambda tau: seen["taus"].append(float(tau)) or step(tau)
        seen["opt"], seen["out"] = opt, optimize(opt, *args)
        return seen["out"]

    monkeypatch.setattr(sga_engine, "optimize", spy)
    verbose = ["-V"] if method == "danneal" else []  # -V in a log (not a terminal): per-image lines, bars end
    sga.main(sga_argv(base, names["mbt2018"], *verbose, method=method, iterations="20", imgs="im2.png"))
    arrays = np.load(next((base / f"res-{method}").glob("*.npz")))
    assert [p.name for p in (base / f"res-{method}").glob("*.tfci")] == ["im2.tfci"]
    if method in sga_engine.EARLY_STOP:
        loss = arrays["bpp_est"] + 0.01 * arrays["mse"]
        base_loss = arrays["base_bpp_est"] + 0.01 * arrays["base_mse"]
        assert np.all(loss <= base_loss * (1 + 1e-3))
        assert np.all(arrays["iterations_run"] <= 20)
    opt, (refined, _), taus = seen["opt"], seen["out"], seen["taus"]
    if method == "danneal":  # exp(-4e-3 t) capped at 0.2: the cap for these 20 steps (SGA's would be 0.5)
        assert taus == pytest.approx([rounding.annealing_temperature(t) for t in range(20)], rel=1e-6)

    def objective(latents, seed=7, draws=1):
        soften = sga_engine.softening(method, tf.random.Generator.from_seed(seed))
        latents = [tf.constant(t) for t in latents]
        return np.mean([opt.losses(latents, lambda v: soften(v, taus[-1]), hard=False)[0].numpy()
                        for _ in range(draws)])

    draws = 8 if method == "unoise" else 1  # one draw's sd ~0.12 here, the gain ~0.37
    before, after = objective(opt.initial, draws=draws), objective(refined, draws=draws)
    if method == "ste":
        # The loss is that of tf.round to the last bit; lr 1e-4 for 20 steps moves the latents (the gradient
        # passes the rounding) but, here, across no rounding boundary: the loss stays where it was (measured).
        assert after == opt.losses([tf.constant(t) for t in refined], tf.round, hard=False)[0].numpy()[0]
        assert max(np.abs(a - b).max() for a, b in zip(refined, opt.initial)) > 1e-6 and after <= before
    else:
        assert after < before, (before, after)
    assert (objective(refined, seed=8) != objective(refined)) == (method == "unoise")


def test_ms2020_latents_are_refined_and_decode(runs):
    base, names = runs
    record = sga.main(sga_argv(base, names["ms2020"], "--model", "ms2020", iterations="10", imgs="im2.png"))
    assert record["num_images"] == 1 and record["method"] == "ms2020+sga"


def test_bad_input_is_one_clear_line_and_writes_nothing(runs, tmp_path):
    base, names = runs
    out = tmp_path / "res"

    def fails(argv, match):
        with pytest.raises(InputError, match=match):
            sga.main(argv)
        assert not out.exists()

    common = ["--checkpoint_dir", str(base / "ckpt")]
    imgs = str(base / "imgs" / "*.png")
    fails(common + ["compress", "mbt2018-num_filters=8-lmbda=0.5", imgs, "--results_dir", str(out)], "no run folder")
    fails(common + ["compress", names["ms2020"], imgs, "--results_dir", str(out)], "not a mbt2018 run")
    fails(common + ["--num_filters", "192", "compress", names["mbt2018"], imgs, "--results_dir", str(out)],
          "trained with 8")
    fails(common + ["compress", names["mbt2018"], imgs, "--crop", "65", "--results_dir", str(out)], "smaller")
    bad = tmp_path / "float.npy"
    np.save(bad, np.zeros((2, 64, 64, 3), np.float32))
    fails(common + ["compress", names["mbt2018"], str(bad), "--results_dir", str(out)], "expected uint8")
    proc = run_script("sga.py", *common, "--iterations", "0", "compress", names["mbt2018"], imgs, "--results_dir",
                      out, check=False)
    assert proc.returncode == 2 and "--iterations" in proc.stderr and not out.exists()
