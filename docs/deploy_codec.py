"""Compress and decompress images with an exported codec: TensorFlow and tensorflow-compression, nothing else.

    python deploy_codec.py EXPORT compress image.png image.tfc
    python deploy_codec.py EXPORT decompress image.tfc image.png

EXPORT is the folder `mbt2018.py ... export` or `ms2020.py ... export` wrote (docs/deploy.md). A file is what
tensorflow-compression's own model scripts write: the tensors `compress` returned, packed by
`tfc.PackedTensors`, with the export's model identity as the packed model name (a file of another export is
refused). This script is self-contained on purpose: copy it next to the export.
"""
import argparse
import json
import os
import sys

import tensorflow as tf
import tensorflow_compression as tfc  # registers the range-coding ops the export's graph calls
from google.protobuf.message import DecodeError


def load(export_dir):
    """The exported codec and its identity (assets.extra/codec.json)."""
    with open(os.path.join(export_dir, "assets.extra", "codec.json")) as f:
        identity = json.load(f)["identity"]
    return tf.saved_model.load(export_dir), identity


def compress(codec, identity, src, dst):
    image = tf.io.decode_image(tf.io.read_file(src), channels=3, expand_animations=False)
    packed = tfc.PackedTensors()
    packed.model = identity
    packed.pack(codec.compress(image))
    with open(dst, "wb") as f:
        f.write(packed.string)


def decompress(codec, identity, src, dst):
    with open(src, "rb") as f:
        data = f.read()
    try:
        packed = tfc.PackedTensors(data)
        model = packed.model
    except (DecodeError, IndexError):  # not packed tensors at all, or without a model name
        sys.exit(f"error: {src}: not a file of an exported codec")
    if model != identity:
        sys.exit(f"error: {src} was made by another model ({model}; this export is {identity})")
    tensors = packed.unpack([spec.dtype for spec in codec.decompress.input_signature])
    tf.io.write_file(dst, tf.io.encode_png(codec.decompress(*tensors)))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("export", help="the exported SavedModel folder")
    p.add_argument("command", choices=("compress", "decompress"))
    p.add_argument("input")
    p.add_argument("output")
    a = p.parse_args()
    codec, identity = load(a.export)
    (compress if a.command == "compress" else decompress)(codec, identity, a.input, a.output)


if __name__ == "__main__":
    main()
