"""Data sources for the vector (non-image) experiments, and the one data setting `RDS_DATA_DIR`.

Every source has a dimension `dim` and gives
- `sample(n, seed)`: n training samples as a float32 array [n, dim] (numpy, for BA and evaluation);
- `test_set(n, seed)`: held-out samples (a file's `split=test` twin, or fresh draws of a sampler);
- `dataset(batchsize, seed)`: an endless, shuffled tf.data pipeline of training batches;
- `gaussian_var`: the per-dimension variances when the analytic R(D) is known, else None.
"""
import math
import os
import types
import warnings
from pathlib import Path

import numpy as np

from utils.cli import InputError

DATA_ENV = "RDS_DATA_DIR"


def data_dir():
    """Where named datasets live: $RDS_DATA_DIR, or `data/` when it is unset."""
    return Path(os.environ.get(DATA_ENV) or "data")


def resolve_path(path, what="file"):
    """Finds a data file as given, or, for a relative path under `data/`, under $RDS_DATA_DIR instead.

    This lets the paper's commands (`--samples data/physics/...`) run as written with the data elsewhere.
    """
    p = Path(path)
    if p.exists():
        return p
    tried = [str(p)]
    if not p.is_absolute() and p.parts and p.parts[0] == "data" and len(p.parts) > 1:
        q = data_dir().joinpath(*p.parts[1:])
        if q.exists():
            return q
        tried.append(str(q))
    raise InputError(f"{what} not found: {path} (looked at {', '.join(tried)}; set ${DATA_ENV} to the data folder)")


def load_samples(path, what="--samples"):
    """Loads an .npy of samples [N, n] as float64, checking shape, dtype and finiteness."""
    p = resolve_path(path, what)
    try:
        a = np.load(p, allow_pickle=False)
    except Exception as e:  # a damaged or non-npy file
        raise InputError(f"{what}: cannot read {p} as .npy: {e}")
    if not np.issubdtype(a.dtype, np.floating):
        raise InputError(f"{what}: {p} holds {a.dtype} values; expected floating-point samples")
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
        raise InputError(f"{what}: {p} has shape {a.shape}; expected a 2-d array [num_samples, dim]")
    bad = ~np.isfinite(a).all(axis=1)
    if bad.any():
        raise InputError(f"{what}: {p} has {int(bad.sum())} rows with NaN or inf (first: row {int(np.argmax(bad))})")
    return a.astype(np.float64)


# ---- samplers -----------------------------------------------------------------------------------

_NP = types.SimpleNamespace(stack=np.stack, matmul=np.matmul, cos=math.cos, sin=math.sin,
                            softplus=lambda x: np.logaddexp(0.0, x))


def _tf_ops():
    import tensorflow as tf
    return types.SimpleNamespace(stack=tf.stack, matmul=tf.matmul, cos=math.cos, sin=math.sin,
                                 softplus=tf.nn.softplus)


class _Sampler:
    """A source defined by a transform of standard normal noise, identical in numpy and TensorFlow."""
    noise_dim: int

    def transform(self, z, ops):
        raise NotImplementedError

    def sample(self, n, seed=None):
        z = np.random.default_rng(seed).standard_normal((n, self.noise_dim))
        return np.asarray(self.transform(z, _NP), dtype=np.float32)

    def test_set(self, n, seed=None):
        # Fresh draws from a stream separate from training's.
        return self.sample(n, seed=None if seed is None else seed + 7919)

    def dataset(self, batchsize, seed=0):
        import tensorflow as tf
        ops = _tf_ops()

        def draw(s):
            z = tf.random.stateless_normal([batchsize, self.noise_dim], seed=tf.stack([s, tf.constant(seed, tf.int64)]))
            return tf.cast(self.transform(z, ops), tf.float32)

        return tf.data.Dataset.random(seed=seed).map(draw)


class Gaussian(_Sampler):
    """N(loc, diag(scale^2)); zero mean and unit variance unless parameters are given."""

    def __init__(self, dim, loc=None, scale=None):
        self.dim = self.noise_dim = dim
        self.loc = np.zeros(dim, np.float32) if loc is None else np.asarray(loc, np.float32)
        self.scale = np.ones(dim, np.float32) if scale is None else np.asarray(scale, np.float32)
        self.gaussian_var = self.scale.astype(np.float64) ** 2
        self.name = "gaussian"

    def transform(self, z, ops):
        return z * self.scale + self.loc


def load_gaussian_params(path, data_dim):
    p = resolve_path(path, "--gparams_path")
    try:
        with np.load(p) as d:
            loc = np.asarray(d["loc"], np.float64)
            scale = np.asarray(d["scale"], np.float64) if "scale" in d else np.sqrt(np.asarray(d["var"], np.float64))
    except (KeyError, ValueError, OSError) as e:
        raise InputError(f"--gparams_path: {p} must be an .npz with arrays 'loc' and 'scale' (or 'var'): {e}")
    if loc.shape != scale.shape or loc.ndim != 1:
        raise InputError(f"--gparams_path: 'loc' {loc.shape} and 'scale' {scale.shape} must be 1-d of equal length")
    if not (np.all(np.isfinite(loc)) and np.all(scale > 0) and np.all(np.isfinite(scale))):
        raise InputError(f"--gparams_path: {p} needs finite 'loc' and positive finite 'scale'")
    if data_dim is not None and loc.size != data_dim:
        raise InputError(f"--data_dim {data_dim} does not match {p}, whose Gaussian has {loc.size} dimensions")
    return loc, scale


class Banana(_Sampler):
    """The banana-shaped 2-d source of Ballé et al. (2021), optionally embedded in n > 2 dimensions.

    x = R(240 deg)^T (z0, z1 - 0.1 z0^2) - 1 with z ~ N(0, diag(3^2, 0.5^2)). For n > 2, x is mapped by a
    fixed random map softplus(x W), W a Glorot-uniform 2 x n matrix drawn with `embed_seed` (the same for every
    run, so runs with different --seed see the same source; the paper's map has the same form, other weights).
    """
    noise_dim = 2

    def __init__(self, dim=2, embed_seed=0):
        if dim < 2:
            raise InputError(f"--data_dim {dim}: the banana source has at least 2 dimensions")
        self.dim = dim
        self.name = "banana"
        self.gaussian_var = None
        self.embedding = None
        if dim > 2:
            limit = math.sqrt(6.0 / (2 + dim))
            self.embedding = np.random.default_rng(embed_seed).uniform(-limit, limit, (2, dim)).astype(np.float32)

    def transform(self, z, ops):
        z0, z1 = 3.0 * z[:, 0], 0.5 * z[:, 1]
        u0, u1 = z0, z1 - 0.1 * z0 ** 2
        c, s = ops.cos(math.radians(240)), ops.sin(math.radians(240))
        x = ops.stack([c * u0 + s * u1 - 1.0, -s * u0 + c * u1 - 1.0], 1)
        if self.embedding is not None:
            x = ops.softplus(ops.matmul(x, self.embedding))
        return x


# ---- sample files -------------------------------------------------------------------------------

def test_twin(path):
    """The `split=test` file beside a `split=train` file, or None."""
    p = Path(path)
    if "split=train" not in p.name:
        return None
    twin = p.with_name(p.name.replace("split=train", "split=test"))
    return twin if twin.exists() else None


class SampleFile:
    """Samples from an .npy file; shuffled and repeated for training, the test twin for held-out data."""

    def __init__(self, path, data_dim=None):
        self.path = resolve_path(path, "--dataset")
        self.train = load_samples(self.path, "--dataset").astype(np.float32)
        self.dim = self.train.shape[1]
        if data_dim is not None and data_dim != self.dim:
            raise InputError(f"--data_dim {data_dim} does not match {self.path}, whose samples have {self.dim} dimensions")
        twin = test_twin(self.path)
        self.test_split = "test"
        if "split=test" in self.path.name:  # a held-out file itself (the paper's eval commands name one): its rows
            self.test = self.train
        elif twin is None:
            warnings.warn(f"no split=test twin of {self.path}: held-out figures use the training samples")
            self.test, self.test_split = self.train, "train"
        else:
            self.test = load_samples(twin, "test twin").astype(np.float32)
            if self.test.shape[1] != self.dim:
                raise InputError(f"{twin} has {self.test.shape[1]} dimensions but {self.path} has {self.dim}")
        self.name = self.path.stem
        self.gaussian_var = None

    def sample(self, n, seed=None):
        idx = np.random.default_rng(seed).choice(len(self.train), size=n, replace=n > len(self.train))
        return self.train[idx]

    def test_set(self, n=None, seed=None):
        if n is None or n >= len(self.test):
            return self.test
        return self.test[np.random.default_rng(seed).choice(len(self.test), n, replace=False)]

    def dataset(self, batchsize, seed=0):
        import tensorflow as tf
        ds = tf.data.Dataset.from_tensor_slices(self.train)
        return ds.shuffle(len(self.train), seed=seed, reshuffle_each_iteration=True).repeat().batch(batchsize)


def make_source(name, data_dim=None, gparams_path=None):
    """`gaussian`, `banana`, a GAN-image source (`lowgan`, `basenji`, ...; `data_dim` is its latent dimension),
    or a path to an .npy of samples (a `split=train` file finds its test twin) or of images [N, H, W, C]."""
    from utils.gan_sources import is_gan_source, make_gan_source
    if is_gan_source(name):
        return make_gan_source(name, data_dim)
    if name == "gaussian":
        if gparams_path:
            loc, scale = load_gaussian_params(gparams_path, data_dim)
            return Gaussian(loc.size, loc, scale)
        if data_dim is None or data_dim < 1:
            raise InputError("--data_dim must be given (>= 1) for the gaussian source without --gparams_path")
        return Gaussian(data_dim)
    if name == "banana":
        return Banana(2 if data_dim is None else data_dim)
    if name.endswith(".npy"):
        return ImageFile(name, data_dim) if _npy_ndim(name) == 4 else SampleFile(name, data_dim)
    raise InputError(f"--dataset {name!r}: expected 'gaussian', 'banana', a GAN-image source (lowgan, basenji, "
                     f"beagle, jay, magpie), or a path to an .npy file of samples")


# ---- image arrays -------------------------------------------------------------------------------

def _npy_ndim(path):
    """The rank of the array in an .npy file, read from its header only (0 when it cannot be read)."""
    try:
        return np.load(resolve_path(path, "--dataset"), mmap_mode="r", allow_pickle=False).ndim
    except (ValueError, OSError):
        return 0


class ImageFile:
    """Float images [N, H, W, C] from an .npy file (e.g. samples of a generator); `dim` = H * W * C."""

    def __init__(self, path, data_dim=None):
        self.path = resolve_path(path, "--dataset")
        a = np.load(self.path, allow_pickle=False)
        if not np.issubdtype(a.dtype, np.floating) or not np.all(np.isfinite(a)):
            raise InputError(f"--dataset: {self.path} must hold finite floating-point images, got {a.dtype}")
        self.images = a.astype(np.float32)
        self.shape = self.images.shape[1:]
        self.dim = int(np.prod(self.shape))
        if data_dim is not None and data_dim != self.dim:
            raise InputError(f"--data_dim {data_dim} does not match {self.path}, whose images {self.shape} have "
                             f"{self.dim} values")
        self.name = self.path.stem
        self.gaussian_var = None

    def sample(self, n, seed=None):
        idx = np.random.default_rng(seed).choice(len(self.images), size=n, replace=n > len(self.images))
        return self.images[idx]

    def test_set(self, n=None, seed=None):
        return self.images if n is None else self.sample(n, seed)

    def dataset(self, batchsize, seed=0):
        import tensorflow as tf
        ds = tf.data.Dataset.from_tensor_slices(self.images)
        return ds.shuffle(len(self.images), seed=seed, reshuffle_each_iteration=True).repeat().batch(batchsize)
