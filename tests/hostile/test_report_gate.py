"""Hostile reports: what ``edgeship gate`` refuses. Each case starts from a real, signed ``edgeship bench``
report of the digits bundle and changes one thing a hand (or a script) could change.

Refused (exit 1, the failing check named):
- a row whose accuracy / agreement was improved, in a signed report checked with --verify (signature)
- an unsigned report when --verify is given
- a hand-edited drop_pts that is no longer reference minus row accuracy
- a failing row relabelled is_reference (two references for one variant)
- a reference row moved to a non-reference target or precision
- a failing row pointed at a folder that does not exist (bundles are required by default)
- a failing row deleted (the bundle holds the artifact, its target was available)
Bad input (exit 2, no traceback):
- "complete": "false" (a string), a number where a string is expected, a string where a number is
- 100,000-deep JSON; a report over 64 MiB is refused by size
- a baseline whose row has a null p50
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from edgeship.bundle.signing import generate_keypair
from edgeship.cli import main


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report-keys")
    return generate_keypair(folder / "bench.pem")


@pytest.fixture(scope="module")
def signed(digits_bundle, digits_data, keys, tmp_path_factory):
    """A bundle copy, and a signed report of it measured with labels (a report folder per test: copy it)."""
    root = tmp_path_factory.mktemp("signed-report")
    bundle = root / "digits.edgeship"
    shutil.copytree(digits_bundle.path, bundle)
    data = root / "val.npz"
    np.savez(data, x=digits_data[2][:64], y=digits_data[3][:64])
    out = root / "report"
    assert main(["bench", str(bundle), "--data", str(data), "--preprocess", "--runs", "2", "--warmup", "0",
                 "--report", str(out), "--sign", str(keys[0])]) == 0
    assert (out / "report.json.sig").is_file()
    return bundle, out


@pytest.fixture
def report(signed, tmp_path):
    """A private copy of the signed report folder: (report.json path, its parsed JSON)."""
    folder = tmp_path / "report"
    shutil.copytree(signed[1], folder)
    return folder / "report.json", json.loads((folder / "report.json").read_text())


def _write(path, data) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def _gate(path, *extra) -> int:
    return main(["gate", str(path), "--max-drop", "100", *extra])


def _int8_row(data, target="onnxruntime-cpu"):
    return next(r for r in data["rows"] if r["target"] == target and r["precision"] == "int8")


def test_the_untouched_signed_report_passes(report, keys):
    path, _ = report
    assert _gate(path, "--verify", str(keys[1])) == 0


def test_improved_numbers_break_the_signature(report, keys, capsys):
    path, data = report
    row = _int8_row(data)
    row["accuracy_pct"], row["agreement_pct"], row["drop_pts"] = 100.0, 100.0, data["rows"][0]["accuracy_pct"] - 100.0
    _write(path, data)
    assert _gate(path, "--verify", str(keys[1])) == 2
    assert "does not match" in capsys.readouterr().err


def test_an_unsigned_report_is_refused_when_a_key_is_given(report, keys, capsys):
    path, _ = report
    path.with_name("report.json.sig").unlink()
    assert _gate(path, "--verify", str(keys[1])) == 2
    assert "is not signed (no report.json.sig)" in capsys.readouterr().err


def test_a_hand_edited_drop_fails(report, capsys):
    path, data = report
    _int8_row(data)["drop_pts"] = -5.0
    _write(path, data)
    assert _gate(path) == 1
    assert "drop consistent" in capsys.readouterr().out


def test_a_row_relabelled_reference_fails(report, capsys):
    path, data = report
    _int8_row(data)["is_reference"] = True
    _write(path, data)
    assert _gate(path) == 1
    out = capsys.readouterr().out
    assert "reference" in out and "row present" in out  # two references, and the int8 row is missing


@pytest.mark.parametrize("field, value", [("target", "openvino-cpu"), ("precision", "int8")])
def test_a_reference_off_a_reference_target_fails(report, capsys, field, value):
    path, data = report
    data["rows"][0][field] = value
    _write(path, data)
    assert _gate(path) == 1
    assert ": reference:" in capsys.readouterr().out


def test_a_row_pointed_at_a_missing_folder_fails(report, capsys, tmp_path):
    path, data = report
    _int8_row(data)["bundle"] = str(tmp_path / "nowhere.edgeship")
    _write(path, data)
    assert _gate(path) == 1
    assert "not found" in capsys.readouterr().out
    assert _gate(path, "--allow-missing-bundles") == 1  # the bundle that is here still lacks that row


def test_a_deleted_row_fails(report, capsys):
    path, data = report
    data["rows"].remove(_int8_row(data))
    _write(path, data)
    assert _gate(path) == 1
    assert "onnxruntime-cpu int8: row present: measured missing" in capsys.readouterr().out


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(complete="false"), "'complete' must be true or false"),
    (lambda d: d["rows"][1].update(p50_ms="fast"), "'p50_ms' must be a number"),
    (lambda d: d["rows"][1].update(manifest_sha256=12), "'manifest_sha256' must be a string"),
    (lambda d: d["rows"][1].update(is_reference="no"), "'is_reference' must be true or false"),
    (lambda d: d.update(rows="none"), "'rows' must be a list"),
])
def test_wrong_types_are_bad_input(report, capsys, edit, message):
    path, data = report
    edit(data)
    _write(path, data)
    assert _gate(path) == 2
    assert message in capsys.readouterr().err


def test_deep_json_is_bad_input(report, capsys):
    path, _ = report
    path.write_text("[" * 100_000 + "]" * 100_000)
    assert _gate(path) == 2
    assert "nested too deeply" in capsys.readouterr().err


def test_a_null_baseline_value_is_noted_not_a_traceback(report, signed, capsys, tmp_path):
    path, data = report
    base = tmp_path / "base.json"
    baseline = json.loads(path.read_text())
    _int8_row(baseline)["p50_ms"] = None
    _write(base, baseline)
    assert main(["gate", str(path), "--baseline", str(base)]) == 0
    assert "no p50 ms in the baseline" in capsys.readouterr().out
