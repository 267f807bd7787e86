#!/usr/bin/env python
"""Hierarchical ResNet-VAE upper bound on the R-D function of images (Yang & Mandt, ICLR 2022).

A beta-VAE whose rate, the KL divergence between posterior and prior in bits per pixel, is an information rate:
for any trained model, (E[KL], E[MSE]) is an achievable point above the R-D function of the image source. It is
an upper bound on R(D), not a bitstream: no entropy coder produces these rates here, and every output says so.

The architecture is the paper's (its code's resnet_vae.py), levels i = 0..L-1 bottom-up, F = --num_filters:

    encoder:  x/255 - 0.5 -> E_0 -> h_0 -> E_1 -> ... -> E_{L-1} -> h_{L-1}   (each E halves the side)
              E_i(x) = shortcut(x) + conv3x3(conv3x3_stride2(x)), leaky ReLU after the first conv, GDN after the
              second, a 1x1 stride-2 shortcut; the top block has 2 C_{L-1} channels and no GDN: h_{L-1} is the
              mean and (pre-softplus) scale of q(z_{L-1} | x).
    top:      z_{L-1} ~ q; its prior is tfc's deep factorized density per channel (with --flat_z0, a MAF on the
              flattened z_{L-1} of (side / 2^L)^2 C_{L-1} values).
    decoder:  t = z_{L-1}; for i = L-2 .. 0:  t = D_{i+1}(t);  t, KL_i = latent level i (h_i, t)
              x_hat = (upconv3x3(t) + 0.5) * 255
              D_i(t) = shortcut(t) + conv3x3(upconv3x3_stride2(t)), leaky ReLU after both, 1x1 up-2 shortcut.
    level i:  [feats, prior mean, prior scale] = conv(t);  q from conv(h_i) + leaky(conv(t)) (means and scales
              add); without an AR prior q is parameterized relative to the prior (its mean and scale add the
              prior's) and KL_i is analytic; with one (--ar_prior_levels), the prior is a channel-wise
              autoregressive flow on that Gaussian and KL_i is the single-sample log q(z) - log p(z);
              t <- t + leaky(conv([z_i, feats])).

Loss = bpp + lambda * MSE (on [0, 255]), bpp = the sum over levels of the KL (analytic or single-sample) in bits
per pixel. Evaluation uses the same rates and a sample z ~ q for x_hat, so that the averaged (bpp, MSE) is an
unbiased estimate of the bound's point.

    python resnet_vae.py -V --latent_channels 8,16,32 --num_filters 32 --lambda 0.01 --checkpoint_dir ckpt \\
        train --dataset bsds500 --patchsize 64 --epochs 10 --steps_per_epoch 200
    python resnet_vae.py --latent_channels 8,16,32 --num_filters 32 --lambda 0.01 --checkpoint_dir ckpt \\
        eval --dataset kodak

With --likelihood dlogistic (and --image_channels 1 for MNIST's grey levels) the decoder outputs a discretized
logistic per sub-pixel instead of a reconstruction: a lossless model, trained on the negative ELBO in bits per
dimension, whose eval reports it (nelbo_bpd = kl_bpd + nll_bpd); rec.py codes it into lossless files.

    python resnet_vae.py -V --likelihood dlogistic --image_channels 1 --latent_channels 8,16 --num_filters 32 \\
        --checkpoint_dir ckpt train --dataset mnist --epochs 10 --steps_per_epoch 500 --batchsize 32 --lr 1e-3

With --lmb_range LO,HI one model covers a range of lambda (lambda-conditioned blocks); --arch convnext builds the
variable-rate seed's ConvNeXt hierarchy instead of the ResNet-VAE (utils/hvae.py, docs/resnet_vae.md).
"""
from utils import startup  # noqa: F401  (first, on purpose: TensorFlow's start-up lines; utils/startup.py)

import sys
import warnings

import numpy as np

# TensorFlow (and the modules that import it: codec_commands, hvae, image_eval, training) is imported in the
# functions that use it, so that --help and a bad flag answer at once.
from utils import codec_flags, hvae_flags, image_data, images, runs
from utils.cli import ArgumentParser, InputError, float_list, positive_int, run
from utils.runs import atomic_write_bytes, load_flags, run_name

SCRIPT = "resnet_vae"
RATE_TYPE = "information rate (analytic or single-sample KL, an R-D upper bound), not a bitstream"


# ---- commands -------------------------------------------------------------------------------------

def check_size(model, height, width, what):
    if model.img_dim is not None and (height, width) != (model.img_dim, model.img_dim):
        raise InputError(f"{what} is {height}x{width} but --flat_z0 fixes the image size to --img_dim "
                         f"{model.img_dim}")


def train(args, model, run_dir, source):
    from utils import codec_commands, hvae
    hvae.check_channels(model, args.dataset)
    if source is not None:
        check_size(model, *source.shape[:2], f"the {source.name} image size")
    return codec_commands.train(args, model, run_dir, args.dataset, source)


def warn_if_untrained_size(run_dir, model):
    """Deep levels trained on crops so small that their maps are all border positions (zero padding everywhere)
    meet interior positions on larger images, out of distribution: their rates can blow up by orders of magnitude."""
    patch = load_flags(run_dir).get("patchsize")
    if patch and patch // model.pad_multiple < 4:
        warnings.warn(f"{run_dir.name} was trained on {patch}x{patch} crops: its top level saw only "
                      f"{patch // model.pad_multiple}x{patch // model.pad_multiple} maps, so on larger images its "
                      f"rates may be far off (train with --patchsize >= {4 * model.pad_multiple}, or fewer levels)")


def evaluate(args, model, run_dir, source, checkpoint, lambdas):
    from utils import hvae, image_eval
    hvae.check_channels(model, args.dataset)
    lossless = isinstance(model, hvae.DLogisticResNetVAE)
    if source is None:
        warn_if_untrained_size(run_dir, model)
    if lossless:
        return evaluate_lossless(args, model, run_dir, checkpoint)
    cast = not args.no_cast_xhat
    records = [evaluate_at(args, model, run_dir, source, checkpoint, lmbda, cast) for lmbda in lambdas]
    if model.lmb_range is not None:
        curve = image_eval.results_npz(args, run_dir, source).with_suffix(".csv")
        keys = ("lambda", "bpp", "mse", "psnr", "msssim", "rate_stderr", "mse_stderr")
        # The dataset column lets bd_rate.py keep a subset's curve apart from the whole set's.
        lines = [",".join(keys + ("dataset",))] + [",".join([*(f"{r[k]:.8g}" for k in keys), r["dataset"]])
                                                  for r in records]
        atomic_write_bytes(curve, ("\n".join(lines) + "\n").encode())
        if args.verbose:
            print(f"curve: {curve}", file=sys.stderr)
    return records[-1]


def eval_lambdas(args):
    """The lambdas to evaluate, from the model flags (checked before the run is opened): the run's own for a
    fixed-rate model; for a variable-rate one --lambdas (inside the trained range unless --extrapolate) or
    --num_lambdas log-spaced over the range; None for a lossless model."""
    if args.likelihood == "dlogistic":
        return None
    lmb_range = hvae_flags.model_flags(args).get("lmb_range")  # as the model holds it
    if lmb_range is None:
        if args.lambdas is not None or args.num_lambdas is not None:
            raise InputError("--lambdas and --num_lambdas evaluate a variable-rate model (--lmb_range); this run "
                             f"was trained at --lambda {args.lmbda}")
        return [args.lmbda]
    lo, hi = lmb_range
    if args.lambdas is None:
        return [float(v) for v in np.geomspace(lo, hi, 16 if args.num_lambdas is None else args.num_lambdas)]
    if not args.lambdas or min(args.lambdas) <= 0:
        raise InputError(f"--lambdas {args.lambdas}: give positive lambdas")
    outside = [v for v in args.lambdas if not lo * (1 - 1e-9) <= v <= hi * (1 + 1e-9)]
    if outside:
        what = f"--lambdas {','.join(map(str, outside))}: outside the trained range [{lo:.6g}, {hi:.6g}]"
        if not args.extrapolate:
            raise InputError(f"{what} (pass --extrapolate to evaluate there anyway)")
        warnings.warn(f"{what}: the model never saw these lambdas in training")
    return args.lambdas


def evaluate_at(args, model, run_dir, source, checkpoint, lmbda, cast):
    """One eval pass over the dataset at lambda: the .npz and the JSON line of the image scripts."""
    import tensorflow as tf
    from utils import image_eval

    def measure(image, channels):
        h, w = image.shape[:2]
        check_size(model, h, w, "the image size")
        x_hat, bits = model.estimate(tf.constant(image, tf.float32), tf.constant(lmbda, tf.float32))
        x_hat = np.clip(x_hat.numpy(), 0, 255)
        if channels == 1:
            x_hat = x_hat.mean(axis=2)
        if cast:
            x_hat = np.round(x_hat).astype(np.uint8)
        bits = bits.numpy().astype(np.float64)
        return dict(x_hat=x_hat, bpp=float(bits.sum()) / (h * w),
                    **{f"bpp_level{i}": float(b) / (h * w) for i, b in enumerate(bits)})

    record = dict(method=SCRIPT, bound="upper", rate_type=RATE_TYPE,
                  **image_data.record_fields(args.dataset, source), **{"lambda": lmbda}, run=run_dir.name,
                  checkpoint=str(checkpoint), cast_xhat=cast)
    npz = image_eval.results_npz(args, run_dir, source)
    if model.lmb_range is not None:
        record.update(lmb_range=list(model.lmb_range))
        npz = npz.with_name(f"{npz.stem}-lmbda={lmbda:.6g}.npz")
    items = image_data.eval_items(args.dataset, source, args.batchsize, args.seed)
    return image_eval.evaluate_images(items, measure, npz, run_dir / image_eval.RESULTS_NAME, record, args.verbose,
                                      source)


def evaluate_lossless(args, model, run_dir, checkpoint):
    """The lossless model's negative ELBO per image, in bits per dimension, averaged over --elbo_samples draws."""
    import tensorflow as tf
    from utils import image_eval

    def measure(image, channels):
        kl, nll = model.elbo_bpd(image, args.elbo_samples)
        x_hat = model.estimate(tf.constant(image, tf.float32), tf.constant(model.lmbda, tf.float32))[0].numpy()
        x_hat = np.round(np.clip(x_hat, 0, 255)).astype(np.uint8)
        return dict(x_hat=images.to_channels(x_hat, channels), nelbo_bpd=kl + nll, kl_bpd=kl, nll_bpd=nll)

    record = dict(method=SCRIPT, likelihood="dlogistic", rate_type="negative ELBO in bits per dimension (the "
                  "lossless code length a bits-back or REC coder approaches)",
                  **image_data.record_fields(args.dataset, None),
                  run=run_dir.name, checkpoint=str(checkpoint), elbo_samples=args.elbo_samples)
    items = image_data.eval_items(args.dataset, None, args.batchsize, args.seed)
    return image_eval.evaluate_images(items, measure, image_eval.results_npz(args, run_dir, None),
                                 run_dir / image_eval.RESULTS_NAME, record, args.verbose, rate_key="nelbo_bpd")


# ---- flags ----------------------------------------------------------------------------------------

def parse_args(argv):
    p = ArgumentParser(prog=f"{SCRIPT}.py", description=__doc__)
    codec_flags.add_run_flags(p)
    hvae_flags.add_model_flags(p)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train on random crops of an image set or on GAN samples",
                       description="Train on random crops of an image set or on GAN samples.")
    t.add_argument("--dataset", required=True, help=codec_flags.DATASETS_HELP)
    codec_flags.add_image_train_flags(t)

    e = sub.add_parser("eval", help="per-image bpp (information rate), MSE, PSNR, MS-SSIM",
                       description="Per image: bpp (the information rate), MSE, PSNR and MS-SSIM.")
    codec_flags.add_image_eval_flags(e)
    e.add_argument("--elbo_samples", type=positive_int, default=16,
                   help="posterior draws averaged into each image's negative ELBO (--likelihood dlogistic)")
    e.add_argument("--num_lambdas", type=positive_int,
                   help="a variable-rate model: evaluate at this many lambdas log-spaced over its range (default: 16)")
    e.add_argument("--lambdas", type=float_list, help="a variable-rate model: evaluate at these lambdas")
    e.add_argument("--extrapolate", action="store_true",
                   help="allow --lambdas outside the model's trained range (with a warning)")
    args = p.parse_args(argv)
    runs.adopt_run_flags(args, p)
    hvae_flags.check_model_flags(args)
    codec_flags.check_files(args)
    if args.command == "train":
        codec_flags.check_patchsize(args, args.dataset, hvae_flags.pad_multiple(args))
        if codec_flags.trains_on_crops(args.dataset) and args.flat_z0 and args.patchsize != args.img_dim:
            raise InputError(f"--patchsize {args.patchsize}: --flat_z0 fixes the image size to --img_dim "
                             f"{args.img_dim}")
    return args


def main(argv):
    args = parse_args(argv)
    import tensorflow as tf
    from utils import hvae, image_eval, layers, training
    training.strategy_from_flags(args)  # before any other TensorFlow work (docs/distributed.md)
    tf.keras.utils.set_random_seed(args.seed)
    source = image_data.gan_source(args.dataset, args.data_dim)
    run_dir = runs.run_folder(args, run_name(SCRIPT, **hvae_flags.run_flags(args)))
    if args.command == "train":
        model = hvae.build_weighted(args, args)
        layers.report_params(model, SCRIPT)
        return train(args, model, run_dir, source)
    image_eval.check_results_file(run_dir)
    lambdas = eval_lambdas(args)
    model, checkpoint, _ = hvae.open_hvae(args, run_dir)
    layers.report_params(model, SCRIPT)
    return evaluate(args, model, run_dir, source, checkpoint, lambdas)


if __name__ == "__main__":
    run(main)
