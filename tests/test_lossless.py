"""The lossless ResNet-VAE (`--likelihood dlogistic`) and rec.py's lossless files: the discretized logistic is a
distribution over the 256 grey levels and the coder's tables are that distribution; a grey image's file decodes,
in another process, to the image itself; its size is the REC stream plus the residual's information content plus
headers; eval checks every image and compares PNG and WebP; bad input is refused."""
import json

import numpy as np
import pytest
import tensorflow as tf

import rec
import resnet_vae
from conftest import data_path, run_script
from test_resnet_vae import save_run, smooth_images, train_in_process
from utils import container, hvae, hvae_flags, images
from utils import rec as rec_lib
from utils.cli import InputError
from utils.runs import run_name

MODEL = ["--likelihood", "dlogistic", "--image_channels", "1", "--num_filters", "8", "--latent_channels", "2,4"]
FAST = ["--n_beams", "3"]  # the coder's settings are tested in test_rec.py


def grey_images(n, seed):
    return smooth_images(n, 28, seed=seed)[..., :1]


def test_discretized_logistic_is_a_distribution_and_the_tables_are_it():
    """Over the 256 levels the masses sum to 1 (the end levels take the tails), for narrow and wide logistics;
    the coder's float64 tables give the same masses as the TF likelihood the model trains on."""
    model = hvae.build(resnet_vae.parse_args([*MODEL, "eval"]))
    levels = np.arange(256, dtype=np.float32).reshape(256, 1, 1, 1)
    for loc, log_scale in [(0.3, -6.0), (-0.45, -3.0), (0.1, -0.5), (0.6, 1.0)]:  # [-1/2, 1/2] loc units
        out = tf.constant(np.tile([[[[loc, log_scale]]]], (256, 1, 1, 1)), tf.float32)
        bits = model.nll_bits(tf.constant(levels), out).numpy().astype(np.float64)
        assert np.sum(2.0 ** -bits) == pytest.approx(1.0, abs=1e-5)
        m, s = model.logistic_params(out[:1])
        cdf = hvae.logistic_cdf_edges(m.numpy(), s.numpy())[0]
        mass = np.diff(cdf)
        big = mass > 1e-6  # float32 TF vs float64 numpy: compare where the mass is not in float32's noise
        np.testing.assert_allclose(2.0 ** -bits[big], mass[big], rtol=2e-3)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny lossless model trained briefly on grey images, saved where resnet_vae.py would save it."""
    tmp = tmp_path_factory.mktemp("lossless")
    args = resnet_vae.parse_args([*MODEL, "eval"])
    x = grey_images(8, seed=0)
    model = train_in_process(args, x, 60)
    fresh = train_in_process(args, x, 0)
    x = tf.constant(x, tf.float32)
    assert float(model.losses_of(x)["loss"]) < float(fresh.losses_of(x)["loss"]) - 1  # bits per dimension
    run_dir = tmp / "ckpt" / run_name("resnet_vae", **hvae_flags.run_flags(args))
    save_run(args, model, run_dir)
    image = grey_images(1, seed=5)[0]
    images.write_png(tmp / "digit.png", image[..., 0])
    return tmp, run_dir, image


def main(tmp, *argv):
    return rec.main([*MODEL, *FAST, "--checkpoint_dir", str(tmp / "ckpt"), *argv])


def test_grey_image_round_trip_through_another_process(setup):
    tmp, _, image = setup
    main(tmp, "compress", str(tmp / "digit.png"), str(tmp / "digit.rec"))
    run_script("rec.py", *MODEL, "--checkpoint_dir", tmp / "ckpt", "decompress", tmp / "digit.rec",
               tmp / "back.png", check=True)
    back, channels, _ = images.read_image(tmp / "back.png")
    assert channels == 1
    np.testing.assert_array_equal(back[..., :1], image)


def test_file_size_is_the_rec_stream_plus_the_residual_information(setup):
    """The residual stream costs its information content under the model's tables given the coded latents (+ at
    most the ANS coder's 64-bit head and a word of rounding), and the file adds the container's header to the
    two streams; decoding in this process gives the image back too."""
    tmp, run_dir, image = setup
    args = rec.parse_args([*MODEL, *FAST, "--checkpoint_dir", str(tmp / "ckpt"), "eval"])
    assert (args.n_beams, args.extra_samples) == (3, 1.2)  # 1 + eps: the lossless default
    model, _, identity = hvae.open_hvae(args, run_dir)
    coder = rec.Codec(args, model, identity)
    data, _, codes, _ = coder.encode(image, 1)
    _, _, (latents, residual) = container.unpack(data, "resnet_vae", coder.identity)
    decoded, _ = coder.decode(data, "test")
    np.testing.assert_array_equal(decoded, image)
    units = [c for _, c in codes]
    out, _ = coder.coding_pass(lambda layer, q, p_loc, p_scale: rec_lib.decode_layer(p_loc, p_scale, units[layer],
                                                                                  seed=0, layer=layer),
                               top_shape=model.top_shape(28, 28))
    info = rec.residual_table(model, model.crop(out, 28, 28)[0]).info(image.ravel()).sum()
    assert info <= 8 * len(residual) <= info + 96
    assert 0 < len(data) - len(latents) - len(residual) < 40  # the container's header


def test_eval_on_mnist_checks_every_image_and_counts_every_byte(setup, capsys):
    data_path("mnist/t10k-images-idx3-ubyte.gz")
    tmp, run_dir, _ = setup
    capsys.readouterr()
    main(tmp, "eval", "--dataset", "mnist", "--batchsize", "2", "--elbo_samples", "4")
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["num_images"] == 2 and record["data_dim"] == 784 and record["mse"] == 0
    assert record["rate_key"] == "file_bpd" and record["extra_samples"] == 1.2
    npz = np.load(record["npz"])
    np.testing.assert_allclose(npz["file_bpd"] * 784 / 8 % 1, 0, atol=1e-9)  # whole bytes
    assert np.all(npz["latent_bpd"] + npz["residual_bpd"] < npz["file_bpd"])
    assert np.all(npz["png_bpd"] > 0) and np.all(npz["webp_bpd"] > 0)


def test_bad_input(setup, tmp_path):
    tmp, _, _ = setup
    colour = tmp_path / "colour.png"
    images.write_png(colour, smooth_images(1, 28, seed=1)[0])
    with pytest.raises(InputError, match="colour image"):
        main(tmp, "compress", str(colour), str(tmp_path / "x.rec"))
    assert not (tmp_path / "x.rec").exists()
    with pytest.raises(InputError, match="3-channel images but the model takes 1"):
        resnet_vae.main([*MODEL, "--checkpoint_dir", str(tmp / "ckpt"), "eval", "--dataset", str(colour)])
