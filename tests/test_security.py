"""Loading models, data and studies never executes code: no pickle, ever."""
import os

import numpy as np
import pytest

from pybn import datasets
from pybn import train as T


class _Payload:
    """Unpickling this would create a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _hostile_npz(path, marker, **extra):
    obj = np.empty(1, dtype=object)
    obj[0] = _Payload(str(marker))
    np.savez(path, X=obj, y=obj, meta=obj, **extra)  # object arrays are stored as pickles


@pytest.mark.parametrize("load", [T.load_checkpoint, datasets.load_npz], ids=["checkpoint", "data"])
def test_hostile_npz_is_refused_without_unpickling(load, tmp_path):
    marker = tmp_path / "pwned"
    _hostile_npz(tmp_path / "evil.npz", marker)
    with pytest.raises(ValueError):
        load(tmp_path / "evil.npz")
    assert not marker.exists()


@pytest.mark.parametrize("load", [T.load_checkpoint, datasets.load_npz], ids=["checkpoint", "data"])
def test_files_that_are_not_npz_are_named_in_a_value_error(load, tmp_path):
    # np.load returns a .npy's array (then `with` failed: TypeError) and calls
    # any other file "pickled data" with advice to load it unsafely
    what = "checkpoint" if load is T.load_checkpoint else "data"
    np.save(tmp_path / "a.npy", np.ones(3))
    (tmp_path / "t.npz").write_text("X,y\n1,0\n")
    for name in ("a.npy", "t.npz"):
        with pytest.raises(ValueError, match=f"^{what}: .*{name} is not an .npz file") as info:
            load(tmp_path / name)
        assert "allow_pickle" not in str(info.value)
    with pytest.raises(ValueError, match=f"^{what}: cannot read"):
        load(tmp_path / "missing.npz")
    with pytest.raises(TypeError):  # not a file descriptor to read, then close (stdout here)
        load(1)


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    model = T.build_mlp(4, 3, hidden=(5,))
    T.save_checkpoint(tmp_path / "m.npz", model)
    data = (tmp_path / "m.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="checkpoint: cannot read"):
        T.load_checkpoint(tmp_path / "cut.npz")


def test_the_package_never_unpickles():
    import pybn
    root = os.path.dirname(pybn.__file__)
    for folder, _, files in os.walk(root):
        for name in files:
            if name.endswith(".py"):
                text = open(os.path.join(folder, name), encoding="utf-8").read()
                assert "pickle.load" not in text and "allow_pickle=True" not in text, name
