"""Decoding across configurations: files compressed under one TensorFlow configuration, decompressed under
another, must give the very image the encoder's own configuration decodes.

    RDS_DATA_DIR=/path/to/data python bench/decode_matrix.py --codec mbt2018 --run RUN_DIR
        [--configs t1,t2,t1-noonednn,t2-noonednn] [--images 24] [--work DIR]
    RDS_DATA_DIR=/path/to/data python bench/decode_matrix.py --codec ms2020 --train_steps 1
        [--model_flags "--num_filters 192"] --configs gpu,t16      # GPU -> CPU, on a freshly trained run

A configuration is a thread count and whether TensorFlow's oneDNN kernels are on: `t2` is 2 intra- and inter-op
threads with oneDNN, `t1-noonednn` one thread with TF_ENABLE_ONEDNN_OPTS=0; `gpu` (where TensorFlow sees one) is
the default placement and threads, oneDNN on. Each configuration runs in its own processes, through the codec's
own commands (utils/codec_commands.py: the run opened, its range-coding tables built from the weights, compress
to a file, decompress to a PNG):
- encode under A: every image (the Kodak set, or its first --images) to a file, then every file to a PNG;
- decode under B (another process for every B other than A): every file of A to a PNG.
A cell (A, B) counts the images whose PNG decoded under B equals, pixel for pixel, the one decoded under A; a
file that fails to decode (the range decoder refuses it) counts as a miss. Prints the matrix, rows the encoding
configuration, columns the decoding one; exit 1 if any cell misses an image.

Without --run, a first process (under the first configuration) trains a run for --train_steps steps on crops of
the first image (--patchsize, batch --batchsize; the codec's `train`, with --model_flags): the weights need not be
good, only shared. bench/gpu_check.sh runs it so, GPU -> CPU.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from utils import startup  # noqa: E402,F401  (before TensorFlow: it filters its start-up lines)
from utils.cli import InputError, run  # noqa: E402

CODECS = ("mbt2018", "ms2020")
DEFAULT_CONFIGS = "t1,t2,t1-noonednn,t2-noonednn"


def parse_config(name):
    """(threads or 0 for TensorFlow's default, oneDNN on, GPU) of a configuration name."""
    if name == "gpu":
        return 0, True, True
    threads, _, onednn = name.partition("-")
    if not (threads[:1] == "t" and threads[1:].isdigit() and int(threads[1:]) > 0 and onednn in ("", "noonednn")):
        raise InputError(f"--configs: {name!r} is not a configuration (tN or tN-noonednn, N threads; or gpu)")
    return int(threads[1:]), onednn == "", False


def config_env(name):
    _, onednn, gpu = parse_config(name)
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="1" if onednn else "0")
    if not gpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def open_codec(a):
    """The run's codec, opened as the codec's own commands open it, under this process's configuration."""
    import tensorflow as tf
    threads, _, gpu = parse_config(a.config)
    if gpu and not tf.config.list_physical_devices("GPU"):
        raise SystemExit("error: configuration gpu: TensorFlow sees no GPU here")
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    from utils import codec_commands
    args = argparse.Namespace(verbose=False)
    return codec_commands, codec_commands.open_codec(args, Path(a.run), a.codec)


def role_train(a):
    """Trains a throwaway run in the work folder, on crops of the first image (only so that weights exist)."""
    import shlex
    from harness import load_script
    from utils import images
    image = images.list_images(a.dataset)[0]
    load_script(a.codec).main([*shlex.split(a.model_flags), "--checkpoint_dir", str(a.work / "ckpt"), "train",
                               "--train_glob", str(image), "--patchsize", str(a.patchsize), "--batchsize",
                               str(a.batchsize), "--epochs", "1", "--steps_per_epoch", str(a.train_steps),
                               "--max_validation_steps", "1"])


def role_encode(a):
    """Compresses the images under this configuration, then decodes the files itself (the reference PNGs)."""
    from utils import images
    commands, (model, _, identity) = open_codec(a)
    out = a.work / a.config
    out.mkdir()
    for path in images.list_images(a.dataset)[:a.images]:
        commands.compress_file(a.codec, model, identity, str(path), out / f"{path.stem}.tfci")
    decode_all(a, commands, model, identity, a.config)


def role_decode(a):
    commands, (model, _, identity) = open_codec(a)
    decode_all(a, commands, model, identity, a.source)


def decode_all(a, commands, model, identity, source):
    """Decodes every file `source` encoded into PNGs under source/<this configuration>; prints the refusals."""
    from utils.cli import InputError as DecodeRefused
    out = a.work / source / a.config
    out.mkdir()
    failed = {}
    for path in sorted((a.work / source).glob("*.tfci")):
        try:
            commands.decompress_file(a.codec, model, identity, str(path), out / f"{path.stem}.png")
        except DecodeRefused as e:
            failed[path.stem] = str(e)
    print(json.dumps({"failed": failed}))


def spawn(a, role, config, source=None):
    cmd = [sys.executable, __file__, "--role", role, "--codec", a.codec, *(["--run", str(a.run)] if a.run else []),
           "--work", str(a.work), "--config", config, "--images", str(a.images), "--dataset", a.dataset,
           "--model_flags", a.model_flags, "--train_steps", str(a.train_steps), "--patchsize", str(a.patchsize),
           "--batchsize", str(a.batchsize)]
    if source:
        cmd += ["--source", source]
    proc = subprocess.run(cmd, env=config_env(config), capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"error: decode_matrix {a.codec}: the {role} process under {config} failed "
                         f"(exit {proc.returncode}); its output is above")
    lines = proc.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else {}


def matrix(a, configs):
    import numpy as np
    from utils import images
    start = time.time()
    if a.run is None:
        spawn(a, "train", configs[0])
        (a.run,) = (a.work / "ckpt").iterdir()
    encoders = a.encode_configs.split(",") if a.encode_configs else configs
    failures = {(c, c): spawn(a, "encode", c)["failed"] for c in encoders}
    failures.update({(c, d): spawn(a, "decode", d, c)["failed"] for c in encoders for d in configs if d != c})
    names = sorted(p.stem for p in (a.work / configs[0]).glob("*.tfci"))
    print(f"{a.codec} run {a.run.name}: {len(names)} images of {a.dataset}, encoded (rows) and decoded "
          f"(columns) in separate processes; images decoding to the encoder's own PNG, of {len(names)}")
    print("| encode \\ decode | " + " | ".join(configs) + " |")
    print("| --- |" + " --- |" * len(configs))
    missed = 0
    for c in encoders:
        row = []
        for d in configs:
            same = 0
            for n in names:
                ref, got = a.work / c / c / f"{n}.png", a.work / c / d / f"{n}.png"
                if got.exists() and ref.exists() and np.array_equal(images.read_image(ref)[0],
                                                                    images.read_image(got)[0]):
                    same += 1
            row.append(str(same))
            missed += len(names) - same
            for n, why in failures[c, d].items():
                print(f"note: {c} -> {d}: {n}: {why}", file=sys.stderr)
        print(f"| {c} | " + " | ".join(row) + " |")
    print(f"({time.time() - start:.0f} s)")
    if missed:
        raise SystemExit(f"error: decode_matrix {a.codec}: {missed} decodes of {len(names) * len(failures)} "
                         f"differ from the encoder's own")


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--codec", choices=CODECS, required=True)
    p.add_argument("--run", help="a trained run folder of the codec (default: train one, see --train_steps)")
    p.add_argument("--configs", default=DEFAULT_CONFIGS, help=f"comma-separated (default {DEFAULT_CONFIGS})")
    p.add_argument("--encode_configs", help="the configurations that encode, a subset of --configs (default: all)")
    p.add_argument("--dataset", default="kodak", help="images to code (a named set, folder or glob)")
    p.add_argument("--images", type=int, default=24, help="code the first N images")
    p.add_argument("--work", type=Path, help="working folder (default: a temporary one, removed afterwards)")
    p.add_argument("--model_flags", default="",
                   help="without --run: the codec's architecture flags, one string (default: the paper's)")
    p.add_argument("--train_steps", type=int, default=1, help="without --run: training steps of the run")
    p.add_argument("--patchsize", type=int, default=256, help="without --run: crop size of its training")
    p.add_argument("--batchsize", type=int, default=8, help="without --run: batch of its training")
    p.add_argument("--role", choices=("train", "encode", "decode"), help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.add_argument("--source", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.role:
        a.work = Path(a.work)
        return dict(train=role_train, encode=role_encode, decode=role_decode)[a.role](a)
    configs = a.configs.split(",")
    for c in configs:
        parse_config(c)
    if len(set(configs)) != len(configs):
        raise InputError(f"--configs {a.configs}: a configuration is named twice")
    if a.encode_configs and not set(a.encode_configs.split(",")) <= set(configs):
        raise InputError(f"--encode_configs {a.encode_configs}: not a subset of --configs {a.configs}")
    if a.run is not None:
        if not (Path(a.run) / "flags.json").is_file():
            raise InputError(f"--run {a.run}: not a trained run folder (no flags.json)")
        a.run = Path(a.run).resolve()
    if a.work is not None:
        if a.work.exists() and any(a.work.iterdir()):
            raise InputError(f"--work {a.work}: not empty (give a new or empty folder)")
        a.work.mkdir(parents=True, exist_ok=True)
        a.work = a.work.resolve()
        return matrix(a, configs)
    with tempfile.TemporaryDirectory(prefix="decode_matrix-") as work:
        a.work = Path(work)
        return matrix(a, configs)


if __name__ == "__main__":
    run(main)
