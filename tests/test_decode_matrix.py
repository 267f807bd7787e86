"""bench/decode_matrix.py: files compressed in one process decode in separate processes, under another thread
count, to the encoder's own image."""
import importlib.util
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from utils.cli import InputError

RUN = "mbt2018-num_filters=4-lmbda=1.0"
INPUTS = ROOT / "tests" / "golden" / "inputs"


def load_decode_matrix():
    spec = importlib.util.spec_from_file_location("decode_matrix", ROOT / "bench" / "decode_matrix.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_files_decode_alike_across_thread_counts(tmp_path):
    # The checked-in golden run (a copy: its first opening saves the coding tables) and the three RGB inputs; the
    # decoding processes restore the run and recompute every mean and scale index under their own threads.
    run = tmp_path / RUN
    shutil.copytree(ROOT / "tests" / "golden" / "runs" / RUN, run)
    work = tmp_path / "w"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "decode_matrix.py"), "--codec", "mbt2018", "--run",
                           str(run), "--configs", "t2,t1", "--encode_configs", "t2", "--dataset",
                           str(INPUTS / "rgb_*.png"), "--work", str(work)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| t2 | 3 | 3 |" in proc.stdout
    names = sorted(p.stem for p in INPUTS.glob("rgb_*.png"))
    for name in names:
        ref, got = (np.asarray(Image.open(work / "t2" / c / f"{name}.png")) for c in ("t2", "t1"))
        source = np.asarray(Image.open(INPUTS / f"{name}.png").convert("RGB"))
        assert ref.shape == source.shape and np.array_equal(ref, got)
    assert (run / "coding_tables.npz").is_file()


def test_configuration_names():
    parse = load_decode_matrix().parse_config
    assert parse("t1") == (1, True, False) and parse("t16-noonednn") == (16, False, False)
    assert parse("gpu") == (0, True, True)
    for bad in ("t0", "1", "t2-onednn", "cpu"):
        with pytest.raises(InputError, match="is not a configuration"):
            parse(bad)
