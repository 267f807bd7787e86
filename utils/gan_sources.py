"""Image sources of known low intrinsic dimension d: GAN images from a d-dimensional latent (Yang & Mandt, 2022).

    source = make_gan_source("lowgan", data_dim=2)        # or basenji / beagle / jay / magpie (BigGAN)
    x = source.sample(16, seed=0)                        # float32 [16, 128, 128, 3] in [0, 1]
    ds = source.dataset(batchsize=8, seed=0)             # endless tf.data of such batches

Every source draws z = TRUNCATION * (a standard normal truncated to [-2, 2]) in LATENT_MAX = 128 dimensions, keeps
only the first d coordinates (the rest are 0, as in the paper), and maps z to a 128x128x3 image. `dim` is the number
of pixel values (49152), `latent_dim` is d, `shape` is (128, 128, 3). Images are continuous in [0, 1]: training
scripts that work on the [0, 255] scale multiply by 255.

- `basenji`, `beagle`, `jay`, `magpie`: the paper's source, BigGAN-deep-128 with that ImageNet class, loaded with
  `tensorflow_hub` (in requirements.txt). Only the module itself is missing here: environment variable
  RDS_BIGGAN_MODULE names a folder holding an unpacked copy of https://tfhub.dev/deepmind/biggan-deep-128/1.
  tests/test_gan_sources.py checks this path with a small module of the same signature.
- `lowgan`: a stand-in with the same interface that needs nothing. It is a fixed convolutional generator whose
  weights are drawn with numpy from a fixed seed (identical on every machine and run): a dense layer to a 4x4 map,
  then five stages of bilinear 2x upsampling, 3x3 convolution (reflection padding) and tanh, then a fixed
  luminance/color mix and a sigmoid to RGB. Every stage has a per-channel affine normalization fixed once from a
  fixed batch of latents, so the output uses the [0, 1] range.
  The map is smooth (C-infinity) in z, so its images lie on a d-dimensional manifold in pixel space, with the same
  latent law as BigGAN; the latent coordinates' weights decay as 1/sqrt(k+1), so low d already gives visible
  variation and each added coordinate adds less, like the leading directions of a natural source.
  It is NOT a trained GAN: its images are smooth colored blob patterns, not photos, and its R-D curve is not the
  paper's basenji curve. What carries over is the structure the sandwich experiment needs: a known intrinsic
  dimension, a smooth generator, and a 49152-dimensional ambient space.
"""
import os

import numpy as np

from utils.cli import InputError

LATENT_MAX = 128
TRUNCATION = 0.8
IMAGE_SHAPE = (128, 128, 3)
BIGGAN_ENV = "RDS_BIGGAN_MODULE"
BIGGAN_URL = "https://tfhub.dev/deepmind/biggan-deep-128/1"
BIGGAN_CLASSES = {"basenji": 253, "beagle": 162, "jay": 17, "magpie": 18}  # ImageNet class indices
NAMES = ("lowgan",) + tuple(BIGGAN_CLASSES)
LOWGAN_SEED = 20220125
_LOWGAN_WIDTHS = (128, 64, 32, 16, 8)  # channels at 4x4, 8x8, 16x16, 32x32, 64x64; the 128x128 output has 3
# The last stage's 3 channels -> RGB logits: a luminance channel and two weaker color-difference channels, so that
# colors are muted as in photos rather than saturated.
_COLOR_MIX = np.array([[1.2, 1.2, 1.2], [0.45, 0.0, -0.45], [-0.25, 0.4, -0.15]], np.float32)
_CHUNK = 256  # images generated per call (bounds memory)


def is_gan_source(name):
    return name in NAMES


def truncated_latents(n, data_dim, seed=None):
    """n latents [n, LATENT_MAX]: TRUNCATION * N(0, 1) truncated to [-2, 2] in the first data_dim coordinates, 0 after.

    `seed` is anything np.random.default_rng takes (an int, a list of ints).
    """
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, data_dim))
    bad = np.abs(z) > 2
    while bad.any():  # rejection: exact truncated normal
        z[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(z) > 2
    out = np.zeros((n, LATENT_MAX), np.float32)
    out[:, :data_dim] = TRUNCATION * z
    return out


class _GanSource:
    """What every GAN source shares: latents, numpy samples, and the tf.data pipeline. Subclasses define
    `generate(z)`: a float32 tensor [n, 128, 128, 3] in [0, 1] from latents [n, LATENT_MAX]."""
    shape = IMAGE_SHAPE
    dim = int(np.prod(IMAGE_SHAPE))
    gaussian_var = None

    def __init__(self, name, data_dim):
        if data_dim is None:
            raise InputError(f"--dataset {name} needs --data_dim, the number of nonzero latent coordinates "
                             f"(1 to {LATENT_MAX})")
        if not 1 <= data_dim <= LATENT_MAX:
            raise InputError(f"--data_dim {data_dim}: the {name} generator has {LATENT_MAX} latent coordinates; "
                             f"choose 1 to {LATENT_MAX}")
        self.name, self.latent_dim = name, int(data_dim)

    def generate(self, z):
        raise NotImplementedError

    def images(self, z):
        """Images (numpy, float32 [n, 128, 128, 3] in [0, 1]) of given latents [n, LATENT_MAX], in chunks."""
        import tensorflow as tf
        z = np.asarray(z, np.float32)
        parts = [self.generate(tf.constant(z[i:i + _CHUNK])).numpy() for i in range(0, len(z), _CHUNK)]
        return np.concatenate(parts) if parts else np.zeros((0,) + self.shape, np.float32)

    def sample(self, n, seed=None):
        return self.images(truncated_latents(n, self.latent_dim, seed))

    def test_set(self, n, seed=None):
        # Fresh draws from a stream separate from training's (as utils.sources does).
        return self.sample(n, seed=None if seed is None else [seed, 7919])

    def dataset(self, batchsize, seed=0):
        """An endless tf.data pipeline of [batchsize, 128, 128, 3] float32 batches in [0, 1], fixed by `seed`."""
        import tensorflow as tf
        d = self.latent_dim

        def draw(s):
            z = TRUNCATION * tf.random.stateless_truncated_normal(
                [batchsize, d], seed=tf.stack([s, tf.constant(seed, tf.int64)]))
            return self.generate(tf.pad(z, [[0, 0], [0, LATENT_MAX - d]]))

        return tf.data.Dataset.random(seed=seed).map(draw)


class LowGAN(_GanSource):
    """The seeded stand-in generator described in the module docstring."""

    def __init__(self, data_dim, generator_seed=LOWGAN_SEED):
        super().__init__("lowgan", data_dim)
        self.generator_seed = generator_seed
        rng = np.random.default_rng(generator_seed)
        c0 = _LOWGAN_WIDTHS[0]
        # Latent coordinate k enters with weight ~ 1/sqrt(k+1): the leading coordinates matter most.
        decay = 1.0 / np.sqrt(np.arange(1, LATENT_MAX + 1))[:, None]
        self.dense_w = (rng.standard_normal((LATENT_MAX, 16 * c0)) * decay).astype(np.float32)
        self.dense_b = rng.standard_normal(16 * c0).astype(np.float32)
        widths = _LOWGAN_WIDTHS[1:] + (3,)
        self.convs = []
        for c_in, c_out in zip(_LOWGAN_WIDTHS, widths):
            w = rng.standard_normal((3, 3, c_in, c_out)) / np.sqrt(9 * c_in)
            self.convs.append((w.astype(np.float32), (0.5 * rng.standard_normal(c_out)).astype(np.float32)))
        # Fixed normalization: the per-channel mean and std of every stage on a fixed batch of full latents.
        self.norms = []
        calibration = truncated_latents(64, LATENT_MAX, seed=generator_seed)
        import tensorflow as tf
        self._forward(tf.constant(calibration), calibrate=True)

    def _normalize(self, h, i, calibrate):
        import tensorflow as tf
        if calibrate:
            mean, var = tf.nn.moments(h, axes=[0, 1, 2])
            self.norms.append((mean.numpy(), np.sqrt(var.numpy()) + 1e-6))
        mean, std = self.norms[i]
        return (h - mean) / std

    def _forward(self, z, calibrate=False):
        import tensorflow as tf
        h = tf.reshape(tf.matmul(z, self.dense_w) + self.dense_b, [-1, 4, 4, _LOWGAN_WIDTHS[0]])
        h = tf.tanh(self._normalize(h, 0, calibrate))
        for i, (w, b) in enumerate(self.convs):
            size = 8 * 2 ** i
            h = tf.image.resize(h, [size, size], method="bilinear")
            h = tf.pad(h, [[0, 0], [1, 1], [1, 1], [0, 0]], "REFLECT")  # no dark frame from zero padding
            h = self._normalize(tf.nn.conv2d(h, w, 1, "VALID") + b, i + 1, calibrate)
            h = tf.tanh(h) if i < len(self.convs) - 1 else h
        return tf.sigmoid(tf.tensordot(h, _COLOR_MIX, 1))

    def generate(self, z):
        return self._forward(z)


class BigGAN(_GanSource):
    """BigGAN-deep-128 (Brock et al., 2019) from a local copy of its TF-Hub module, one ImageNet class."""

    def __init__(self, name, data_dim, module_path=None):
        super().__init__(name, data_dim)
        path = module_path or os.environ.get(BIGGAN_ENV)
        hint = "or use --dataset lowgan, the built-in stand-in generator"
        if not path:
            raise InputError(f"--dataset {name} samples BigGAN-deep-128: set ${BIGGAN_ENV} to a local copy of "
                             f"{BIGGAN_URL}, {hint}")
        if not os.path.isdir(path):
            raise InputError(f"${BIGGAN_ENV}={path} is not a folder; it should hold the unpacked module of "
                             f"{BIGGAN_URL}, {hint}")
        try:
            import tensorflow_hub as hub
        except ImportError:
            raise InputError(f"--dataset {name} needs the tensorflow_hub package of requirements.txt to load "
                             f"{path}, {hint}")
        try:
            self.module = hub.load(path)
        except Exception as e:  # a damaged or wrong folder: any loader error means the same to the user
            raise InputError(f"${BIGGAN_ENV}={path}: cannot load it as the BigGAN-deep-128 module ({e}), {hint}")
        if "default" not in self.module.signatures:
            raise InputError(f"${BIGGAN_ENV}={path} loads, but has no 'default' signature (z, y, truncation -> "
                             f"image) as {BIGGAN_URL} has, {hint}")
        self.label = np.eye(1000, dtype=np.float32)[BIGGAN_CLASSES[name]]

    def generate(self, z):
        import tensorflow as tf
        n = tf.shape(z)[0]
        out = self.module.signatures["default"](z=z, y=tf.tile(self.label[None], [n, 1]),
                                                truncation=tf.constant(TRUNCATION))
        image = out["default"] if isinstance(out, dict) else out
        return tf.clip_by_value((image + 1.0) / 2.0, 0.0, 1.0)  # the module outputs [-1, 1]


def make_gan_source(name, data_dim, generator_seed=LOWGAN_SEED, module_path=None):
    """A GAN source by name: `lowgan` (generator_seed picks its weights; keep the default for the package's
    source), or a BigGAN class in BIGGAN_CLASSES (module_path, or $RDS_BIGGAN_MODULE, names the module folder)."""
    if name == "lowgan":
        return LowGAN(data_dim, generator_seed)
    if name in BIGGAN_CLASSES:
        return BigGAN(name, data_dim, module_path)
    raise InputError(f"--dataset {name!r} is not a GAN source; choose one of {', '.join(NAMES)}")
