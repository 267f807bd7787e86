"""`export`: a trained range-coded image codec as a TensorFlow SavedModel that runs without this package.

The SavedModel follows tensorflow-compression's convention for its own models (tfc's model scripts load one with
`tf.keras.models.load_model` and pack what `compress` returns with `tfc.PackedTensors`):

    compress(image)             uint8 [H, W, 3]                  -> (strings string [n], shape int32 [2])
    decompress(strings, shape)  what compress returned           -> uint8 [H, W, 3]

Both are `tf.function`s with fixed input signatures, also saved as the serving signatures "compress" and
"decompress" (for `saved_model_cli` and TF Serving). Loading needs `tensorflow` and `tensorflow_compression`
(whose import registers the range-coding ops), nothing else. `strings` are the very strings a file of the
package holds (utils/container.py), in the same order: z's, then y's (one per slice for ms2020), then the check
of tables and scale indexes (utils/codec.py); `shape` is the image's height and width. The range-coding tables
are the run's (saved with it, utils/codec_commands.py), in the graph as constants: a decoder that loads the export
never rebuilds them in floating point.

`assets.extra/codec.json` names what was exported: the script, the model identity (the 8 bytes a package file
carries, in hex), the run's flags and its checkpoint.
"""
import json
import os
import shutil
import tempfile
from pathlib import Path

import tensorflow as tf

from utils.cli import InputError

INFO_NAME = "codec.json"


class ExportedCodec(tf.Module):
    """The exported object: the codec's variables (tracked, so the SavedModel holds them) and the two
    functions. The Keras model itself is not tracked: only its variables and the traced functions are saved,
    so loading needs none of this package's classes."""

    def __init__(self, model):
        super().__init__(name="codec")
        self.weights = list(model.variables)
        object.__setattr__(self, "_model", model)  # past tf.Module's attribute tracking: not saved

    @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])
    def compress(self, image):
        return self._model.compress(tf.cast(image, tf.float32)), tf.shape(image)[:2]

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string), tf.TensorSpec([2], tf.int32)])
    def decompress(self, strings, shape):
        # Rounded half to even and clipped, as images.to_uint8 makes the script's PNG.
        x_hat = self._model.decompress(strings, shape)
        return tf.cast(tf.clip_by_value(tf.round(x_hat), 0.0, 255.0), tf.uint8)


def export(model, out_dir, info):
    """Writes the SavedModel of `model` (its coders built) to `out_dir`, atomically: it appears whole or not at
    all, and replaces a folder there (the command line refused one that is not a SavedModel, or any without
    --force). `info`: the dict written to assets.extra/codec.json."""
    out_dir = Path(out_dir)
    module = ExportedCodec(model)
    # The functions themselves, not concrete functions traced here: saving traces them again in its own
    # context, and a signature traced beforehand would be a second copy of each graph, loaded twice.
    signatures = {"compress": module.compress, "decompress": module.decompress}
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's folder is private; the export is an ordinary folder
    try:
        tf.saved_model.save(module, str(tmp), signatures=signatures)
        (tmp / "assets.extra").mkdir(exist_ok=True)
        (tmp / "assets.extra" / INFO_NAME).write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


class Loaded:
    """An export, loaded for the package's own file commands (`compress --export`, `decompress --export`): the
    model's interface of utils/codec_commands.py (float images on [0, 255], float reconstructions) over the
    SavedModel's uint8 functions. Nothing is built or traced: the functions come traced, the tables as constants."""

    def __init__(self, export_dir):
        self.saved = tf.saved_model.load(str(export_dir))

    def compress(self, image):
        return self.saved.compress(tf.cast(image, tf.uint8))[0]  # uint8 values: the cast is exact

    def decompress(self, strings, shape):
        return tf.cast(self.saved.decompress(strings, shape), tf.float32)  # already rounded as to_uint8 rounds


def load(export_dir, script):
    """(Loaded, the model identity its files carry) of the export of `script` in `export_dir`."""
    path = Path(export_dir) / "assets.extra" / INFO_NAME
    try:
        info = json.loads(path.read_text())
        identity = bytes.fromhex(info["identity"])
    except (OSError, ValueError, KeyError) as e:
        raise InputError(f"--export {export_dir}: unreadable {path} ({e})")
    if info.get("script") != script:
        raise InputError(f"--export {export_dir}: an export of {info.get('script')}.py, not of {script}.py")
    return Loaded(export_dir), identity
