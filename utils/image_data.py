"""What an image model trains and evaluates on: an image set (utils.images) or a GAN source (utils.gan_sources).

mbt2018.py, ms2020.py and resnet_vae.py all take `--dataset` with `--data_dim`:

    source = image_data.gan_source(args.dataset, args.data_dim)   # None for an image set
    train_ds, val_ds = image_data.training_data(args.dataset, source, patchsize, batchsize, seed)
    for name, image, channels in image_data.eval_items(args.dataset, source, args.batchsize, args.seed): ...

Images enter the models on [0, 255]: image files as uint8, GAN images as float32 (their alphabet is continuous,
so they are never rounded on the way in). The MNIST sets (`mnist`, `emnist-*`) are 28x28 grey levels, one
channel, for resnet_vae.py's lossless model: it trains on whole images of the training split but its last
MNIST_VAL, validates on those, and evaluates on the first `num_samples` test images.

The sandwich with rdlb.py: an image model's Lagrangian, bpp + lambda * MSE on [0, 255], times the pixels and
ln 2, is rdlb.py's nats per image + lamb * MSE on [0, 1] at lamb = rdlb_lamb(lambda, source).
"""
import math

from utils import gan_sources, images, mnist
from utils.cli import InputError

MNIST_VAL = 5000  # training images held out for validation


def gan_source(dataset, data_dim, what="--dataset"):
    """The GAN source named by `dataset` (checking --data_dim), or None for an image set (checked here too,
    so that a typo fails before a run folder exists)."""
    if gan_sources.is_gan_source(dataset):
        return gan_sources.make_gan_source(dataset, data_dim)
    if data_dim is not None:
        raise InputError(f"--data_dim applies to the GAN sources ({', '.join(gan_sources.NAMES)}), "
                         f"not to {what} {dataset}")
    if str(dataset).endswith(".npy") or dataset in images.NAMED or dataset in mnist.NAMED:
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
    if dataset in mnist.NAMED:
        return mnist_data(dataset, batchsize, seed)
    return (images.training_dataset(dataset, patchsize, batchsize, seed, "train", what),
            images.validation_dataset(dataset, patchsize, batchsize, what=what))


def mnist_data(dataset, batchsize, seed):
    import tensorflow as tf
    x = mnist.grey_levels(dataset, "train")[..., None].astype("float32")
    train = tf.data.Dataset.from_tensor_slices(x[:-MNIST_VAL]).shuffle(len(x) - MNIST_VAL, seed=seed).repeat()
    val = tf.data.Dataset.from_tensor_slices(x[-MNIST_VAL:])
    return train.batch(batchsize, drop_remainder=True).prefetch(tf.data.AUTOTUNE), val.batch(batchsize)


def eval_items(dataset, source, num_samples, seed):
    """Yields (name, image [H, W, C] on [0, 255], channels of the source) of the evaluation set: the files of
    an image set (uint8, C = 3), the first `num_samples` MNIST test images (uint8, C = 1), or `num_samples`
    held-out GAN draws (float32, C = 3)."""
    if dataset in mnist.NAMED:
        x = mnist.grey_levels(dataset, "test")[:num_samples]
        for i, img in enumerate(x):
            yield f"{dataset}-test{i:05d}", img[..., None], 1
        return
    if source is None:
        yield from images.eval_images(dataset)
        return
    x = source.test_set(num_samples, seed=seed) * 255.0
    width = len(str(len(x) - 1))
    for i, img in enumerate(x):
        yield f"{i:0{width}d}", img, 3


def label(dataset, source):
    """The dataset part of eval file names: `kodak`, `mnist`, `lowgan-data_dim=2`, ..."""
    if source is not None:
        return f"{source.name}-data_dim={source.latent_dim}"
    return dataset if dataset in mnist.NAMED else images.dataset_label(dataset)


def record_fields(dataset, source):
    """What an eval record says was evaluated: images.dataset_record for an image set (a subset named apart from
    the whole set), else the dataset's name (an MNIST set, a GAN source)."""
    if source is not None or dataset in mnist.NAMED:
        return dict(dataset=str(dataset))
    return images.dataset_record(dataset)


def rdlb_lamb(lmbda, source):
    """rdlb.py's lamb (nats per image + lamb * MSE on [0, 1]) equivalent to an image model's lambda on `source`."""
    h, w = source.shape[:2]
    return lmbda * h * w * math.log(2) * 255.0 ** 2
