"""Run folders: names from key flags, atomic writes, the flags file, and finding the run to resume."""
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from utils.cli import InputError, read_json

LOG_NAME = "log.jsonl"
FLAGS_NAME = "flags.json"


def _fmt(value):
    if isinstance(value, (list, tuple)):
        return "_".join(_fmt(v) for v in value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def run_name(prefix, **key_flags):
    """`run_name('ba', lamb=100, bins=60)` -> 'ba-lamb=100.0-bins=60' (floats keep a decimal point)."""
    parts = [prefix] + [f"{k}={_fmt(v)}" for k, v in key_flags.items()]
    return "-".join(parts)


def run_folder(args, name):
    """The run folder of a command: --run's when given, else `name` under --checkpoint_dir."""
    return Path(args.run) if getattr(args, "run", None) else Path(args.checkpoint_dir) / name


def make_run_dir(root, name):
    path = Path(root) / name
    path.mkdir(parents=True, exist_ok=True)
    return path


_UMASK = os.umask(0)
os.umask(_UMASK)


def _atomic(path, write):
    """Writes via a temporary file in the same folder and renames it over `path`: never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the user's usual permissions
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path, data):
    _atomic(path, lambda f: f.write(data))


def atomic_write_text(path, text):
    atomic_write_bytes(path, text.encode())


def atomic_save_npz(path, **arrays):
    _atomic(path, lambda f: np.savez(f, **arrays))


def load_flags(run_dir):
    """The flags a run saved with save_flags, or {} when it has none; a flags file that is not a JSON object is
    an InputError naming it."""
    path = Path(run_dir) / FLAGS_NAME
    return read_json(path, "flags file") if path.exists() else {}


# Flags of an image script's main parser that are not the model's: a run's values of these are not adopted.
NOT_MODEL_FLAGS = ("verbose", "checkpoint_dir", "seed", "run", "help")


def adopt_run_flags(args, parser):
    """`--run DIR` (a trained run folder, for every command but train): the model flags of `parser`'s main level
    (architecture and lambda) take the run's values from its flags.json, and --checkpoint_dir becomes the run's
    parent. A model flag set on the command line to a value other than its default and the run's is refused:
    the command would otherwise use a model the user did not ask for."""
    if args.run is None:
        return
    if args.command == "train":
        raise InputError("--run: train names its run folder from --checkpoint_dir and the model flags")
    run_dir = Path(args.run)
    if not (run_dir / FLAGS_NAME).is_file():
        raise InputError(f"--run {args.run}: no {FLAGS_NAME} there: not a trained run folder")
    saved = load_flags(run_dir)
    for action in parser._actions:
        key = action.dest
        if key in NOT_MODEL_FLAGS or key not in saved or not action.option_strings:
            continue
        given = json.loads(json.dumps(getattr(args, key), default=str))  # as flags.json stores it (lists)
        if given != saved[key] and getattr(args, key) != parser.get_default(key):
            raise InputError(f"{action.option_strings[-1]} {getattr(args, key)}: the run {args.run} was trained with "
                             f"{saved[key]}")
        setattr(args, key, saved[key])
    args.checkpoint_dir = str(run_dir.parent)


def save_flags(run_dir, args):
    """Stores the flags of a run as JSON (argparse Namespace or dict)."""
    flags = vars(args) if not isinstance(args, dict) else args
    atomic_write_text(Path(run_dir) / FLAGS_NAME, json.dumps(flags, indent=1, sort_keys=True, default=str) + "\n")
