"""utils/gan_sources.py: the lowgan stand-in is fixed, in range, d-dimensional and smooth; BigGAN fails clearly
without its module and, given a module with BigGAN-deep-128's signature, samples through the --dataset path."""
import numpy as np
import pytest

from utils import gan_sources
from utils.cli import InputError
from utils.gan_sources import LATENT_MAX, TRUNCATION, make_gan_source


@pytest.fixture(scope="module")
def lowgan2():
    return make_gan_source("lowgan", 2)


def test_weights_are_fixed_by_the_seed():
    # Pinned draws of numpy's PCG64 generator: the same weights on every machine and numpy version.
    g = make_gan_source("lowgan", 2)
    np.testing.assert_allclose(g.dense_w[0, :3], [0.7787244, 1.5298734, -0.32848653], rtol=1e-6)
    other = make_gan_source("lowgan", 5)
    np.testing.assert_array_equal(g.dense_w, other.dense_w)
    for (w, b), (w2, b2) in zip(g.convs, other.convs):
        np.testing.assert_array_equal(w, w2)
        np.testing.assert_array_equal(b, b2)
    different = make_gan_source("lowgan", 2, generator_seed=1)
    assert not np.allclose(g.dense_w, different.dense_w)


def test_latents_are_truncated_and_low_dimensional():
    z = gan_sources.truncated_latents(5000, 3, seed=0)
    assert z.shape == (5000, LATENT_MAX) and z.dtype == np.float32
    assert not z[:, 3:].any()
    assert np.abs(z).max() <= 2 * TRUNCATION + 1e-6
    # The std of N(0, 1) truncated to [-2, 2] is 0.8796.
    assert z[:, :3].std() == pytest.approx(TRUNCATION * 0.8796, rel=0.03)


def test_samples_shape_range_and_determinism(lowgan2):
    x = lowgan2.sample(6, seed=3)
    assert x.shape == (6, 128, 128, 3) and x.dtype == np.float32
    assert lowgan2.shape == (128, 128, 3) and lowgan2.dim == 128 * 128 * 3 and lowgan2.latent_dim == 2
    assert 0 <= x.min() and x.max() <= 1
    assert x.std() > 0.1  # uses the range: not a flat gray image
    np.testing.assert_array_equal(x, make_gan_source("lowgan", 2).sample(6, seed=3))
    np.testing.assert_array_equal(x, lowgan2.sample(6, seed=[3]))  # rdlb passes seeds as lists
    # Different latents give different images.
    d = ((x[:, None] - x[None]) ** 2).mean(axis=(2, 3, 4))
    assert d[~np.eye(6, dtype=bool)].min() > 1e-4
    assert not np.array_equal(x, lowgan2.sample(6, seed=4))
    assert not np.array_equal(lowgan2.test_set(6, seed=3), x)


def test_dataset_batches(lowgan2):
    a = [b.numpy() for b in lowgan2.dataset(3, seed=7).take(2)]
    b = [b.numpy() for b in lowgan2.dataset(3, seed=7).take(2)]
    assert a[0].shape == (3, 128, 128, 3) and 0 <= a[0].min() and a[0].max() <= 1
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], a[1])


def test_images_vary_smoothly_with_a_2d_latent(lowgan2):
    # Along a line in latent space, image differences grow linearly in the step: the generator is differentiable
    # and the source is a 2-d manifold of images, not a scatter of unrelated ones.
    rng = np.random.default_rng(0)
    z0 = gan_sources.truncated_latents(8, 2, seed=1)
    direction = np.zeros_like(z0)
    direction[:, :2] = rng.standard_normal((8, 2))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    eps = 1e-2
    x0, x1, x2 = (lowgan2.images(z0 + k * eps * direction).astype(np.float64) for k in (0, 1, 2))
    step1 = np.sqrt(((x1 - x0) ** 2).mean(axis=(1, 2, 3)))
    step2 = np.sqrt(((x2 - x0) ** 2).mean(axis=(1, 2, 3)))
    assert np.all(step1 > 0)
    np.testing.assert_allclose(step2 / step1, 2.0, atol=0.1)
    assert (step1 / eps).max() < 1.0  # bounded slope: under 1 (the whole [0, 1] range) per unit of latent


@pytest.mark.parametrize("data_dim, message", [(LATENT_MAX + 1, "choose 1 to 128"), (0, "choose 1 to 128"),
                                               (None, "needs --data_dim")])
def test_bad_data_dim(data_dim, message):
    with pytest.raises(InputError, match=message):
        make_gan_source("lowgan", data_dim)


def test_unknown_name():
    with pytest.raises(InputError, match="not a GAN source"):
        make_gan_source("poodle", 2)


def test_biggan_without_the_module_says_what_to_provide(monkeypatch, tmp_path):
    monkeypatch.delenv(gan_sources.BIGGAN_ENV, raising=False)
    with pytest.raises(InputError, match=r"RDS_BIGGAN_MODULE.*lowgan"):
        make_gan_source("basenji", 2)
    monkeypatch.setenv(gan_sources.BIGGAN_ENV, str(tmp_path / "missing"))
    with pytest.raises(InputError, match="is not a folder"):
        make_gan_source("jay", 2)
    monkeypatch.setenv(gan_sources.BIGGAN_ENV, str(tmp_path))
    try:
        import tensorflow_hub  # noqa: F401
        expected = "cannot load it"
    except ImportError:
        expected = "needs the tensorflow_hub package"
    with pytest.raises(InputError, match=expected):
        make_gan_source("magpie", 2)


def test_a_saved_model_without_the_signature_is_refused(monkeypatch, tmp_path):
    import tensorflow as tf
    tf.saved_model.save(tf.Module(), str(tmp_path))
    monkeypatch.setenv(gan_sources.BIGGAN_ENV, str(tmp_path))
    with pytest.raises(InputError, match="no 'default' signature"):
        make_gan_source("beagle", 2)


# A stand-in for the TF-Hub module of BigGAN-deep-128 with its signature: "default"(z [N, 128], one-hot y [N, 1000],
# scalar truncation) -> {"default": [N, 128, 128, 3] in [-1, 1]}. Its 8x8x3 picture is tanh of an affine map of
# (z, y, truncation), upsampled 16x by repetition, so a test can read z back from any image by least squares.
TOY_RNG = np.random.default_rng(5)
TOY_W = (0.3 * TOY_RNG.standard_normal((LATENT_MAX, 192))).astype(np.float32)  # rank 128: z is recoverable
TOY_V = (0.3 * TOY_RNG.standard_normal((1000, 192))).astype(np.float32)
TOY_T = (0.5 * TOY_RNG.standard_normal(192)).astype(np.float32)


@pytest.fixture(scope="module")
def toy_biggan(tmp_path_factory):
    import tensorflow as tf

    class Module(tf.Module):
        def __init__(self):
            super().__init__()
            self.w, self.v, self.t = tf.Variable(TOY_W), tf.Variable(TOY_V), tf.Variable(TOY_T)

        @tf.function(input_signature=[tf.TensorSpec([None, LATENT_MAX], tf.float32),
                                      tf.TensorSpec([None, 1000], tf.float32), tf.TensorSpec([], tf.float32)])
        def default(self, z, y, truncation):
            small = tf.reshape(tf.tanh(z @ self.w + y @ self.v + truncation * self.t), [-1, 8, 8, 3])
            return {"default": tf.repeat(tf.repeat(small, 16, axis=1), 16, axis=2)}

    module = Module()
    path = tmp_path_factory.mktemp("biggan-deep-128")
    tf.saved_model.save(module, str(path), signatures={"default": module.default})
    return path


def toy_latents(images, label):
    """The latents [n, 128] that made images [n, 128, 128, 3] in [0, 1] (the inverse of the toy module)."""
    pre = np.arctanh(2.0 * images[:, ::16, ::16, :].astype(np.float64).reshape(len(images), 192) - 1.0)
    return (pre - TOY_V[label] - TRUNCATION * TOY_T) @ np.linalg.pinv(TOY_W)


def test_biggan_module_samples_through_the_dataset_path(toy_biggan, monkeypatch):
    from utils import image_data, sources
    monkeypatch.setenv(gan_sources.BIGGAN_ENV, str(toy_biggan))
    d, label = 3, gan_sources.BIGGAN_CLASSES["basenji"]
    source = image_data.gan_source("basenji", d)  # what mbt2018/ms2020/resnet_vae.py --dataset basenji call
    assert isinstance(source, gan_sources.BigGAN) and source.latent_dim == d and source.dim == 49152
    x = source.sample(5, seed=11)
    assert x.shape == (5, 128, 128, 3) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    # Exactly the module's output for the class's one-hot label, truncation 0.8, mapped from [-1, 1] to [0, 1].
    z = gan_sources.truncated_latents(5, d, seed=11)
    small = np.tanh(z @ TOY_W + TOY_V[label] + TRUNCATION * TOY_T).reshape(5, 8, 8, 3)
    np.testing.assert_allclose(x[:, ::16, ::16, :], (small + 1) / 2, atol=1e-5)
    # The latent read back from the images is the sampled one: d coordinates vary, the other 125 are 0.
    np.testing.assert_allclose(toy_latents(x, label), z, atol=1e-3)

    # rdlb.py's path, and the training batches the image models see (on [0, 255], latents drawn by tf.data).
    assert isinstance(sources.make_source("basenji", d), gan_sources.BigGAN)
    train, _ = image_data.training_data("basenji", source, None, 16, seed=2)
    batch = next(iter(train)).numpy() / 255.0
    assert batch.shape == (16, 128, 128, 3) and 0 <= batch.min() and batch.max() <= 1
    zb = toy_latents(batch, label)
    assert np.abs(zb[:, d:]).max() < 1e-3
    assert zb[:, :d].std(axis=0).min() > 0.3 and np.abs(zb[:, :d]).max() <= 2 * TRUNCATION + 1e-3

    # Another class is another label: same latents, different images.
    jay = image_data.gan_source("jay", d).sample(5, seed=11)
    np.testing.assert_allclose(toy_latents(jay, gan_sources.BIGGAN_CLASSES["jay"]), z, atol=1e-3)
    assert np.abs(jay - x).max() > 0.05
