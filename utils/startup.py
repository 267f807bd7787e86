"""Start-up: what every script imports first, on purpose, before anything that loads TensorFlow.

    from utils import startup  # noqa: F401  (first: TensorFlow's start-up lines; utils/startup.py)

Importing it installs an import hook and sets TF's log level, and nothing else (no TensorFlow is loaded here).
What it does about TF's start-up chatter:

- TF_CPP_MIN_LOG_LEVEL defaults to 2 (C++ errors only; a value set in the environment wins).
- TF 2.14's wheel prints some lines at import whatever the level: "Unable to register cuDNN/cuFFT/cuBLAS factory"
  (a harmless double registration, logged as an error), and at lower levels the oneDNN, CPU-instruction, CUDA
  driver and TensorRT notices. These come from C++ straight to file descriptor 2, before Python logging exists,
  so the first import of TensorFlow (or of a package that imports it) runs with fd 2 sent to a temporary file;
  afterwards every line of it that is not on the `NOISE` list is written to stderr, in order. Python warnings
  and real C++ errors printed during the import therefore still show.
- `-V` / `--verbose` on the command line turns both off: every line, at TF's own default level (0) unless
  TF_CPP_MIN_LOG_LEVEL is set.
"""
import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile

VERBOSE = any(a in ("-V", "--verbose") for a in sys.argv[1:])

# Start-up lines of TF 2.14 that say nothing about the run (matched per line, on TF's C++ log format or, for the
# second line of the CPU-instruction notice, on its text).
NOISE = re.compile(
    rb"^[\d\- :.]*: [IWE] tensorflow/\S+\] (Unable to register cu(DNN|FFT|BLAS) factory"
    rb"|oneDNN custom operations are on|TF-TRT Warning: Could not find TensorRT"
    rb"|Could not find cuda drivers on your machine|This TensorFlow binary is optimized to use available CPU)"
    rb"|^To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags")

# Top-level packages whose import loads TF's shared libraries: tfc, tfp and tf-hub import TF inside their own
# import, so whichever comes first is the one to wrap; wrapping each costs nothing.
_TF_PACKAGES = ("tensorflow", "tensorflow_compression", "tensorflow_probability", "tensorflow_hub")


def drop_noise(text):
    """`text` (bytes, lines of stderr) without the lines that match NOISE."""
    return b"".join(line for line in text.splitlines(keepends=True) if not NOISE.match(line))


@contextlib.contextmanager
def quiet_stderr():
    """Sends fd 2 to a temporary file for the duration; then writes its non-noise lines to the real fd 2."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no usable fd 2: nothing to protect
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = drop_noise(capture.read())
            if kept:
                os.write(2, kept)


class _QuietLoader(importlib.abc.Loader):
    """Runs a package's import inside quiet_stderr, then hands the module its own loader back."""

    def __init__(self, inner):
        self.inner = inner

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module):
        try:
            with quiet_stderr():
                self.inner.exec_module(module)
        finally:
            module.__loader__ = module.__spec__.loader = self.inner


class _QuietImportFinder(importlib.abc.MetaPathFinder):
    """Wraps the loader of each of _TF_PACKAGES on its first import (nested imports nest the capture)."""

    def __init__(self):
        self.pending = set(_TF_PACKAGES)

    def find_spec(self, name, path=None, target=None):
        if name not in self.pending:
            return None
        self.pending.discard(name)  # before the look-up below, which asks this finder again
        if not self.pending:
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _QuietLoader(spec.loader)
        return spec


if not VERBOSE:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.meta_path.insert(0, _QuietImportFinder())
