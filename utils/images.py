"""Images: reading and writing, padding and cropping, PSNR and MS-SSIM, and the image data pipelines.

Pixels are uint8 on disk and float32 in [0, 255] inside models; distortion is measured on the [0, 255] scale.

An image set is named by `--dataset` or `--train_glob`:
- a folder name under $RDS_DATA_DIR (see NAMED): `kodak`, `tecnick`, `bsds500`, `clic`, `cocotrain`;
- a glob of image files (`'train2017/*.jpg'`) or a folder of images (`data/...` is looked up under
  $RDS_DATA_DIR when it does not exist as given, as utils.sources.resolve_path does for files);
- an `.npy` batch of uint8 images [N, H, W, 3] (or [N, H, W] for grayscale).

TensorFlow is imported inside the functions that use it, so that prepare_imgs.py starts without it.
"""
import glob
import hashlib
import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from utils.cli import InputError
from utils.runs import atomic_write_bytes
from utils.sources import data_dir

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".webp")

# Named sets: name -> {split: folders under $RDS_DATA_DIR, the first existing candidate wins}.
# bsds500 stands in for COCO: its train and test folders (400 photos) train, its val folder (100) validates.
NAMED = {
    "kodak": {"all": [["kodak"]]},
    "tecnick": {"all": [["Tecnick_TESTIMAGES"], ["tecnick-sample"]]},
    "bsds500": {"train": [["bsds500/train", "bsds500/test"]], "val": [["bsds500/val"]], "all": [["bsds500/test"]]},
    "clic": {"all": [["clic-sample"]]},
    "cocotrain": {"all": [["my_coco_train2017"]]},
}


# ---- single images ------------------------------------------------------------------------------

def read_image(path, what="image"):
    """Reads an image file as (uint8 array [H, W, 3], channels_of_source, note).

    Grayscale sources are replicated to RGB (channels_of_source = 1, so they can be written back as grayscale);
    an alpha channel is dropped and `note` says so; otherwise note is None.
    """
    try:
        with Image.open(path) as im:
            im.load()
            mode, has_alpha = im.mode, im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info
            if mode in ("L", "LA", "I;16", "I", "F", "1"):
                if mode in ("I;16", "I", "F"):
                    raise InputError(f"{what} {path}: {mode} (high bit depth) images are not supported; "
                                     f"convert to 8-bit first")
                gray = np.asarray(im.convert("L"), dtype=np.uint8)
                rgb, channels = np.repeat(gray[..., None], 3, axis=2), 1
            else:
                rgb, channels = np.asarray(im.convert("RGB"), dtype=np.uint8), 3
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise InputError(f"{what} {path}: cannot read as an image: {e}")
    note = f"{path}: dropped the alpha channel (transparency is not coded)" if has_alpha else None
    return np.ascontiguousarray(rgb), channels, note


def to_channels(rgb, channels):
    """A decoded RGB uint8 image back in the source's channels: grayscale is the rounded channel mean."""
    if channels == 3:
        return rgb
    return np.round(rgb.astype(np.float64).mean(axis=2)).astype(np.uint8)


def encode_image(image, **save_options):
    """The bytes of a uint8 image [H, W, 3] or [H, W] as Pillow saves it with these options (format=...)."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).save(buf, **save_options)
    return buf.getvalue()


def encode_png(image):
    """PNG bytes of a uint8 image [H, W, 3] or [H, W]."""
    return encode_image(image, format="PNG")


def lossless_sizes(image):
    """Bytes of a uint8 image [H, W, 3] or [H, W] in the lossless formats a codec is compared with: PNG
    (Pillow, optimize=True) and lossless WebP (method 6, the slowest and smallest)."""
    return {"png": len(encode_image(image, format="PNG", optimize=True)),
            "webp": len(encode_image(image, format="WEBP", lossless=True, quality=100, method=6))}


def to_uint8(x_hat):
    """The image a float reconstruction on [0, 255] decodes to."""
    return np.clip(np.round(x_hat), 0, 255).astype(np.uint8)


def write_png(path, image):
    """Writes a PNG atomically (never a half-written file)."""
    atomic_write_bytes(path, encode_png(image))


# ---- padding (TensorFlow, used inside the codecs' tf.functions) -----------------------------------

def pad_to_multiple(x, multiple):
    """Pads a [..., H, W, C] tensor on the bottom and right to multiples of `multiple` by repeating the edge.

    Edge replication (unlike reflection) works for any size, including images smaller than the padding, and
    costs fewer bits than zeros. Returns the padded tensor; crop back with x[..., :H, :W, :].
    """
    import tensorflow as tf
    shape = tf.shape(x)
    h, w = shape[-3], shape[-2]
    hp = (h + multiple - 1) // multiple * multiple
    wp = (w + multiple - 1) // multiple * multiple
    x = tf.gather(x, tf.minimum(tf.range(hp), h - 1), axis=x.shape.rank - 3)
    return tf.gather(x, tf.minimum(tf.range(wp), w - 1), axis=x.shape.rank - 2)


# ---- metrics ------------------------------------------------------------------------------------

def mse(x, y):
    """Mean squared error over all pixels and channels, on the [0, 255] scale (float64)."""
    d = np.asarray(x, np.float64) - np.asarray(y, np.float64)
    return float(np.mean(d * d))


def psnr(mse_value, peak=255.0):
    return float("inf") if mse_value == 0 else float(10 * np.log10(peak * peak / mse_value))


MSSSIM_MIN_SIDE = 161  # 5 scales of an 11-tap filter: (11 - 1) * 2**4 + 1


def ms_ssim(x, y):
    """MS-SSIM (5 scales, peak 255) of two [H, W, C] or [H, W] images; NaN when a side is under 161 pixels."""
    import tensorflow as tf
    x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)
    if min(x.shape[:2]) < MSSSIM_MIN_SIDE:
        return float("nan")
    if x.ndim == 2:
        x, y = x[..., None], y[..., None]
    return float(tf.image.ssim_multiscale(x, y, max_val=255.0))


# ---- image sets ---------------------------------------------------------------------------------

def _files_in(folder):
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _match(spec):
    if os.path.isdir(spec):
        return _files_in(spec)
    return sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).suffix.lower() in IMAGE_SUFFIXES)


def list_images(spec, split="all", what="--dataset"):
    """The sorted image files of a named set, a folder, or a glob; InputError if there are none."""
    if spec in NAMED:
        splits = NAMED[spec]
        candidates = splits.get(split, splits["all"])
        for folders in candidates:
            paths = [data_dir() / f for f in folders]
            if all(p.is_dir() for p in paths):
                files = [f for p in paths for f in _files_in(p)]
                if files:
                    return files
        tried = ", ".join(str(data_dir() / f) for folders in candidates for f in folders)
        raise InputError(f"{what} {spec}: no images found (looked in {tried}; set $RDS_DATA_DIR to the data folder)")
    files = _match(spec)
    parts = Path(spec).parts
    if not files and len(parts) > 1 and parts[0] == "data":  # the paper's data/... paths, as resolve_path
        files = _match(str(data_dir().joinpath(*parts[1:])))
    if not files:
        raise InputError(f"{what} {spec!r}: no image files match (expected one of {', '.join(NAMED)}, "
                         f"a folder, a glob, or an .npy of uint8 images)")
    return files


def load_npy_images(path, what="--dataset"):
    """An .npy batch of uint8 images as [N, H, W, 3] (grayscale [N, H, W] is replicated)."""
    try:
        a = np.load(path, allow_pickle=False)
    except Exception as e:
        raise InputError(f"{what}: cannot read {path} as .npy: {e}")
    if a.dtype != np.uint8:
        raise InputError(f"{what}: {path} holds {a.dtype}; expected uint8 images")
    if a.ndim == 3:
        a = np.repeat(a[..., None], 3, axis=3)
    if a.ndim != 4 or a.shape[-1] != 3 or a.shape[0] < 1:
        raise InputError(f"{what}: {path} has shape {a.shape}; expected [N, H, W, 3] or [N, H, W]")
    return a


def eval_images(spec, what="--dataset"):
    """Yields (name, uint8 image [H, W, 3], channels_of_source) for every image of an evaluation set."""
    if str(spec).endswith(".npy"):
        a = load_npy_images(spec, what)
        width = len(str(len(a) - 1))
        for i, img in enumerate(a):
            yield f"{i:0{width}d}", img, 3
        return
    for path in list_images(spec, "all", what):
        img, channels, note = read_image(path)
        if note:
            warnings.warn(note)
        yield path.name, img, channels


def _selection(spec):
    """(label, image names, whether they are a subset) of a folder or glob: see dataset_label."""
    files = list_images(spec)
    folder = Path(spec) if os.path.isdir(spec) else Path(os.path.commonpath([str(f.parent) for f in files]))
    name = folder.resolve().name or "images"
    names = [f.relative_to(folder).as_posix() for f in files]
    if len(files) == len(_files_in(folder)):  # the files of a glob lie under `folder`: equal counts, equal sets
        return name, names, False
    # The hash of the selected names (not their paths) is the same on every machine and differs between subsets.
    digest = hashlib.sha256("\n".join(names).encode()).hexdigest()[:8]
    return f"{name}-subset={digest}", names, True


def dataset_label(spec):
    """The name of an evaluated image set, in result file names and records: `kodak` for the named set and for
    a folder or glob that selects all the images of its folder; `kodak-subset=<8 hex digits>` for a glob that
    selects only some of them (a hash of their names, so a subset never takes the whole set's name and different
    subsets differ); the file's stem for an .npy batch."""
    if spec in NAMED:
        return spec
    s = str(spec)
    if s.endswith(".npy"):
        return Path(s).stem
    return _selection(s)[0]


def dataset_record(spec):
    """The fields of an eval record that say what was evaluated: `dataset` (dataset_label) and, for a subset,
    `subset_of` (the whole set's label) and `images` (the names of the images, relative to their folder)."""
    s = str(spec)
    if spec in NAMED or s.endswith(".npy"):
        return dict(dataset=dataset_label(spec))
    label, names, subset = _selection(s)
    return dict(dataset=label, subset_of=label.split("-subset=")[0], images=names) if subset else dict(dataset=label)


def _big_enough(files, patchsize):
    keep = []
    for f in files:
        try:
            with Image.open(f) as im:
                if min(im.size) >= patchsize:
                    keep.append(str(f))
        except OSError:
            warnings.warn(f"skipping unreadable image {f}")
    return keep


def training_dataset(spec, patchsize, batchsize, seed=0, split="train", what="--train_glob"):
    """An endless tf.data pipeline of random [batchsize, patchsize, patchsize, 3] float32 crops in [0, 255].

    Files are shuffled each pass; images smaller than the patch are left out (InputError if all are).
    """
    import tensorflow as tf
    crops = tf.data.Dataset.random(seed=seed).batch(2)
    if str(spec).endswith(".npy"):
        a = load_npy_images(spec, what)
        if min(a.shape[1:3]) < patchsize:
            raise InputError(f"{what} {spec}: images {a.shape[1]}x{a.shape[2]} are smaller than "
                             f"--patchsize {patchsize}")
        images = tf.data.Dataset.from_tensor_slices(a).shuffle(len(a), seed=seed).repeat()
    else:
        files = _big_enough(list_images(spec, split, what), patchsize)
        if not files:
            raise InputError(f"{what} {spec}: no image is at least {patchsize}x{patchsize} (--patchsize {patchsize})")
        images = (tf.data.Dataset.from_tensor_slices(files).shuffle(len(files), seed=seed).repeat()
                  .map(_decode_file, num_parallel_calls=tf.data.AUTOTUNE))

    def crop(image, s):
        return tf.cast(tf.image.stateless_random_crop(image, (patchsize, patchsize, 3), seed=s), tf.float32)

    return (tf.data.Dataset.zip((images, crops)).map(crop, num_parallel_calls=tf.data.AUTOTUNE)
            .batch(batchsize, drop_remainder=True).prefetch(tf.data.AUTOTUNE))


def validation_dataset(spec, patchsize, batchsize, max_images=None, what="--train_glob"):
    """A finite pipeline of center crops of held-out images, or None when the set has no validation split.

    Named sets with a `val` split use it; an .npy batch or a glob has none (then training is not validated).
    """
    import tensorflow as tf
    if spec not in NAMED or "val" not in NAMED[spec]:
        return None
    files = _big_enough(list_images(spec, "val", what), patchsize)[:max_images]
    if not files:
        return None

    def center(image):
        return tf.cast(tf.image.resize_with_crop_or_pad(image, patchsize, patchsize), tf.float32)

    return (tf.data.Dataset.from_tensor_slices(files).map(_decode_file).map(center)
            .batch(batchsize).prefetch(tf.data.AUTOTUNE))


def _decode_file(path):
    import tensorflow as tf
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image
