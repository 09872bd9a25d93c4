"""Hostile array files given to the CLI (``--calib``, ``--data``, ``--val``) and to calibration loaders.

Refused with a ConfigError (exit 2) naming the file, nothing allocated past what the file holds:
a .npy header declaring 10^12 elements; a zero-byte file; a corrupt zip; an .npz with a bad CRC; an
object array (pickle); an .npz member that is not .npy; a file that is neither .npy nor .npz.
edgeship's own .npz files (state dicts, caches) are read by ``load_npz`` the same way; a cache that cannot be
read is rebuilt (``load_npz_cache`` warns and answers None).
"""

from __future__ import annotations

import io
import warnings
import zipfile

import edgeship
import numpy as np
import pytest
from edgeship._arrays import load_array_file, load_npz, load_npz_cache, load_xy
from edgeship.calibration import collect
from edgeship.demo.digits import DIGITS_SPEC
from edgeship.errors import ConfigError


def _bomb(path):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (10**6, 10**6)})
    path.write_bytes(header.getvalue() + b"\0" * 16)


def _bad_crc(path):
    np.savez(path, x=np.zeros((3, 2)), y=np.arange(3))
    raw = bytearray(path.read_bytes())
    raw[60] ^= 0xFF
    path.write_bytes(bytes(raw))


def _pickled(path):
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)


def _foreign_member(path):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x.txt", "hello")


CASES = [
    ("bomb.npy", _bomb, "declares shape (1000000, 1000000)"),
    ("empty.npz", lambda p: p.write_bytes(b""), "neither .npy nor .npz"),
    ("corrupt.npz", lambda p: p.write_bytes(b"PK\x03\x04garbage"), "not a readable .npz"),
    ("crc.npz", _bad_crc, "Bad CRC-32"),
    ("object.npy", _pickled, "holds dtype object"),
    ("foreign.npz", _foreign_member, "holds 'x.txt'"),
    ("text.npy", lambda p: p.write_text("1,2,3"), "neither .npy nor .npz"),
    ("short.npy", lambda p: p.write_bytes(np.lib.format.magic(1, 0) + b"\x10\x00{'descr'"), "not a valid .npy"),
]


@pytest.mark.parametrize("name, make, message", CASES, ids=[c[0] for c in CASES])
def test_hostile_array_files_are_refused(tmp_path, name, make, message):
    path = tmp_path / name
    make(path)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_array_file(path, "calibration")
    with pytest.raises(ConfigError):
        collect(path, DIGITS_SPEC, size=4)


def test_a_good_npz_loads_and_names_its_arrays(tmp_path):
    np.savez(tmp_path / "ok.npz", x=np.zeros((3, 2), np.float32), y=np.arange(3))
    x, y = load_xy(tmp_path / "ok.npz", "data")
    assert x.shape == (3, 2) and y.tolist() == [0, 1, 2]
    with pytest.raises(ConfigError, match="named 'x'"):
        np.savez(tmp_path / "no_x.npz", y=np.arange(3))
        load_xy(tmp_path / "no_x.npz", "data")


def _state(path):
    state = {"conv.weight": np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2), "bn.num_batches_tracked": np.int64(7),
             "bn.running_var": np.linspace(0, 1, 5, dtype=np.float64), "_train_seconds": np.float64(1.5)}
    np.savez(path, **state)
    return state


def test_a_good_npz_round_trips_every_array_in_order(tmp_path):
    state = _state(tmp_path / "state.npz")
    loaded = load_npz(tmp_path / "state.npz", "weights")
    assert list(loaded) == list(state)
    for name, array in state.items():
        assert loaded[name].dtype == array.dtype and loaded[name].shape == np.shape(array)
        np.testing.assert_array_equal(loaded[name], array)
    assert loaded["conv.weight"].flags.writeable  # torch.from_numpy takes it as it is


@pytest.mark.parametrize("keep", [0, 10, 0.5, -1], ids=["empty", "10-bytes", "half", "last-byte-cut"])
def test_a_truncated_npz_is_an_edgeship_error_naming_the_file(tmp_path, keep):
    path = tmp_path / "weights.npz"
    _state(path)
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep) if isinstance(keep, float) else keep % len(raw)])
    with pytest.raises(ConfigError, match=f"weights file {path}") as info:
        load_npz(path, "weights")
    assert isinstance(info.value, edgeship.EdgeshipError)
    assert ".npz" in str(info.value)
    with pytest.warns(RuntimeWarning, match=r"cached weights file is unreadable and is being rebuilt: .*weights\.npz"):
        assert load_npz_cache(path, "weights") is None


def test_a_missing_npz_is_named_and_a_missing_cache_is_silently_none(tmp_path):
    with pytest.raises(ConfigError, match="weights file not found: .*absent.npz"):
        load_npz(tmp_path / "absent.npz", "weights")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_npz_cache(tmp_path / "absent.npz", "weights") is None
    _state(tmp_path / "present.npz")
    assert list(load_npz_cache(tmp_path / "present.npz", "weights")) == list(_state(tmp_path / "again.npz"))


def test_an_npy_is_not_an_npz(tmp_path):
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(ConfigError, match="not an .npz archive"):
        load_npz(tmp_path / "one.npy", "weights")
