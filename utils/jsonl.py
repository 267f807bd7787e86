"""Append-only JSON-lines records: one JSON object per line, flushed as written."""
import json
import math
import os
import warnings

import numpy as np

from utils.cli import InputError, read_text


def _plain(value):
    """Makes numpy scalars/arrays JSON-serializable; non-finite floats become null (strict JSON)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def append(path, record):
    """Appends one record. A line cut short by a crash is closed first, so it cannot swallow this one."""
    line = json.dumps(_plain(record), sort_keys=False)
    with open(path, "a+b") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")
        f.write(line.encode() + b"\n")
        f.flush()


def read(path):
    """All complete records of a log; a damaged line (from a crash) is skipped with a warning. A log that is not
    UTF-8 text, or a line that is JSON but not an object, is an InputError naming the file."""
    records = []
    if not os.path.exists(path):
        return records
    for number, line in enumerate(read_text(path, "log").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            warnings.warn(f"{path}:{number}: skipping a damaged line")
            continue
        if not isinstance(record, dict):
            raise InputError(f"log {path}:{number}: a JSON {type(record).__name__}, not an object (a record)")
        records.append(record)
    return records
