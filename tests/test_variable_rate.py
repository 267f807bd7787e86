"""The variable-rate ResNet-VAE (`--lmb_range`): one set of weights gives a rate that falls as lambda falls; the
seed's lambda units convert as documented; eval covers the range (one JSON line and .npz per lambda, the curve as
CSV); lambdas outside the trained range and impossible flags are refused."""
import json

import numpy as np
import pytest
import tensorflow as tf

import resnet_vae
from test_resnet_vae import smooth_images
from utils import hvae, hvae_flags, images
from utils.cli import InputError
from utils.runs import run_name

RANGE = ["--lmb_range", "0.001,0.1"]
MODEL = ["--num_filters", "8", "--latent_channels", "2,4", *RANGE]


def test_seed_units():
    """KL nats per sub-pixel + lambda_seed MSE on [-1, 1] is (ln 2 / 3)(bpp + lambda_seed 2.662e-4 MSE on [0, 255])."""
    assert hvae_flags.SEED_LAMBDA_UNITS == pytest.approx(2.662e-4, rel=1e-3)
    bpp, mse, lam_seed = 0.7, 40.0, 256.0
    seed_loss = bpp * np.log(2) / 3 + lam_seed * mse * (2 / 255) ** 2
    assert seed_loss == pytest.approx(np.log(2) / 3 * (bpp + lam_seed * hvae_flags.SEED_LAMBDA_UNITS * mse))
    args = resnet_vae.parse_args(["--lmb_range_seed", "4,2048", "eval"])
    assert args.lmb_range == pytest.approx([4 * 2.6625e-4, 2048 * 2.6625e-4], rel=1e-3)


def train_through_the_script(model_flags, tmp, steps=300):
    """resnet_vae.py train on 8 smooth 32x32 images (a batch of all 8 per step, lr 3e-3 constant), as a user runs
    it; returns the run folder and the model opened from it."""
    np.save(tmp / "train.npy", smooth_images(8, 32, seed=0))
    flags = [*model_flags, "--checkpoint_dir", str(tmp / "ckpt")]
    resnet_vae.main([*flags, "train", "--dataset", str(tmp / "train.npy"), "--patchsize", "32", "--batchsize", "8",
                     "--epochs", "1", "--steps_per_epoch", str(steps), "--lr", "3e-3", "--lr_schedule", "constant"])
    (run_dir,) = (tmp / "ckpt").iterdir()
    model, _, _ = hvae.open_hvae(resnet_vae.parse_args([*flags, "eval"]), run_dir)
    return run_dir, model


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny variable-rate model trained by the script on smooth images (lambda log-uniform per image)."""
    tmp = tmp_path_factory.mktemp("vr")
    run_dir, model = train_through_the_script(MODEL, tmp)
    assert run_dir.name == run_name("resnet_vae", **hvae_flags.run_flags(resnet_vae.parse_args([*MODEL, "eval"])))
    np.save(tmp / "imgs.npy", smooth_images(3, 32, seed=9))
    return tmp, model, run_dir


def check_rate_falls_with_lambda(model):
    """At fixed noise (same seed per call), the rate at the top of the range 0.001..0.1 is above the middle's,
    which is above the bottom's, and the MSE moves the other way: the weights code the whole curve."""
    x = tf.constant(smooth_images(4, 32, seed=3), tf.float32)
    points = []
    for lmbda in (0.001, 0.01, 0.1):
        tf.random.set_seed(1)
        out, kls = model.forward(x, tf.fill([4], lmbda))
        bpp = float(tf.reduce_sum(kls)) / (4 * 32 * 32 * np.log(2))
        points.append((bpp, float(tf.reduce_mean(tf.square(x - model.reconstruction(out))))))
    (b0, m0), (b1, m1), (b2, m2) = points
    assert b0 < b1 < b2, points
    assert m0 > m2, points


def test_rate_falls_with_lambda_from_the_same_weights(trained):
    check_rate_falls_with_lambda(trained[1])


def test_eval_covers_the_range_and_writes_the_curve(trained, capsys):
    tmp, _, run_dir = trained
    capsys.readouterr()
    resnet_vae.main([*MODEL, "--checkpoint_dir", str(tmp / "ckpt"), "eval", "--dataset", str(tmp / "imgs.npy"),
                     "--num_lambdas", "3"])
    records = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [r["lambda"] for r in records] == pytest.approx([0.001, 0.01, 0.1])
    assert records[0]["bpp"] < records[1]["bpp"] < records[2]["bpp"]
    assert all(r["lmb_range"] == [0.001, 0.1] and r["num_images"] == 3 for r in records)
    assert len(set(r["npz"] for r in records)) == 3
    (csv,) = run_dir.glob("*.csv")
    rows = np.genfromtxt(csv, delimiter=",", names=True)
    np.testing.assert_allclose(rows["bpp"], [r["bpp"] for r in records], rtol=1e-6)
    np.testing.assert_allclose(rows["psnr"], [r["psnr"] for r in records], rtol=1e-6)
    assert [line.split(",")[-1] for line in csv.read_text().splitlines()] == ["dataset"] + ["imgs"] * 3


def test_bad_input(trained, tmp_path):
    tmp, _, _ = trained
    common = [*MODEL, "--checkpoint_dir", str(tmp / "ckpt"), "eval", "--dataset", str(tmp / "imgs.npy")]
    with pytest.raises(InputError, match="outside the trained range"):
        resnet_vae.main(common + ["--lambdas", "0.01,2"])
    with pytest.warns(UserWarning, match="never saw"):
        resnet_vae.main(common + ["--lambdas", "2", "--extrapolate", "--results_dir", str(tmp_path)])
    with pytest.raises(SystemExit):  # argparse: --num_lambdas must be >= 1
        resnet_vae.main(common + ["--num_lambdas", "0"])
    with pytest.raises(InputError, match="0 < LO < HI"):
        resnet_vae.parse_args(["--lmb_range", "0.5,0.1", "eval"])
    with pytest.raises(InputError, match="variable-rate model"):
        resnet_vae.main(["--num_filters", "8", "--latent_channels", "2,4", "--checkpoint_dir", str(tmp / "ckpt"),
                         "eval", "--dataset", str(tmp / "imgs.npy"), "--num_lambdas", "3"])
    images.write_png(tmp_path / "x.png", smooth_images(1, 32, seed=1)[0])
    import rec
    with pytest.raises(InputError, match="fixed-rate"):
        rec.main([*MODEL, "compress", str(tmp_path / "x.png"), str(tmp_path / "x.rec")])
