"""Command-line plumbing: the one error type for bad input, argument types, the help layout, and the entry point.

Nothing here imports TensorFlow: a script parses its command line, and answers --help, before its heavy imports.
"""
import argparse
import sys


class InputError(Exception):
    """Bad input from the user (a flag, a file, a shape). Scripts print it and exit 2."""


def run(main, argv=None):
    """Calls main(argv); an InputError becomes one line on stderr and exit status 2, no traceback."""
    try:
        main(sys.argv[1:] if argv is None else argv)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


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


def _number_list(cast, name):
    def parse(text):
        try:
            return [cast(v) for v in text.split(",") if v.strip() != ""]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {name}, got {text!r}")
    return parse


int_list = _number_list(int, "integers")
float_list = _number_list(float, "numbers")


def _checked_number(cast, kind, ok, requirement):
    """An argparse type: `cast` the text, then require `ok(value)` (finite, for floats)."""
    def parse(text):
        try:
            v = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}")
        if not ok(v) or v in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"must be {requirement}, got {text!r}")
        return v
    return parse


positive_float = _checked_number(float, "a number", lambda v: v > 0, "a positive finite number")
nonnegative_float = _checked_number(float, "a number", lambda v: v >= 0, "a non-negative finite number")
positive_int = _checked_number(int, "an integer", lambda v: v >= 1, ">= 1")
