"""Shared test set-up: the repository on sys.path, data lookup that skips when data is absent, CLI runner."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from utils import startup  # noqa: E402,F401  (before any test module loads TensorFlow, as the scripts do)


# The longest test files, in the order they should start (seconds on 2 cores, from --durations: 237, 197, 145, 85,
# 78, ...). pytest-xdist's loadfile scheduler hands out the files with the most tests first; these hold one to
# four tests each, so they came last and one of them ran alone at the end. Started first, the short files fill in
# around them.
SLOW_FILES = ("test_reproduce_images.py", "test_reproduce.py", "test_reproduce_rec.py", "test_golden.py",
              "test_reproduce_seeds.py", "test_sga.py", "test_codecs.py")


def pytest_xdist_make_scheduler(config, log):
    if config.getoption("dist") != "loadfile":
        return None  # xdist's own scheduler
    from xdist.scheduler import LoadFileScheduling

    class LongestFirst(LoadFileScheduling):
        def _assign_work_unit(self, node):
            for name in SLOW_FILES:
                scope = next((s for s in self.workqueue if s.rsplit("/", 1)[-1] == name), None)
                if scope is not None:
                    self.workqueue.move_to_end(scope, last=False)
                    break
            super()._assign_work_unit(node)

    return LongestFirst(config, log)


def data_path(relative):
    """A file under $RDS_DATA_DIR, or skip the test saying what is missing."""
    base = os.environ.get("RDS_DATA_DIR")
    if not base:
        pytest.skip(f"RDS_DATA_DIR is not set; this test needs {relative}")
    p = Path(base) / relative
    if not p.exists():
        pytest.skip(f"{p} is absent (RDS_DATA_DIR={base})")
    return p


def run_script(script, *args, cwd=None, check=None, timeout=600):
    """Runs a top-level script as a user would; returns the CompletedProcess (text output).

    `check=True` asserts exit 0, `check=False` asserts a non-zero exit; None checks nothing.
    """
    env = dict(os.environ, PYTHONHASHSEED="0", TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], cwd=cwd or ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if check is True:
        assert proc.returncode == 0, f"{script} failed:\n{proc.stdout}\n{proc.stderr}"
    elif check is False:
        assert proc.returncode != 0, f"{script} should have failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


# ---- reading reproduce.py's page: a section's table rows, a cell's number and its +- ------------------------------

def table_rows(text, name):
    section = text.split(f"## {name}\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 7 and cells[0] not in ("quantity", "---"):
            rows.append(cells)
    return rows


def number(cell):
    return float(cell.split()[0])


def spread(cell):
    return float(cell.split("±")[1]) if "±" in cell else 0.0
