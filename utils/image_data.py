"""What an image model trains and evaluates on: an image set (utils.images) or a GAN source (utils.gan_sources).

mbt2018.py, ms2020.py and resnet_vae.py all take `--dataset` with `--data_dim`:

    source = image_data.gan_source(args.dataset, args.data_dim)   # None for an image set
    train_ds, val_ds = image_data.training_data(args.dataset, source, patchsize, batchsize, seed)
    for name, image, channels in image_data.eval_items(args.dataset, source, args.batchsize, args.seed): ...

Images enter the models on [0, 255]: image files as uint8, GAN images as float32 (their alphabet is continuous,
so they are never rounded on the way in).

The sandwich with rdlb.py: an image model's Lagrangian, bpp + lambda * MSE on [0, 255], times the pixels and
ln 2, is rdlb.py's nats per image + lamb * MSE on [0, 1] at lamb = rdlb_lamb(lambda, source).
"""
import math

from utils import gan_sources, images
from utils.cli import InputError


def gan_source(dataset, data_dim, what="--dataset"):
    """The GAN source named by `dataset` (checking --data_dim), or None for an image set (checked here too,
    so that a typo fails before a run folder exists)."""
    if gan_sources.is_gan_source(dataset):
        return gan_sources.make_gan_source(dataset, data_dim)
    if data_dim is not None:
        raise InputError(f"--data_dim applies to the GAN sources ({', '.join(gan_sources.NAMES)}), "
                         f"not to {what} {dataset}")
    if str(dataset).endswith(".npy") or dataset in images.NAMED:
        return None
    try:
        images.list_images(dataset, what=what)
    except InputError as e:
        raise InputError(f"{e}; or a GAN source: {', '.join(gan_sources.NAMES)}")
    return None


def training_data(dataset, source, patchsize, batchsize, seed, what="--dataset"):
    """(endless training batches, validation batches or None), float32 on [0, 255].

    An image set gives random `patchsize` crops and validates on its val split; a GAN source gives whole images
    (128x128, `patchsize` unused) and validates on a fixed seeded stream, the same draws every epoch (endless:
    utils.training.fit takes its first --max_validation_steps batches)."""
    if source is not None:
        scaled = lambda x: x * 255.0  # noqa: E731
        return source.dataset(batchsize, seed).map(scaled), source.dataset(batchsize, seed + 1).map(scaled)
    return (images.training_dataset(dataset, patchsize, batchsize, seed, "train", what),
            images.validation_dataset(dataset, patchsize, batchsize, what=what))


def eval_items(dataset, source, num_samples, seed):
    """Yields (name, image [H, W, 3] on [0, 255], channels of the source) of the evaluation set: the files of
    an image set (uint8), or `num_samples` held-out GAN draws (float32)."""
    if source is None:
        yield from images.eval_images(dataset)
        return
    x = source.test_set(num_samples, seed=seed) * 255.0
    width = len(str(len(x) - 1))
    for i, img in enumerate(x):
        yield f"{i:0{width}d}", img, 3


def label(dataset, source):
    """The dataset part of eval file names: `kodak`, `lowgan-data_dim=2`, ..."""
    return images.dataset_label(dataset) if source is None else f"{source.name}-data_dim={source.latent_dim}"


def rdlb_lamb(lmbda, source):
    """rdlb.py's lamb (nats per image + lamb * MSE on [0, 1]) equivalent to an image model's lambda on `source`."""
    h, w = source.shape[:2]
    return lmbda * h * w * math.log(2) * 255.0 ** 2
