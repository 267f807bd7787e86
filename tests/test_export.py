"""`export`: a trained codec as a SavedModel that runs with TensorFlow and tensorflow-compression alone, and codes
exactly as the package's own commands do (docs/deploy.md).

Each codec's checked-in golden run (tests/golden/runs) is exported through its script's `export` command. A fresh
Python process, started isolated (`-I`) in a folder that holds only a copy of docs/deploy_codec.py, compresses
and decompresses a Kodak image and an odd-sized one with the export; it also decodes one file the way
tensorflow-compression's model scripts do (`tf.keras.models.load_model`, `tfc.PackedTensors`, the dtypes of
`decompress.input_signature`), and refuses a file packed under another model's identity. Its images must equal
what the package's `decompress` gives, and the strings it packed must be the very strings of the package's own
file of the same image.
"""
import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT

GOLDEN_RUNS = ROOT / "tests" / "golden" / "runs"
RUNS = {"mbt2018": "mbt2018-num_filters=4-lmbda=1.0",
        "ms2020": "ms2020-num_filters=4-latent_depth=4-hyperprior_depth=4-num_slices=2-max_support_slices=1-lmbda=1.0"}
SOURCE = ROOT / "tests" / "golden" / "inputs" / "rgb_96x128.png"

# Runs in the fresh process; it reports any module it imported from the repository (the virtual environment,
# which may live inside it, apart).
CLIENT = r"""
import json, os, sys
here, export, repo = os.path.dirname(os.path.abspath(__file__)), sys.argv[1], sys.argv[2]
sys.path.insert(0, here)
import numpy as np
import tensorflow as tf
import tensorflow_compression as tfc
import deploy_codec

codec, identity = deploy_codec.load(export)
strings = {}
for name in json.loads(open(os.path.join(here, "names.json")).read()):
    src, packed = os.path.join(here, name + ".png"), os.path.join(here, name + ".tfc")
    deploy_codec.compress(codec, identity, src, packed)
    deploy_codec.decompress(codec, identity, packed, os.path.join(here, name + "-export.png"))
    strings[name] = [s.hex() for s in tfc.PackedTensors(open(packed, "rb").read()).unpack([tf.string])[0].numpy()]

# tensorflow-compression's model scripts: a Keras load, and the dtypes of decompress's signature to unpack.
model = tf.keras.models.load_model(export)
packed = tfc.PackedTensors(open(packed, "rb").read())
x_hat = model.decompress(*packed.unpack([t.dtype for t in model.decompress.input_signature]))
np.save(os.path.join(here, name + "-keras.npy"), x_hat.numpy())
# The serving signature (saved_model_cli, TF Serving), by its input names.
strings_in, shape_in = packed.unpack([tf.string, tf.int32])
signed = model.signatures["decompress"](strings=strings_in, shape=shape_in)
np.save(os.path.join(here, name + "-signature.npy"), list(signed.values())[0].numpy())

packed.model = "0" * 16
open(os.path.join(here, "other.tfc"), "wb").write(packed.string)
try:
    deploy_codec.decompress(codec, identity, os.path.join(here, "other.tfc"), os.path.join(here, "other.png"))
    refusal = None
except SystemExit as e:
    refusal = str(e)

files = {m.__name__: os.path.abspath(getattr(m, "__file__", None) or "/") for m in list(sys.modules.values())}
ours = sorted(n for n, f in files.items() if f.startswith(repo + os.sep) and not f.startswith(sys.prefix + os.sep))
print(json.dumps({"strings": strings, "repository_modules": ours, "refusal": refusal}))
"""


def make_images(folder):
    """A Kodak image (kodim23, 512x768; without the data, the checked-in 96x128 input scaled to that size) and an
    odd-sized crop (45x77)."""
    source = Image.open(SOURCE).convert("RGB")
    kodak = Path(os.environ.get("RDS_DATA_DIR", "."), "kodak", "kodim23.png")
    real = "RDS_DATA_DIR" in os.environ and kodak.is_file()
    made = {"kodak": Image.open(kodak).convert("RGB") if real else source.resize((768, 512), Image.BILINEAR),
            "odd_sized": source.crop((3, 5, 80, 50))}
    for name, image in made.items():
        image.save(folder / f"{name}.png")
    return {name: np.asarray(image) for name, image in made.items()}


@pytest.mark.parametrize("script", sorted(RUNS))
def test_export_codes_as_the_script_does(script, tmp_path):
    import argparse
    from utils import codec_commands, container, images
    from utils.cli import InputError
    run = tmp_path / RUNS[script]
    shutil.copytree(GOLDEN_RUNS / RUNS[script], run)  # a copy: opening a run saves its coding tables there
    export = tmp_path / "export"
    importlib.import_module(script).main(["--run", str(run), "export", str(export)])
    info = json.loads((export / "assets.extra" / "codec.json").read_text())

    client = tmp_path / "client"
    client.mkdir()
    shutil.copy(ROOT / "docs" / "deploy_codec.py", client)
    (client / "client.py").write_text(CLIENT)
    sources = make_images(client)
    (client / "names.json").write_text(json.dumps(sorted(sources)))
    proc = subprocess.run([sys.executable, "-I", str(client / "client.py"), str(export), str(ROOT)], cwd=client,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["repository_modules"] == []
    assert got["refusal"].startswith("error: ") and "was made by another model (0000000000000000" in got["refusal"]

    args = argparse.Namespace(verbose=False)
    model, _, identity = codec_commands.open_codec(args, run, script)
    assert info["identity"] == identity.hex() and info["script"] == script
    for name, image in sources.items():
        data = codec_commands.compress_image(script, model, identity, image.astype(np.float32), 3)
        _, _, strings = container.unpack(data, script, identity)
        assert got["strings"][name] == [s.hex() for s in strings], f"{name}: the export's strings are not the file's"
        x_hat, _ = codec_commands.decompress_bytes(script, model, identity, data, name)
        decoded = images.to_uint8(x_hat)
        exported = np.asarray(Image.open(client / f"{name}-export.png"))
        assert exported.shape == image.shape and np.array_equal(exported, decoded), name
    keras_decoded = np.load(client / f"{name}-keras.npy")
    assert np.array_equal(keras_decoded, decoded)
    assert np.array_equal(np.load(client / f"{name}-signature.npy"), decoded)
    # Each function's graph is saved once: the serving signatures call the functions' own traces (a second,
    # separately traced copy of each graph was loaded twice, a second of ms2020's start-up).
    from tensorflow.core.protobuf import saved_model_pb2
    saved = saved_model_pb2.SavedModel.FromString((export / "saved_model.pb").read_bytes())
    graphs = sorted(f.signature.name.rsplit("_", 1)[0] for f in saved.meta_graphs[0].graph_def.library.function
                    if len(f.node_def) > 50 and "compress" in f.signature.name)
    assert graphs == ["__inference_compress", "__inference_decompress"], graphs

    # The script's own file commands through the export (--export): the very file compress writes from the run,
    # and the image decompress makes of it; a file of another model is refused by its identity, as from the run.
    script_module = importlib.import_module(script)
    for command, src, dst in (("compress", client / "kodak.png", tmp_path / "export.tfci"),
                              ("decompress", tmp_path / "export.tfci", tmp_path / "export.png")):
        script_module.main([command, "--export", str(export), str(src), str(dst)])
    image = sources["kodak"].astype(np.float32)
    assert (tmp_path / "export.tfci").read_bytes() == codec_commands.compress_image(script, model, identity, image, 3)
    x_hat, _ = codec_commands.decompress_bytes(script, model, identity, (tmp_path / "export.tfci").read_bytes(), "")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "export.png")), images.to_uint8(x_hat))
    (tmp_path / "other.tfci").write_bytes(container.pack(script, bytes(8), (4, 4), 3, strings))
    with pytest.raises(InputError, match=f"made by a different {script} model"):
        script_module.main(["decompress", "--export", str(export), str(tmp_path / "other.tfci"),
                            str(tmp_path / "other.png")])



def test_the_bits_back_model_is_refused_with_the_reason(tmp_path):
    import mbt2018
    from utils.cli import InputError
    run = tmp_path / "bb"
    shutil.copytree(GOLDEN_RUNS / "mbt2018-num_filters=4-hyper_posterior=gaussian-lmbda=0.01", run)
    with pytest.raises(InputError, match="export: .* bits-back: its coder is constriction's ANS stack, run in Python"):
        mbt2018.main(["--run", str(run), "export", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
