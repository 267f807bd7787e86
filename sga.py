"""Encoder-side inference for the image codecs (Yang, Bamler & Mandt, NeurIPS 2020): per image, the latents y
and z of a trained mbt2018 (or ms2020) model are optimized for that image's loss bpp + lambda * MSE, starting
from the encoder's output, and then coded into a real file that the unchanged `mbt2018.py decompress` decodes.

The quantizer is relaxed while optimizing (utils/rounding.py), on the grid the entropy models code (y around
its predicted means, z around the model's offsets), so the final hard rounding is what the file holds:
    sga      stochastic Gumbel annealing (the paper's method), temperature 0.5 for 700 iterations, then decaying
    map      no rounding (continuous latents), rounded at the end; stops at the first increase of the
             rounded loss (checked every 10 iterations), keeping the latents before it
    ste      rounded forward, identity backward (lr 1e-4); the same early stop
    unoise   additive uniform noise, as in training
    danneal  deterministic annealing: SGA's soft rounding without the Gumbel noise (temperature from 0.2)

    python sga.py --num_filters 192 --verbose --checkpoint_dir CKPT compress mbt2018-num_filters=192-lmbda=0.01 \\
        kodak --results_dir results/sga
    python mbt2018.py --checkpoint_dir CKPT --num_filters 192 --lambda 0.01 decompress results/sga/kodim01.tfci out.png

Images of one shape are optimized together as one batch (each image's loss is its own: the batch changes
nothing but speed). Per image, the record holds the file's bpp (bytes) and the model's estimate (`bpp_est`),
PSNR and MS-SSIM of the decoded file, and the same for the amortized encoder on the same image (`base_*`);
the loss trajectory goes to trajectory.jsonl every 10 iterations.
"""
import utils  # noqa: F401  (before TensorFlow: sets its C++ log level)
import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import tensorflow as tf

from utils import Progress, codec, coding, images, jsonl, rounding
from utils.cli import InputError, positive_float, positive_int, run
from utils.image_models import MODELS
from utils.runs import FLAGS_NAME, atomic_write_bytes

METHODS = ("sga", "map", "ste", "unoise", "danneal")
DEFAULT_LR = dict(sga=0.005, map=0.005, ste=1e-4, unoise=0.005, danneal=0.005)  # the paper's
EARLY_STOP = ("map", "ste")  # their loss after rounding rises once the continuous optimum drifts off the grid
LOG_EVERY = 10
TRAJECTORY_NAME = "trajectory.jsonl"


def build_parser():
    p = argparse.ArgumentParser(prog="sga.py", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("-V", "--verbose", action="store_true", help="report progress and per-image figures")
    p.add_argument("--checkpoint_dir", default="checkpoints", help="parent folder of the trained run folders")
    p.add_argument("--model", choices=MODELS, default="mbt2018", help="the codec the run folder holds")
    p.add_argument("--num_filters", type=positive_int,
                   help="the model's width (read from the run's flags.json; if given, it must agree)")
    p.add_argument("--lambda", dest="lmbda", type=positive_float,
                   help="weight of the MSE ([0, 255] scale) in the loss bpp + lambda * MSE (default: the run's)")
    p.add_argument("--method", choices=METHODS, default="sga", help="how the quantizer is relaxed (see above)")
    p.add_argument("--iterations", type=positive_int, default=2000, help="Adam steps per image")
    p.add_argument("--lr", type=positive_float, help="Adam's learning rate (default: 0.005; 1e-4 for ste)")
    p.add_argument("--seed", type=int, default=0, help="seeds the Gumbel and uniform noise")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compress", help="optimize and code every image of EVAL_IMGS; evaluate against the "
                                        "amortized encoder", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    c.add_argument("run_name", metavar="RUN_NAME", help="a run folder of --checkpoint_dir, e.g. "
                                                         "mbt2018-num_filters=192-lmbda=0.01")
    c.add_argument("eval_imgs", metavar="EVAL_IMGS",
                   help="an image, a glob or folder, a named set (kodak), or an .npy of uint8 images [N, H, W, 3]")
    c.add_argument("--results_dir", default="results", help="where the files <image name>.tfci and the records go")
    c.add_argument("--crop", type=positive_int, help="center-crop every image to CROP x CROP pixels first")
    return p


# ---- the trained model ---------------------------------------------------------------------------

def load_run(args):
    """(model, identity, run folder, checkpoint, lambda): the run's architecture from its flags.json."""
    run_dir = Path(args.checkpoint_dir) / args.run_name
    if not run_dir.is_dir():
        raise InputError(f"RUN_NAME {args.run_name}: no run folder {run_dir} (check --checkpoint_dir)")
    script = Path(args.run_name).name.split("-")[0]
    if script != args.model:
        raise InputError(f"RUN_NAME {args.run_name} is not a {args.model} run (--model {args.model}); "
                         f"give --model for the codec it holds ({', '.join(MODELS)})")
    try:
        flags = json.loads((run_dir / FLAGS_NAME).read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"RUN_NAME {args.run_name}: cannot read its {FLAGS_NAME} ({e}); is it a trained run?")
    spec = MODELS[args.model]
    missing = [k for k in spec.arch_flags if k not in flags]
    if missing:
        raise InputError(f"RUN_NAME {args.run_name}: its {FLAGS_NAME} lacks {', '.join(missing)}: not a "
                         f"{args.model} run")
    arch = {k: flags[k] for k in spec.arch_flags}
    if args.num_filters is not None and args.num_filters != arch["num_filters"]:
        raise InputError(f"--num_filters {args.num_filters}: the run {args.run_name} was trained with "
                         f"{arch['num_filters']}")
    lmbda = args.lmbda if args.lmbda is not None else float(flags["lmbda"])
    model = spec.model_class(lmbda=lmbda, **arch)
    model.build_weights()
    codec.report_params(model, args.model)
    checkpoint = codec.restore(model, run_dir, args.verbose)
    return model, codec.identity_of(args.model, arch, model), run_dir, checkpoint, lmbda


def read_images(spec, crop):
    """[(name, uint8 image, channels)] of EVAL_IMGS, center-cropped to crop x crop if asked."""
    items = list(images.eval_images(spec, "EVAL_IMGS"))
    if crop:
        small = [name for name, img, _ in items if min(img.shape[:2]) < crop]
        if small:
            raise InputError(f"--crop {crop}: {len(small)} image(s) are smaller than that, e.g. {small[0]}")
        out = []
        for name, img, channels in items:
            top, left = (img.shape[0] - crop) // 2, (img.shape[1] - crop) // 2
            out.append((name, img[top:top + crop, left:left + crop], channels))
        items = out
    return items


# ---- the optimization ----------------------------------------------------------------------------

def softening(method, generator):
    """method -> soften(v, tau): the relaxed quantizer on the integer grid."""
    return dict(sga=lambda v, tau: rounding.sga_round(v, tau, generator),
                danneal=lambda v, tau: rounding.annealed_round(v, tau),
                ste=lambda v, tau: rounding.ste_round(v),
                unoise=lambda v, tau: rounding.uniform_noise(v, generator),
                map=lambda v, tau: v)[method]


def temperature(method, t):
    if method == "sga":
        return rounding.sga_temperature(t)
    if method == "danneal":
        return rounding.annealing_temperature(t)
    return 1.0  # unused


class LatentOptimizer:
    """Adam on the latents of a batch of same-shape images, each image's loss its own."""

    def __init__(self, model, x, lmbda, method, lr, seed):
        self.model, self.method, self.lmbda = model, method, lmbda
        self.x = tf.constant(x, tf.float32)
        self.shape = x.shape[1:3]
        padded = images.pad_to_multiple(self.x, model.pad_multiple)
        self.initial = [t.numpy() for t in model.latents(padded)]
        self.latents = [tf.Variable(t) for t in self.initial]
        self.optimizer = tf.keras.optimizers.Adam(lr)
        self.soften = softening(method, tf.random.Generator.from_seed(seed))

    def losses(self, latents, soften, hard):
        """Per-image (loss, bpp, mse) of the latents with the quantizer replaced by `soften`."""
        h, w = self.shape
        x_hat, bits = self.model.relaxed(latents, soften, hard)
        mse = tf.reduce_mean(tf.math.squared_difference(self.x, x_hat[:, :h, :w, :]), axis=(1, 2, 3))
        bpp = bits / float(h * w)
        return bpp + self.lmbda * mse, bpp, mse

    @tf.function
    def step(self, tau):
        with tf.GradientTape() as tape:
            loss, _, _ = self.losses(self.latents, lambda v: self.soften(v, tau), hard=False)
            total = tf.reduce_sum(loss)  # sums independent per-image losses: each image's gradient is its own
        grads = tape.gradient(total, self.latents)
        self.optimizer.apply_gradients(zip(grads, self.latents))
        return loss

    @tf.function
    def rounded(self, latents):
        """Per-image (loss, bpp, mse) after hard rounding: what the file will cost and decode to."""
        return self.losses(latents, tf.round, hard=True)


def optimize(opt, names, iterations, trajectory, record, verbose):
    """Runs the optimization; returns the latents to code (numpy, per batch) and per-image iteration counts."""
    method = opt.method
    n = len(names)
    best = [v.numpy() for v in opt.latents]
    best_loss = opt.rounded(opt.latents)[0].numpy()
    stopped = np.full(n, -1)
    bar = Progress(iterations, verbose=verbose, unit="iteration", values=("tau",))
    for t in range(iterations):
        tau = temperature(method, t)
        loss = opt.step(tf.constant(tau, tf.float32)).numpy()
        last = t + 1 == iterations
        if (t + 1) % LOG_EVERY == 0 or last:
            r_loss, r_bpp, r_mse = (a.numpy() for a in opt.rounded(opt.latents))
            for i, name in enumerate(names):
                jsonl.append(trajectory, dict(record, image=name, iteration=t + 1, tau=tau,
                                              loss=float(loss[i]), loss_rounded=float(r_loss[i]),
                                              bpp_rounded=float(r_bpp[i]), mse_rounded=float(r_mse[i])))
            if method in EARLY_STOP:
                worse = (r_loss > best_loss) & (stopped < 0)
                stopped[worse] = t + 1
                better = (r_loss <= best_loss) & (stopped < 0)
                for b, v in zip(best, opt.latents):
                    b[better] = v.numpy()[better]
                best_loss = np.where(better, r_loss, best_loss)
                if np.all(stopped >= 0):
                    bar.update(t + 1, finalize=True, loss=float(np.mean(r_loss)), tau=tau)
                    break
        bar.update(t + 1, loss=float(np.mean(loss)), tau=tau)
    final = best if method in EARLY_STOP else [v.numpy() for v in opt.latents]
    iterations_run = np.where(stopped >= 0, stopped, t + 1)
    return final, iterations_run


# ---- files and evaluation ------------------------------------------------------------------------

def code_image(model, identity, script, latents, image, channels):
    """The file of one image's latents (batch of 1), its decoded reconstruction, and the model's estimate."""
    strings = model.compress_latents([tf.constant(t[None]) for t in latents]).numpy()[0].tolist()
    data = coding.pack(script, identity, image.shape[:2], channels, strings)
    decoded, _ = codec.decompress_bytes(script, model, identity, data, "sga")
    x_est, bits = model.relaxed([tf.constant(t[None]) for t in latents], tf.round, hard=True)
    h, w = image.shape[:2]
    gap = float(np.max(np.abs(decoded - x_est.numpy()[0, :h, :w])))
    if not gap <= codec.DECODE_TOLERANCE:
        raise SystemExit(f"error: sga: the decoded image differs from the optimized latents' reconstruction by "
                         f"up to {gap:.4g} (of 255): the coder and the model disagree")
    return data, decoded, float(bits.numpy()[0]) / (h * w)


def baseline(model, identity, script, image, channels):
    """bpp (bytes), bpp_est and MSE of the amortized encoder on the image, as `mbt2018.py eval` measures them."""
    h, w = image.shape[:2]
    data = codec.compress_image(script, model, identity, image, channels)
    decoded, _ = codec.decompress_bytes(script, model, identity, data, "sga baseline")
    _, bits = model.estimate(tf.constant(image, tf.float32))
    source = images.to_channels(image, channels)
    m = images.mse(source, images.to_channels(codec.to_uint8(decoded), channels))
    return dict(base_bpp=coding.bpp(len(data), h, w), base_bpp_est=float(bits) / (h * w), base_mse=m,
                base_psnr=images.psnr(m))


def compress(args):
    if args.lr is None:
        args.lr = DEFAULT_LR[args.method]
    items = read_images(args.eval_imgs, args.crop)
    model, identity, run_dir, checkpoint, lmbda = load_run(args)
    results = Path(args.results_dir)
    results.mkdir(parents=True, exist_ok=True)
    script = args.model
    record = dict(method=f"{script}+{args.method}", inference=args.method, run=run_dir.name,
                  checkpoint=str(checkpoint), dataset=str(args.eval_imgs), crop=args.crop,
                  iterations=args.iterations, lr=args.lr, seed=args.seed, **{"lambda": lmbda})
    batches = defaultdict(list)
    for k, item in enumerate(items):
        batches[item[1].shape].append(k)
    outputs = [None] * len(items)
    for b, (shape, members) in enumerate(batches.items()):
        names = [items[k][0] for k in members]
        x = np.stack([items[k][1] for k in members]).astype(np.float32)
        if args.verbose:
            print(f"batch {b + 1}/{len(batches)}: {len(members)} image(s) of {shape[0]}x{shape[1]}", file=sys.stderr)
        opt = LatentOptimizer(model, x, lmbda, args.method, args.lr, args.seed + b)
        latents, iterations_run = optimize(opt, names, args.iterations, results / TRAJECTORY_NAME, record,
                                           args.verbose)
        for j, k in enumerate(members):
            name, image, channels = items[k]
            data, decoded, bpp_est = code_image(model, identity, script, [t[j] for t in latents], image, channels)
            atomic_write_bytes(results / f"{Path(name).stem}.tfci", data)
            outputs[k] = dict(x_hat=images.to_channels(codec.to_uint8(decoded), channels),
                              bpp=coding.bpp(len(data), *image.shape[:2]), bpp_est=bpp_est,
                              iterations_run=int(iterations_run[j]),
                              **baseline(model, identity, script, image, channels))
    remaining = iter(outputs)
    label = images.dataset_label(args.eval_imgs) + (f"-crop={args.crop}" if args.crop else "")
    npz = results / f"{args.method}-lmbda={lmbda!r}-iterations={args.iterations}+{run_dir.name}-dataset={label}.npz"
    return codec.evaluate_images(items, lambda image, channels: next(remaining), npz, results / codec.RESULTS_NAME,
                                 record, args.verbose)


def main(argv):
    args = build_parser().parse_args(argv)
    tf.keras.utils.set_random_seed(args.seed)
    return compress(args)


if __name__ == "__main__":
    run(main)
