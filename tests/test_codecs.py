"""mbt2018.py and ms2020.py: exact round trips, deterministic bytes, odd sizes, grayscale and RGBA, damaged and
foreign files, the wrong model, the eval outputs, and bpp from bytes against the model's estimate.

Tiny models (8 filters) trained for 2 steps on synthetic images; most commands run in-process through each
script's main(argv) to keep the suite fast, and one runs as a subprocess, as a user would.
"""
import argparse
import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import mbt2018
import ms2020
from conftest import data_path, run_script
from utils import codec_commands, container, gan_sources, image_eval, image_models, images, layers
from utils.cli import InputError, run
from utils.runs import atomic_save_npz

SCRIPTS = {"mbt2018": mbt2018, "ms2020": ms2020}
TINY = {"mbt2018": ["--num_filters", "8"],
        "ms2020": ["--num_filters", "8", "--latent_depth", "8", "--hyperprior_depth", "8", "--num_slices", "2",
                   "--max_support_slices", "1"]}
CLASSES = {name: spec.model_class for name, spec in image_models.MODELS.items()}
ARCH = {"mbt2018": dict(num_filters=8, latent_depth=None),
        "ms2020": dict(num_filters=8, latent_depth=8, hyperprior_depth=8, num_slices=2, max_support_slices=1)}


def smooth_image(h, w, seed):
    """A smooth color image with some texture: what a codec sees, unlike white noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    channels = [128 + 100 * np.sin(6 * a * xx + 5 * b * yy + c) for a, b, c in rng.uniform(0.3, 1.5, (3, 3))]
    x = np.stack(channels, -1) + rng.normal(0, 4, (h, w, 3))
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    base = tmp_path_factory.mktemp("codecs")
    train, ev = base / "train", base / "eval"
    train.mkdir()
    ev.mkdir()
    for i in range(3):
        Image.fromarray(smooth_image(80, 96, i)).save(train / f"t{i}.png")
    # Odd sizes, grayscale and RGBA; the largest is big enough for MS-SSIM.
    Image.fromarray(smooth_image(176, 200, 10)).save(ev / "a_rgb.png")
    Image.fromarray(smooth_image(37, 71, 11)[..., 0]).save(ev / "b_gray.png")
    rgba = np.concatenate([smooth_image(33, 65, 12), np.full((33, 65, 1), 77, np.uint8)], -1)
    Image.fromarray(rgba).save(ev / "c_rgba.png")
    Image.fromarray(smooth_image(1, 5, 13)).save(ev / "d_tiny.png")
    return base


def model_argv(script, ckpt, lmbda="0.01"):
    return ["--checkpoint_dir", str(ckpt), "--lambda", lmbda, *TINY[script]]


@pytest.fixture(scope="module", params=list(SCRIPTS))
def trained(request, folders):
    """A tiny model of each script trained for 2 steps; returns (script, checkpoint_dir, run_dir)."""
    script = request.param
    ckpt = folders / f"ckpt-{script}"
    SCRIPTS[script].main(model_argv(script, ckpt) + [
        "train", "--train_glob", str(folders / "train" / "*.png"), "--patchsize", "64", "--batchsize", "2",
        "--epochs", "1", "--steps_per_epoch", "2", "--lr", "1e-3"])
    (run_dir,) = ckpt.iterdir()
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert len(log) == 1 and {"loss", "bpp", "mse", "step"} <= set(log[0]) and log[0]["step"] == 2
    assert (run_dir / "flags.json").exists()
    return script, ckpt, run_dir


def restore(script, run_dir):
    """The trained model, opened as the commands open it, and its identity."""
    model, _, identity = codec_commands.open_codec(argparse.Namespace(verbose=False), run_dir, script)
    return model, identity


@pytest.fixture(scope="module")
def restored(trained):
    """(script, model, identity), shared by the tests: each new model costs a fresh trace of its functions."""
    script, _, run_dir = trained
    return (script, *restore(script, run_dir))


def test_run_folder_is_named_from_the_model_flags(trained):
    script, _, run_dir = trained
    expected = {"mbt2018": "mbt2018-num_filters=8-lmbda=0.01",
                "ms2020": "ms2020-num_filters=8-latent_depth=8-hyperprior_depth=8-num_slices=2-"
                          "max_support_slices=1-lmbda=0.01"}
    assert run_dir.name == expected[script]


def test_eval_is_what_decompress_gives(trained, restored, folders, tmp_path):
    """eval's per-image figures are those of the files compress writes, and decompress(compress(x)) is exactly
    the reconstruction eval measures: same MSE to the last bit, same bytes. Grayscale stays grayscale, alpha
    is dropped, odd sizes come back at their size."""
    script, ckpt, run_dir = trained
    main = SCRIPTS[script].main
    main(model_argv(script, ckpt) + ["eval", "--dataset", str(folders / "eval"), "--results_dir", str(tmp_path),
                                     "--no_sub_dir"])
    npz = np.load(tmp_path / f"{run_dir.name}-dataset=eval.npz")
    assert {"names", "height", "width", "bpp", "bpp_est", "mse", "psnr", "msssim", "file_bits"} <= set(npz.files)
    record = json.loads((run_dir / image_eval.RESULTS_NAME).read_text().splitlines()[-1])
    assert {"method", "lambda", "dataset", "num_images", "bpp", "bpp_est", "mse", "psnr", "msssim", "rate",
            "rate_unit", "per_dim", "data_dim", "file_bits"} <= set(record)
    assert record["method"] == script and record["num_images"] == 4 and record["rate_unit"] == "bits"
    assert record["bpp"] == pytest.approx(float(np.mean(npz["bpp"])))
    assert record["rate"] == record["bpp"] and record["rate_key"] == "bpp"  # image files: the rate is the bytes
    assert np.isfinite(npz["msssim"][0]) and np.isnan(npz["msssim"][1])  # 176x200 vs 37x71

    _, model, identity = restored
    for i, name in enumerate(npz["names"]):
        src = folders / "eval" / name
        tfci, png = tmp_path / f"{name}.tfci", tmp_path / f"{name}.out.png"
        codec_commands.compress_file(script, model, identity, src, tfci)
        if i == 0:  # the command itself, once (a subprocess compresses in test_same_bytes_on_every_run)
            main(model_argv(script, ckpt) + ["decompress", str(tfci), str(png)])
        else:
            codec_commands.decompress_file(script, model, identity, tfci, png)
        with Image.open(src) as a, Image.open(png) as b:
            assert b.size == a.size
            assert b.mode == ("L" if a.mode == "L" else "RGB")
            source, decoded = np.asarray(a.convert(b.mode)), np.asarray(b)
        assert images.mse(source, decoded) == npz["mse"][i]
        assert 8 * tfci.stat().st_size == npz["file_bits"][i]
        assert container.bpp(tfci.stat().st_size, *decoded.shape[:2]) == npz["bpp"][i]


def test_a_glob_of_some_kodak_images_is_named_apart_from_kodak(trained, tmp_path, capsys):
    """Evaluating two Kodak images writes results named for those two, never the whole set's `dataset=kodak`
    files, and records what was evaluated; bd_rate.py keeps such points out of the Kodak curve."""
    import bd_rate
    data_path("kodak/kodim02.png")
    script, ckpt, run_dir = trained
    SCRIPTS[script].main(model_argv(script, ckpt) + ["eval", "--dataset", "data/kodak/kodim0[12].png",
                                                     "--results_dir", str(tmp_path), "--no_sub_dir"])
    record = json.loads((run_dir / image_eval.RESULTS_NAME).read_text().splitlines()[-1])
    label = record["dataset"]
    assert label.startswith("kodak-subset=") and label == images.dataset_label("data/kodak/kodim0[12].png")
    assert record["subset_of"] == "kodak" and record["images"] == ["kodim01.png", "kodim02.png"]
    assert record["num_images"] == 2
    assert [p.name for p in tmp_path.glob("*.npz")] == [f"{run_dir.name}-dataset={label}.npz"]
    results = str(run_dir / image_eval.RESULTS_NAME)
    assert len(bd_rate.results(results, label, "--test").bpp) == 1  # selected by the subset's name
    with pytest.raises(InputError, match="no points"):
        bd_rate.results(results, "kodak", "--test")  # and never part of the whole set's curve


def test_gan_source_is_coded_as_continuous_images(trained, restored, tmp_path, capsys):
    """On a GAN source eval codes the float images themselves: the bytes decode to the uint8 image whose MSE
    against the float image is eval's, --no_cast_xhat measures the decoded float reconstruction instead, and the
    record carries the point in rdlb.py's units with the paper's rate (the model's bits of the quantized latents),
    the file's bits beside it."""
    script, ckpt, run_dir = trained
    _, model, identity = restored
    argv = model_argv(script, ckpt) + ["eval", "--dataset", "lowgan", "--data_dim", "2", "--batchsize", "2",
                                       "--results_dir", str(tmp_path)]
    records = []
    for extra in ([], ["--no_cast_xhat"]):
        capsys.readouterr()
        SCRIPTS[script].main(argv + extra)
        records.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))
    cast, float_ = records
    assert cast["latent_dim"] == 2 and cast["data_dim"] == 128 * 128 * 3
    assert cast["npz"] == str(tmp_path / ckpt.name / f"{run_dir.name}-dataset=lowgan-data_dim=2.npz")
    assert cast["bpp"] == float_["bpp"] and cast["bpp_est"] == float_["bpp_est"] and cast["mse"] != float_["mse"]
    lamb = 0.01 * 128 * 128 * np.log(2) * 255 ** 2
    assert cast["rdlb_lamb"] == pytest.approx(lamb)
    # The sandwich fields count the latents' bits, never the file's; the file (header and all) costs more.
    assert cast["rate_key"] == "bpp_est" and cast["rate"] == cast["bpp_est"]
    assert cast["nats"] == pytest.approx(cast["bpp_est"] * 128 * 128 * np.log(2))
    assert cast["rdlb_lagrangian"] == pytest.approx(cast["nats"] + lamb * cast["mse"] / 255 ** 2)
    assert cast["file_bits"] == pytest.approx(cast["bpp"] * 128 * 128)
    with np.load(float_["npz"]) as d:  # the same file name: the later eval's arrays
        assert np.all(d["file_bits"] >= d["bpp_est"] * 128 * 128 + 8 * 20)  # at least the header's fixed part
        lagrangian = d["bpp_est"] * 128 * 128 * np.log(2) + lamb * d["mse"] / 255 ** 2
        assert float_["rdlb_lagrangian_stderr"] == pytest.approx(np.std(lagrangian, ddof=1) / np.sqrt(2))
        assert float_["rate_stderr"] == pytest.approx(np.std(d["bpp_est"], ddof=1) / np.sqrt(2))

    x = gan_sources.make_gan_source("lowgan", 2).test_set(2, seed=0) * 255.0  # eval's draws (--seed 0)
    mses, float_mses = [], []
    for image in x:
        data = codec_commands.compress_image(script, model, identity, image, 3)
        decoded, _ = codec_commands.decompress_bytes(script, model, identity, data, "test")
        mses.append(images.mse(image, images.to_uint8(decoded)))
        float_mses.append(images.mse(image, np.clip(decoded, 0, 255)))
    assert np.mean(mses) == pytest.approx(cast["mse"], rel=1e-12)
    assert np.mean(float_mses) == pytest.approx(float_["mse"], rel=1e-12)


def test_a_decode_that_differs_from_the_estimate_is_an_error(trained, folders, tmp_path, monkeypatch, capsys):
    """If the bytes decode to anything but the model's quantized reconstruction, eval exits non-zero with one
    line and writes no .npz and no record. The mismatch is simulated: one decoded pixel moves by 1/2."""
    script, ckpt, run_dir = trained
    decompress_bytes = codec_commands.decompress_bytes

    def off_by_half(*args):
        x_hat, channels = decompress_bytes(*args)
        x_hat = x_hat.copy()
        x_hat[0, 0, 0] += 0.5
        return x_hat, channels

    monkeypatch.setattr(codec_commands, "decompress_bytes", off_by_half)
    results = (run_dir / image_eval.RESULTS_NAME).read_text() if (run_dir / image_eval.RESULTS_NAME).exists() else None
    with pytest.raises(SystemExit) as e:
        run(SCRIPTS[script].main, model_argv(script, ckpt) + [
            "eval", "--dataset", str(folders / "eval" / "b_*.png"), "--results_dir", str(tmp_path / "r")])
    assert e.value.code not in (0, None)
    assert "differs from the model's quantized reconstruction" in str(e.value)
    assert not (tmp_path / "r").exists()
    now = (run_dir / image_eval.RESULTS_NAME).read_text() if (run_dir / image_eval.RESULTS_NAME).exists() else None
    assert now == results


def test_a_checkpoint_of_another_architecture_is_refused(tmp_path):
    """A checkpoint whose variables do not all fit the model (as an earlier architecture's would) is refused
    with one clear line instead of leaving the model with fresh weights for the rest."""
    for other, folder in [(image_models.MeanScaleHyperprior(0.01, 4, None), "shapes"),  # same layers, other shapes
                          (image_models.ChannelwiseAutoregressive(0.01, 8, 8, 8, 2, 1), "layers")]:  # other layers
        other.build_weights()
        tf.train.CheckpointManager(tf.train.Checkpoint(model=other), str(tmp_path / folder), 1).save()
        # The run's flags say mbt2018 with 8 filters: the model opened is that one, the weights are the other's.
        (tmp_path / folder / "flags.json").write_text(json.dumps(dict(lmbda=0.01, num_filters=8)))
        with pytest.raises(InputError, match="does not hold this model's weights"):
            codec_commands.open_codec(argparse.Namespace(verbose=False), tmp_path / folder, "mbt2018")


def test_ms2020_hyper_transforms_are_the_references():
    """At the paper's widths: hyper-analysis 320 -> 256 -> 192 (3x3 s1, 5x5 s2, 5x5 s2; ReLU, ReLU, none; no
    bias on the last), each hyper-synthesis 192 -> 256 -> 320 (5x5 up 2, 5x5 up 2, 3x3; ReLU after all three,
    plain kernels), as in tfc's models/ms2020.py; and mbt2018's hyper transforms as the paper's mbt2018.py."""
    def transforms(seq):
        return [(l.filters, l.kernel_support, l.strides_down, l.strides_up, l.corr, l.use_bias,
                 l.activation.__name__, l.padding, l.kernel_parameter == "rdft")
                for l in seq.layers]

    relu = "relu"
    assert transforms(image_models.ms2020_hyper_analysis(192, 320, 192)) == [
        (320, (3, 3), (1, 1), (1, 1), True, True, relu, "same_zeros", True),
        (256, (5, 5), (2, 2), (1, 1), True, True, relu, "same_zeros", True),
        (192, (5, 5), (2, 2), (1, 1), True, False, "linear", "same_zeros", True)]
    assert transforms(image_models.ms2020_hyper_synthesis(192, 320, "h")) == [
        (192, (5, 5), (1, 1), (2, 2), False, True, relu, "same_zeros", False),
        (256, (5, 5), (1, 1), (2, 2), False, True, relu, "same_zeros", False),
        (320, (3, 3), (1, 1), (1, 1), False, True, relu, "same_zeros", False)]
    assert [x[0] for x in transforms(image_models.ms2020_slice_transform(192, 32, "s"))] == [224, 128, 32]
    assert transforms(image_models.mbt2018_hyper_analysis(192)) == [
        (192, (3, 3), (1, 1), (1, 1), True, True, relu, "same_zeros", True),
        (192, (5, 5), (2, 2), (1, 1), True, True, relu, "same_zeros", True),
        (192, (5, 5), (2, 2), (1, 1), True, False, "linear", "same_zeros", True)]
    assert transforms(image_models.mbt2018_hyper_synthesis(192, 192)) == [
        (192, (5, 5), (1, 1), (2, 2), False, True, relu, "same_zeros", False),
        (288, (5, 5), (1, 1), (2, 2), False, True, relu, "same_zeros", False),
        (384, (3, 3), (1, 1), (1, 1), False, True, "linear", "same_zeros", False)]
    # The paper's code has 12,853,923 trainable parameters at --num_filters 192 (counted by building it).
    model = image_models.MeanScaleHyperprior(0.01, 192, None)
    model.build_weights()
    assert layers.count_params(model) == 12_853_923


def ms2020_parameter_count(n, m, h, slices, support):
    """Trainable parameters of ms2020 at --num_filters n, --latent_depth m, --hyperprior_depth h, --num_slices,
    --max_support_slices, counted from the paper's layer list (not from this package's code)."""
    def conv(c_in, c_out, k, bias=True, rdft=True):
        # a k x k kernel held as its real DFT has k (k // 2 + 1) complex taps: 2 k (k // 2 + 1) reals
        taps = 2 * k * (k // 2 + 1) if rdft else k * k
        return taps * c_in * c_out + (c_out if bias else 0)

    def plain(c_in, c_out, k):
        return conv(c_in, c_out, k, rdft=False)

    gdn = 3 * (n * n + n)  # three GDNs per transform: gamma [n, n] and beta [n]
    d = m // slices
    total = conv(3, n, 5) + 2 * conv(n, n, 5) + conv(n, m, 5) + gdn  # analysis
    total += conv(m, n, 5) + 2 * conv(n, n, 5) + conv(n, 3, 5) + gdn  # synthesis
    total += conv(m, m, 3) + conv(m, 4 * n // 3, 5) + conv(4 * n // 3, h, 5, bias=False)  # hyper-analysis
    total += 2 * (plain(h, n, 5) + plain(n, 4 * n // 3, 5) + plain(4 * n // 3, m, 3))  # hyper mean and scale
    for k in range(slices):  # slice k sees the first min(k, support) decoded slices; lrp sees its own slice too
        seen = m + min(k, support) * d
        for c_in in (seen, seen, seen + d):  # mean, scale, lrp
            total += plain(c_in, 7 * n // 6, 5) + plain(7 * n // 6, 2 * n // 3, 5) + plain(2 * n // 3, d, 3)
    return total + 28 * h  # tfc's deep factorized prior per channel: 1-3-3-1 matrices, biases and factors


@pytest.fixture(scope="module")
def ms2020_ten():
    """ms2020 at narrow widths with the paper's 10 slices and support 5 (one build serves both tests)."""
    model = image_models.ChannelwiseAutoregressive(0.01, 12, 20, 8, 10, 5)
    model.build_weights()
    return model


def test_ms2020_at_the_papers_ten_slices_has_the_references_size(ms2020_ten):
    """The paper's setting, 10 slices with support truncated to the first 5: 116,301,699 parameters, the count
    of tfc's models/ms2020.py built with TF 2.14.1 at its defaults (192, 320, 192, 10, 5). Building that costs
    ~0.5 GB, so the formula is checked against this package's model at narrow widths with the same 10/5."""
    assert ms2020_parameter_count(192, 320, 192, 10, 5) == 116_301_699
    assert layers.count_params(ms2020_ten) == ms2020_parameter_count(12, 20, 8, 10, 5)


def test_ms2020_slices_see_only_the_first_max_support_slices(ms2020_ten):
    """With 10 slices and --max_support_slices 5, slice k's mean and scale depend on the decoded slices
    0..min(k, 5)-1 and on no other: perturbing slice j moves the predictions of slices j+1..9 when j < 5, and of
    none when j >= 5 (truncating to the latest five instead, or not at all, moves others)."""
    model = ms2020_ten
    z_hat = tf.random.stateless_normal([1, 2, 2, 8], seed=[1, 2])
    given = list(tf.split(tf.random.stateless_normal([1, 8, 8, 20], seed=[3, 4]), 10, axis=-1))

    def predictions(slices):
        seen = []

        def code_slice(k, mean, index):
            seen.append(tf.concat([mean, index], -1))
            return slices[k], 0.0

        model.slices(z_hat, code_slice, training=False)
        return seen

    base = predictions(given)
    for j in range(10):
        moved = predictions([g + 1.0 if k == j else g for k, g in enumerate(given)])
        changed = [k for k in range(10) if not np.array_equal(moved[k].numpy(), base[k].numpy())]
        assert changed == (list(range(j + 1, 10)) if j < 5 else []), (j, changed)


def test_ms2020_training_feeds_the_rounded_z_to_the_hyper_synthesis(monkeypatch):
    """In training, both hyper-synthesis branches see z quantized as the entropy model codes it (integer
    offsets from its quantization offsets), not the noisy z; the rate of z is still that of noisy z."""
    model = image_models.ChannelwiseAutoregressive(0.01, 8, 8, 8, 2, 1)
    model.build_weights()
    seen = []
    for name in ("hyper_mean", "hyper_scale"):
        branch = getattr(model, name)
        monkeypatch.setattr(model, name, lambda z, branch=branch: seen.append(z) or branch(z))
    x = tf.constant(smooth_image(64, 64, 3)[None], tf.float32)
    model.losses_of(x, training=True)
    em_z = model.entropy_models(compression=False)[0]
    z = model.hyper_analysis(model.analysis(x / 255))
    z_hat = em_z.quantize(z)
    offset = em_z.quantization_offset
    for seen_z in seen:
        np.testing.assert_array_equal(seen_z.numpy(), z_hat.numpy())
        steps = (seen_z - offset).numpy()
        np.testing.assert_array_equal(steps, np.round(steps))
    assert len(seen) == 2 and np.max(np.abs(z_hat - z)) > 0.01  # z is not already on the grid


def test_codecs_train_on_a_gan_source(tmp_path):
    mbt2018.main(model_argv("mbt2018", tmp_path) + ["train", "--dataset", "lowgan", "--data_dim", "2",
                                                    "--batchsize", "2", "--epochs", "1", "--steps_per_epoch", "2",
                                                    "--max_validation_steps", "1"])
    (run_dir,) = tmp_path.iterdir()
    (record,) = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert record["step"] == 2 and np.isfinite(record["loss"]) and np.isfinite(record["val_loss"])
    with pytest.raises(InputError, match="lowgan needs --data_dim"):
        mbt2018.main(model_argv("mbt2018", tmp_path / "x") + ["train", "--dataset", "lowgan"])
    with pytest.raises(InputError, match="--data_dim applies to the GAN sources"):
        mbt2018.main(model_argv("mbt2018", tmp_path / "x") + ["eval", "--dataset", "kodak", "--data_dim", "2"])
    assert not (tmp_path / "x").exists()


def test_same_bytes_on_every_run(trained, restored, folders, tmp_path):
    """The CLI in a separate process (mbt2018), or the script in this process opening the run by its folder
    (--run: a second restoration, with fresh traces of the model's functions; ms2020), writes the same file as
    the shared model. --run with an architecture flag other than the run's is refused."""
    script, ckpt, run_dir = trained
    src = folders / "eval" / "a_rgb.png"
    first, second = tmp_path / "0.tfci", tmp_path / "1.tfci"
    codec_commands.compress_file(script, *restored[1:], src, first)
    if script == "mbt2018":
        run_script("mbt2018.py", *model_argv(script, ckpt), "compress", src, second, check=True)
    else:
        SCRIPTS[script].main(["--run", str(run_dir), "compress", str(src), str(second)])
        with pytest.raises(InputError, match=r"--num_filters 16: the run .* was trained with 8"):
            SCRIPTS[script].main(["--run", str(run_dir), "--num_filters", "16", "compress", str(src),
                                  str(tmp_path / "2.tfci")])
    assert first.read_bytes() == second.read_bytes()


def test_damaged_foreign_and_wrong_model_files_are_refused(restored, folders, tmp_path):
    script, model, identity = restored
    image = images.read_image(folders / "eval" / "a_rgb.png")[0]
    good = codec_commands.compress_image(script, model, identity, image, 3)
    flipped = bytearray(good)
    flipped[-3] ^= 0x10
    other_script = "ms2020" if script == "mbt2018" else "mbt2018"
    # Another checkpoint of the same architecture: one weight differs by one float step.
    weights = [w.numpy() for w in model.trainable_weights]
    weights[-1] = np.nextafter(weights[-1], np.inf)
    other_id = container.model_id(script, ARCH[script], weights)
    strings = container.unpack(good, script, identity)[2]
    cases = [
        ("truncated file", good[:10]),
        ("truncated file", good[:-5]),
        ("corrupt file", bytes(flipped)),
        ("not a compressed image", (folders / "eval" / "a_rgb.png").read_bytes()),
        (f"made by {other_script}.py", container.pack(other_script, identity, (176, 200), 3, [b"x", b"y"])),
        (f"different {script} model", container.pack(script, other_id, (176, 200), 3, strings)),
    ]
    for message, data in cases:
        f, out = tmp_path / "bad.tfci", tmp_path / "bad.png"
        f.write_bytes(data)
        with pytest.raises(InputError, match=message):
            codec_commands.decompress_file(script, model, identity, f, out)
        assert not out.exists()


def test_tables_are_saved_with_the_run_and_a_decoder_that_computes_otherwise_refuses(trained, restored, folders):
    """The first command that opens a run saves its range-coding tables (coding_tables.npz, under the identity
    of its weights), and later ones take them as saved. A decoder whose tables differ from the encoder's (y's
    moved by one symbol: tfc's range decoder would read the same bits and return other symbols without noticing),
    or that computes other scale indexes (the scale network's last bias moved by 0.5, as another machine's
    arithmetic would move a few), refuses the file before decoding it, with the file's check. Tables saved under
    another identity (the run trained on since) are rebuilt and saved again."""
    script, _, run_dir = trained
    _, model, identity = restored
    path = run_dir / codec_commands.TABLES_NAME
    saved = codec_commands.load_tables(run_dir, identity)
    assert saved is not None and {"z_cdf", "z_cdf_offset", "y_cdf", "y_cdf_offset"} <= set(saved)
    assert all(np.array_equal(v, saved[k]) for k, v in model.coding_tables().items())
    image = images.read_image(folders / "eval" / "a_rgb.png")[0]
    data = codec_commands.compress_image(script, model, identity, image, 3)
    scale_net = model.hyper_synthesis if script == "mbt2018" else model.scale_nets[0]
    bias = scale_net.layers[-1].bias_parameter  # the variable (its .bias is a read-only tensor)
    bias.assign_add(tf.fill(bias.shape, 0.5))
    try:
        with pytest.raises(InputError, match="cannot be decoded here: this decoder computed other scale indexes"):
            codec_commands.decompress_bytes(script, model, identity, data, "the file")
    finally:
        bias.assign_sub(tf.fill(bias.shape, 0.5))
    original = path.read_bytes()
    try:
        moved = dict(saved, y_cdf_offset=saved["y_cdf_offset"] + 1)
        atomic_save_npz(path, identity=np.frombuffer(identity, np.uint8), **moved)
        other, other_id = restore(script, run_dir)
        assert other_id == identity
        np.testing.assert_array_equal(other.coders[1].cdf_offset.numpy(), moved["y_cdf_offset"])
        with pytest.raises(InputError, match="cannot be decoded here: the range-coding tables differ"):
            codec_commands.decompress_bytes(script, other, identity, data, "the file")
        atomic_save_npz(path, identity=np.zeros(container.ID_BYTES, np.uint8), **moved)
        restore(script, run_dir)
        assert path.read_bytes() == original  # rebuilt from the weights: the very tables first saved
    finally:
        path.write_bytes(original)


def test_cli_errors_are_one_line_and_exit_2(folders, tmp_path, capsys):
    """Through the scripts' entry point: one line on stderr, exit status 2, nothing written."""
    argv = ["--checkpoint_dir", str(tmp_path / "ck"), *TINY["mbt2018"]]
    (tmp_path / "x.tfci").write_bytes(b"")
    for args, message in [(["decompress", str(tmp_path / "x.tfci"), str(tmp_path / "x.png")], "no checkpoint"),
                          (["train", "--patchsize", "64"], "exactly one of --train_glob and --dataset"),
                          (["train", "--train_glob", str(folders / "eval" / "*.jpg")], "no image files")]:
        with pytest.raises(SystemExit) as e:
            run(mbt2018.main, argv + args)
        assert e.value.code == 2
        # Besides the start-up line with the parameter count (once the model is built), the error alone.
        err = [line for line in capsys.readouterr().err.strip().splitlines()
               if line != "mbt2018: 24,063 trainable parameters"]
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert not (tmp_path / "ck").exists() and not (tmp_path / "x.png").exists()


def test_bpp_from_bytes_is_close_to_the_estimate(restored):
    """Bytes against the model's estimated rate on a 256x384 image, for a 2-step model (a loose bound).

    The coder never costs more than the estimate + 5% + 3 bytes per string (its flush), and not less than
    half of it. The lower side is loose because an untrained ms2020 puts latents far in the tails of narrow
    Gaussians: the estimate charges them their tiny density, the coder escapes them with an Elias-gamma code.
    A trained model on Kodak is measured in the README (bytes within about 1% of the estimate)."""
    script, model, identity = restored
    image = smooth_image(256, 384, 5)
    strings = model.compress(tf.constant(image, tf.float32)).numpy().tolist()
    payload_bits = 8 * sum(len(s) for s in strings)
    bits = float(model.estimate(tf.constant(image, tf.float32))[1])
    assert 0.5 * bits <= payload_bits <= 1.05 * bits + 8 * 3 * len(strings)
    header = len(codec_commands.compress_image(script, model, identity, image, 3)) - payload_bits // 8
    assert header <= 20 + 2 + 2 + 2 * len(strings)  # fixed part, two varint sizes, one length per string
