"""SGA, sga.py's engine: encoder-side inference by Adam on an image's latents through a codec's relaxed quantizer
(Yang, Bamler & Mandt, NeurIPS 2020); bb_sga.py's first stage imports it from here.

`LatentOptimizer` holds the latents of a batch of same-shape images as variables, starting from the encoders'
output, and minimizes each image's bpp + lambda * MSE through `model.relaxed` (the codec contract in
utils/codec.py) with the quantizer replaced by one of utils/rounding.py's relaxations (stochastic Gumbel
annealing, deterministic annealing, STE, uniform noise, or none); `optimize` runs it, logs the trajectory and
applies the early stop of MAP and STE. `load_run`, `read_images`, `dataset_fields` and `check_results_dir` are
what both scripts' compress commands open and check before optimizing.
"""
from pathlib import Path

import numpy as np
import tensorflow as tf

from utils import cli, codec_commands, images, jsonl, rounding, runs
from utils.progress import Progress
from utils.cli import InputError
from utils.image_models import MODELS
from utils.runs import FLAGS_NAME

EARLY_STOP = ("map", "ste")  # their loss after rounding rises once the continuous optimum drifts off the grid
LOG_EVERY = 10
TRAJECTORY_NAME = "trajectory.jsonl"  # in --results_dir: every LOG_EVERY iterations, one record per image


def load_run(args, model_hint=None):
    """(model, identity, run folder, checkpoint, lambda) of the trained run `args.run_name` under
    `args.checkpoint_dir` (or a run folder's path), opened by utils.training.open_run: its architecture from its
    flags.json (`args.model`, `args.num_filters` and `args.lmbda` as the scripts' flags; `args.lmbda` None is
    the run's own). `model_hint`: what a run of another codec is told, for a script without --model."""
    run_dir = Path(args.checkpoint_dir) / args.run_name
    if not run_dir.is_dir() and Path(args.run_name).is_dir():  # a run folder's own path
        run_dir = Path(args.run_name)
    if not run_dir.is_dir():
        raise InputError(f"RUN_NAME {args.run_name}: no run folder {run_dir} (check --checkpoint_dir)")
    # A flags.json holds the flags, not the script that saved them; the folder's name, which the codec script
    # gave it (run_name), does: its first part.
    script = run_dir.name.split("-")[0]
    if script != args.model:
        raise InputError(f"RUN_NAME {args.run_name} is not a {args.model} run " + (model_hint or (
            f"(--model {args.model}); give --model for the codec it holds ({', '.join(MODELS)})")))
    flags = runs.load_flags(run_dir)
    if "num_filters" not in flags:
        raise InputError(f"RUN_NAME {args.run_name}: its {FLAGS_NAME} is missing or has no num_filters: not a "
                         f"trained {args.model} run")
    if args.num_filters is not None and args.num_filters != flags["num_filters"]:
        raise InputError(f"--num_filters {args.num_filters}: the run {args.run_name} was trained with "
                         f"{flags['num_filters']}")
    lmbda = args.lmbda if args.lmbda is not None else float(flags["lmbda"])
    model, checkpoint, identity = codec_commands.open_codec(args, run_dir, args.model, lmbda)
    return model, identity, run_dir, checkpoint, lmbda


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


def dataset_fields(spec, crop):
    """The record fields naming what EVAL_IMGS evaluated (images.dataset_record; cropped images are a dataset of
    their own, `-crop=N`), with the argument as given."""
    fields = images.dataset_record(spec)
    if crop:
        fields["dataset"] += f"-crop={crop}"
    return dict(fields, eval_imgs=str(spec), crop=crop)


def check_results_dir(results_dir, items, suffix, names):
    """Refuses, before any model loads, a --results_dir that cannot be written, or in which a file to be
    written (an image's <name><suffix>, or one of `names`) is taken by a folder."""
    results = cli.output_dir(results_dir, "--results_dir")
    for name in [Path(n).stem + suffix for n, _, _ in items] + list(names):
        if (results / name).is_dir():
            raise InputError(f"--results_dir {results_dir}: {results / name} is a folder, where a file is written")
    return results


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
