"""Start-up: TF's C++ import chatter is dropped unless -V (utils/startup.py), every other line still shows; every
script's --help (and each subcommand's) is complete and answers without importing TensorFlow."""
import ast
import json
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT
from utils.startup import drop_noise, quiet_stderr

# The chatter as TF 2.14 prints it on a CPU machine (timestamps and source lines as seen there).
CHATTER = b"""\
2026-11-30 17:51:26.109998: I tensorflow/tsl/cuda/cudart_stub.cc:28] Could not find cuda drivers on your machine, GPU will not be used.
2026-11-30 17:51:26.225478: E tensorflow/compiler/xla/stream_executor/cuda/cuda_dnn.cc:9342] Unable to register cuDNN factory: Attempting to register factory for plugin cuDNN when one has already been registered
2026-11-30 17:51:26.225527: E tensorflow/compiler/xla/stream_executor/cuda/cuda_fft.cc:609] Unable to register cuFFT factory: Attempting to register factory for plugin cuFFT when one has already been registered
2026-11-30 17:51:26.225555: E tensorflow/compiler/xla/stream_executor/cuda/cuda_blas.cc:1518] Unable to register cuBLAS factory: Attempting to register factory for plugin cuBLAS when one has already been registered
2026-11-30 17:51:26.261558: I tensorflow/core/platform/cpu_feature_guard.cc:182] This TensorFlow binary is optimized to use available CPU instructions in performance-critical operations.
To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with the appropriate compiler flags.
2026-11-30 17:51:26.300000: I tensorflow/core/util/port.cc:111] oneDNN custom operations are on. You may see slightly different numerical results due to floating-point round-off errors from different computation orders. To turn them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.
2026-11-30 17:51:33.248799: W tensorflow/compiler/tf2tensorrt/utils/py_utils.cc:38] TF-TRT Warning: Could not find TensorRT
"""
REAL = (b"2026-11-30 17:51:34.000001: E tensorflow/core/framework/op_kernel.cc:1839] OP_REQUIRES failed at "
        b"conv_ops.cc:1068 : RESOURCE_EXHAUSTED: OOM when allocating tensor\n"
        b"/x/y.py:3: DeprecationWarning: a real Python warning\n  warnings.warn('a real Python warning')\n")
# Independent of utils.NOISE: words that only the chatter contains.
CHATTER_WORDS = re.compile(r"cuDNN|cuFFT|cuBLAS|oneDNN|TensorRT|cuda drivers|CPU instructions|rebuild TensorFlow")
TF_LOG_LINE = re.compile(r"^\S+ \S+: [IWEF] tensorflow/", re.M)


def test_drop_noise_keeps_real_lines_in_order():
    lines = CHATTER.splitlines(keepends=True)
    real = REAL.splitlines(keepends=True)
    mixed = b"".join(lines[:2] + real[:1] + lines[2:6] + real[1:] + lines[6:])
    assert drop_noise(mixed) == REAL
    assert drop_noise(CHATTER) == b""


def test_quiet_stderr_replays_what_is_not_noise(capfd):
    with quiet_stderr():
        os.write(2, CHATTER + REAL)  # C++ and Python (outside pytest) both write to fd 2
    assert capfd.readouterr().err == REAL.decode()


def _failing_command(*flags, **env_vars):
    """rdub_mlp.py with a missing data file: it parses its flags, imports TensorFlow, then stops with exit 2."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as a user starts it
    env.update(env_vars)
    proc = subprocess.run([sys.executable, str(ROOT / "rdub_mlp.py"), *flags, "--lambda", "1", "--dataset",
                           "missing.npy", "eval"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and "error: --dataset not found" in proc.stderr, proc.stderr
    return proc.stderr


def test_a_script_starts_quietly_and_speaks_with_V():
    # With Python's warnings on, TF's own import warns (ml_dtypes' float8_e4m3b11 is deprecated): a real warning,
    # printed while fd 2 is captured, that must come through.
    quiet = _failing_command(PYTHONWARNINGS="default")
    assert not [line for line in quiet.splitlines() if CHATTER_WORDS.search(line)], quiet
    assert not TF_LOG_LINE.search(quiet), quiet
    assert "DeprecationWarning: ml_dtypes.float8_e4m3b11 is deprecated" in quiet, quiet
    # -V: TF's own level (0) and no filtering; every TF import logs at least one line at level 0 (the cuDNN/cuFFT/
    # cuBLAS double registration of the 2.14 wheel, and the CPU or GPU notices).
    loud = _failing_command("-V")
    assert TF_LOG_LINE.search(loud), loud


def test_every_script_imports_startup_first():
    """Start-up is explicit: each script's first import is `from utils import startup`, so that it runs before
    anything that could load TensorFlow; and `import utils` loads no module of the package by itself."""
    for path in ROOT.glob("*.py"):
        tree = ast.parse(path.read_text())
        first = next(node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom)))
        assert isinstance(first, ast.ImportFrom) and first.module == "utils" and \
            [a.name for a in first.names] == ["startup"], f"{path.name}: its first import is not utils.startup"
    proc = subprocess.run([sys.executable, "-c", "import sys, utils; "
                           "print(sorted(m for m in sys.modules if m.startswith('utils')))"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.stdout.split() == ["['utils']"], proc.stdout + proc.stderr


# ---- --help ---------------------------------------------------------------------------------------

SCRIPTS = sorted(p.name for p in ROOT.glob("*.py"))

# Runs a script's --help, then each subcommand's, in one process (runpy, as `python SCRIPT ... --help` would),
# recording every parser that printed its help; prints one JSON object.
HELP_RUNNER = """
import argparse, contextlib, io, json, runpy, sys
root, script = sys.argv[1:3]
sys.path.insert(0, root)
shown = []
print_help = argparse.ArgumentParser.print_help
def record(parser, file=None):
    shown.append(parser)
    print_help(parser, file)
argparse.ArgumentParser.print_help = record

def undocumented(parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from (f"{a.dest} (subcommand)" for a in action._choices_actions if not a.help)
        elif action.help is None or not action.help.strip():
            yield "/".join(action.option_strings) or action.dest

def run(*args):
    sys.argv = [script, *args, "--help"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            runpy.run_path(f"{root}/{script}", run_name="__main__")
            code = "returned"
        except SystemExit as e:
            code = e.code
    parser = shown[-1]
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(args=list(args), code=code, help=out.getvalue(), undocumented=list(undocumented(parser)),
                commands=list(subs[0].choices) if subs else [])

runs = [run()]
runs += [run(c) for c in runs[0]["commands"]]
print(json.dumps(dict(runs=runs, modules=sorted(m for m in sys.modules if m.split(".")[0] == "tensorflow"))))
"""


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_is_complete_and_needs_no_tensorflow(script):
    proc = subprocess.run([sys.executable, "-c", HELP_RUNNER, str(ROOT), script], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, COLUMNS="100"))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["modules"] == [], f"{script} --help imported TensorFlow"
    for run in result["runs"]:
        where = " ".join([script, *run["args"], "--help"])
        assert run["code"] == 0, where
        assert run["help"].startswith("usage:"), where
        assert run["undocumented"] == [], f"{where}: options without a help text: {run['undocumented']}"
        lines = run["help"].splitlines()
        assert not [line for line in lines if "see above" in line.lower()], where
        # An example command keeps single spaces (a line continuation written as a bare backslash in a docstring
        # joins two lines with a run of spaces); an aligned # comment may follow it.
        for line in lines:
            command = line.split("python ", 1)[1].split(" #")[0].rstrip() if "python " in line else ""
            assert not re.search(r"\S {2,}\S", command), f"{where}: {line!r}"
    if script in ("mbt2018.py", "rdlb.py", "rec.py"):  # scripts known to have subcommands: the runner found them
        assert len(result["runs"]) > 1
