"""What the benchmarks share: the repository on sys.path, loading a script as a module, timing a call, a training
step's time, and the Kodak image the image benchmarks code."""
import importlib.util
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from utils import startup  # noqa: E402,F401  (before any TensorFlow import: it filters its start-up lines)


def load_script(name):
    """A top-level script as a module (a benchmark, not a script importing a script)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def timed(fn, repeats):
    """Seconds per call of fn, after one untimed call (tracing, warm-up)."""
    return first_and_timed(fn, repeats)[1]


def first_and_timed(fn, repeats):
    """(seconds of the first call, tracing and compiling included; seconds per call of the next `repeats`)."""
    t = time.perf_counter()
    fn()
    first = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    return first, (time.perf_counter() - t) / repeats


def train_step_seconds(model, patch, batch, steps):
    """(seconds of the first, compiling step; seconds per later step) of Adam on a Keras model with a
    `train_step`, on a random batch of square images on [0, 255]."""
    import tensorflow as tf
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-4))
    x = tf.random.uniform([batch, patch, patch, 3], 0, 255, seed=1)
    step = tf.function(model.train_step)
    return first_and_timed(lambda: step(x)["loss"].numpy(), steps)


def kodak_image():
    """(the first Kodak image, uint8 [H, W, 3], its name); random 768x512 pixels when $RDS_DATA_DIR has no Kodak."""
    import numpy as np
    from utils import images
    from utils.cli import InputError
    try:
        name, image, _ = next(images.eval_images("kodak"))
        return image, name
    except InputError:
        return np.random.default_rng(0).integers(0, 256, (512, 768, 3), dtype=np.uint8), "random 768x512"
