"""Start-up (utils/__init__.py): TF's C++ import chatter is dropped unless -V; every other line still shows."""
import os
import re
import subprocess
import sys

from conftest import ROOT
from utils import drop_noise, quiet_stderr

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
