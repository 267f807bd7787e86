"""The evaluation every image model shares (codecs, SGA, bits-back, the ResNet-VAE, REC): per-image figures
measured on what a file decodes to, written as an .npz of per-image arrays and one appended JSONL record.

Where its outputs go: the record to the run folder's `results.jsonl`, the arrays beside it or under
--results_dir (`results_npz`; the flags are utils/codec_flags.py's `add_image_eval_flags`).
"""
import json
import sys
import time
from pathlib import Path

import numpy as np

from utils import cli, image_data, images, jsonl
from utils.progress import Progress
from utils.cli import InputError
from utils.runs import atomic_save_npz

RESULTS_NAME = "results.jsonl"


def results_npz(args, run_dir, source):
    """Where eval writes its per-image arrays: see codec_flags.add_image_eval_flags."""
    folder = run_dir
    if args.results_dir:
        folder = Path(args.results_dir)
        if not args.no_sub_dir:
            folder = folder / Path(args.checkpoint_dir).resolve().name
    return folder / f"{run_dir.name}-dataset={image_data.label(args.dataset, source)}.npz"


def check_results_file(run_dir):
    """eval appends to the run folder's results file: refused first if that name is taken by a folder."""
    if run_dir.is_dir():
        cli.output_file(run_dir / RESULTS_NAME, "--checkpoint_dir")


def stderr(values):
    """The standard error of the mean of per-image values (0 for a single image)."""
    return float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0


def evaluate_images(items, measure, npz_path, results_path, record, verbose=False, source=None, rate_key="bpp"):
    """The eval loop every image model shares.

    `items` yields (name, image [H, W, 3] on [0, 255], channels of the source); `measure(image, channels)`
    returns a dict with `x_hat` (the reconstruction in the source's channels, uint8 or float on [0, 255]), `bpp`,
    and any further per-image scalars. Distortion is measured against the image in its source's channels.
    Writes the per-image arrays (names, height, width, bpp, mse, psnr, msssim, and the extras) to `npz_path`,
    appends `record` updated with the averages to `results_path` (JSONL), and returns that record.
    PSNR is averaged over images (the convention of the published Kodak curves); MS-SSIM over the images
    large enough to have one. `rate_key` names the per-image bits per pixel that are the record's `rate` (with
    its standard error `rate_stderr`; `mse_stderr` is the MSE's) and, for a GAN `source`, the point in rdlb.py's
    units: `nats` per image, `rdlb_lamb`, and `rdlb_lagrangian` = nats + rdlb_lamb * MSE on [0, 1], with its
    standard error (the image sandwich's check).
    """
    rows = []
    bar = Progress(None, verbose=verbose, unit="image")  # on a terminal; -V logs get a line per image instead
    for name, image, channels in items:
        source_image = images.to_channels(image, channels)
        out = measure(image, channels)
        x_hat = out.pop("x_hat")
        m = images.mse(source_image, x_hat)
        row = dict(names=name, height=image.shape[0], width=image.shape[1], channels=channels, mse=m,
                   psnr=images.psnr(m),
                   msssim=images.ms_ssim(source_image, x_hat), **out)
        rows.append(row)
        if verbose:
            print(" ".join(f"{k}={v:.5g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
                  file=sys.stderr)
        bar.update(len(rows), **{rate_key: row[rate_key]})
    bar.update(len(rows), finalize=True)
    if not rows:
        raise InputError("the evaluation set is empty")
    arrays = {k: np.array([r[k] for r in rows]) for k in rows[0]}
    atomic_save_npz(npz_path, **arrays)
    dims = {r["channels"] * r["height"] * r["width"] for r in rows}
    record = dict(record)
    record.update(num_images=len(rows), data_dim=dims.pop() if len(dims) == 1 else None)
    for k, v in arrays.items():
        if k in ("names", "height", "width", "channels"):
            continue
        if v.dtype.kind == "b":
            record[k] = bool(np.all(v))
        else:  # MS-SSIM is undefined (NaN) on small images: averaged over the others
            finite = v[np.isfinite(v)]
            record[k] = float(np.mean(finite)) if finite.size else float("nan")
    record.update(rate=record[rate_key], rate_stderr=stderr(arrays[rate_key]), rate_key=rate_key,
                  mse_stderr=stderr(arrays["mse"]), rate_unit="bits", per_dim=False, per_pixel=True,
                  npz=str(npz_path))
    if source is not None:
        lamb = image_data.rdlb_lamb(record["lambda"], source)
        nats = arrays[rate_key] * np.prod(source.shape[:2]) * np.log(2)
        lagrangian = nats + lamb * arrays["mse"] / 255.0 ** 2
        record.update(latent_dim=source.latent_dim, nats=float(np.mean(nats)), rdlb_lamb=lamb,
                      rdlb_lagrangian=float(np.mean(lagrangian)), rdlb_lagrangian_stderr=stderr(lagrangian))
    record.update(time=time.strftime("%Y-%m-%dT%H:%M:%S"))
    jsonl.append(results_path, record)
    print(json.dumps({k: None if isinstance(v, float) and not np.isfinite(v) else v for k, v in record.items()}))
    return record
