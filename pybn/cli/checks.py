"""Up-front checks shared by the subcommands: every usage mistake becomes
one line, `pybn <cmd>: error: ...`, exit code 2, before any work starts."""
import argparse
import math
import os
import sys
import tempfile


class UsageError(Exception):
    """A mistake in what the user asked for (reported as one line, exit 2)."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump): `prog: error: message`."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """--help with each option's default (where it has one and its help does
    not already say it), and the description as written."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if "default" not in text and action.option_strings and not (
                default is None or default is False or default is argparse.SUPPRESS):
            text += " (default: %(default)s)"
        return text


def report(prog, exc):
    """Print a UsageError as the one line and return exit code 2."""
    print(f"{prog}: error: {exc}", file=sys.stderr)
    return 2


def positive(option, value, allow_none=True, most=None):
    if value is None and allow_none:
        return
    if value is None or value < 1:
        raise UsageError(f"{option}: expected an integer >= 1, got {value}")
    if most is not None and value > most:
        raise UsageError(f"{option}: expected an integer from 1 to {most}, got {value}")


def number(option, value, *, above=None, at_least=None, below=None):
    """A finite number within the bounds given (None: not given, so fine)."""
    bounds = [f"> {above:g}" if above is not None else None, f">= {at_least:g}" if at_least is not None else None,
              f"< {below:g}" if below is not None else None]
    ok = value is None or (math.isfinite(value) and (above is None or value > above)
                           and (at_least is None or value >= at_least) and (below is None or value < below))
    if not ok:
        raise UsageError(f"{option}: expected a finite number {' and '.join(b for b in bounds if b)}, got {value}")


SEED_LIMIT = 2**32  # seeds both NumPy and scikit-learn take


def seed(option, value):
    if not 0 <= value < SEED_LIMIT:
        raise UsageError(f"{option}: expected an integer from 0 to 2**32 - 1, got {value}")


def threads(option, value):
    """A thread count pybn accepts (None: the default)."""
    from .._threads import max_threads
    if value is not None and not 1 <= value <= max_threads():
        raise UsageError(f"{option}: expected 1 to {max_threads()}, got {value}")


def output_file(option, path, suffixes):
    """`path` can be written: a known suffix, an existing writable folder."""
    if not path or not path.strip():
        raise UsageError(f"{option}: expected a file name, got an empty string")
    suffix = os.path.splitext(path)[1].lower().lstrip(".")
    if suffix not in suffixes:
        raise UsageError(f"{option}: {path!r} should end in {' or '.join('.' + s for s in suffixes)}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"{option}: the folder {folder} does not exist")
    if os.path.isdir(path):
        raise UsageError(f"{option}: {path} is a folder")
    writable_folder(option, folder)


def writable_folder(option, folder):
    """Files can be created in `folder`: tried, not guessed from permission
    bits (os.access says yes to root on /proc or a read-only mount)."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise UsageError(f"{option}: cannot write in the folder {folder} ({exc.strerror or exc})") from None


def plot_file(option, path):
    """A plot can be written to `path`: matplotlib installed, a format it writes."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        from matplotlib.figure import Figure
    except ImportError:
        raise UsageError(f"{option} needs matplotlib: pip install 'pybn[plot]'") from None
    formats = sorted(Figure().canvas.get_supported_filetypes())
    output_file(option, path, formats)


def data_file(option, path):
    """An .npz the training can use: readable, X 2-D numeric and finite, y
    integer labels of matching length, at least two classes, splittable."""
    if path is None:
        return
    from .. import datasets
    if not os.path.exists(path):
        raise UsageError(f"{option}: {path} does not exist")
    try:
        X, y = datasets.load_npz(path)
        datasets.split_standardize(X, y, seed=0)
    except ValueError as exc:
        message = str(exc).removeprefix("data: ")
        raise UsageError(f"{option}: {message}") from None


def storage_file(option, path):
    """A study storage: a path in an existing folder, not a folder, and if it
    exists a pybn study database this process can write."""
    if not path or not path.strip():
        raise UsageError(f"{option}: expected a file name, got an empty string")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"{option}: the folder {folder} does not exist")
    if os.path.isdir(path):
        raise UsageError(f"{option}: {path} is a folder")
    if not os.path.exists(path):  # a new study: sqlite would only say "unable to open database file"
        writable_folder(option, folder)
