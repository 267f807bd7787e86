"""The variable-rate seed's ConvNeXt hierarchy (`resnet_vae.py --arch convnext`): its parameter count at the seed's
configuration, its squashing functions, its analytic KLs, the rate falling with lambda from one set of weights, and
the flags it refuses."""

import numpy as np
import pytest
import tensorflow as tf

import resnet_vae
from test_resnet_vae import smooth_images
from test_variable_rate import check_rate_falls_with_lambda, train_through_the_script
from utils import hvae
from utils.cli import InputError

TINY = ["--arch", "convnext", "--widths", "8,16", "--enc_blocks", "1,0", "--latent_blocks", "1,1",
        "--latent_channels", "2,4", "--lmb_range", "0.001,0.1"]


def seed_parameter_count():
    """The trainable parameters of lossy-vae's rd_model_base, counted from its layer list (not from this package's
    code): a ConvNeXt block of width d has a 7x7 depthwise conv (49d + d), an embedding-to-AdaLN linear (256 -> 2d),
    an MLP d -> 2d -> d and a layer scale (d): 4d^2 + 568d."""
    def block(d):
        return 4 * d * d + 568 * d

    def latent(w, z):  # five blocks, a 1x1 merge of 2w -> w, a 3x3 posterior and 1x1 prior to 2z, a 1x1 z -> w
        return 5 * block(w) + 2 * w * w + w + 9 * w * 2 * z + 2 * z + w * 2 * z + 2 * z + z * w + w

    widths, enc, lat = [256, 512, 640, 768, 768], [6, 6, 6, 4, 4], [5, 4, 3, 2, 1]
    n = 3 * 256 * 16 + 256  # 4x4 patch embedding
    for s, w in enumerate(widths):
        n += enc[s] * block(w) + lat[s] * latent(w, 32)
        if s < 4:
            n += block(w) + w * widths[s + 1] * 4 + widths[s + 1]  # block, then 2x2 patch down
        n += (w * 3 * 16 + 3 * 16) if s == 0 else (w * widths[s - 1] * 4 + widths[s - 1] * 4)  # 1x1, pixel shuffle
    return n + 768 + 2 * (256 * 256 + 256)  # the top constant; the lambda embedding's MLP


def test_seed_configuration_has_the_published_size():
    """186.7 M in the seed's README; its layer list gives exactly 186,670,384."""
    assert seed_parameter_count() == 186_670_384
    model = hvae.build(resnet_vae.parse_args(["--arch", "convnext", "--lmb_range_seed", "4,2048", "eval"]))
    model.build_weights()
    assert model.levels == 15 and model.pad_multiple == 64
    assert sum(int(np.prod(v.shape)) for v in model.trainable_variables) == seed_parameter_count()


def test_squashing_functions():
    v = tf.constant(np.linspace(-9, 9, 3601), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(v)
        y = hvae.linear_sqrt(v)
    grad = tape.gradient(y, v).numpy()
    y = y.numpy()
    assert np.all(np.isfinite(grad)) and np.all(grad > 0)  # monotone, and no NaN from the unused branches
    np.testing.assert_allclose(y, -y[::-1], atol=1e-6)  # odd
    small = np.abs(v.numpy()) < 1e-2
    np.testing.assert_allclose(y[small], v.numpy()[small], atol=1e-3)  # about v near 0
    big = np.abs(v.numpy()) > 6
    np.testing.assert_allclose(y[big], np.sign(v.numpy()[big]) * np.sqrt(np.abs(v.numpy()[big])), rtol=1e-6)
    at = hvae.linear_sqrt(tf.constant([6.0, 6.0001])).numpy()  # nearly continuous where the branches meet
    assert abs(at[0] - at[1]) < 0.01 * at[0]
    assert float(hvae.std_smooth(tf.constant(0.0))) == pytest.approx(1.0)


def test_kls_are_analytic():
    """The top latent block's KL is the closed-form Gaussian KL, computed here in numpy from the block's own
    prior and posterior parameters; it is the same for two posterior samples (lower blocks depend on the samples
    above)."""
    args = resnet_vae.parse_args([*TINY, "eval"])
    tf.keras.utils.set_random_seed(0)
    model = hvae.build(args)
    model.build_weights()
    for v in model.trainable_variables:  # away from the zero-initialized start, so the KLs are not trivial
        v.assign(v + tf.random.normal(v.shape, stddev=0.05))
    x = tf.constant(smooth_images(2, 32), tf.float32)
    lmbda = tf.constant([0.003, 0.03])
    _, kl1 = model.forward(x, lmbda)
    _, kl2 = model.forward(x, lmbda)
    assert kl1.shape == (2, 2)
    np.testing.assert_allclose(kl1[:, -1], kl2[:, -1], rtol=1e-5)

    emb = model.embedding(lmbda)
    block, down = model.down[0]  # the top scale's features (TINY has no encoder blocks of its own there)
    h = down(block(model.encoder[0][0](model.stem(model.padded_input(x)), emb), emb))
    top = model.latents[1][0]
    t = top.front(tf.broadcast_to(model.top, tf.shape(h)), emb)
    p_loc, p_scale = (a.numpy().astype(np.float64) for a in top.gaussian(top.prior(t)))
    merged = top.merge(tf.concat([top.td_block(t, emb), top.enc_block(h, emb)], axis=-1))
    q_loc, q_scale = (a.numpy().astype(np.float64) for a in top.gaussian(top.posterior(top.merged_block(merged, emb))))
    kl = np.log(p_scale / q_scale) + (q_scale ** 2 + (q_loc - p_loc) ** 2) / (2 * p_scale ** 2) - 0.5
    np.testing.assert_allclose(kl1[:, -1], kl.sum(axis=(1, 2, 3)), rtol=1e-4)
    assert np.all(kl1.numpy() > 0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny ConvNeXt hierarchy trained by resnet_vae.py's train command, opened from its run folder."""
    return train_through_the_script(TINY, tmp_path_factory.mktemp("convnext"))[1]


def test_rate_falls_with_lambda_from_the_same_weights(trained):
    check_rate_falls_with_lambda(trained)


@pytest.mark.parametrize("flags, message", [
    (["--arch", "convnext"], "variable-rate"),
    ([*TINY, "--num_filters", "64"], "belongs to --arch resnet"),
    (["--widths", "8,8", "--lambda", "0.01"], "belongs to --arch convnext"),
    ([*TINY, "--ar_prior_levels", "1"], "--ar_prior_levels"),
    ([*TINY, "--enc_blocks", "1,1,1"], "one count per scale"),
    ([*TINY, "--latent_blocks", "0,0"], "at least one latent block"),
])
def test_bad_flags(flags, message):
    with pytest.raises(InputError, match=message):
        resnet_vae.parse_args([*flags, "eval"])
