"""The exported SavedModel against the script: equal images and strings, seconds per image, start-up, sizes.

    RDS_DATA_DIR=/path/to/data python bench/export_bench.py --codec mbt2018 --run RUN_DIR [--images 24]
        [--cold 2]

In one process it opens the run as the codec's commands do (utils/codec_commands.py), exports it
(utils/export.py) to a temporary folder and loads the export with `tf.saved_model.load`. Then for each Kodak
image, alternating the two: the script's compress (to the bytes of a file) and the export's; the export's
strings must be the file's strings, and the export's decompress must give the script's decoded PNG, pixel for
pixel. It prints how many images agree, the median seconds per image of each call and their ratio
(export / script), and the sizes of the checkpoint and of the export.

`--cold N` also times what a user waits for, one image from a fresh process: `mbt2018.py --run RUN compress`,
`mbt2018.py compress --export EXPORT` and `docs/deploy_codec.py EXPORT compress` (and the same for decompress;
and `--help`), N alternating rounds, medians; the two scripts' files must be the same bytes.
"""
import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import ROOT  # first: imports utils (and its start-up filter) before TensorFlow

from utils.cli import InputError, run

CODECS = ("mbt2018", "ms2020")


def folder_bytes(path, pattern="*"):
    return sum(p.stat().st_size for p in Path(path).rglob(pattern) if p.is_file())


def clock(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def warm(a, work):
    """Per-image seconds of the four calls in one process, with the agreement checks."""
    import numpy as np
    import tensorflow as tf
    from utils import codec_commands, container, export, images
    args = argparse.Namespace(verbose=False)
    (model, checkpoint, identity), t_open = clock(lambda: codec_commands.open_codec(args, Path(a.run), a.codec))
    _, t_export = clock(lambda: export.export(model, work / "export", {"identity": identity.hex(), "script": a.codec}))
    exported, t_load = clock(lambda: tf.saved_model.load(str(work / "export")))
    times = {k: [] for k in ("script compress", "export compress", "script decompress", "export decompress")}
    agree = 0
    paths = images.list_images(a.dataset)[:a.images]
    for path in paths:
        image, _, _ = images.read_image(path)
        data, t = clock(lambda: codec_commands.compress_image(a.codec, model, identity, image, 3))
        times["script compress"].append(t)
        (strings, shape), t = clock(lambda: [v.numpy() for v in exported.compress(tf.constant(image, tf.uint8))])
        times["export compress"].append(t)
        ours, t = clock(lambda: images.to_uint8(codec_commands.decompress_bytes(a.codec, model, identity, data,
                                                                                path.name)[0]))
        times["script decompress"].append(t)
        theirs, t = clock(lambda: exported.decompress(tf.constant(strings), tf.constant(shape)).numpy())
        times["export decompress"].append(t)
        same = strings.tolist() == container.unpack(data, a.codec, identity)[2] and np.array_equal(ours, theirs)
        agree += same
        if not same:
            print(f"note: {path.name}: the export and the script disagree", file=sys.stderr)
    print(f"{a.codec} run {Path(a.run).name} ({Path(str(checkpoint)).name}): {agree} of {len(paths)} images give "
          f"the same strings and the same decoded image through the export and the script")
    print(f"open the run (build, restore, tables) {t_open:.1f} s; export {t_export:.1f} s; load the export "
          f"{t_load:.1f} s")
    folder = work / "export"
    print(f"sizes: checkpoint {folder_bytes(a.run, 'ckpt-*') / 1e6:.1f} MB (with Adam's state); export "
          f"{folder_bytes(folder) / 1e6:.1f} MB (variables {folder_bytes(folder / 'variables') / 1e6:.1f} MB)")
    print("| seconds per image (median) | script | export | export / script |")
    print("| --- | --- | --- | --- |")
    for op in ("compress", "decompress"):
        s, e = statistics.median(times[f"script {op}"]), statistics.median(times[f"export {op}"])
        print(f"| {op} | {s:.3f} | {e:.3f} | {e / s:.2f} |")
    return agree == len(paths)


def cold(a, work):
    """Seconds of one-image commands from a fresh process, alternating: the script on the run, the script on the
    export (--export), and the deploy tool on the export; and the script's --help."""
    from utils import images
    src = str(images.list_images(a.dataset)[0])
    py, script, tool, export = sys.executable, str(ROOT / f"{a.codec}.py"), str(ROOT / "docs" / "deploy_codec.py"), \
        str(work / "export")
    commands = {
        ("compress", "run"): [py, script, "--run", a.run, "compress", src, str(work / "s.tfci"), "--force"],
        ("compress", "--export"): [py, script, "compress", "--export", export, src, str(work / "x.tfci"), "--force"],
        ("compress", "tool"): [py, tool, export, "compress", src, str(work / "e.tfc")],
        ("decompress", "run"): [py, script, "--run", a.run, "decompress", str(work / "s.tfci"), str(work / "s.png"),
                                "--force"],
        ("decompress", "--export"): [py, script, "decompress", "--export", export, str(work / "s.tfci"),
                                     str(work / "x.png"), "--force"],
        ("decompress", "tool"): [py, tool, export, "decompress", str(work / "e.tfc"), str(work / "e.png")],
        ("--help", "run"): [py, script, "--help"],
    }
    times = {k: [] for k in commands}
    for _ in range(a.cold):
        for name, cmd in commands.items():
            start = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            times[name].append(time.perf_counter() - start)
    if (work / "x.tfci").read_bytes() != (work / "s.tfci").read_bytes():
        raise SystemExit("error: compress --export wrote another file than compress on the run")
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"one image ({Path(src).name}) from a fresh process, median of {a.cold} alternating rounds "
          f"(--help: {med['--help', 'run']:.2f} s):")
    print("| seconds, end to end | script on the run | script --export | deploy_codec.py | --export / run |")
    print("| --- | --- | --- | --- | --- |")
    for op in ("compress", "decompress"):
        r, x, t = med[op, "run"], med[op, "--export"], med[op, "tool"]
        print(f"| {op} | {r:.1f} | {x:.1f} | {t:.1f} | {x / r:.2f} |")


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--codec", choices=CODECS, required=True)
    p.add_argument("--run", required=True, help="a trained run folder of the codec")
    p.add_argument("--dataset", default="kodak", help="images to code (a named set, folder or glob)")
    p.add_argument("--images", type=int, default=24, help="code the first N images")
    p.add_argument("--cold", type=int, default=0, help="alternating pairs of one-image commands to time (0: none)")
    a = p.parse_args(argv)
    if not (Path(a.run) / "flags.json").is_file():
        raise InputError(f"--run {a.run}: not a trained run folder (no flags.json)")
    a.run = str(Path(a.run).resolve())
    with tempfile.TemporaryDirectory(prefix="export_bench-") as work:
        ok = warm(a, Path(work))
        if a.cold:
            cold(a, Path(work))
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    run(main)
