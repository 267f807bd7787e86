"""bench/cross_device.py: a file eval coded in one process decodes in another to exactly what eval scored."""
import importlib.util
import subprocess
import sys

import numpy as np
from PIL import Image

from conftest import ROOT, data_path


def load_cross_device():
    spec = importlib.util.spec_from_file_location("cross_device", ROOT / "bench" / "cross_device.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cpu_to_cpu_decoding_is_exact(tmp_path):
    # A 128x64 crop of a Kodak image keeps both processes short; the second process rebuilds the range-coding
    # tables and the hyper-synthesis from the checkpoint on its own, so equality is not given.
    crop = tmp_path / "crop.png"
    Image.open(data_path("kodak/kodim01.png")).crop((0, 0, 128, 64)).save(crop)
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "cross_device.py"), "--codec", "mbt2018",
                           "--encode_device", "cpu", "--decode_device", "cpu", "--model_flags", "--num_filters 8",
                           "--patchsize", "64", "--batchsize", "1", "--image", str(crop),
                           "--work", str(tmp_path / "w")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("identical: mbt2018 --num_filters 8: compressed on CPU, decoded on CPU")
    scored = np.asarray(Image.open(tmp_path / "w" / "encode_device.png"))
    decoded = np.asarray(Image.open(tmp_path / "w" / "decode_device.png"))
    assert scored.shape == (64, 128, 3) and np.array_equal(scored, decoded)


def test_compare_names_what_differs():
    compare = load_cross_device().compare
    rng = np.random.default_rng(0)
    source = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    scored = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    mse = float(np.mean((source.astype(np.float64) - scored) ** 2))
    assert compare(scored, scored.copy(), mse, source) == ""
    off = scored.copy()
    off[1, 2, 0] ^= 1
    assert compare(scored, off, mse, source) == "1 of 72 values differ, by up to 1 (of 255)"
    assert "not the MSE eval recorded" in compare(scored, scored.copy(), mse + 1e-9, source)
    assert "shapes differ" in compare(scored, scored[:2], mse, source)
