"""Hostile bundle folders: what ``edgeship.load`` / ``Bundle.open`` refuse with a BundleIntegrityError.

- a file hash that is a number, or not 64 hex digits
- input_spec fields of the wrong type (``scale: "abc"``, ``mean: 5``, input_spec not an object)
- artifact options that are not an object
- 100,000-deep JSON, and a manifest over 8 MiB
- an artifact file that is a symlink (to a file inside or outside the bundle), an artifact folder that is a symlink
- a truncated ONNX model or OpenVINO IR whose hashes were fixed up (the backend's own error wrapped)
- an artifact swapped on disk after its hash was checked (check-then-use): the backend runs the bytes that were
  hashed (it used to reopen the file by path)
"""

from __future__ import annotations

import json
import os
import shutil

import edgeship
import numpy as np
import pytest
from edgeship.errors import BundleIntegrityError


def _edit(bundle, change):
    manifest = json.loads((bundle / "manifest.json").read_text())
    change(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def _first_file(manifest, target="onnxruntime-cpu", precision="int8"):
    entry = next(a for a in manifest["artifacts"] if a["target"] == target and a["precision"] == precision)
    return entry, next(iter(entry["files"]))


CASES = {
    "hash is a number": (lambda m: _first_file(m)[0]["files"].update({_first_file(m)[1]: 12345}), "64 hex digits"),
    "hash is short": (lambda m: _first_file(m)[0]["files"].update({_first_file(m)[1]: "abc"}), "64 hex digits"),
    "scale is text": (lambda m: m["input_spec"]["preprocess"].update(scale="abc"), "invalid input spec"),
    "mean is a number": (lambda m: m["input_spec"]["preprocess"].update(mean=5), "invalid input spec"),
    "input_spec is a list": (lambda m: m.update(input_spec=[1, 2]), "input_spec must be an object"),
    "options is a list": (lambda m: _first_file(m)[0].update(options=[1]), "options must be an object"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_manifest_fields_of_the_wrong_type_are_refused(bundle_copy, case):
    change, message = CASES[case]
    _edit(bundle_copy, change)
    with pytest.raises(BundleIntegrityError, match=message):
        edgeship.load(bundle_copy, target="onnxruntime-cpu", precision="int8")


def test_deep_json_is_refused(bundle_copy):
    (bundle_copy / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(BundleIntegrityError, match="nested too deeply"):
        edgeship.open_bundle(bundle_copy)


def test_a_huge_manifest_is_refused_before_it_is_read(bundle_copy):
    with open(bundle_copy / "manifest.json", "ab") as fh:
        fh.write(b" " * (9 << 20))
    with pytest.raises(BundleIntegrityError, match="a manifest is at most"):
        edgeship.open_bundle(bundle_copy)


@pytest.mark.parametrize("outside", [False, True], ids=["link-inside", "link-outside"])
def test_a_symlinked_artifact_file_is_refused(bundle_copy, tmp_path, outside):
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    _, rel = _first_file(manifest)
    real = bundle_copy / rel
    target = tmp_path / "elsewhere.onnx" if outside else real.with_name("real.onnx")
    shutil.move(real, target)
    os.symlink(target, real)  # same bytes, so the hash alone would pass
    with pytest.raises(BundleIntegrityError, match="symlink"):
        edgeship.load(bundle_copy, target="onnxruntime-cpu", precision="int8")


def test_a_symlinked_artifact_folder_is_refused(bundle_copy, tmp_path):
    folder = bundle_copy / "onnxruntime-cpu" / "int8"
    shutil.move(folder, tmp_path / "int8")
    os.symlink(tmp_path / "int8", folder)
    with pytest.raises(BundleIntegrityError, match="symlink"):
        edgeship.load(bundle_copy, target="onnxruntime-cpu", precision="int8")


@pytest.mark.parametrize("target, rel", [("onnxruntime-cpu", "onnxruntime-cpu/int8/model.onnx"),
                                         ("openvino-cpu", "openvino-cpu/int8/model.xml"),
                                         ("openvino-cpu", "openvino-cpu/int8/model.bin")])
def test_a_truncated_artifact_with_matching_hashes_is_a_clear_error(bundle_copy, target, rel):
    """Signed garbage (the hashes match what was truncated): the backend's own exception becomes an edgeship one."""
    import hashlib

    path = bundle_copy / rel
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    _edit(bundle_copy, lambda m: next(a for a in m["artifacts"] if rel in a["files"])["files"].update(
        {rel: hashlib.sha256(path.read_bytes()).hexdigest()}))
    with pytest.raises(BundleIntegrityError, match=f"{target} could not load this int8 artifact"):
        edgeship.load(bundle_copy, target=target, precision="int8")


@pytest.mark.parametrize("target", ["onnxruntime-cpu", "openvino-cpu"])
def test_the_backend_runs_the_bytes_that_were_hashed(digits_bundle, bundle_copy, digits_data, target):
    """Swap the INT8 files for the FP32 ones between the hash check and the load: the runtime still runs INT8."""
    from edgeship.bundle.folder import Bundle, load_entry

    x = digits_data[2][:32]
    with digits_bundle.load(target, "int8") as rt:
        int8 = rt.run(x, preprocess=True)[rt.outputs[0].name]
    with digits_bundle.load(target, "fp32") as rt:
        fp32 = rt.run(x, preprocess=True)[rt.outputs[0].name]
    assert not np.array_equal(int8, fp32)

    bundle = Bundle.open(bundle_copy)
    entry = bundle.artifact(target, "int8")
    contents = bundle.read_verified(entry)
    for rel in entry["files"]:  # the swap, after the check
        shutil.copyfile(bundle_copy / rel.replace("/int8/", "/fp32/"), bundle_copy / rel)
    with load_entry(bundle.path, entry, bundle.spec, contents=contents) as rt:
        np.testing.assert_array_equal(rt.run(x, preprocess=True)[rt.outputs[0].name], int8)
    with pytest.raises(BundleIntegrityError, match="was modified"):
        edgeship.load(bundle_copy, target=target, precision="int8")
