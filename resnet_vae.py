#!/usr/bin/env python
"""Hierarchical ResNet-VAE upper bound on the R-D function of images (Yang & Mandt, ICLR 2022).

A beta-VAE whose rate, the KL divergence between posterior and prior in bits per pixel, is an information rate:
for any trained model, (E[KL], E[MSE]) is an achievable point above the R-D function of the image source. It is
an upper bound on R(D), not a bitstream: no entropy coder produces these rates here, and every output says so.

Architecture (ResNet-VAE with bidirectional inference, Kingma et al. 2016, appendix), levels i = 0..L-1 bottom-up:

    bottom-up:  x -> [stride-2 conv, residual block] x L -> features h_0 (H/2) ... h_{L-1} (H/2^L)
    top-down:   d_{L-1} = a learned constant (or, with --flat_z0, a dense map of the flat top latent z_{L-1})
                at level i:  prior p(z_i | d_i) from d_i;  posterior q(z_i | x, z_>i) from [h_i, d_i];
                             z_i ~ q; d_i <- resblock(d_i + conv(z_i)); d_{i-1} = upsample(d_i)
                x_hat = conv(upsample(d_0))

Every z_i has --latent_channels[i] channels with diagonal Gaussian posteriors and priors. With --ar_prior_levels
L' --ar_slices S the priors of the L' lowest levels are channel-wise autoregressive: the channels are split into
S slices and slice s is Gaussian given d_i and slices < s (an affine autoregressive flow over slices). With
--flat_z0 the top latent is a vector of --latent_channels[-1] values under a MAF prior (--maf_stacks layers of
--maf_units MADEs, utils.priors.MAF); it needs fixed-size images (--img_dim).

Loss = bpp + lambda * MSE (on [0, 255]), bpp = the single-sample KL estimate log q(z|x) - log p(z) summed over
levels, in bits per pixel. Evaluation uses the same single-sample estimate and a sample z ~ q for x_hat, so that
the averaged (bpp, MSE) is an unbiased estimate of the bound's point.

    python resnet_vae.py -V --latent_channels 8,16,32 --num_filters 32 --lambda 0.01 --checkpoint_dir ckpt \
        train --dataset bsds500 --patchsize 64 --epochs 10 --steps_per_epoch 200
    python resnet_vae.py --latent_channels 8,16,32 --num_filters 32 --lambda 0.01 --checkpoint_dir ckpt \
        eval --dataset kodak
"""
import argparse
import json
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import utils  # noqa: F401  (before TensorFlow: sets its C++ log level)
import tensorflow as tf

from utils import codec, image_data, images, training
from utils.cli import InputError, int_list, positive_int, run
from utils.priors import MAF
from utils.runs import FLAGS_NAME, run_name

SCRIPT = "resnet_vae"
RATE_TYPE = "information rate (single-sample KL, an R-D upper bound), not a bitstream"
MAF_ACTIVATION = "elu"
MIN_SCALE = 1e-5  # keeps log-densities finite when a posterior collapses
SOFTPLUS_ONE = math.log(math.e - 1)  # softplus(SOFTPLUS_ONE) = 1: scales start at 1


def conv(filters, kernel=3, stride=1, name=None, scale=1.0):
    """A 'same' convolution with fan-in scaled initial weights; scale=0 starts it at zero."""
    init = (tf.keras.initializers.VarianceScaling(scale, mode="fan_in", distribution="truncated_normal")
            if scale else "zeros")
    return tf.keras.layers.Conv2D(filters, kernel, stride, padding="same", kernel_initializer=init, name=name)


def deconv(filters, kernel=4, stride=2, name=None):
    return tf.keras.layers.Conv2DTranspose(filters, kernel, stride, padding="same", name=name)


def gaussian_log_prob(z, mean, raw_scale):
    """log N(z; mean, scale^2) summed over all but the batch axis; scale = softplus(raw + SOFTPLUS_ONE)."""
    scale = tf.nn.softplus(raw_scale + SOFTPLUS_ONE) + MIN_SCALE
    log_p = -0.5 * tf.square((z - mean) / scale) - tf.math.log(scale) - 0.5 * math.log(2 * math.pi)
    return tf.reduce_sum(log_p, axis=tf.range(1, tf.rank(z)))


def sample_gaussian(mean, raw_scale):
    scale = tf.nn.softplus(raw_scale + SOFTPLUS_ONE) + MIN_SCALE
    return mean + scale * tf.random.normal(tf.shape(mean))


class ResBlock(tf.keras.layers.Layer):
    """x + conv(elu(conv(elu(x)))); the second conv starts small, so a fresh block is close to the identity."""

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.conv1 = conv(filters, name="conv1")
        self.conv2 = conv(filters, name="conv2", scale=0.1)

    def call(self, x):
        return x + self.conv2(tf.nn.elu(self.conv1(tf.nn.elu(x))))


def slice_sizes(channels, slices):
    """Channel counts of min(slices, channels) near-equal slices (the first ones take the remainder)."""
    n = min(slices, channels)
    return [channels // n + (1 if s < channels % n else 0) for s in range(n)]


class LatentLevel(tf.keras.layers.Layer):
    """One spatial latent level: prior from the top-down features, posterior from bottom-up and top-down."""

    def __init__(self, filters, channels, ar_slices=None, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        # Posterior and prior start as N(0, 1) (zero weights), so a fresh level costs no rate: training adds rate
        # where it buys distortion, rather than having to remove the rate of random initial latents.
        self.posterior = conv(2 * channels, name="posterior", scale=0)
        # Autoregressive: slice s has its own conv over [d, z_<s]; factorized: one conv over d.
        self.sizes = slice_sizes(channels, ar_slices) if ar_slices else [channels]
        self.prior = [conv(2 * c, name=f"prior{s}", scale=0) for s, c in enumerate(self.sizes)]
        self.merge = conv(filters, name="merge")
        self.block = ResBlock(filters, name="block")

    def prior_log_prob(self, z, d):
        total, start = 0.0, 0
        for net, size in zip(self.prior, self.sizes):
            mean, raw = tf.split(net(tf.concat([d, z[..., :start]], -1) if start else d), 2, -1)
            total += gaussian_log_prob(z[..., start:start + size], mean, raw)
            start += size
        return total

    def call(self, h, d):
        """(new top-down features, log q(z) - log p(z) per image in nats)."""
        mean, raw = tf.split(self.posterior(tf.concat([h, d], -1)), 2, -1)
        z = sample_gaussian(mean, raw)
        kl = gaussian_log_prob(z, mean, raw) - self.prior_log_prob(z, d)
        return self.block(d + self.merge(z)), kl


class FlatTop(tf.keras.layers.Layer):
    """The top latent as a flat vector under a MAF prior; its decoder maps it to the top feature map."""

    def __init__(self, filters, dim, top_side, maf_units, maf_stacks, **kwargs):
        super().__init__(**kwargs)
        self.top_shape = [-1, top_side, top_side, filters]
        self.flat_size = top_side * top_side * filters
        self.posterior = tf.keras.layers.Dense(2 * dim, kernel_initializer="zeros", name="posterior")  # starts N(0, 1)
        self.prior = MAF(dim, maf_stacks, maf_units, MAF_ACTIVATION, name="maf_prior")
        self.expand = tf.keras.layers.Dense(top_side * top_side * filters, name="expand")
        self.block = ResBlock(filters, name="block")

    def call(self, h):
        mean, raw = tf.split(self.posterior(tf.reshape(h, [-1, self.flat_size])), 2, -1)
        z = sample_gaussian(mean, raw)
        kl = gaussian_log_prob(z, mean, raw) - self.prior.log_prob(z)
        return self.block(tf.reshape(self.expand(z), self.top_shape)), kl


class ResNetVAE(training.LossModel):
    """Trained on bpp + lambda * MSE with utils.training.fit."""
    METRICS = ("loss", "bpp", "mse")

    def __init__(self, lmbda, num_filters, latent_channels, ar_prior_levels=0, ar_slices=1, flat_z0=False,
                 img_dim=None, maf_units=(32, 16), maf_stacks=3):
        super().__init__()
        self.lmbda = float(lmbda)
        levels = len(latent_channels)
        self.levels = levels
        self.pad_multiple = 2 ** levels
        self.img_dim = img_dim if flat_z0 else None
        f = num_filters
        self.down = [conv(f, 4, 2, name=f"down{i}") for i in range(levels)]
        self.encoder = [ResBlock(f, name=f"encoder{i}") for i in range(levels)]
        spatial = levels - 1 if flat_z0 else levels  # with --flat_z0 the top level's latent is FlatTop's
        self.latents = [LatentLevel(f, c, ar_slices if i < ar_prior_levels else None, name=f"latent{i}")
                        for i, c in enumerate(latent_channels[:spatial])]
        self.up = [deconv(f, name=f"up{i}") for i in range(levels)]
        self.out = conv(3, name="out", scale=0)  # starts at mid-gray
        if flat_z0:
            self.top = FlatTop(f, latent_channels[-1], img_dim // self.pad_multiple, maf_units, maf_stacks,
                               name="flat_top")
        else:
            self.top = None
            self.top_input = self.add_weight("top_input", [f], initializer="zeros")

    def forward(self, x):
        """x in [0, 255], sides multiples of pad_multiple -> (x_hat, KL per image and level in nats [batch, L])."""
        h = x / 255.0 - 0.5
        features = []
        for down, block in zip(self.down, self.encoder):
            h = block(down(h))
            features.append(h)
        kls = []
        if self.top is not None:
            d, kl = self.top(features[-1])
            kls.append(kl)
        else:
            d = tf.zeros_like(features[-1]) + self.top_input
        for i in reversed(range(self.levels)):
            if i < len(self.latents):
                d, kl = self.latents[i](features[i], d)
                kls.append(kl)
            d = tf.nn.elu(self.up[i](d))
        x_hat = (self.out(d) + 0.5) * 255.0
        return x_hat, tf.stack(kls[::-1], axis=1)  # bottom-up order

    def losses_of(self, x, training=False):
        x_hat, kls = self.forward(x)
        num_pixels = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), tf.float32)
        bpp = tf.reduce_sum(kls) / (num_pixels * math.log(2))
        mse = tf.reduce_mean(tf.math.squared_difference(x, x_hat))
        return dict(loss=bpp + self.lmbda * mse, bpp=bpp, mse=mse)

    def call(self, x, training=False):
        return self.losses_of(x)["loss"]

    def build_weights(self):
        side = self.img_dim or self.pad_multiple
        self(tf.zeros([1, side, side, 3]))

    @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.float32)])
    def estimate(self, image):
        """One image [H, W, 3] in [0, 255] -> (x_hat [H, W, 3], unclipped; KL per level in bits [L])."""
        shape = tf.shape(image)
        x_hat, kls = self.forward(images.pad_to_multiple(image[None], self.pad_multiple))
        return x_hat[0, :shape[0], :shape[1], :], kls[0] / math.log(2)


# ---- commands -------------------------------------------------------------------------------------

def check_size(model, height, width, what):
    if model.img_dim is not None and (height, width) != (model.img_dim, model.img_dim):
        raise InputError(f"{what} is {height}x{width} but --flat_z0 fixes the image size to --img_dim "
                         f"{model.img_dim}")


def train(args, model, run_dir, source):
    if source is not None:
        check_size(model, *source.shape[:2], f"the {source.name} image size")
    else:
        check_size(model, args.patchsize, args.patchsize, "--patchsize")
        if args.patchsize % model.pad_multiple:
            raise InputError(f"--patchsize {args.patchsize} must be a multiple of 2^levels = {model.pad_multiple}")
    return codec.train(args, model, run_dir, args.dataset, source)


def warn_if_untrained_size(run_dir, model):
    """Deep levels trained on crops so small that their maps are all border positions (zero padding everywhere)
    meet interior positions on larger images, out of distribution: their rates can blow up by orders of magnitude."""
    try:
        patch = json.loads((run_dir / FLAGS_NAME).read_text()).get("patchsize")
    except (OSError, ValueError):
        return
    if patch and patch // model.pad_multiple < 4:
        warnings.warn(f"{run_dir.name} was trained on {patch}x{patch} crops: its top level saw only "
                      f"{patch // model.pad_multiple}x{patch // model.pad_multiple} maps, so on larger images its "
                      f"rates may be far off (train with --patchsize >= {4 * model.pad_multiple}, or fewer levels)")


def evaluate(args, model, run_dir, source):
    checkpoint = training.restore_latest(model, run_dir)
    if source is None:
        warn_if_untrained_size(run_dir, model)
    if args.verbose:
        print(f"restored {checkpoint}", file=sys.stderr)
    cast = not args.no_cast_xhat

    def measure(image, channels):
        h, w = image.shape[:2]
        check_size(model, h, w, "the image size")
        x_hat, bits = model.estimate(tf.constant(image, tf.float32))
        x_hat = np.clip(x_hat.numpy(), 0, 255)
        if channels == 1:
            x_hat = x_hat.mean(axis=2)
        if cast:
            x_hat = np.round(x_hat).astype(np.uint8)
        bits = bits.numpy().astype(np.float64)
        return dict(x_hat=x_hat, bpp=float(bits.sum()) / (h * w),
                    **{f"bpp_level{i}": float(b) / (h * w) for i, b in enumerate(bits)})

    record = dict(method=SCRIPT, bound="upper", rate_type=RATE_TYPE, dataset=str(args.dataset),
                  **{"lambda": args.lmbda}, run=run_dir.name, checkpoint=str(checkpoint), cast_xhat=cast)
    items = image_data.eval_items(args.dataset, source, args.batchsize, args.seed)
    return codec.evaluate_images(items, measure, codec.results_npz(args, run_dir, source),
                                 run_dir / codec.RESULTS_NAME, record, args.verbose, source)


# ---- flags ----------------------------------------------------------------------------------------

def parse_args(argv):
    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = argparse.ArgumentParser(prog=f"{SCRIPT}.py", description=__doc__.split("\n")[0], formatter_class=fmt)
    codec.add_run_flags(p)
    p.add_argument("--num_filters", type=positive_int, default=256, help="channels of every residual block")
    p.add_argument("--latent_channels", type=int_list, default=[4, 8, 16, 32, 64, 128],
                   help="latent channels per level, bottom-up; one level per entry (each halves the resolution)")
    p.add_argument("--ar_prior_levels", type=int, default=0,
                   help="the number of lowest levels with a channel-wise autoregressive prior")
    p.add_argument("--ar_slices", type=positive_int, default=8, help="channel slices of the autoregressive priors")
    p.add_argument("--flat_z0", action="store_true",
                   help="make the top latent a flat vector of --latent_channels[-1] values with a MAF prior")
    p.add_argument("--img_dim", type=positive_int, help="image side, required by --flat_z0 (square images)")
    p.add_argument("--maf_units", type=int_list, default=[32, 16], help="hidden units of each MADE of the MAF prior")
    p.add_argument("--maf_stacks", type=positive_int, default=3, help="MADE layers of the MAF prior")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train on random crops of an image set or on GAN samples", formatter_class=fmt)
    t.add_argument("--dataset", required=True, help=codec.DATASETS_HELP)
    codec.add_image_train_flags(t)

    e = sub.add_parser("eval", help="per-image bpp (information rate), MSE, PSNR, MS-SSIM", formatter_class=fmt)
    codec.add_image_eval_flags(e)
    args = p.parse_args(argv)
    levels = len(args.latent_channels)
    if levels < 1 or min(args.latent_channels) < 1:
        raise InputError(f"--latent_channels {args.latent_channels}: give at least one positive channel count")
    if not 0 <= args.ar_prior_levels <= levels:
        raise InputError(f"--ar_prior_levels {args.ar_prior_levels}: must lie in 0..{levels} (the number of levels)")
    if args.flat_z0:
        if args.img_dim is None:
            raise InputError("--flat_z0 needs --img_dim, the side of the (square) images")
        if args.img_dim % 2 ** levels:
            raise InputError(f"--img_dim {args.img_dim} must be a multiple of 2^levels = {2 ** levels}")
        if args.ar_prior_levels == levels:
            raise InputError("--flat_z0 gives the top level a MAF prior: --ar_prior_levels must be below the "
                             f"number of levels ({levels})")
    if not args.maf_units or min(args.maf_units) < 1:
        raise InputError(f"--maf_units {args.maf_units}: give positive hidden sizes")
    return args


def model_flags(args):
    """The flags that define the model: they build it and name its run folder."""
    flags = dict(num_filters=args.num_filters, latent_channels=args.latent_channels)
    if args.ar_prior_levels:
        flags.update(ar_prior_levels=args.ar_prior_levels, ar_slices=args.ar_slices)
    if args.flat_z0:
        flags.update(flat_z0=True, img_dim=args.img_dim, maf_units=args.maf_units, maf_stacks=args.maf_stacks)
    return flags


def build(args):
    return ResNetVAE(args.lmbda, **model_flags(args))


def main(argv):
    args = parse_args(argv)
    tf.keras.utils.set_random_seed(args.seed)
    source = image_data.gan_source(args.dataset, args.data_dim)
    run_dir = Path(args.checkpoint_dir) / run_name(SCRIPT, **model_flags(args), lmbda=args.lmbda)
    model = build(args)
    model.build_weights()
    if args.command == "train":
        return train(args, model, run_dir, source)
    return evaluate(args, model, run_dir, source)


if __name__ == "__main__":
    run(main)
