"""Hostile array files given to the CLI (``--calib``, ``--data``, ``--val``) and to calibration loaders.

Refused with a ConfigError (exit 2) naming the file, nothing allocated past what the file holds:
a .npy header declaring 10^12 elements; a zero-byte file; a corrupt zip; an .npz with a bad CRC; an
object array (pickle); an .npz member that is not .npy; a file that is neither .npy nor .npz.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from edgeship._arrays import load_array_file, load_xy
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
