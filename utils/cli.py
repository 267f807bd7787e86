"""Command-line plumbing: the one error type for bad input, argument types, and the entry point."""
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


def _number_list(cast, name):
    def parse(text):
        try:
            return [cast(v) for v in text.split(",") if v.strip() != ""]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {name}, got {text!r}")
    return parse


int_list = _number_list(int, "integers")
float_list = _number_list(float, "numbers")


def positive_float(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text!r}")
    return v


def positive_int(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}")
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text!r}")
    return v


def nonnegative_float(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")
    if not v >= 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a non-negative finite number, got {text!r}")
    return v
