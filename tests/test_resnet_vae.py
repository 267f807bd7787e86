"""resnet_vae.py: parameter counts equal the paper's code's, analytic KL, the AR flow's Jacobian, training lowers
the loss, --cont, eval in the codecs' format, bad input."""
import json
import math

import numpy as np
import pytest
import tensorflow as tf

import resnet_vae
from conftest import run_script
from utils import hvae, jsonl, layers, runs
from utils.cli import InputError

TINY = ["--num_filters", "8", "--latent_channels", "2,4,4", "--lambda", "0.01"]


def smooth_images(n, side, seed=0):
    """uint8 images of random smooth color gradients and blobs (cheap stand-ins for photos)."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, side)
    yy, xx = np.meshgrid(t, t, indexing="ij")
    out = []
    for _ in range(n):
        a = rng.uniform(-1, 1, (3, 3))
        c = rng.uniform(0.2, 0.8, (2,))
        blob = np.exp(-((yy - c[0]) ** 2 + (xx - c[1]) ** 2) / 0.05)
        img = 0.5 + 0.3 * (a[:, 0] * yy[..., None] + a[:, 1] * xx[..., None] + a[:, 2] * blob[..., None])
        out.append(np.clip(img * 255, 0, 255).round().astype(np.uint8))
    return np.stack(out)


def train_in_process(args, images, steps, seed=0):
    """The model of resnet_vae.py's parsed flags `args`, after `steps` Adam steps (lr 3e-3) on the one batch
    `images`: quicker than the script's training for tests that need a model that has learned something."""
    tf.keras.utils.set_random_seed(seed)
    model = hvae.build(args)
    model.build_weights()
    model.compile(optimizer=tf.keras.optimizers.Adam(3e-3))
    step = tf.function(model.train_step)
    x = tf.constant(images, tf.float32)
    for _ in range(steps):
        step(x)
    return model


def save_run(args, model, run_dir):
    """Saves `model` as resnet_vae.py's training leaves its run folder: a checkpoint and the flags.json of `args`
    (what open_run builds the model from)."""
    tf.train.Checkpoint(model=model).save(str(run_dir / "ckpt"))
    runs.save_flags(run_dir, args)


# Trainable parameters of the paper's code (mandt-lab/RD-sandwich, resnet_vae.py), built with TF 2.14.1 and
# tensorflow-compression 2.14.1: the paper's natural-image model, the CPU recipe, the GAN CPU recipe, and TINY.
REFERENCE_PARAMS = [
    ("--num_filters 256 --latent_channels 4,8,16,32,64,128 --ar_prior_levels 4 --ar_slices 8", 19_734_629),
    ("--num_filters 64 --latent_channels 4,8,16,32 --ar_prior_levels 2 --ar_slices 4", 804_253),
    ("--num_filters 32 --latent_channels 2,4,8,16 --flat_z0 --img_dim 128 --maf_units 32,16", 406_389),
    ("--num_filters 8 --latent_channels 2,4,4", 11_677),
]


@pytest.mark.parametrize("flags, expected", REFERENCE_PARAMS)
def test_parameter_count_equals_the_papers_code(flags, expected):
    model = hvae.build(resnet_vae.parse_args([*flags.split(), "--lambda", "0.01", "eval"]))
    model.build_weights()
    assert layers.count_params(model) == expected


def softplus(x):
    return np.logaddexp(0.0, x)


def test_kl_of_a_gaussian_level_is_analytic_and_relative_to_the_prior():
    tf.keras.utils.set_random_seed(1)
    level = hvae.LatentLevel(filters=6, channels=3, name="level")
    rng = np.random.default_rng(0)
    h, t = (tf.constant(rng.standard_normal((2, 5, 4, 6)), tf.float32) for _ in range(2))
    _, kl = level(h, t)
    _, kl_again = level(h, t)  # a new z, the same KL: it is computed, not sampled
    np.testing.assert_array_equal(kl, kl_again)
    # Independently: the posterior is the prior's Gaussian shifted by the bottom-up plus top-down mean, and widened
    # by their scales (each softplus(raw + log(e - 1))); then the closed-form KL of two Gaussians, in float64.
    one = math.log(math.e - 1)
    _, p_loc, p_raw = np.split(level.prior(t).numpy().astype(np.float64), 3, axis=-1)
    bu_loc, bu_raw = np.split(level.bottom_up(h).numpy().astype(np.float64), 2, axis=-1)
    td_loc, td_raw = np.split(level.top_down(t).numpy().astype(np.float64), 2, axis=-1)
    p_scale = softplus(p_raw + one)
    q_loc, q_scale = p_loc + bu_loc + td_loc, p_scale + softplus(bu_raw + one) + softplus(td_raw + one)
    expected = np.log(p_scale / q_scale) + (q_scale ** 2 + (q_loc - p_loc) ** 2) / (2 * p_scale ** 2) - 0.5
    np.testing.assert_allclose(kl, expected.sum(axis=(1, 2, 3)), rtol=1e-5)


def test_the_autoregressive_prior_is_an_exact_triangular_flow():
    """z -> eps at an AR level: eps of slice s depends on z of slice s (by the gate) and on the first
    min(s, S/2) slices, never on later ones, and log |det d eps / d z| is the sum of the log gates that the KL uses."""
    tf.keras.utils.set_random_seed(2)
    slices, side = 4, 3
    level = hvae.LatentLevel(filters=4, channels=8, ar_slices=slices, name="ar_level")
    level(tf.zeros([1, side, side, 4]), tf.zeros([1, side, side, 4]))
    z = tf.constant(np.random.default_rng(1).standard_normal((1, side, side, 8)), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(z)
        eps, log_gate = level.ar_noise(z)
    jac = tape.jacobian(eps, z).numpy().reshape(side, side, 8, side, side, 8)
    # order the dimensions slice by slice (slice depth 2): channel c is in slice c // 2
    by_slice = jac.transpose(2, 0, 1, 5, 3, 4).reshape(slices, 2 * side * side, slices, 2 * side * side)
    support = slices // 2
    for s in range(slices):
        for r in range(slices):
            block = np.abs(by_slice[s, :, r, :])
            if r > s or support <= r < s:
                assert block.max() == 0, (s, r)
            else:
                assert block.max() > 0, (s, r)
    # within a slice the map is elementwise: the diagonal block is diagonal, with the gates on it
    for s in range(slices):
        block = by_slice[s, :, s, :]
        np.testing.assert_allclose(block - np.diag(np.diag(block)), 0, atol=0)
    sign, logdet = np.linalg.slogdet(jac.reshape(side * side * 8, -1).astype(np.float64))
    assert sign > 0
    assert logdet == pytest.approx(float(tf.reduce_sum(log_gate)), abs=1e-4)


def test_normal_log_prob():
    rng = np.random.default_rng(0)
    z, loc = (rng.standard_normal(50) for _ in range(2))
    scale = rng.uniform(0.1, 3, 50)
    expected = -0.5 * ((z - loc) / scale) ** 2 - np.log(scale * np.sqrt(2 * np.pi))
    np.testing.assert_allclose(hvae.normal_log_prob(*(tf.constant(a, tf.float32) for a in (z, loc, scale))),
                               expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("flags", [
    [*TINY, "--ar_prior_levels", "1", "--ar_slices", "2"],
    ["--arch", "convnext", "--widths", "8,16", "--enc_blocks", "1,0", "--latent_blocks", "1,1", "--latent_channels",
     "2,4", "--lmb_range", "0.001,0.1"]], ids=["resnet", "convnext"])
def test_odd_sizes_are_edge_padded_bottom_right_and_cropped_back(flags):
    """An image whose sides are not multiples of the model's padding (BSDS500's 481x321, Tecnick) is coded as
    its bottom and right edges repeated to the next multiples: at the same noise, the model's output on it is
    the top-left crop of its output on that padded image (padded here by numpy), with the same KLs; the bpp
    divides every KL bit by the image's own pixels, and the MSE counts only them."""
    args = resnet_vae.parse_args([*flags, "eval"])
    tf.keras.utils.set_random_seed(0)
    model = hvae.build(args)
    model.build_weights()
    m = model.pad_multiple
    h, w = m + 5, 2 * m + 3
    x = smooth_images(1, 2 * m + 3, seed=4)[:, :h, :w].astype(np.float32)
    padded = np.pad(x, [(0, 0), (0, 2 * m - h), (0, 3 * m - w), (0, 0)], mode="edge")
    lmbda = None if model.embedding is None else tf.constant([0.01])

    def run(image):
        tf.random.set_seed(7)
        out, kls = model.forward(tf.constant(image), lmbda)
        return out.numpy(), kls.numpy()

    out, kls = run(x)
    out_padded, kls_padded = run(padded)
    assert out.shape[1:3] == (h, w) and out_padded.shape[1:3] == (2 * m, 3 * m)
    np.testing.assert_array_equal(out, out_padded[:, :h, :w])
    np.testing.assert_array_equal(kls, kls_padded)
    tf.random.set_seed(7)
    metrics = model.losses_of(tf.constant(x))
    x_hat = model.reconstruction(out)
    assert float(metrics["bpp"]) == pytest.approx(kls.sum() / (h * w * math.log(2)), rel=1e-5)
    assert float(metrics["mse"]) == pytest.approx(np.mean((x - x_hat) ** 2), rel=1e-5)


@pytest.mark.parametrize("extra", [[], ["--ar_prior_levels", "2", "--ar_slices", "2", "--flat_z0", "--img_dim", "32",
                                        "--maf_units", "8", "--maf_stacks", "2"]])
def test_training_lowers_the_loss(extra):
    tf.keras.utils.set_random_seed(0)
    args = resnet_vae.parse_args([*TINY, *extra, "train", "--dataset", "kodak", "--patchsize", "32"])
    model = hvae.build(args)
    model.build_weights()
    model.compile(optimizer=tf.keras.optimizers.Adam(3e-3))
    x = tf.constant(smooth_images(4, 32), tf.float32)
    step = tf.function(model.train_step)
    losses = [{k: float(v) for k, v in step(x).items()} for _ in range(40)]
    for m in model.metrics:
        m.reset_state()
    first, last = losses[0], model.test_step(x)
    assert all(np.isfinite(r["loss"]) for r in losses)
    assert float(last["loss"]) < 0.5 * first["loss"]
    # The rate is a KL: its single-sample estimates are non-negative on average, per level within sampling error
    # (a level whose posterior still equals its prior has KL 0 and estimates scattered around it).
    kls = model.forward(tf.repeat(x, 16, axis=0))[1].numpy()
    mean, stderr = kls.mean(axis=0), kls.std(axis=0) / np.sqrt(len(kls))
    assert np.all(mean > -3 * stderr - 1e-3)
    assert kls.sum(axis=1).mean() > 0 and float(last["bpp"]) > 0


def test_train_cont_and_eval_in_the_shared_format(tmp_path, capsys):
    data = tmp_path / "imgs.npy"
    np.save(data, smooth_images(12, 32))
    ckpt = tmp_path / "ckpt"
    flags = [*TINY, "--checkpoint_dir", str(ckpt)]
    train = ["train", "--dataset", str(data), "--patchsize", "32", "--batchsize", "4", "--steps_per_epoch", "5",
             "--lr", "3e-3"]
    resnet_vae.main([*flags, *train, "--epochs", "2"])
    assert "resnet_vae: 11,677 trainable parameters\n" in capsys.readouterr().err  # TINY's REFERENCE_PARAMS
    (run_dir,) = ckpt.iterdir()
    assert run_dir.name == "resnet_vae-num_filters=8-latent_channels=2_4_4-lmbda=0.01"
    resnet_vae.main([*flags, *train, "--epochs", "3", "--cont"])
    log = jsonl.read(run_dir / "log.jsonl")
    assert [r["epoch"] for r in log] == [1, 2, 3] and log[-1]["step"] == 15
    assert log[2]["loss"] < log[0]["loss"]  # the resumed epoch goes on from the trained weights, not fresh ones
    with pytest.raises(InputError, match="--cont"):
        resnet_vae.main([*flags, *train, "--epochs", "3"])

    capsys.readouterr()
    resnet_vae.main([*flags, "eval", "--dataset", str(data), "--results_dir", str(tmp_path / "res")])
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record == jsonl.read(run_dir / "results.jsonl")[-1]
    assert record["method"] == "resnet_vae" and "not a bitstream" in record["rate_type"]
    assert (record["rate_unit"], record["per_dim"], record["num_images"]) == ("bits", False, 12)
    npz = tmp_path / "res" / "ckpt" / f"{run_dir.name}-dataset=imgs.npz"  # subfolder named after --checkpoint_dir
    assert record["npz"] == str(npz)
    with np.load(npz) as d:
        assert {"names", "height", "width", "bpp", "mse", "psnr", "msssim"} <= set(d.files)
        assert d["bpp"].shape == (12,) and np.all(np.isfinite(d["bpp"]))
        np.testing.assert_allclose(d["psnr"], 10 * np.log10(255 ** 2 / d["mse"]))
        np.testing.assert_allclose(sum(d[f"bpp_level{i}"] for i in range(3)), d["bpp"], rtol=1e-6)
        assert record["bpp"] == pytest.approx(d["bpp"].mean()) and record["mse"] == pytest.approx(d["mse"].mean())
    resnet_vae.main([*flags, "eval", "--dataset", str(data), "--results_dir", str(tmp_path / "flat"), "--no_sub_dir"])
    assert (tmp_path / "flat" / f"{run_dir.name}-dataset=imgs.npz").exists()


def test_gan_source_train_and_eval(tmp_path, capsys):
    flags = ["--num_filters", "4", "--latent_channels", "2,4,8", "--flat_z0", "--img_dim", "128", "--maf_units",
             "8", "--maf_stacks", "1", "--lambda", "1e-4", "--checkpoint_dir", str(tmp_path)]
    resnet_vae.main([*flags, "train", "--dataset", "lowgan", "--data_dim", "2", "--batchsize", "2", "--epochs", "1",
                     "--steps_per_epoch", "2", "--max_validation_steps", "1"])
    capsys.readouterr()
    resnet_vae.main([*flags, "eval", "--dataset", "lowgan", "--data_dim", "2", "--batchsize", "3", "--no_cast_xhat"])
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["num_images"] == 3 and record["data_dim"] == 128 * 128 * 3 and record["latent_dim"] == 2
    assert record["cast_xhat"] is False and record["npz"].endswith("-dataset=lowgan-data_dim=2.npz")
    # The same trade-off in rdlb.py's units (nats per image + lamb * MSE on [0, 1]).
    assert record["rdlb_lamb"] == pytest.approx(1e-4 * 128 * 128 * math.log(2) * 255 ** 2)
    assert record["nats"] == pytest.approx(record["bpp"] * 128 * 128 * math.log(2))
    assert record["rdlb_lagrangian"] == pytest.approx(record["nats"] + record["rdlb_lamb"] * record["mse"] / 255 ** 2)
    with np.load(record["npz"]) as d:
        # Float reconstructions of float images: the MSE is not a multiple of anything uint8-like.
        assert np.all(d["mse"] > 0) and np.all(np.isfinite(d["bpp"]))


@pytest.mark.parametrize("model, command, message", [
    (TINY, ["train", "--dataset", "no_such_set"], "no image files match"),
    ([*TINY, "--flat_z0"], ["train", "--dataset", "lowgan", "--data_dim", "2"], "--flat_z0 needs --img_dim"),
    (TINY, ["train", "--dataset", "lowgan", "--data_dim", "129"], "--data_dim 129"),
    ([*TINY, "--flat_z0", "--img_dim", "64"], ["train", "--dataset", "lowgan", "--data_dim", "2"], "--img_dim 64"),
    ([*TINY, "--ar_prior_levels", "3"], ["train", "--dataset", "kodak"], "--ar_prior_levels 3: must lie in 0..2"),
    ([*TINY, "--ar_prior_levels", "2", "--ar_slices", "3"], ["train", "--dataset", "kodak"], "--ar_slices 3"),
    (TINY, ["train", "--dataset", "kodak", "--data_dim", "2"], "--data_dim applies to the GAN sources"),
    (TINY, ["eval", "--dataset", "kodak"], "no checkpoint"),
])
def test_bad_input(tmp_path, model, command, message):
    with pytest.raises(InputError, match=message):
        resnet_vae.main([*model, "--checkpoint_dir", str(tmp_path / "ckpt"), *command])
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_bad_input_is_one_line_and_exit_2(tmp_path, monkeypatch):
    monkeypatch.delenv("RDS_BIGGAN_MODULE", raising=False)
    proc = run_script("resnet_vae.py", *TINY, "--checkpoint_dir", tmp_path, "train", "--dataset", "basenji",
                      "--data_dim", "2", check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: --dataset basenji") and "RDS_BIGGAN_MODULE" in lines[-1]
    assert "Traceback" not in proc.stderr and "lowgan" in lines[-1]
