#!/usr/bin/env python
"""Golden files: checks (default) or rewrites the bytes of every file format the package writes.

For each case a script's own command line writes a file from a checked-in tiny model and a checked-in input, and
the same script decodes it: the SHA-256 of the file, its size and the SHA-256 of the decoded output are compared
with tests/golden/expected.json. Every script is driven through its `main(argv)` with an argv list, all cases in
this one process, so that the check does not depend on the internals of utils/ and survives their refactoring.

    python tests/golden/make_golden.py                 # --check: print the hashes, compare, exit 1 on a mismatch
    python tests/golden/make_golden.py --threads 1     # TensorFlow's intra- and inter-op threads, set first
    python tests/golden/make_golden.py --cases mbt2018/ sga/   # only the cases whose names start so
    python tests/golden/make_golden.py --write         # rewrite expected.json from this run
    python tests/golden/make_golden.py --retrain --write   # retrain the tiny run folders and the inputs, too
    python tests/golden/make_golden.py --retrain mbt2018 ms2020 --write   # retrain only these models' run folders

A mismatch means a file format or the numerics behind it changed. If that is deliberate, rewrite expected.json
with --write and commit it in a commit of its own whose message says which format changed and why; never
regenerate to silence a refactor that was meant to change nothing. --retrain replaces the checked-in run folders
(different weights, so every hash changes): only when a model's architecture or checkpoint layout changes on
purpose. It needs MNIST under $RDS_DATA_DIR for mcbits' training run and its digits. Given model names, --retrain
retrains only their run folders and keeps the inputs (and every other run folder) as they are.
"""
import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RUNS = HERE / "runs"  # the --checkpoint_dir of every case (one run folder per model)
INPUTS = HERE / "inputs"
EXPECTED = HERE / "expected.json"

# The tiny models: architecture flags as each script takes them (the run folder names follow from them).
MBT = ["--num_filters", "4"]
MBT_BB = ["--num_filters", "4", "--hyper_posterior", "gaussian"]
MS = ["--num_filters", "4", "--latent_depth", "4", "--hyperprior_depth", "4", "--num_slices", "2",
      "--max_support_slices", "1"]
# Lossy: level 0 autoregressive (2 slices), level 1 Gaussian, the top deep factorized: every kind rec.py codes.
VAE = ["--num_filters", "4", "--latent_channels", "2,2,2", "--ar_prior_levels", "1", "--ar_slices", "2"]
VAE_LOSSLESS = ["--likelihood", "dlogistic", "--image_channels", "1", "--num_filters", "4", "--latent_channels",
                "2,2"]
REC_FAST = ["--n_beams", "3"]
MCBITS = ["--hidden_units", "8", "--latent_dim", "2"]
LAMBDA = ["--lambda", "0.01"]
# The two range-coded image codecs are trained further, at a high lambda (rate is cheap), so that their files carry
# a few hundred bytes (of a 96x128 input: y has only H/16 x W/16 x 4 elements) and their scale indexes spread over
# the table (mbt2018's from 8 to its top, 63): a change in how the indexes are predicted or rounded then changes
# bytes. (Two steps at lambda 0.01 left every index near 1, and an offset of +0.25 in their rounding changed
# nothing.) sga.py optimizes the latents of the same mbt2018 run.
CODEC_LAMBDA = ["--lambda", "1"]
CODEC_STEPS = ["--batchsize", "2", "--epochs", "1", "--steps_per_epoch", "300", "--lr", "1e-2"]
# The ResNet-VAEs that rec.py codes: after two steps their priors, given a coded latent above, could put millions
# of nats on one dimension (beyond what rec.py's blocks can split); 100 steps leave them sane.
VAE_STEPS = ["--batchsize", "2", "--epochs", "1", "--steps_per_epoch", "100", "--lr", "1e-3"]
MBT_RUN = "mbt2018-num_filters=4-lmbda=1.0"
MBT_BB_RUN = "mbt2018-num_filters=4-hyper_posterior=gaussian-lmbda=0.01"

# Checked-in inputs (written by --retrain from fixed seeds).
RGB_A, RGB_B = INPUTS / "rgb_96x128.png", INPUTS / "rgb_32x32.png"  # A: mbt2018, sga, ms2020; B: bb_sga
REC_RGB = INPUTS / "rgb_12x20.png"
REC_GREY = INPUTS / "grey_12x20.png"
DIGITS = INPUTS / "mnist_test_0-2.npy"


# ---- hashes -------------------------------------------------------------------------------------

def sha256(data):
    return hashlib.sha256(data).hexdigest()


def array_sha256(a):
    """The hash of an array's dtype, shape and C-order bytes (a decoded image, independent of PNG encoders)."""
    import numpy as np
    a = np.ascontiguousarray(a)
    return sha256(f"{a.dtype.str}{a.shape}".encode() + a.tobytes())


def png_array(path):
    import numpy as np
    from PIL import Image
    with Image.open(path) as im:
        return np.asarray(im)


def npy_array(path):
    import numpy as np
    return np.load(path, allow_pickle=False)


# ---- the cases ----------------------------------------------------------------------------------

def record(written, decoded, source=None):
    out = dict(file_bytes=written.stat().st_size, file_sha256=sha256(written.read_bytes()),
               decoded_sha256=array_sha256(decoded))
    if source is not None:  # lossless: the input's hash, which the decoded output must equal
        out["input_sha256"] = array_sha256(source)
    return out


def run_cases(runs, work, only=None):
    """Every case (or those whose names start with one of `only`), in a fixed order; returns {case: record} and
    {case: CPU seconds}. `runs`: a copy of RUNS (the scripts may write there)."""
    import bb_sga
    import mbt2018
    import mcbits
    import ms2020
    import rec
    import sga

    ckpt = ["--checkpoint_dir", str(runs)]
    cases = {}

    def case(name):
        def add(fn):
            cases[name] = fn
        return add

    for script, module, flags, src in (("mbt2018", mbt2018, MBT, RGB_A), ("ms2020", ms2020, MS, RGB_A)):
        @case(f"{script}/{src.stem}")
        def _(script=script, module=module, flags=flags, src=src):
            tfci, png = work / f"{script}.tfci", work / f"{script}.png"
            module.main([*ckpt, *CODEC_LAMBDA, *flags, "compress", str(src), str(tfci)])
            module.main([*ckpt, *CODEC_LAMBDA, *flags, "decompress", str(tfci), str(png)])
            return record(tfci, png_array(png))

    @case(f"sga/{RGB_A.stem}")
    def _():
        """Latents of the mbt2018 run optimized for a higher lambda, in a .tfci that mbt2018.py decompress reads."""
        results = work / "sga"
        sga.main([*ckpt, *MBT, "--lambda", "1", "--method", "sga", "--iterations", "2", "--lr", "0.5", "compress",
                  MBT_RUN, str(RGB_A), "--results_dir", str(results)])
        tfci, png = results / f"{RGB_A.stem}.tfci", work / "sga.png"
        mbt2018.main([*ckpt, *CODEC_LAMBDA, *MBT, "decompress", str(tfci), str(png)])
        return record(tfci, png_array(png))

    @case(f"bb_sga/{RGB_B.stem}")
    def _():
        """Lossy bits-back: SGA on y, then q(z | y_hat) re-optimized (which the decoder repeats)."""
        results = work / "bb_sga"
        bb_sga.main([*ckpt, "--lambda", "1", "--method", "sga", "--iterations", "2", "--lr", "0.5",
                     "--rate_iterations", "2", "compress", MBT_BB_RUN, str(RGB_B), "--results_dir", str(results)])
        bbi, png = results / f"{RGB_B.stem}.bbi", work / "bb_sga.png"
        bb_sga.main([*ckpt, "decompress", str(bbi), str(png), "--run_name", MBT_BB_RUN])
        return record(bbi, png_array(png))

    @case(f"rec_lossy/{REC_RGB.stem}")
    def _():
        f, png = work / "lossy.rec", work / "lossy.png"
        rec.main([*VAE, *LAMBDA, *REC_FAST, *ckpt, "compress", str(REC_RGB), str(f)])
        rec.main([*VAE, *LAMBDA, *REC_FAST, *ckpt, "decompress", str(f), str(png)])
        return record(f, png_array(png))

    @case(f"rec_lossless/{REC_GREY.stem}")
    def _():
        f, png = work / "lossless.rec", work / "lossless.png"
        rec.main([*VAE_LOSSLESS, *REC_FAST, *ckpt, "compress", str(REC_GREY), str(f)])
        rec.main([*VAE_LOSSLESS, *REC_FAST, *ckpt, "decompress", str(f), str(png)])
        return record(f, png_array(png), png_array(REC_GREY))

    for coder, k in (("bb_elbo", 1), ("bb_is", 3), ("bb_cis", 3)):
        @case(f"mcbits/{coder}")
        def _(coder=coder, k=k):
            """One message of the three binarized MNIST digits."""
            weights = runs / mcbits_run_name() / "weights.npz"
            msg, back = work / f"{coder}.mcb", work / f"{coder}.npy"
            mcbits.main([*MCBITS, "--weights", str(weights), "--dataset", str(DIGITS), "compress", "--coder", coder,
                         "--num_particles", str(k), "--num_compress", "3", "--ideal_samples", "3",
                         "--results_dir", str(work / "mcbits"), "--output", str(msg)])
            mcbits.main([*MCBITS, "--weights", str(weights), "decompress", str(msg), "--output", str(back)])
            return record(msg, npy_array(back), npy_array(DIGITS))

    out, seconds = {}, {}
    for name, fn in cases.items():
        if only and not name.startswith(tuple(only)):
            continue
        start = time.process_time()
        out[name] = fn()
        seconds[name] = time.process_time() - start
    return out, seconds


def mcbits_run_name():
    (run,) = [p.name for p in RUNS.iterdir() if p.name.startswith("mcbits")]
    return run


# ---- retraining ---------------------------------------------------------------------------------

def smooth_image(h, w, seed, channels=3):
    """A smooth image with a little noise: what a codec sees, unlike white noise."""
    import numpy as np
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    planes = [128 + 100 * np.sin(6 * a * xx + 5 * b * yy + c) for a, b, c in rng.uniform(0.3, 1.5, (channels, 3))]
    x = np.stack(planes, -1) + rng.normal(0, 4, (h, w, channels))
    x = np.clip(np.round(x), 0, 255).astype(np.uint8)
    return x[..., 0] if channels == 1 else x


# --retrain's model names: the run folders each retrains (by name prefix), in training order.
MODELS = {"mbt2018": ("mbt2018-num_filters=4-lmbda=",), "bb_sga": (MBT_BB_RUN,), "ms2020": ("ms2020-",),
          "rec": ("resnet_vae-",), "mcbits": ("mcbits-",)}


def retrain(models=None):
    """Trains tiny run folders with the scripts' own `train` commands: those of `models` (names of MODELS), or every
    one, after rewriting the inputs, when None (otherwise only missing inputs are written). mbt2018 and ms2020:
    CODEC_STEPS at CODEC_LAMBDA (300 steps, learning rate 1e-2, lambda 1); the ResNet-VAEs: VAE_STEPS; the others:
    two steps at lambda 0.01."""
    import numpy as np
    from PIL import Image

    import mbt2018
    import mcbits
    import ms2020
    import resnet_vae
    from utils import mnist

    if models is None:
        shutil.rmtree(RUNS, ignore_errors=True)
        shutil.rmtree(INPUTS, ignore_errors=True)
        models = list(MODELS)
    INPUTS.mkdir(parents=True, exist_ok=True)
    for path, (h, w), seed, c in ((RGB_A, (96, 128), 5, 3), (RGB_B, (32, 32), 2, 3), (REC_RGB, (12, 20), 3, 3),
                                  (REC_GREY, (12, 20), 4, 1)):
        if not path.exists():  # a partial retraining keeps the inputs there are
            Image.fromarray(smooth_image(h, w, seed, c)).save(path)
    if not DIGITS.exists():
        np.save(DIGITS, mnist.test_images("mnist", 3).reshape(3, 28, 28))
    for p in list(RUNS.iterdir()) if RUNS.exists() else []:
        if any(p.name.startswith(prefix) for m in models for prefix in MODELS[m]):
            shutil.rmtree(p)

    # Relative paths from tests/golden, so that the flags.json files name no machine's folders.
    cwd = os.getcwd()
    os.chdir(HERE)
    train = Path("train")
    try:
        train.mkdir()
        for i in range(4):
            Image.fromarray(smooth_image(64, 64, 100 + i)).save(train / f"rgb{i}.png")
        rgb = str(train / "rgb*.png")
        ckpt = ["--checkpoint_dir", RUNS.name]
        steps = ["--batchsize", "2", "--epochs", "1", "--steps_per_epoch", "2", "--lr", "1e-3"]
        image_codecs = (("mbt2018", mbt2018, MBT, CODEC_LAMBDA, CODEC_STEPS),
                        ("bb_sga", mbt2018, MBT_BB, LAMBDA, steps), ("ms2020", ms2020, MS, CODEC_LAMBDA, CODEC_STEPS))
        for name, module, flags, lmbda, how in image_codecs:
            if name in models:
                module.main([*ckpt, *lmbda, *flags, "train", "--train_glob", rgb, "--patchsize", "64", *how])
        if "rec" in models:
            resnet_vae.main([*ckpt, *LAMBDA, *VAE, "train", "--dataset", rgb, "--patchsize", "16", *VAE_STEPS,
                             "--max_validation_steps", "1"])
            # grey levels: resnet_vae.py reads every set but MNIST's as RGB
            resnet_vae.main([*ckpt, *VAE_LOSSLESS, "train", "--dataset", "mnist", "--patchsize", "16", *VAE_STEPS,
                             "--max_validation_steps", "1"])
        if "mcbits" in models:
            mcbits.main([*MCBITS, "train", *ckpt, "--epochs", "1", "--steps_per_epoch", "2", "--batchsize", "20",
                         "--max_validation_steps", "1"])
    finally:
        shutil.rmtree(train, ignore_errors=True)
        os.chdir(cwd)
    # mcbits.py compress and decompress read weights.npz only: its training checkpoint (Adam's state, for --cont)
    # would double the folder's size for nothing. (The image codecs' checkpoints keep theirs, as `train` wrote them.)
    if "mcbits" in models:
        for p in (RUNS / mcbits_run_name()).iterdir():
            if p.name == "checkpoint" or p.name.startswith("ckpt-"):
                p.unlink()


# ---- command line -------------------------------------------------------------------------------

def compare(got, expected):
    """The mismatches, one line each."""
    lines = []
    for case in sorted(set(got) | set(expected)):
        if case not in expected:
            lines.append(f"{case}: not in expected.json")
        elif case not in got:
            lines.append(f"{case}: in expected.json but not run")
        else:
            for key in sorted(set(got[case]) | set(expected[case])):
                if got[case].get(key) != expected[case].get(key):
                    lines.append(f"{case}: {key} {got[case].get(key)} != expected {expected[case].get(key)}")
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="compare with expected.json (the default)")
    mode.add_argument("--write", action="store_true", help="rewrite expected.json from this run")
    p.add_argument("--retrain", nargs="*", choices=list(MODELS), metavar="MODEL",
                   help="first retrain these models' run folders (of " + ", ".join(MODELS) + "); with no names, "
                   "rewrite the inputs and retrain every run folder (needs --write: the hashes change)")
    p.add_argument("--threads", type=int, default=0, help="TensorFlow's intra- and inter-op threads (0: its default)")
    p.add_argument("--json", help="also write this run's records to this file")
    p.add_argument("--cases", nargs="+", metavar="PREFIX", help="run and compare only the cases whose names start "
                   "with one of these (mbt2018/, sga/, ...); not with --write")
    args = p.parse_args(argv)
    if args.cases and args.write:
        p.error("--write rewrites every case: leave out --cases")
    if args.retrain is not None and not args.write:
        p.error("--retrain changes the hashes: give --write as well")

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as mcbits.py sets it for itself, before NumPy loads
    sys.path.insert(0, str(ROOT))
    import tensorflow as tf
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)

    start = time.time()
    if args.retrain is not None:
        retrain(args.retrain or None)
    with tempfile.TemporaryDirectory() as tmp:
        runs, work = Path(tmp) / "runs", Path(tmp) / "work"
        shutil.copytree(RUNS, runs)
        work.mkdir()
        got, seconds = run_cases(runs, work, args.cases)
    for case, r in got.items():
        print(f"{case:26s} {r['file_bytes']:5d} B  file {r['file_sha256'][:16]}  decoded {r['decoded_sha256'][:16]}  "
              f"{seconds[case]:5.1f} CPU-s")
    print(f"{len(got)} cases in {time.time() - start:.1f} s (threads: {args.threads or 'default'})")
    if args.json:
        Path(args.json).write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    if args.write:
        EXPECTED.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
        print(f"wrote {EXPECTED.relative_to(ROOT)}")
        return 0
    expected = json.loads(EXPECTED.read_text())
    if args.cases:
        expected = {k: v for k, v in expected.items() if k.startswith(tuple(args.cases))}
    bad = compare(got, expected)
    for line in bad:
        print(f"MISMATCH {line}")
    if bad:
        print("A file format or its numerics changed. If deliberate: python tests/golden/make_golden.py --write, "
              "committed on its own.")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
