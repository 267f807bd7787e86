"""Command-line plumbing: the one error type for bad input, argument types, the help layout, and the entry point.

Nothing here imports TensorFlow: a script parses its command line, and answers --help, before its heavy imports.
"""
import argparse
import json
import math
import os
import sys
from pathlib import Path


class InputError(Exception):
    """Bad input from the user (a flag, a file, a shape). Scripts print it and exit 2."""


def run(main, argv=None):
    """Calls main(argv); an InputError becomes one line on stderr and exit status 2, no traceback. Run from the
    command line (argv None), a command that succeeded ends its process at once (below)."""
    try:
        main(sys.argv[1:] if argv is None else argv)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if argv is None:
        # Python's teardown after TensorFlow (its thread pools, its modules' finalizers) takes about a second on
        # 2 cores, longer than coding an image. Every output is written and closed by now (atomic writes, closed
        # logs and writers), so the process skips it.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The --help of every script: the description as written (its paragraphs and examples kept), and after each
    option's help its default, unless the help states it itself ("default:" or %(default)s) or there is none
    (None, a switch's False, an empty list); a list shows as it is typed (1,2,3)."""

    def _get_help_string(self, action):
        text, default = action.help or "", action.default
        unset = any(default is v for v in (None, False, argparse.SUPPRESS)) or default == []
        if unset or "%(default)" in text or "default:" in text or not action.option_strings:
            return text
        shown = ",".join(map(str, default)) if isinstance(default, list) else "%(default)s"
        return f"{text} (default: {shown})"


class ArgumentParser(argparse.ArgumentParser):
    """Every script's parser (and, through add_subparsers, its subcommands'): HelpFormatter by default, and a bad
    command line answered as any other bad input is, with one line on stderr and exit status 2 (argparse's own
    answer is a usage block and then the error)."""

    def __init__(self, *args, formatter_class=HelpFormatter, **kwargs):
        super().__init__(*args, formatter_class=formatter_class, **kwargs)

    def error(self, message):
        self.exit(2, f"error: {self.prog}: {message} ({self.prog} --help lists the flags)\n")

    def _get_option_tuples(self, option_string):
        # An abbreviation that matches several spellings of one flag (--lam: --lambda and its alias --lamb) names
        # that flag, as it did before the alias existed; argparse alone would call it ambiguous.
        seen, result = set(), []
        for tup in super()._get_option_tuples(option_string):
            if id(tup[0]) not in seen:
                seen.add(id(tup[0]))
                result.append(tup)
        return result


def _number_list(cast, name):
    def parse(text):
        try:
            values = [cast(v) for v in text.split(",") if v.strip() != ""]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {name}, got {text!r}")
        if not all(math.isfinite(v) for v in values):
            raise argparse.ArgumentTypeError(f"expected finite numbers, got {text!r}")
        return values
    return parse


int_list = _number_list(int, "integers")
float_list = _number_list(float, "numbers")


def _checked_number(cast, kind, ok, requirement):
    """An argparse type: `cast` the text, then require a finite value with `ok(value)` (NaN and inf are refused)."""
    def parse(text):
        try:
            v = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}")
        if not (math.isfinite(v) and ok(v)):
            raise argparse.ArgumentTypeError(f"must be {requirement}, got {text!r}")
        return v
    return parse


positive_float = _checked_number(float, "a number", lambda v: v > 0, "a positive finite number")
nonnegative_float = _checked_number(float, "a number", lambda v: v >= 0, "a non-negative finite number")
positive_int = _checked_number(int, "an integer", lambda v: v >= 1, ">= 1")
finite_float = _checked_number(float, "a number", lambda v: True, "a finite number")


def int_in(lo, hi):
    """An argparse type for an integer in lo..hi (a field of a file header, for instance)."""
    return _checked_number(int, "an integer", lambda v: lo <= v <= hi, f"an integer in {lo}..{hi}")


def add_force_flag(p):
    """--force: a command that writes a named output file refuses an existing one without it."""
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")


# ---- files: checked before any work, so that a bad path costs nothing and leaves nothing behind ----------

def _nearest_existing(path):
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def output_file(path, flag, force=True):
    """Refuses an output file that cannot be written: a folder, one in a missing folder or under a file, or
    (with `force` False) one that exists. Returns it as a Path."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{flag} {path}: is a folder; give a file name")
    parent = path.parent
    if not parent.is_dir():
        raise InputError(f"{flag} {path}: {parent} " + ("is not a folder" if parent.exists() else "does not exist"))
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{flag} {path}: cannot write into {parent}")
    if path.exists() and not force:
        raise InputError(f"{flag} {path}: exists; pass --force to overwrite it")
    return path


def output_dir(path, flag):
    """Refuses a folder that cannot be created (with its parents) or written into: an existing file, or a path
    under a file. Returns it as a Path."""
    path = Path(path)
    existing = _nearest_existing(path)
    if not existing.is_dir():
        where = "is a file" if existing == Path(os.path.abspath(path)) else f"{existing} is a file"
        raise InputError(f"{flag} {path}: {where}, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{flag} {path}: cannot write into {existing}")
    return path


def input_file(path, flag):
    """Refuses an input file that is missing or a folder. Returns it as a Path."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{flag} {path}: is a folder; give a file")
    if not path.exists():
        raise InputError(f"{flag} {path}: no such file")
    return path


def read_text(path, what):
    """The UTF-8 text of a file; a folder, an unreadable file or another encoding is one InputError."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{what} {path}: not UTF-8 text")
    except OSError as e:
        raise InputError(f"{what} {path}: {e.strerror}")


def read_json(path, what):
    """A file's JSON object (a dict); anything else is one InputError naming the file."""
    try:
        value = json.loads(read_text(path, what))
    except ValueError as e:
        raise InputError(f"{what} {path}: not valid JSON ({e})")
    if not isinstance(value, dict):
        raise InputError(f"{what} {path}: holds a JSON {type(value).__name__}, not an object")
    return value
