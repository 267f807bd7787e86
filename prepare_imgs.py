"""Prepares a folder of training images, as in the paper's data preparation:

keeps the color images at least --min_size x --min_size pixels and downsamples each by its own random factor
in [--min_factor, --max_factor] (mean 0.8 by default), which smooths away JPEG blocking and other compression
artifacts that a codec should not learn to reproduce. Output is lossless PNG.

    python prepare_imgs.py 'train2017/*.jpg' data/my_coco_train2017/

Each image's factor is drawn from a generator seeded by (--seed, its position in the sorted file list), so the
output does not depend on --workers. On a terminal a progress bar over the images runs on stderr (-V: also in a
log, as one line at the end).
"""
from utils import startup  # noqa: F401  (first, on purpose: TensorFlow's start-up lines; utils/startup.py)

import contextlib
import glob
import os
import sys
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image

from utils.progress import Progress
from utils.cli import ArgumentParser, InputError, output_dir, positive_float, positive_int, run
from utils.images import encode_png
from utils.runs import atomic_write_bytes


def prepare(job):
    """Writes one downsampled image; returns 'kept', 'small', 'gray' or 'unreadable'."""
    index, src, dst_dir, min_size, factors, seed = job
    try:
        with Image.open(src) as im:
            if min(im.size) < min_size:
                return "small"
            if im.mode not in ("RGB", "RGBA", "CMYK", "YCbCr", "P"):
                return "gray"
            im = im.convert("RGB")
            factor = np.random.default_rng([seed, index]).uniform(*factors)
            size = (max(1, round(im.width * factor)), max(1, round(im.height * factor)))
            small = im.resize(size, Image.LANCZOS)
    except OSError:
        return "unreadable"
    atomic_write_bytes(Path(dst_dir) / (Path(src).stem + ".png"), encode_png(np.asarray(small)))
    return "kept"


def main(argv):
    p = ArgumentParser(description=__doc__)
    p.add_argument("src_glob", help="quoted glob of source images, e.g. 'train2017/*.jpg'")
    p.add_argument("dst_dir", help="output folder (created)")
    p.add_argument("--min_size", type=positive_int, default=512, help="skip images with a shorter side")
    p.add_argument("--min_factor", type=positive_float, default=0.6, help="smallest downsampling factor")
    p.add_argument("--max_factor", type=positive_float, default=1.0,
                   help="largest downsampling factor (exclusive)")
    p.add_argument("--seed", type=int, default=0, help="seeds each image's factor, with its position")
    p.add_argument("--workers", type=positive_int, default=os.cpu_count() or 1,
                   help="processes resizing images in parallel (default: one per CPU core)")
    p.add_argument("-V", "--verbose", action="store_true",
                   help="the progress bar even when stderr is not a terminal; TensorFlow's start-up log lines")
    args = p.parse_args(argv)
    if not args.min_factor < args.max_factor <= 1:
        raise InputError(f"need --min_factor < --max_factor <= 1, got {args.min_factor} and {args.max_factor}")
    output_dir(args.dst_dir, "dst_dir")
    files = sorted(glob.glob(args.src_glob, recursive=True))
    if not files:
        raise InputError(f"src_glob {args.src_glob!r} matches no files")
    Path(args.dst_dir).mkdir(parents=True, exist_ok=True)
    jobs = [(i, f, args.dst_dir, args.min_size, (args.min_factor, args.max_factor), args.seed)
            for i, f in enumerate(files)]
    outcomes = []
    with Pool(args.workers) if args.workers > 1 else contextlib.nullcontext() as pool:
        # The workers are forked before the bar may import TensorFlow (and start its threads).
        bar = Progress(len(jobs), args.verbose, unit="image")
        # imap keeps the input order and hands back each result as soon as it is done, for the bar.
        for outcome in pool.imap(prepare, jobs, chunksize=16) if pool else map(prepare, jobs):
            outcomes.append(outcome)
            bar.update(len(outcomes))
    counts = {k: outcomes.count(k) for k in ("kept", "small", "gray", "unreadable")}
    print(f"{counts['kept']} of {len(files)} images written to {args.dst_dir}; skipped {counts['small']} smaller "
          f"than {args.min_size}, {counts['gray']} not color, {counts['unreadable']} unreadable", file=sys.stderr)


if __name__ == "__main__":
    run(main)
