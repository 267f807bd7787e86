"""Cross-device decoding: a file compressed on one device must decode on another to the very reconstruction that
the first device's eval scored.

    RDS_DATA_DIR=/path/to/data python bench/cross_device.py --codec mbt2018 [--encode_device gpu]
        [--decode_device cpu] [--model_flags "--num_filters 192"] [--image PATH] [--work DIR]

Two processes, each through the codec's own command line (its `main`, in-process):
- on the encode device: `train` for --train_steps steps on crops of the image (so that a checkpoint exists; the
  weights need not be good, only shared), then `eval` on the image, the real eval path (compress to bytes, decode,
  check against the model's quantized reconstruction, score); its calls are observed to keep the bytes it coded
  and the reconstruction it scored, written as a .tfci file and a PNG;
- on the decode device: `decompress` of that .tfci file. This process rebuilds the entropy model's range-coding
  tables from the restored weights and recomputes the hyper-synthesis (the means and scale indexes) on its own
  device, which is where floating-point differences between devices would break decoding.
The two PNGs must be equal pixel for pixel, and the MSE of the second against the source must equal the MSE that
eval recorded, exactly. Exit 0 and one line "identical ..." if so; exit 1 with what differs if not.
A device is "cpu" (CUDA_VISIBLE_DEVICES="") or "gpu" (the environment as it is: TensorFlow's default placement,
the first GPU when there is one); the line says which device each side actually ran on.
"""
import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from utils import startup  # noqa: E402,F401  (before TensorFlow: it filters its start-up lines)
from utils.cli import InputError, positive_float, run  # noqa: E402

CODECS = ("mbt2018", "ms2020")


def device_env(device):
    env = dict(os.environ)
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def device_label():
    import tensorflow as tf
    gpus = tf.config.list_physical_devices("GPU")
    return f"GPU ({gpus[0].name})" if gpus else "CPU"


def role_encode(a):
    """Runs on the encode device: `train` a few steps, then `eval` on the image, recording the file bytes eval
    coded and the reconstruction it scored (eval's own calls, observed, not redone); prints {"device": ...}."""
    from harness import load_script
    from utils import codec_commands as shared, images
    codec = load_script(a.codec)
    flags = [*shlex.split(a.model_flags), "--checkpoint_dir", str(a.work / "ckpt")]
    codec.main([*flags, "train", "--train_glob", a.image, "--patchsize", str(a.patchsize), "--batchsize",
                str(a.batchsize), "--epochs", "1", "--steps_per_epoch", str(a.train_steps),
                "--max_validation_steps", "1"])
    seen = {}
    compress_image, decompress_bytes = shared.compress_image, shared.decompress_bytes

    def spy_compress(*args):
        seen["data"] = compress_image(*args)
        return seen["data"]

    def spy_decompress(*args):
        seen["x_hat"], channels = decompress_bytes(*args)
        return seen["x_hat"], channels

    shared.compress_image, shared.decompress_bytes = spy_compress, spy_decompress
    try:
        codec.main([*flags, "eval", "--dataset", a.image, "--results_dir", str(a.work / "eval"), "--no_sub_dir"])
    finally:
        shared.compress_image, shared.decompress_bytes = compress_image, decompress_bytes
    (a.work / "image.tfci").write_bytes(seen["data"])
    images.write_png(a.work / "encode_device.png", images.to_uint8(seen["x_hat"]))
    print(json.dumps({"device": device_label()}))


def role_decode(a):
    from harness import load_script
    codec = load_script(a.codec)
    flags = [*shlex.split(a.model_flags), "--checkpoint_dir", str(a.work / "ckpt")]
    codec.main([*flags, "decompress", str(a.work / "image.tfci"), str(a.work / "decode_device.png")])
    print(json.dumps({"device": device_label()}))


def spawn(a, role, device):
    """Runs this script in `role` on `device`; returns the device it reported. Exits 1 with its output on failure."""
    cmd = [sys.executable, __file__, "--role", role, "--codec", a.codec, "--model_flags", a.model_flags,
           "--image", a.image, "--work", str(a.work), "--patchsize", str(a.patchsize), "--batchsize",
           str(a.batchsize), "--train_steps", str(a.train_steps)]
    try:
        proc = subprocess.run(cmd, env=device_env(device), capture_output=True, text=True, timeout=a.timeout)
    except subprocess.TimeoutExpired:
        raise SystemExit(f"error: cross_device {a.codec}: the {role} process on {device} took over {a.timeout:g} s "
                         f"(--timeout)")
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"error: cross_device {a.codec}: the {role} process on {device} failed "
                         f"(exit {proc.returncode}); its output is above")
    return json.loads(proc.stdout.strip().splitlines()[-1])["device"]


def compare(scored, decoded, scored_mse, source):
    """'' if `decoded` (uint8) is `scored` pixel for pixel and its MSE against `source` is exactly `scored_mse`;
    otherwise what differs."""
    from utils import images
    import numpy as np
    if scored.shape != decoded.shape:
        return f"shapes differ: {scored.shape} scored, {decoded.shape} decoded"
    diff = np.abs(scored.astype(np.int16) - decoded.astype(np.int16))
    if diff.any():
        return (f"{int(np.count_nonzero(diff))} of {diff.size} values differ, by up to {int(diff.max())} (of 255)")
    m = images.mse(source, decoded)
    if m != scored_mse:
        return f"the decoded image's MSE {m!r} is not the MSE eval recorded, {scored_mse!r}"
    return ""


def check(a):
    import numpy as np
    from utils import images
    enc = spawn(a, "encode", a.encode_device)
    dec = spawn(a, "decode", a.decode_device)
    npz = sorted((a.work / "eval").glob("*.npz"))
    if len(npz) != 1:
        raise SystemExit(f"error: cross_device {a.codec}: expected one eval .npz in {a.work / 'eval'}, "
                         f"found {len(npz)}")
    with np.load(npz[0]) as f:
        scored_mse = float(f["mse"][0])
    source, channels, _ = images.read_image(Path(a.image))
    source = images.to_channels(source, channels)
    scored = images.read_image(a.work / "encode_device.png")[0]
    decoded = images.read_image(a.work / "decode_device.png")[0]
    problem = compare(scored, decoded, scored_mse, source)
    where = f"{a.codec} {shlex.join(shlex.split(a.model_flags))}: compressed on {enc}, decoded on {dec}"
    if enc == dec:
        where += " (the same kind of device on both sides: not a cross-device check)"
    if problem:
        raise SystemExit(f"error: cross-device decoding FAILED for {where}: {problem}. See docs/gpu.md")
    print(f"identical: {where}; {decoded.shape[1]}x{decoded.shape[0]} image {Path(a.image).name}, "
          f"MSE {scored_mse:.6g} as eval scored it, {(a.work / 'image.tfci').stat().st_size} bytes")


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--codec", choices=CODECS, required=True)
    p.add_argument("--encode_device", choices=("gpu", "cpu"), default="gpu")
    p.add_argument("--decode_device", choices=("gpu", "cpu"), default="cpu")
    p.add_argument("--model_flags", default="",
                   help="the codec's architecture flags, one string (default: the paper's)")
    p.add_argument("--image", help="the image to code (default: the first Kodak image under $RDS_DATA_DIR)")
    p.add_argument("--patchsize", type=int, default=256, help="crop size of the few training steps")
    p.add_argument("--batchsize", type=int, default=8, help="batch of the few training steps")
    p.add_argument("--train_steps", type=int, default=1, help="training steps before coding")
    p.add_argument("--work", type=Path, help="working folder (default: a temporary one, removed afterwards)")
    p.add_argument("--timeout", type=positive_float, default=600, help="seconds allowed to each of the two processes")
    p.add_argument("--role", choices=("encode", "decode"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.role:
        return (role_encode if a.role == "encode" else role_decode)(a)
    if a.image is None:
        from utils import images
        a.image = str(images.list_images("kodak")[0])
    elif not Path(a.image).is_file():
        raise InputError(f"--image {a.image}: no such file")
    a.image = str(Path(a.image).resolve())
    if a.work is not None:
        if a.work.exists() and any(a.work.iterdir()):
            raise InputError(f"--work {a.work}: not empty (give a new or empty folder)")
        a.work.mkdir(parents=True, exist_ok=True)
        a.work = a.work.resolve()
        return check(a)
    with tempfile.TemporaryDirectory(prefix="cross_device-") as work:
        a.work = Path(work)
        return check(a)


if __name__ == "__main__":
    run(main)
