"""The bundle: what the manifest records, verification before trust, and atomic writes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import edgeship
import numpy as np
import onnx
import onnxruntime
import openvino
import pytest
from conftest import CPU_TARGETS, SMALL_SPEC
from edgeship import BundleIntegrityError, CompileError, ConfigError, InputSpec, demo
from edgeship.bundle.manifest import MANIFEST, SCHEMA_VERSION
from edgeship.calibration import collect
from onnx import TensorProto, helper


def read_manifest(root: Path) -> dict:
    return json.loads((root / MANIFEST).read_text(encoding="utf-8"))


def write(root: Path, manifest: dict) -> None:
    (root / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# -- the manifest ---------------------------------------------------------------------------------
def test_manifest_contents(digits_bundle):
    m = read_manifest(digits_bundle.path)
    assert m == digits_bundle.manifest
    assert m["schema_version"] == SCHEMA_VERSION == 1
    assert m["edgeship_version"] == edgeship.__version__
    assert InputSpec.from_dict(m["input_spec"]) == demo.DIGITS_SPEC == digits_bundle.spec
    assert m["source"]["file"] == "model.onnx"
    assert digits_bundle.variants == [(t, p) for t in CPU_TARGETS for p in ("fp32", "int8")]

    expected = {"openvino-cpu": ["model.xml", "model.bin"], "onnxruntime-cpu": ["model.onnx"]}
    versions = {"openvino-cpu": {"openvino": openvino.__version__.split("-")[0]},
                "onnxruntime-cpu": {"onnxruntime": onnxruntime.__version__}}
    for entry in m["artifacts"]:
        assert entry["dir"] == f"{entry['target']}/{entry['precision']}"
        assert sorted(entry["files"]) == sorted(f"{entry['dir']}/{f}" for f in expected[entry["target"]])
        assert entry["backend_versions"] == versions[entry["target"]]
    ort_int8 = digits_bundle.artifact("onnxruntime-cpu", "int8")
    assert ort_int8["options"]["activations"] == "uint8" and ort_int8["options"]["quant_format"] == "QDQ"
    assert digits_bundle.artifact("openvino-cpu", "int8")["options"]["inference_precision"] == "f32"

    # every file is listed with its SHA-256, and nothing else is in the folder
    listed = dict(m["source"]["files"])
    for entry in m["artifacts"]:
        listed.update(entry["files"])
    for rel, digest in listed.items():
        assert sha256(digits_bundle.path / rel) == digest, rel
    on_disk = {p.relative_to(digits_bundle.path).as_posix() for p in digits_bundle.path.rglob("*") if p.is_file()}
    assert on_disk == set(listed) | {MANIFEST}


def test_manifest_calibration_summary(digits_bundle, digits_data):
    summary = dict(digits_bundle.manifest["calibration"])
    check = summary.pop("check")
    assert check["ok"] and check["count"] == 300  # the calibration check ran and its result is recorded
    profile = summary.pop("profile")  # what the device's monitor compares with (tests/test_monitor.py)
    assert profile["input"]["samples"] == 300 and profile["output"]["samples"] == 300
    again = collect(digits_data[0], demo.DIGITS_SPEC, size=300, seed=0, preprocess=True)
    assert summary == {
        "count": 300,
        "source": f"array {digits_data[0].shape} uint8",
        "seed": 0,
        "sha256": again.sha256,
        "preprocessed_by_edgeship": True,
        "selection": "random",
        "preprocessing": demo.DIGITS_SPEC.to_dict()["preprocess"],
        "class_counts": None,
    }


def test_fp32_only_bundle_records_no_calibration(small_cnn, tmp_path):
    bundle = edgeship.compress(small_cnn, input_spec=SMALL_SPEC, targets=["onnxruntime-cpu"], precision="fp32",
                               calibration=np.zeros((4, 3, 16, 16), np.float32), output=tmp_path / "b.edgeship",
                               show_progress=False)
    assert bundle.manifest["calibration"] is None
    assert bundle.variants == [("onnxruntime-cpu", "fp32")]


def test_fresh_bundle_verifies(digits_bundle):
    digits_bundle.verify()
    for entry in digits_bundle.artifacts:
        digits_bundle.verify(entry)
        assert digits_bundle.size_bytes(entry) == sum((digits_bundle.path / f).stat().st_size for f in entry["files"])


def test_artifact_selection(digits_bundle):
    assert digits_bundle.artifact()["target"] == "openvino-cpu"  # preference order, first compiled precision
    assert digits_bundle.artifact()["precision"] == "fp32"
    assert digits_bundle.artifact("onnxruntime-cpu", "int8")["dir"] == "onnxruntime-cpu/int8"


# -- tampering and malformed bundles --------------------------------------------------------------
def flip_byte(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("target, precision, rel", [
    ("openvino-cpu", "int8", "openvino-cpu/int8/model.bin"),
    ("openvino-cpu", "fp32", "openvino-cpu/fp32/model.xml"),
    ("onnxruntime-cpu", "int8", "onnxruntime-cpu/int8/model.onnx"),
    ("onnxruntime-cpu", "fp32", "onnxruntime-cpu/fp32/model.onnx"),
])
def test_tampered_artifact_refused(bundle_copy, target, precision, rel):
    flip_byte(bundle_copy / rel)
    with pytest.raises(BundleIntegrityError, match=rf"{rel} in bundle .* was modified: SHA-256"):
        edgeship.load(bundle_copy, target=target, precision=precision)
    with pytest.raises(BundleIntegrityError):
        edgeship.open_bundle(bundle_copy).verify()
    # only the chosen artifact is checked on load: the untouched ones still load
    other = "fp32" if precision == "int8" else "int8"
    with edgeship.load(bundle_copy, target=target, precision=other) as rt:
        assert rt.precision == other


def test_tampered_source_onnx_refused_by_benchmark(bundle_copy, digits_data):
    flip_byte(bundle_copy / "model.onnx")
    with pytest.raises(BundleIntegrityError, match="model.onnx .* was modified"):
        edgeship.benchmark(bundle_copy, digits_data[2][:4], preprocess=True, show_progress=False,
                           measure=edgeship.Measurement(runs=1, warmup=0))


def test_missing_file_refused(bundle_copy):
    (bundle_copy / "openvino-cpu" / "int8" / "model.bin").unlink()
    with pytest.raises(BundleIntegrityError, match=r"missing openvino-cpu/int8/model.bin, listed in its manifest"):
        edgeship.load(bundle_copy, target="openvino-cpu", precision="int8")


@pytest.mark.parametrize("version", [2, 0, "1", None])
def test_unknown_schema_version_refused(bundle_copy, version):
    m = read_manifest(bundle_copy)
    m["schema_version"] = version
    write(bundle_copy, m)
    with pytest.raises(BundleIntegrityError, match=rf"schema_version {version!r}.*reads schema_version 1"):
        edgeship.open_bundle(bundle_copy)


@pytest.mark.parametrize("bad_rel", ["../model.onnx", "openvino-cpu/../../x.bin", "/etc/passwd",
                                     "openvino-cpu\\int8\\model.bin", ""])
def test_file_path_outside_bundle_refused(bundle_copy, bad_rel):
    m = read_manifest(bundle_copy)
    files = m["artifacts"][0]["files"]
    files[bad_rel] = files.pop(next(iter(files)))
    write(bundle_copy, m)
    with pytest.raises(BundleIntegrityError, match="names a file outside the bundle"):
        edgeship.open_bundle(bundle_copy)


@pytest.mark.parametrize("where", ["source", "artifact-dir"])
def test_dotdot_in_source_files_or_artifact_dir_refused(bundle_copy, where):
    m = read_manifest(bundle_copy)
    if where == "source":
        m["source"]["files"] = {"../model.onnx": m["source"]["files"]["model.onnx"]}
    else:
        m["artifacts"][1]["dir"] = "../elsewhere"
    write(bundle_copy, m)
    with pytest.raises(BundleIntegrityError, match=r"names a file outside the bundle: '\.\./"):
        edgeship.open_bundle(bundle_copy)


def test_dotdot_in_source_file_refused(bundle_copy, tmp_path):
    m = read_manifest(bundle_copy)
    m["source"]["file"] = "../outside.onnx"
    write(bundle_copy, m)
    with pytest.raises(BundleIntegrityError, match="outside the bundle"):
        edgeship.open_bundle(bundle_copy)


def test_artifact_file_outside_its_dir_refused(bundle_copy):
    m = read_manifest(bundle_copy)
    ort_fp32 = next(e for e in m["artifacts"] if e["target"] == "onnxruntime-cpu" and e["precision"] == "fp32")
    ort_fp32["dir"] = "openvino-cpu/fp32"  # its file 'onnxruntime-cpu/fp32/model.onnx' is not under this dir
    write(bundle_copy, m)
    with pytest.raises(BundleIntegrityError):
        edgeship.load(bundle_copy, target="onnxruntime-cpu", precision="fp32")


@pytest.mark.parametrize("mutate, match", [
    (lambda m: m.pop("artifacts"), "lacks 'artifacts'"),
    (lambda m: m.pop("input_spec"), "lacks 'input_spec'"),
    (lambda m: m.update(artifacts=[]), "lists no artifacts"),
    (lambda m: m["artifacts"][0].pop("target"), "artifact without 'target'"),
    (lambda m: m["artifacts"][0].update(files=["model.xml"]), "malformed entry"),
    (lambda m: m["input_spec"].update(dtype="float128"), "invalid input spec"),
    (lambda m: m["input_spec"].update(colour="rgb"), "invalid input spec"),
], ids=["no-artifacts", "no-input-spec", "empty-artifacts", "no-target", "files-list", "bad-dtype", "unknown-key"])
def test_malformed_manifest_refused(bundle_copy, mutate, match):
    m = read_manifest(bundle_copy)
    mutate(m)
    write(bundle_copy, m)
    with pytest.raises(BundleIntegrityError, match=match):
        edgeship.open_bundle(bundle_copy)


def test_not_a_bundle(tmp_path, bundle_copy):
    with pytest.raises(BundleIntegrityError, match="no bundle at"):
        edgeship.load(tmp_path / "absent.edgeship")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleIntegrityError, match="has no manifest.json"):
        edgeship.load(tmp_path / "empty")
    (bundle_copy / MANIFEST).write_text("{not json", encoding="utf-8")
    with pytest.raises(BundleIntegrityError, match="is not valid JSON"):
        edgeship.open_bundle(bundle_copy)
    (bundle_copy / MANIFEST).write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(BundleIntegrityError, match="must hold a JSON object"):
        edgeship.open_bundle(bundle_copy)


# -- atomic writes --------------------------------------------------------------------------------
def mystery_onnx(path: Path) -> Path:
    """A valid ONNX file with a custom-domain op: ONNX Runtime's fp32 step (a copy) succeeds, OpenVINO's fails."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 16, 16])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 3, 16, 16])
    graph = helper.make_graph([helper.make_node("Mystery", ["input"], ["output"], domain="com.example")], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_failure_after_an_artifact_is_written_leaves_nothing(tmp_path):
    model = mystery_onnx(tmp_path / "mystery.onnx")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(CompileError, match="OpenVINO could not read"):
        edgeship.compress(model, input_spec=InputSpec(shape=(None, 3, 16, 16), preprocess=None),
                          targets=["onnxruntime-cpu", "openvino-cpu"], precision="fp32",
                          output=out_dir / "m.edgeship", show_progress=False)
    assert leftovers(out_dir) == []


@pytest.mark.parametrize("case", ["bad-precision", "nan-calibration", "bad-calibration-shape", "invalid-onnx"])
def test_failed_compress_leaves_no_bundle_and_no_temp_folder(small_cnn, tmp_path, case):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    kwargs = dict(input_spec=SMALL_SPEC, targets=CPU_TARGETS, output=out_dir / "m.edgeship", show_progress=False)
    calib = np.zeros((8, 3, 16, 16), np.float32)
    model = small_cnn
    if case == "bad-precision":
        kwargs.update(precision=["fp32", "int3"], calibration=calib)
        error = ConfigError
    elif case == "nan-calibration":
        calib[3, 0, 0, 0] = np.nan
        kwargs.update(precision="int8", calibration=calib)
        error = ConfigError
    elif case == "bad-calibration-shape":
        kwargs.update(precision="int8", calibration=np.zeros((8, 3, 8, 8), np.float32))
        error = ConfigError
    else:
        model = tmp_path / "broken.onnx"
        model.write_bytes(b"\x08\x07garbage")
        kwargs.update(precision="fp32")
        error = CompileError
    with pytest.raises(error):
        edgeship.compress(model, **kwargs)
    assert leftovers(out_dir) == []


def test_failed_compress_keeps_the_existing_bundle(small_cnn, small_onnx, tmp_path):
    out = tmp_path / "m.edgeship"
    first = edgeship.compress(small_onnx, input_spec=SMALL_SPEC, targets=["onnxruntime-cpu"], precision="fp32",
                              output=out, show_progress=False)
    before = read_manifest(out)
    with pytest.raises(CompileError):
        edgeship.compress(mystery_onnx(tmp_path / "mystery.onnx"),
                          input_spec=InputSpec(shape=(None, 3, 16, 16), preprocess=None),
                          targets=["onnxruntime-cpu", "openvino-cpu"], precision="fp32", output=out,
                          show_progress=False)
    assert read_manifest(out) == before
    edgeship.open_bundle(out).verify()
    assert leftovers(tmp_path) == sorted(["m.edgeship", "mystery.onnx"])
    assert first.variants == [("onnxruntime-cpu", "fp32")]


def test_existing_bundle_is_replaced(small_cnn, tmp_path):
    out = tmp_path / "m.edgeship"
    edgeship.compress(small_cnn, input_spec=SMALL_SPEC, targets=["onnxruntime-cpu"], precision="fp32",
                      output=out, show_progress=False)
    bundle = edgeship.compress(small_cnn, input_spec=SMALL_SPEC, targets=["openvino-cpu"], precision="fp32",
                               output=out, show_progress=False)
    assert bundle.variants == [("openvino-cpu", "fp32")]
    assert not (out / "onnxruntime-cpu").exists()
    bundle.verify()
    assert leftovers(tmp_path) == ["m.edgeship"]  # no temporary or old folder left


@pytest.mark.parametrize("existing", ["folder", "file", "empty-folder"])
def test_existing_non_bundle_output_not_overwritten(small_cnn, tmp_path, existing):
    out = tmp_path / "precious"
    if existing == "file":
        out.write_text("keep me")
    else:
        out.mkdir()
        if existing == "folder":
            (out / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="exists and is not an edgeship bundle; refusing to overwrite it"):
        edgeship.compress(small_cnn, input_spec=SMALL_SPEC, targets=["onnxruntime-cpu"], precision="fp32",
                          output=out, show_progress=False)
    if existing == "file":
        assert out.read_text() == "keep me"
    elif existing == "folder":
        assert leftovers(out) == ["notes.txt"] and (out / "notes.txt").read_text() == "keep me"
    else:
        assert leftovers(out) == []
    assert leftovers(tmp_path) == ["precious"]


def test_the_manifest_is_one_validated_read_only_type(digits_bundle, tmp_path):
    """edgeship.bundle.manifest owns the manifest: parsed and checked once, typed accessors, one writer."""
    import json
    import pickle

    from edgeship.bundle.manifest import Manifest, write_manifest
    from edgeship.errors import BundleIntegrityError

    manifest = digits_bundle.manifest
    assert isinstance(manifest, Manifest) and manifest.task == "classification"
    assert [(a["target"], a["precision"]) for a in manifest.artifacts] == digits_bundle.variants
    assert manifest.source_file in manifest.source_files and manifest.input_spec == manifest["input_spec"]
    with pytest.raises(TypeError, match="read-only"):
        manifest["labels"] = ["x"]
    assert json.loads(json.dumps(manifest)) == manifest.to_dict() == pickle.loads(pickle.dumps(manifest))
    doc = manifest.to_dict()
    doc["artifacts"][0]["files"] = {"../outside.onnx": "0" * 64}
    with pytest.raises(BundleIntegrityError, match="outside the bundle"):
        write_manifest(tmp_path, doc)  # the writer validates what it writes
    assert not (tmp_path / "manifest.json").exists()
