"""Reading .npz files (data and checkpoints) safely: never unpickling, and
a ValueError naming the file and what was expected when it is anything else
(a .npy, a text file, a zip of something else, object arrays)."""
import os
import zipfile

import numpy as np


ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # what np.load takes for an .npz (the second: empty)


class _NotNpz(Exception):
    """Raised inside read_npz only: the file does not start as a zip."""


def read_npz(path, what, names=None):
    """{name: array} of the .npz at `path` (only `names` when given, all of
    them must be there); errors are ValueErrors starting with `what`."""
    path = os.fspath(path)  # TypeError for an int: open() would take it as a file descriptor
    try:
        with open(path, "rb") as f:
            head = f.read(4)
        if head not in ZIP_MAGIC:  # np.load would return a .npy's array, or call text "pickled data"
            raise _NotNpz
        with np.load(path, allow_pickle=False) as data:
            missing = sorted(set(names or ()) - set(data.files))
            arrays = {} if missing else {name: data[name] for name in (names or data.files)}
    except _NotNpz:
        raise ValueError(f"{what}: {path} is not an .npz file (expected NumPy's savez format)") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{what}: cannot read {path} as .npz: {exc}") from exc
    except ValueError as exc:  # object arrays: loading them would unpickle, which pybn never does
        raise ValueError(f"{what}: cannot read {path} without unpickling ({exc})") from exc
    if missing:
        raise ValueError(f"{what}: {path} lacks arrays {missing} (expected {' and '.join(names)})")
    return arrays
