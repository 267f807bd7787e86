"""MNIST-style digits for lossless coding: IDX files, their 8-bit grey levels, dynamic binarization, binary .npy
files.

Named datasets live under `$RDS_DATA_DIR/mnist` (`mnist`: the classic `train-images-idx3-ubyte.gz` and
`t10k-...`) or `$RDS_DATA_DIR/emnist` (`emnist-mnist`, `emnist-letters`: `emnist-<split>-{train,test}-images-
idx3-ubyte.gz`, stored transposed, so they are turned back to the classic orientation here). `grey_levels` keeps
the 8-bit images 28x28 (resnet_vae.py's lossless model); the rest flatten them row-major to 784 values.

Binarization is dynamic, as in the IWAE and McBits papers: a pixel of grey level g is 1 with probability
g / 255. Training draws afresh every time an image is used; the test split is drawn once, from a fixed seed,
so that every run codes the same bits. An `.npy` of images that are already binary is taken as it is.
"""
import gzip
import struct

import numpy as np

from utils.cli import InputError
from utils.sources import data_dir, resolve_path

DIM = 784
NAMED = ("mnist", "emnist-mnist", "emnist-letters")
TEST_SEED = 0  # the fixed draw of the binarized test split


def _idx_path(name, split):
    if name == "mnist":
        return data_dir() / "mnist" / f"{'train' if split == 'train' else 't10k'}-images-idx3-ubyte.gz"
    return data_dir() / "emnist" / f"{name}-{split}-images-idx3-ubyte.gz"


def read_idx_images(path):
    """uint8 images [N, rows, cols] from an IDX3 file (gzipped or plain)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise InputError(f"cannot read {path}: {e}")
    if len(data) < 16:
        raise InputError(f"{path}: not an IDX image file (only {len(data)} bytes)")
    magic, n, rows, cols = struct.unpack(">IIII", data[:16])
    if magic != 0x803 or len(data) != 16 + n * rows * cols:
        raise InputError(f"{path}: not an IDX3 uint8 image file (magic {magic:#x}, {len(data)} bytes for "
                         f"{n}x{rows}x{cols})")
    return np.frombuffer(data, np.uint8, offset=16).reshape(n, rows, cols)


def grey_levels(name, split):
    """The 8-bit images uint8 [N, 28, 28] of a named dataset's split ('train' or 'test')."""
    path = _idx_path(name, split)
    if not path.exists():
        raise InputError(f"--dataset {name}: {path} not found (set $RDS_DATA_DIR to the data folder)")
    images = read_idx_images(path)
    if name.startswith("emnist"):
        images = images.transpose(0, 2, 1)  # EMNIST's IDX files hold the images transposed
    if images.shape[1:] != (28, 28):
        raise InputError(f"{path}: images of {images.shape[1:]} pixels; expected 28x28")
    return images


def greys(name, split):
    """Grey levels in [0, 1] as float32 [N, 784] of a named dataset's split ('train' or 'test')."""
    return grey_levels(name, split).reshape(-1, DIM).astype(np.float32) / 255.0


def binarize(g, seed):
    """One Bernoulli(g) draw per pixel, as uint8 {0, 1}."""
    return (np.random.default_rng(seed).random(g.shape) < g).astype(np.uint8)


def load_binary_npy(path, what="--dataset"):
    """An .npy of binary images, uint8 [N, 28, 28] or [N, 784], as uint8 [N, 784]; refuses anything else."""
    p = resolve_path(path, what)  # a data/... path is also looked up under $RDS_DATA_DIR
    try:
        a = np.load(p, allow_pickle=False)
    except Exception as e:
        raise InputError(f"{what}: cannot read {p} as .npy: {e}")
    if a.ndim == 3 and a.shape[1:] == (28, 28):
        a = a.reshape(len(a), DIM)
    if a.ndim != 2 or a.shape[1] != DIM or len(a) < 1:
        raise InputError(f"{what}: {p} has shape {a.shape}; expected binary images [N, 28, 28] or [N, 784]")
    if a.dtype != np.uint8 and not np.issubdtype(a.dtype, np.integer) and a.dtype != np.bool_:
        raise InputError(f"{what}: {p} holds {a.dtype} values; expected uint8 images of 0s and 1s")
    if not np.isin(a, (0, 1)).all():
        bad = int(np.argmax(~np.isin(a, (0, 1)).all(axis=1)))
        raise InputError(f"{what}: {p} is not binary (image {bad} has values other than 0 and 1)")
    return a.astype(np.uint8)


def test_images(dataset, num=None):
    """The binary test images [N, 784] uint8 of a named dataset (fixed draw) or of a binary .npy."""
    if dataset in NAMED:
        x = binarize(greys(dataset, "test"), TEST_SEED)
    elif dataset.endswith(".npy"):
        x = load_binary_npy(dataset)
    else:
        raise InputError(f"--dataset {dataset}: expected one of {', '.join(NAMED)} or a path to an .npy")
    return x if num is None else x[:num]
