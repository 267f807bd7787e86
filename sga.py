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

The optimizer (SGA and the other relaxations, the early stop, opening the run) is utils/sga.py, this script's
engine; the codec's networks and coders are utils/image_models.py and utils/codec.py.
"""
from utils import startup  # noqa: F401  (first, on purpose: TensorFlow's start-up lines; utils/startup.py)

import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

# TensorFlow (and the modules that import it: codec_commands, the engine utils/sga.py) is imported in the functions
# that use it, so that --help and a bad flag answer at once.
from utils import container, images, jsonl
from utils.cli import ArgumentParser, InputError, positive_float, positive_int, run
from utils.codec_flags import ARCHITECTURES, SGA_DEFAULT_LR, SGA_METHODS
from utils.runs import atomic_write_bytes

BASELINE_NAME = "baseline.jsonl"  # in --results_dir: the amortized encoder's record of each run


def build_parser():
    p = ArgumentParser(prog="sga.py", description=__doc__)
    p.add_argument("-V", "--verbose", action="store_true", help="report progress and per-image figures")
    p.add_argument("--checkpoint_dir", default="checkpoints", help="parent folder of the trained run folders")
    p.add_argument("--model", choices=ARCHITECTURES, default="mbt2018", help="the codec the run folder holds")
    p.add_argument("--num_filters", type=positive_int,
                   help="the model's width (read from the run's flags.json; if given, it must agree)")
    p.add_argument("--lambda", dest="lmbda", type=positive_float,
                   help="weight of the MSE ([0, 255] scale) in the loss bpp + lambda * MSE (default: the run's)")
    p.add_argument("--method", choices=SGA_METHODS, default="sga",
                   help="how the quantizer is relaxed while optimizing (each method is described at the top)")
    p.add_argument("--iterations", type=positive_int, default=2000, help="Adam steps per image")
    p.add_argument("--lr", type=positive_float, help="Adam's learning rate (default: 0.005; 1e-4 for ste)")
    p.add_argument("--seed", type=int, default=0, help="seeds the Gumbel and uniform noise")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compress", help="optimize and code every image of EVAL_IMGS; evaluate against the "
                                        "amortized encoder",
                       description="Optimize the latents of every image of EVAL_IMGS, code them into <image "
                                   "name>.tfci in --results_dir, and evaluate the files against the amortized "
                                   "encoder's.")
    c.add_argument("run_name", metavar="RUN_NAME", help="a run folder of --checkpoint_dir, e.g. "
                   "mbt2018-num_filters=192-lmbda=0.01, or a run folder's path")
    c.add_argument("eval_imgs", metavar="EVAL_IMGS",
                   help="an image, a glob or folder, a named set (kodak), or an .npy of uint8 images [N, H, W, 3]")
    c.add_argument("--results_dir", default="results", help="where the files <image name>.tfci and the records go")
    c.add_argument("--crop", type=positive_int, help="center-crop every image to CROP x CROP pixels first")
    return p


# ---- files and evaluation ------------------------------------------------------------------------

def code_image(model, identity, script, latents, image, channels):
    """The file of one image's latents (batch of 1), its decoded reconstruction, and the model's estimate."""
    import tensorflow as tf
    from utils import codec_commands
    strings = model.compress_latents([tf.constant(t[None]) for t in latents]).numpy()[0].tolist()
    data = container.pack(script, identity, image.shape[:2], channels, strings)
    decoded, _ = codec_commands.decompress_bytes(script, model, identity, data, "sga")
    x_est, bits = model.relaxed([tf.constant(t[None]) for t in latents], tf.round, hard=True)
    h, w = image.shape[:2]
    gap = float(np.max(np.abs(decoded - x_est.numpy()[0, :h, :w])))
    if not gap <= codec_commands.DECODE_TOLERANCE:
        raise SystemExit(f"error: sga: the decoded image differs from the optimized latents' reconstruction by "
                         f"up to {gap:.4g} (of 255): the coder and the model disagree")
    return data, decoded, float(bits.numpy()[0]) / (h * w)


def baseline(model, identity, script, image, channels):
    """bpp (bytes), bpp_est and MSE of the amortized encoder on the image, as `mbt2018.py eval` measures them."""
    import tensorflow as tf
    from utils import codec_commands
    h, w = image.shape[:2]
    data = codec_commands.compress_image(script, model, identity, image, channels)
    decoded, _ = codec_commands.decompress_bytes(script, model, identity, data, "sga baseline")
    _, bits = model.estimate(tf.constant(image, tf.float32))
    source = images.to_channels(image, channels)
    m = images.mse(source, images.to_channels(images.to_uint8(decoded), channels))
    return dict(base_bpp=container.bpp(len(data), h, w), base_bpp_est=float(bits) / (h * w), base_mse=m,
                base_psnr=images.psnr(m))


def compress(args):
    from utils import image_eval, sga
    if args.lr is None:
        args.lr = SGA_DEFAULT_LR[args.method]
    items = sga.read_images(args.eval_imgs, args.crop)
    results = sga.check_results_dir(args.results_dir, items, ".tfci", (
        sga.TRAJECTORY_NAME, image_eval.RESULTS_NAME, BASELINE_NAME))
    model, identity, run_dir, checkpoint, lmbda = sga.load_run(args)
    if not model.range_coded:
        raise InputError(f"RUN_NAME {args.run_name}: a bits-back model (--hyper_posterior gaussian): use bb_sga.py")
    results.mkdir(parents=True, exist_ok=True)
    script = args.model
    fields = sga.dataset_fields(args.eval_imgs, args.crop)
    label = fields["dataset"]
    record = dict(method=f"{script}+{args.method}", inference=args.method, run=run_dir.name,
                  checkpoint=str(checkpoint), **fields,
                  iterations=args.iterations, lr=args.lr, seed=args.seed, **{"lambda": lmbda})
    batches = defaultdict(list)
    for k, item in enumerate(items):
        batches[item[1].shape].append(k)
    outputs, files = [None] * len(items), {}
    for b, (shape, members) in enumerate(batches.items()):
        names = [items[k][0] for k in members]
        x = np.stack([items[k][1] for k in members]).astype(np.float32)
        if args.verbose:
            print(f"batch {b + 1}/{len(batches)}: {len(members)} image(s) of {shape[0]}x{shape[1]}", file=sys.stderr)
        opt = sga.LatentOptimizer(model, x, lmbda, args.method, args.lr, args.seed + b)
        latents, iterations_run = sga.optimize(opt, names, args.iterations, results / sga.TRAJECTORY_NAME,
                                               record, args.verbose)
        for j, k in enumerate(members):
            name, image, channels = items[k]
            data, decoded, bpp_est = code_image(model, identity, script, [t[j] for t in latents], image, channels)
            files[results / f"{Path(name).stem}.tfci"] = data
            outputs[k] = dict(x_hat=images.to_channels(images.to_uint8(decoded), channels),
                              bpp=container.bpp(len(data), *image.shape[:2]), bpp_est=bpp_est,
                              iterations_run=int(iterations_run[j]),
                              **baseline(model, identity, script, image, channels))
    for path, data in files.items():  # once every image is coded: a failure leaves none of them
        atomic_write_bytes(path, data)
    remaining = iter(outputs)
    npz = results / f"{args.method}-lmbda={lmbda!r}-iterations={args.iterations}+{run_dir.name}-dataset={label}.npz"
    out = image_eval.evaluate_images(items, lambda image, channels: next(remaining), npz,
                                     results / image_eval.RESULTS_NAME, record, args.verbose)
    # The amortized encoder on the same images, as a record of its own: the anchor of a BD-rate (bd_rate.py).
    jsonl.append(results / BASELINE_NAME, dict(
        record, method=script, inference="amortized", **{k: out[f"base_{k}"] for k in ("bpp", "bpp_est", "psnr")},
        npz=out["npz"], time=out["time"]))
    return out


def main(argv):
    args = build_parser().parse_args(argv)
    import tensorflow as tf
    tf.keras.utils.set_random_seed(args.seed)
    return compress(args)


if __name__ == "__main__":
    run(main)
