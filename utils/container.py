"""The compressed-image file format, and bits per pixel counted from bytes.

A file is a header followed by the range-coded strings of one image, back to back:

    magic    4 bytes  b"RDSc"
    version  1 byte   FORMAT_VERSION
    kind     1 byte   which script made it (KINDS)
    model    8 bytes  the model's identity: a hash of its script, architecture flags and weights
    height, width     varints (LEB128)
    channels 1 byte   1 (written back as grayscale) or 3
    count    1 byte   number of strings, then each string's length as a varint
    crc32    4 bytes  over everything before it and the whole payload

A range-coded image's last string is its check: of the tables and scale indexes it was coded with (utils/codec.py;
version 2 on).

The whole header is 20 bytes plus the varints (about 30 bytes for one Kodak image; 26 for a 128x128 image with
two short strings), and it is counted in the file's rate. Parsing checks, in order: magic, version, truncation,
checksum, then the model, so that each failure reads as what it is: a foreign file, a newer format, a cut-off
file, damaged bytes, or the wrong model.
"""
import hashlib
import json
import struct
import zlib

import numpy as np

from utils.cli import InputError

MAGIC = b"RDSc"
FORMAT_VERSION = 2  # 2: a range-coded image's strings end with its symbols' check (utils/codec.py)
KINDS = {"mbt2018": 1, "ms2020": 2, "resnet_vae": 3, "mcbits": 4, "bb_sga": 5}
ID_BYTES = 8


def model_id(script, arch_flags, weights):
    """8 bytes identifying a model: its script, its architecture flags (a dict) and its weight values."""
    h = hashlib.sha256()
    h.update(script.encode())
    h.update(json.dumps(arch_flags, sort_keys=True).encode())
    for w in weights:
        w = np.ascontiguousarray(w)
        h.update(str((w.dtype.str, w.shape)).encode())
        h.update(w.tobytes())
    return h.digest()[:ID_BYTES]


def varint(n):
    """n as an unsigned LEB128 varint (HeaderReader.varint reads it back)."""
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


class HeaderReader:
    """Reads a header field by field; a field past the end is a truncated file, one clear InputError."""

    def __init__(self, data, what):
        self.data, self.pos, self.what = data, 0, what

    def take(self, n):
        if self.pos + n > len(self.data):
            raise InputError(f"{self.what}: truncated file ({len(self.data)} bytes; the header is cut off)")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def varint(self):
        n, shift = 0, 0
        while True:
            byte = self.take(1)[0]
            n |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return n
            if shift > 63:
                raise InputError(f"{self.what}: corrupt header (a length field does not end)")


def pack(script, identity, shape, channels, strings):
    """The bytes of a compressed file: `shape` = (height, width) of the image, `strings` a list of bytes."""
    if len(strings) > 255:
        raise ValueError("at most 255 strings per file")
    head = bytearray(MAGIC)
    head += bytes([FORMAT_VERSION, KINDS[script]]) + identity
    head += varint(int(shape[0])) + varint(int(shape[1])) + bytes([channels, len(strings)])
    for s in strings:
        head += varint(len(s))
    payload = b"".join(strings)
    crc = zlib.crc32(payload, zlib.crc32(bytes(head)))
    return bytes(head) + struct.pack(">I", crc) + payload


def unpack(data, script, identity, what="input file",
           model_flags="--checkpoint_dir, --lambda and the architecture flags"):
    """Parses and checks a file made by `pack`; returns ((height, width), channels, strings).

    Raises InputError for a foreign, newer, truncated or damaged file, or one made by another model (the hint
    names `model_flags`, the calling script's flags that choose the model).
    """
    r = HeaderReader(data, what)
    if len(data) < len(MAGIC) or r.take(len(MAGIC)) != MAGIC:
        raise InputError(f"{what}: not a compressed image of this package (wrong magic number)")
    version, kind = r.take(2)
    if version != FORMAT_VERSION:
        raise InputError(f"{what}: format version {version}; this code reads version {FORMAT_VERSION}")
    file_id = r.take(ID_BYTES)
    height, width = r.varint(), r.varint()
    channels, count = r.take(2)
    lengths = [r.varint() for _ in range(count)]
    head_end = r.pos
    (crc,) = struct.unpack(">I", r.take(4))
    payload = data[r.pos:]
    if len(payload) < sum(lengths):
        raise InputError(f"{what}: truncated file ({len(payload)} of {sum(lengths)} payload bytes)")
    if len(payload) > sum(lengths) or zlib.crc32(payload, zlib.crc32(data[:head_end])) != crc:
        raise InputError(f"{what}: corrupt file (checksum mismatch)")
    names = {v: k for k, v in KINDS.items()}
    if kind != KINDS[script]:
        raise InputError(f"{what} was made by {names.get(kind, f'an unknown model kind {kind}')}.py, "
                         f"not {script}.py")
    if file_id != identity:
        raise InputError(f"{what} was made by a different {script} model (id {file_id.hex()}; this run's model "
                         f"is {identity.hex()}): check {model_flags}")
    if channels not in (1, 3) or height < 1 or width < 1:
        raise InputError(f"{what}: corrupt header (image {height}x{width}x{channels})")
    strings, pos = [], 0
    for n in lengths:
        strings.append(payload[pos:pos + n])
        pos += n
    return (height, width), channels, strings


def bpp(num_bytes, height, width):
    """Bits per pixel of a file of `num_bytes` bytes holding a height x width image."""
    return 8.0 * num_bytes / (height * width)
