"""The image codecs' commands (mbt2018.py, ms2020.py): train, eval, compress and decompress of a model of the
codec contract (utils/codec.py).

A codec script parses its command line with utils/codec_flags.py (no TensorFlow), then calls `main` with its
model class (utils/image_models.py). Training goes through utils.training.fit; eval counts rates from real
bytes (the file container is utils/container.py) and measures with utils/image_eval.py.
"""
import json
import re
import sys
import zipfile
from pathlib import Path

import numpy as np
import tensorflow as tf

from utils import codec, container, image_data, image_eval, images, runs, training
from utils.cli import InputError
from utils.image_models import MODELS
from utils.layers import report_params
from utils.runs import atomic_save_npz, atomic_write_bytes, run_name
from utils.sources import resolve_path

# The run's range-coding tables, saved by the first command that builds them (utils/codec.py, make_coders).
TABLES_NAME = "coding_tables.npz"

# Largest difference (on [0, 255]) eval accepts between the decoded reconstruction and the model's quantized one:
# float noise between two traced graphs, far below what a single wrongly decoded latent moves.
DECODE_TOLERANCE = 1e-3


def arch_of(script, flags):
    """The codec's architecture flags of `flags` (None: unset, its default taken from another flag)."""
    return {k: getattr(flags, k, None) for k in MODELS[script].arch_flags}


def build(args, script, flags, lmbda=None):
    """The codec `script`'s model of `flags` (its architecture and lambda; `lmbda` overrides the lambda), its
    weights created under the command line's strategy, its parameter count reported."""
    with training.strategy_scope(args):
        model = MODELS[script].model_class(lmbda=flags.lmbda if lmbda is None else lmbda, **arch_of(script, flags))
        model.build_weights()
    report_params(model, script)
    return model


def open_codec(args, run_dir, script, lmbda=None):
    """(model, checkpoint, identity) of the trained codec run in `run_dir`, opened by training.open_run, with its
    range-coding tables: those saved in the run folder for these weights, else built from them and saved there,
    so that every process that codes with the run uses the same tables. `lmbda`: a lambda other than the run's
    (sga.py)."""
    model, checkpoint, identity = training.open_run(
        args, run_dir, lambda flags: build(args, script, flags, lmbda), script, lambda flags: arch_of(script, flags))
    if model.range_coded:
        tables = load_tables(run_dir, identity)
        model.make_coders(tables)
        if tables is None:
            save_tables(run_dir, model, identity)
    return model, checkpoint, identity


def load_tables(run_dir, identity):
    """The range-coding tables saved in `run_dir` for the model `identity`, or None (none saved, or saved for
    other weights: the run trained on since)."""
    path = Path(run_dir) / TABLES_NAME
    try:
        with np.load(path) as saved:
            if saved["identity"].tobytes() != identity:
                return None
            return {k: saved[k] for k in saved.files if k != "identity"}
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        print(f"note: {path} is unreadable; the range-coding tables are rebuilt from the weights", file=sys.stderr)
        return None


def save_tables(run_dir, model, identity):
    """Saves the model's range-coding tables (its coders built) in `run_dir`, with the identity they belong to. A
    run folder that cannot be written keeps none: each process then builds its own (a note says so)."""
    path = Path(run_dir) / TABLES_NAME
    try:
        atomic_save_npz(path, identity=np.frombuffer(identity, np.uint8), **model.coding_tables())
    except OSError as e:
        print(f"note: could not save the range-coding tables in {path} ({e.strerror}): each process builds its "
              f"own, and another machine's may not decode this one's files", file=sys.stderr)


def main(args, script):
    """Runs the subcommand of `args` (utils/codec_flags.py's parser of `script`) for the codec `script`, whose
    model (utils/image_models.py's MODELS) takes `lmbda` and the script's architecture flags (these, with lambda,
    also name the run folder, and identify the model)."""
    if args.command in ("compress", "decompress") and args.export:
        from utils import export
        model, identity = export.load(args.export, script)
        code = compress_file if args.command == "compress" else decompress_file
        return code(script, model, identity, args.input, args.output, args.verbose)
    training.strategy_from_flags(args)  # before any other TensorFlow work (docs/distributed.md)
    tf.keras.utils.set_random_seed(args.seed)
    named = {k: v for k, v in arch_of(script, args).items() if v is not None}
    run_dir = runs.run_folder(args, run_name(script, **named, lmbda=args.lmbda))
    if args.command == "train":
        if bool(args.train_glob) == bool(args.dataset):
            raise InputError("train: give exactly one of --train_glob and --dataset")
        what = "--train_glob" if args.train_glob else "--dataset"
        source = image_data.gan_source(args.train_glob or args.dataset, args.data_dim, what)
        return train(args, build(args, script, args), run_dir, args.train_glob or args.dataset, source, what)
    source = None
    if args.command == "eval":
        image_eval.check_results_file(run_dir)
        source = image_data.gan_source(args.dataset, args.data_dim)
    model, checkpoint, identity = open_codec(args, run_dir, script)
    if not model.range_coded:
        why = (": its coder is constriction's ANS stack, run in Python, which a SavedModel cannot hold"
               if args.command == "export" else "")
        raise InputError(f"{args.command}: this model (--hyper_posterior gaussian) is coded by bits-back{why}: "
                         f"use bb_sga.py")
    if args.command == "export":
        return export_codec(args, script, model, identity, run_dir, checkpoint)
    if args.command == "eval":
        return evaluate_codec(args, script, model, identity, run_dir, checkpoint, source)
    if args.command == "compress":
        return compress_file(script, model, identity, args.input, args.output, args.verbose)
    return decompress_file(script, model, identity, args.input, args.output, args.verbose)


def train(args, model, run_dir, dataset, source, what="--dataset"):
    """`train` for every image model: crops of an image set or whole GAN images, through utils.training."""
    training.check_run_dir(run_dir, args.cont)
    train_ds, val_ds = image_data.training_data(dataset, source, args.patchsize, args.batchsize, args.seed, what)
    records = training.fit_from_flags(args, model, run_dir, train_ds, val_ds)
    if records:
        print(json.dumps(records[-1]))
    return records


# ---- files --------------------------------------------------------------------------------------

def compress_image(script, model, identity, image, channels):
    """The bytes of the compressed file of one image [H, W, 3] on [0, 255]."""
    strings = model.compress(tf.constant(image, tf.float32)).numpy().tolist()
    return container.pack(script, identity, image.shape[:2], channels, strings)


def decompress_bytes(script, model, identity, data, what):
    """(float RGB reconstruction on [0, 255] before rounding, channels of the source) from a file's bytes."""
    shape, channels, strings = container.unpack(data, script, identity, what)
    try:
        x_hat = model.decompress(tf.constant(strings, tf.string), tf.constant(shape, tf.int32)).numpy()
    except tf.errors.InvalidArgumentError as e:
        # The container's checksum held, so the bytes are the encoder's: the decoder's model computed otherwise.
        failed = re.search(r"assertion failed: \[([^\]]*)\]", e.message)
        why = failed.group(1) if failed else e.message.strip().splitlines()[-1]
        if why not in (codec.TABLES_MESSAGE, codec.INDEX_MESSAGE):
            why = (f"range decoding failed ({why}): this decoder computed other entropy-model parameters than the "
                   f"encoder")
        raise InputError(f"{what}: cannot be decoded here: {why} (docs/deploy.md, 'What decodes where')")
    return x_hat, channels


def compress_file(script, model, identity, src, dst, verbose=False):
    image, channels, note = images.read_image(resolve_path(src, "input image"), "input image")
    if note:
        print(f"note: {note}", file=sys.stderr)
    data = compress_image(script, model, identity, image, channels)
    atomic_write_bytes(dst, data)
    if verbose:
        h, w = image.shape[:2]
        print(f"{src} -> {dst}: {len(data)} bytes, {container.bpp(len(data), h, w):.4f} bpp", file=sys.stderr)


def decompress_file(script, model, identity, src, dst, verbose=False):
    try:
        data = Path(src).read_bytes()
    except OSError as e:
        raise InputError(f"input file {src}: {e.strerror}")
    x_hat, channels = decompress_bytes(script, model, identity, data, f"input file {src}")
    rgb = images.to_uint8(x_hat)
    images.write_png(dst, images.to_channels(rgb, channels))
    if verbose:
        print(f"{src} -> {dst}: {rgb.shape[0]}x{rgb.shape[1]}, {'RGB' if channels == 3 else 'grayscale'}",
              file=sys.stderr)


def export_codec(args, script, model, identity, run_dir, checkpoint):
    """`export`: the SavedModel of the run (utils/export.py), with what it is in assets.extra/codec.json."""
    from utils import export
    flags = {"lambda": args.lmbda, **{k: v for k, v in arch_of(script, args).items() if v is not None}}
    info = dict(script=script, identity=identity.hex(), flags=flags, run=run_dir.name,
                checkpoint=Path(str(checkpoint)).name, pad_multiple=model.pad_multiple)
    out = export.export(model, args.output, info)
    if args.verbose:
        print(f"exported {run_dir.name} ({Path(str(checkpoint)).name}) to {out}", file=sys.stderr)


def evaluate_codec(args, script, model, identity, run_dir, checkpoint, source=None):
    """`eval`: every image is compressed to bytes and decoded, and distortion is measured on what the file
    decodes to (the rounded image; with --no_cast_xhat the float reconstruction, clipped to [0, 255]). The
    decoded reconstruction must be the model's own quantized one (`estimate`): if any image differs, eval
    stops with an error and writes nothing. Per image, `bpp` counts the whole file (header included),
    `bpp_est` the model's bits of the quantized latents, and `file_bits` the file's bits. On a GAN source
    (continuous images, coded as they are) the record's rate and its sandwich fields are the paper's: the
    model's bits of the quantized latents (`bpp_est`), with the file's bits beside them, not mixed in."""
    cast = not args.no_cast_xhat

    def measure(image, channels):
        h, w = image.shape[:2]
        data = compress_image(script, model, identity, image, channels)
        decoded, _ = decompress_bytes(script, model, identity, data, "eval")
        x_est, bits = model.estimate(tf.constant(image, tf.float32))
        gap = float(np.max(np.abs(decoded - x_est.numpy())))
        if not gap <= DECODE_TOLERANCE:
            raise SystemExit(f"error: {script} eval: the decoded image {h}x{w} differs from the model's quantized "
                             f"reconstruction by up to {gap:.4g} (of 255): the range coder and the model disagree; "
                             f"nothing was written")
        x_hat = images.to_uint8(decoded) if cast else np.clip(decoded, 0, 255)
        return dict(x_hat=images.to_channels(x_hat, channels) if cast or channels == 3 else x_hat.mean(axis=2),
                    bpp=container.bpp(len(data), h, w), bpp_est=float(bits) / (h * w), file_bits=8.0 * len(data))

    record = dict(method=script, **image_data.record_fields(args.dataset, source), **{"lambda": args.lmbda},
                  run=run_dir.name, checkpoint=str(checkpoint), cast_xhat=cast)
    items = image_data.eval_items(args.dataset, source, args.batchsize, args.seed)
    return image_eval.evaluate_images(items, measure, image_eval.results_npz(args, run_dir, source),
                                      run_dir / image_eval.RESULTS_NAME, record, args.verbose, source,
                                      rate_key="bpp" if source is None else "bpp_est")
