"""rec.py: resnet_vae checkpoints coded to files by relative entropy coding; decoding in another process rebuilds
exactly eval's reconstruction; files of another model or seed, and truncated files, are refused."""
import json

import numpy as np
import pytest
import tensorflow as tf

import rec
from conftest import run_script
from test_resnet_vae import save_run, smooth_images, train_in_process
from utils import container, hvae, hvae_flags, images, jsonl
from utils.cli import InputError
from utils.runs import run_name

# Level 0 autoregressive (2 slices), level 1 Gaussian, the top deep factorized: every kind of level rec.py codes.
MODEL = ["--num_filters", "8", "--latent_channels", "2,4,4", "--ar_prior_levels", "1", "--ar_slices", "2"]
STEPS = 40
FAST = ["--n_beams", "3"]  # the coder's settings are tested in test_rec.py; fewer beams keep this test quick


def save_model(ckpt, lmbda, seed, steps=STEPS):
    """A model briefly trained on smooth images (fresh ones have KLs of ~30 bpp: slow to code), saved as
    resnet_vae.py's run folder for these flags would be."""
    args = rec.parse_args([*MODEL, "--lambda", str(lmbda), "eval"])
    model = train_in_process(args, smooth_images(4, 32, seed=seed), steps, seed=seed)
    run_dir = ckpt / run_name("resnet_vae", **hvae_flags.model_flags(args), lmbda=lmbda)
    save_run(args, model, run_dir)
    return run_dir


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rec")
    run_dir = save_model(tmp / "ckpt", 0.01, seed=0)
    save_model(tmp / "other", 0.01, seed=1, steps=0)  # same flags, other weights
    image = smooth_images(1, 32, seed=3)[0, :27, :29]  # sides not multiples of the model's 8: padded, cropped
    images.write_png(tmp / "img.png", image)
    np.save(tmp / "img.npy", image[None])
    return tmp, run_dir, image


def main(tmp, *argv, ckpt="ckpt", lmbda="0.01", seed="0"):
    return rec.main([*MODEL, *FAST, "--lambda", lmbda, "--seed", seed, "--checkpoint_dir", str(tmp / ckpt), *argv])


def test_decoding_in_another_process_gives_eval_reconstruction(setup, capsys):
    tmp, run_dir, image = setup
    main(tmp, "compress", str(tmp / "img.png"), str(tmp / "img.rec"), "--force")  # another test may have made it
    data = (tmp / "img.rec").read_bytes()
    main(tmp, "compress", str(tmp / "img.png"), str(tmp / "again.rec"))
    assert (tmp / "again.rec").read_bytes() == data  # the encoder is deterministic given --seed
    # a fresh process (fresh TF state) decodes the file: the priors must come out bit for bit the same
    run_script("rec.py", *MODEL, "--lambda", "0.01", "--checkpoint_dir", tmp / "ckpt", "decompress", tmp / "img.rec",
               tmp / "out.png", check=True)
    decoded = images.read_image(tmp / "out.png")[0]
    main(tmp, "decompress", str(tmp / "img.rec"), str(tmp / "here.png"))
    assert np.array_equal(images.read_image(tmp / "here.png")[0], decoded)

    capsys.readouterr()
    main(tmp, "eval", "--dataset", str(tmp / "img.npy"))  # eval itself checks decode(encode) = the encoder's x_hat
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record == jsonl.read(run_dir / "results.jsonl")[-1]
    assert record["method"] == "rec" and record["rate_key"] == "file_bpp" and record["n_beams"] == 3
    mse = float(np.mean((decoded.astype(np.float64) - image) ** 2))
    assert record["mse"] == pytest.approx(mse, rel=1e-12)  # eval scores what the file decodes to, exactly
    assert record["psnr"] == pytest.approx(images.psnr(mse), rel=1e-12)
    assert decoded.shape == image.shape
    pixels = image.shape[0] * image.shape[1]
    assert record["file_bpp"] == pytest.approx(8 * len(data) / pixels, rel=1e-12)  # every byte, same file
    assert record["overhead"] == pytest.approx(record["file_bpp"] / record["kl_bpp"] - 1, rel=1e-9)
    # The file's size from its format: the container's header (22 bytes and the payload's length as a varint,
    # utils/container.py), rec's unframed header (6 bytes: flag, n, block size 1000 as 2, seed, layer count),
    # then the ANS words. Those hold log2(20) bits per auxiliary variable, one per omega = 3 nats of the coded
    # KL rounded up per block: 4 blocks here (three levels, the AR one in 2 slices), each with its count (at
    # most 2 log2(17) + 10 bits); plus the end mark and the coder's final state (at most 2 words).
    (stream,) = [n for n in range(len(data)) if 22 + len(container.varint(n)) + n == len(data)]
    payload_bits = 8 * (stream - 6)
    index_bits = record["coding_kl_bpp"] * pixels / np.log2(np.e) / 3 * np.log2(20)
    blocks = 4
    assert index_bits <= payload_bits <= index_bits + blocks * (np.log2(20) + 2 * np.log2(17) + 10) + 1 + 64
    npz = np.load(record["npz"])
    assert set(npz.files) >= {"file_bpp", "kl_bpp", "overhead", "mse", "psnr", "msssim", "kl_bpp_level0"}
    assert npz["kl_bpp_level0"] + npz["kl_bpp_level1"] + npz["kl_bpp_level2"] == pytest.approx(npz["kl_bpp"])


def test_foreign_and_truncated_files_are_refused(setup, tmp_path):
    tmp, _, _ = setup
    if not (tmp / "img.rec").exists():
        main(tmp, "compress", str(tmp / "img.png"), str(tmp / "img.rec"))
    out = tmp_path / "out.png"
    with pytest.raises(InputError, match="--seed 0, not 1"):
        main(tmp, "decompress", str(tmp / "img.rec"), str(out), seed="1")
    with pytest.raises(InputError, match="different resnet_vae model"):
        main(tmp, "decompress", str(tmp / "img.rec"), str(out), ckpt="other")
    data = (tmp / "img.rec").read_bytes()
    (tmp_path / "cut.rec").write_bytes(data[:-3])
    proc = run_script("rec.py", *MODEL, "--lambda", "0.01", "--checkpoint_dir", tmp / "ckpt", "decompress",
                      tmp_path / "cut.rec", out)
    assert proc.returncode == 2 and "truncated" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not out.exists()
    with pytest.raises(SystemExit) as e:  # argparse: one line, exit 2
        main(tmp, "--block_size", "0", "decompress", str(tmp / "img.rec"), str(out))
    assert e.value.code == 2 and not out.exists()


def test_ar_level_slices_are_the_flows_conditionals():
    """The slice-by-slice Gaussian priors rec.py codes an AR level against (the model's slice_conditionals)
    multiply to the flow's density: sum_s log N(z_s; conditional) = log N(eps; prior) + log det (the rate
    resnet_vae.py trains on)."""
    tf.keras.utils.set_random_seed(1)
    level = hvae.LatentLevel(filters=4, channels=8, ar_slices=4, name="ar_level")
    t = tf.random.normal([1, 4, 4, 4])
    level(tf.random.normal([1, 4, 4, 5]), t)  # builds the weights
    for net in level.ar_gate.nets + level.ar_shift.nets:  # untrained nets are near zero: make them matter
        for w in net.trainable_weights:
            w.assign(w * 4)
    _, (p_loc, p_scale) = level.prior_params(t)
    z = np.random.default_rng(0).normal(size=(1, 4, 4, 8))
    total = []

    def sample_slice(s, cut, loc, scale):
        assert (s, cut) == (len(total), slice(2 * s, 2 * s + 2))
        total.append(np.sum(-0.5 * ((z[..., cut] - loc) / scale) ** 2 - np.log(scale) - 0.5 * np.log(2 * np.pi)))
        return z[..., cut]

    assert np.array_equal(level.slice_conditionals((p_loc, p_scale), sample_slice), z)
    eps, log_det = level.ar_noise(tf.constant(z, tf.float32))
    flow = float(tf.reduce_sum(hvae.normal_log_prob(eps, p_loc, p_scale) + log_det))
    assert len(total) == 4 and abs(np.exp(log_det.numpy()).min() - 1) > 0.1  # the gates are far from 1
    assert sum(total) == pytest.approx(flow, rel=1e-5, abs=1e-3)


def test_the_coder_walks_the_models_levels_in_the_models_order(setup, monkeypatch):
    """Training (forward), rec.py's encoder and its decoder all run the model's one top-down pass, and its
    callback sees the same levels with the same shapes in the same order, top first; the coder codes the same
    units (one per Gaussian level, one per slice of an AR level) with the same prior shapes on both sides."""
    from utils import rec as rec_lib
    tmp, run_dir, image = setup
    args = rec.parse_args([*MODEL, *FAST, "--lambda", "0.01", "--checkpoint_dir", str(tmp / "ckpt"), "eval"])
    model, _, identity = hvae.open_hvae(args, run_dir)
    coder = rec.Codec(args, model, identity)
    passes, units = [], {"encode": [], "decode": []}
    top_down = model.top_down

    def spy(sample, *a, **k):
        seen = []
        passes.append(seen)

        def recording(step):
            z = sample(step)
            seen.append((step.index, step.top, step.ar, tuple(step.shape), tuple(z.shape)))
            return z

        return top_down(recording, *a, **k)

    monkeypatch.setattr(model, "top_down", spy)
    encode_layer, decode_layer = rec_lib.encode_layer, rec_lib.Reader.decode_layer
    monkeypatch.setattr(rec_lib, "encode_layer", lambda mu, sig, m, s, **k: (
        units["encode"].append((k["layer"], m.shape)), encode_layer(mu, sig, m, s, **k))[1])
    monkeypatch.setattr(rec_lib.Reader, "decode_layer", lambda self, m, s, layer: (
        units["decode"].append((layer, m.shape)), decode_layer(self, m, s, layer=layer))[1])

    x = image[5:21, 3:27]  # 16x24: padded to 16x24 (multiples of 8), the top map 2x3
    model.forward(tf.constant(x[None], tf.float32))
    data, _, codes, _ = coder.encode(x, 3)
    coder.decode(data, "test")
    trained, encoded, decoded = passes
    expected = [(2, True, False, (1, 2, 3, 4)), (1, False, False, (1, 4, 6, 4)), (0, False, True, (1, 8, 12, 2))]
    assert [s[:4] for s in trained] == expected
    assert all(s[3] == s[4] for s in trained)  # each latent has its level's shape
    assert encoded == decoded == trained
    assert [level for level, _ in codes] == [2, 1, 0, 0]  # level 0: its two slices
    assert units["encode"] == units["decode"] == [(0, (1, 2, 3, 4)), (1, (1, 4, 6, 4)), (2, (1, 8, 12, 1)),
                                                  (3, (1, 8, 12, 1))]


def test_top_map_makes_the_deep_factorized_prior_standard_normal():
    """TopMap's h: invertible to float64 precision; N(h(z)) h'(z) is the deep factorized density (but for the
    grid); and the KL rec.py pays at the top level (the moment-matched Gaussian of h(z) against N(0, 1)) is the
    model's KL(q || deep factorized) for posteriors narrower than the prior, and no more than it for wide ones."""
    import tensorflow_compression as tfc
    tf.keras.utils.set_random_seed(0)
    prior = tfc.DeepFactorized(batch_shape=[3])
    for w in prior.trainable_variables:  # a fresh prior is close to a logistic: make it skewed and multimodal
        w.assign(w + tf.random.normal(w.shape))
    top = rec.TopMap(prior)
    z = np.random.default_rng(0).normal(0, 3, (1000, 3))
    assert np.max(np.abs(top.inverse(top.forward(z)) - z)) < 1e-9
    grid = np.linspace(np.max(top.z[0]) / 2, np.min(top.z[-1]) / 2, 4001)[:, None].repeat(3, axis=1)
    log_p = prior.log_prob(tf.constant(grid, tf.float32)).numpy()
    # h'(z) as a secant over a bin: where h's slope changes, so does the density
    slope = (top.forward(grid + 1e-3) - top.forward(grid - 1e-3)) / 2e-3
    induced = -0.5 * top.forward(grid) ** 2 - 0.5 * np.log(2 * np.pi) + np.log(slope)
    assert np.max(np.abs(induced - log_p)) < 0.002
    assert np.ptp(log_p[:, 0] + 0.5 * (grid[:, 0] / grid[:, 0].std()) ** 2) > 1  # far from a Gaussian

    dense = np.linspace(top.z[0], top.z[-1], 200001)  # the model's KL by quadrature on a fine grid
    log_dense = prior.log_prob(tf.constant(dense, tf.float32)).numpy()
    for loc, scale in [(1.0, 0.02), (-2.0, 0.3), (0.5, 1.0), (0.0, 4.0)]:
        log_q = -0.5 * ((dense - loc) / scale) ** 2 - np.log(scale) - 0.5 * np.log(2 * np.pi)
        model_kl = np.sum(np.exp(log_q) * (log_q - log_dense), axis=0) * (dense[1] - dense[0])
        mean, std = top.posterior(np.full((1, 3), loc), np.full((1, 3), scale))
        coding_kl = (-np.log(std) + (std ** 2 + mean ** 2) / 2 - 0.5)[0]
        assert np.all(coding_kl < model_kl + 0.01), (loc, scale, coding_kl, model_kl)
        if scale <= 0.3:
            assert coding_kl == pytest.approx(model_kl, abs=0.01), (loc, scale)

    class NanDensity:  # a prior whose density is NaN: no increasing map, a clear error rather than NaN latents
        batch_shape = [2]
        cdf = staticmethod(tf.sigmoid)

        @staticmethod
        def log_prob(z):
            return z * np.nan

    with pytest.raises(InputError, match="degenerate"):
        rec.TopMap(NanDensity())
