"""The self-test every bundle carries, checked where it lands, and the variant a device chooses by measuring.

Refused here: a bundle whose reference outputs disagree with its artifacts (verify fails, ``edgeship verify``
exits 1, ``install`` keeps the old version current, ``serve`` will not start or reload on it, ``load`` with
precision="auto" raises), a self-test file that does not match its hash (BundleIntegrityError before any
comparison), a selftest section naming a file outside ``source.files``. Bundles from before self-tests are
skipped, not failed. No test compares two measured latencies: the choice is tested on given numbers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import edgeship
import edgeship.device.choice
import numpy as np
import pytest
from conftest import SMALL_SPEC
from edgeship import BundleIntegrityError, ConfigError, Recipe, SelfTestError
from edgeship.bundle.archive import pack
from edgeship.bundle.folder import sha256_file
from edgeship.bundle.selftest import all_passed, select_golden
from edgeship.cli import main
from edgeship.device.choice import CHOICE_FILE, Candidate, cached_choice, describe_cpu, read_choices, select_variant
from edgeship.device.deploy import current, degraded, history, install

QEMU = shutil.which("qemu-x86_64")


def _manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())


def _write_manifest(path: Path, manifest: dict) -> None:
    (path / "manifest.json").write_text(json.dumps(manifest, indent=2))


def break_reference(bundle: Path) -> None:
    """Rewrite the reference so every top-1 class moves by one, and fix its hash up in the manifest: only the
    self-test itself can catch it."""
    manifest = _manifest(bundle)
    rel = manifest["selftest"]["references"][0]
    np.save(bundle / rel, np.roll(np.load(bundle / rel), 1, axis=1), allow_pickle=False)
    manifest["source"]["files"][rel] = sha256_file(bundle / rel)
    _write_manifest(bundle, manifest)


# -- what compress stores --------------------------------------------------------------------------
def test_manifest_holds_the_golden_files_hashed(digits_bundle):
    manifest = digits_bundle.manifest
    section = manifest["selftest"]
    files = [section["inputs"], *section["references"]]
    assert files == ["selftest/inputs.npy", "selftest/reference_0.npy"] and section["outputs"] == ["output"]
    for rel in files:
        assert manifest["source"]["files"][rel] == sha256_file(digits_bundle.path / rel)
    inputs = np.load(digits_bundle.path / section["inputs"], allow_pickle=False)
    reference = np.load(digits_bundle.path / section["references"][0], allow_pickle=False)
    assert inputs.dtype == np.float32 and inputs.shape == (64, 1, 32, 32) and reference.shape == (64, 10)
    assert len({x.tobytes() for x in inputs}) == 64  # 64 distinct samples, not one repeated
    assert section["samples"] == 64 and section["source"].startswith("calibration set")
    assert section["selection"].startswith("diverse: greedy k-center") and "ONNX Runtime" in section["reference"]
    for entry in manifest["artifacts"]:
        st = entry["selftest"]
        assert st["passed"] and st["build_cpu_flags"] == edgeship.benchmarks.cpu_flags()
        if entry["precision"] == "fp32":
            assert st["tolerance"]["min_agreement"] == 1.0 and 0 < st["tolerance"]["max_abs_error"] < 0.05
        else:
            assert st["tolerance"] == {"min_agreement": 0.95, "max_abs_error": None}
        assert st["agreement"] >= st["tolerance"]["min_agreement"]


def test_the_archive_carries_the_self_test(digits_bundle, tmp_path):
    from edgeship.bundle.archive import unpack

    bundle = unpack(pack(digits_bundle, tmp_path / "d.tar"), tmp_path / "unpacked")
    assert (bundle.path / "selftest" / "inputs.npy").is_file()
    assert all_passed(bundle.verify_outputs()) and not any(r.skipped for r in bundle.verify_outputs())


def test_fp32_without_data_uses_seeded_random_inputs_and_says_so(small_onnx, tmp_path):
    bundle = edgeship.compress(small_onnx, input_spec=SMALL_SPEC, targets=["onnxruntime-cpu"], precision="fp32",
                               output=tmp_path / "small.edgeship", show_progress=False,
                               recipe=Recipe(selftest_samples=8))
    section = bundle.manifest["selftest"]
    assert section["source"] == "random" and "no calibration or validation data" in section["selection"]
    assert np.load(bundle.path / section["inputs"]).shape == (8, 3, 16, 16)
    [result] = bundle.verify_outputs()
    assert result.passed and result.agreement == 1.0 and result.max_abs_error <= result.tolerance["max_abs_error"]


def test_golden_inputs_are_a_diverse_subset_of_the_validation_data(rng):
    x = rng.normal(size=(500, 3, 16, 16)).astype(np.float32)
    x[:400] = x[0]  # 400 copies of one image: a diverse subset picks it once
    golden, origin = select_golden(SMALL_SPEC, validation=x, calib=object(), samples=64)
    assert golden.shape == (64, 3, 16, 16) and origin["source"] == "validation data"
    assert sum(np.array_equal(g, x[0]) for g in golden) == 1
    assert select_golden(SMALL_SPEC, validation=x[:10], samples=64)[0].shape == (10, 3, 16, 16)


def test_recipe_selftest_fields_are_checked():
    assert Recipe().selftest_samples == 64 and Recipe().selftest_min_agreement == 0.95
    assert Recipe.from_dict(Recipe(selftest_samples=16, selftest_min_agreement=0.9).to_dict()).selftest_samples == 16
    for bad in ({"selftest_samples": 0}, {"selftest_samples": 2.5}, {"selftest_min_agreement": 1.5},
                {"selftest_min_agreement": "high"}):
        with pytest.raises(ConfigError, match="selftest"):
            Recipe(**bad)


# -- verify ----------------------------------------------------------------------------------------
def test_verify_passes_on_the_digits_bundle(digits_bundle, capsys):
    results = digits_bundle.verify_outputs()
    assert [(r.target, r.precision) for r in results] == digits_bundle.variants
    for r in results:
        assert r.passed, (r.target, r.precision, r.reason)
        assert r.agreement >= r.tolerance["min_agreement"] and r.p50_ms > 0 and r.p50_ci_ms[0] <= r.p50_ms
        assert r.build == digits_bundle.artifact(r.target, r.precision)["selftest"]
    assert [r.precision for r in digits_bundle.verify_outputs("onnxruntime-cpu")] == ["fp32", "int8"]
    assert main(["verify", str(digits_bundle.path), "--precision", "int8"]) == 0
    out = capsys.readouterr().out
    assert "openvino-cpu" in out and "onnxruntime-cpu" in out and "pass" in out and "fp32" not in out.split("┃")[-1]


def test_a_reference_that_disagrees_fails_verify_and_the_cli_exits_1(bundle_copy, capsys):
    break_reference(bundle_copy)
    results = edgeship.open_bundle(bundle_copy).verify_outputs()
    assert len(results) == 4 and not any(r.passed or r.skipped for r in results)
    assert all("agreement 0.000 < " in r.reason for r in results), [r.reason for r in results]
    assert main(["verify", str(bundle_copy)]) == 1
    captured = capsys.readouterr()
    assert "FAIL" in captured.out and "FAIL openvino-cpu fp32: agreement 0.000" in captured.err
    proc = subprocess.run([sys.executable, "-m", "edgeship", "verify", str(bundle_copy), "--target", "onnxruntime-cpu"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    with pytest.raises(SelfTestError, match="fails its self-test on this device"):
        edgeship.load(bundle_copy)  # precision="auto"
    with edgeship.load(bundle_copy, "onnxruntime-cpu", "int8") as rt:  # a named precision is loaded as asked
        assert rt.precision == "int8"


def test_a_self_test_file_that_does_not_match_its_hash_is_refused(bundle_copy, capsys):
    rel = _manifest(bundle_copy)["selftest"]["references"][0]
    np.save(bundle_copy / rel, np.zeros((64, 10), np.float32), allow_pickle=False)
    with pytest.raises(BundleIntegrityError, match="reference_0.npy in bundle .* was modified"):
        edgeship.open_bundle(bundle_copy).verify_outputs()
    assert main(["verify", str(bundle_copy)]) == 2
    assert "was modified" in capsys.readouterr().err


def test_a_pickled_or_truncated_self_test_file_is_refused_even_with_its_hash_fixed(bundle_copy):
    manifest = _manifest(bundle_copy)
    rel = manifest["selftest"]["references"][0]
    for bad in (np.array([{"a": 1}] * 64, dtype=object), None):
        if bad is None:  # a header declaring more rows than the bytes hold
            data = (bundle_copy / rel).read_bytes()
            (bundle_copy / rel).write_bytes(data[: len(data) - 40])
        else:
            np.save(bundle_copy / rel, bad, allow_pickle=True)
        manifest["source"]["files"][rel] = sha256_file(bundle_copy / rel)
        _write_manifest(bundle_copy, manifest)
        with pytest.raises(BundleIntegrityError, match="object arrays are refused|declares shape"):
            edgeship.open_bundle(bundle_copy).verify_outputs()


def test_a_selftest_naming_an_unhashed_file_is_refused(bundle_copy):
    manifest = _manifest(bundle_copy)
    manifest["selftest"]["references"] = ["selftest/other.npy"]
    _write_manifest(bundle_copy, manifest)
    with pytest.raises(BundleIntegrityError, match="not among the hashed source.files"):
        edgeship.open_bundle(bundle_copy)
    manifest["selftest"]["references"] = ["../outside.npy"]
    _write_manifest(bundle_copy, manifest)
    with pytest.raises(BundleIntegrityError, match="outside the bundle"):
        edgeship.open_bundle(bundle_copy)


def strip_selftest(bundle: Path) -> None:
    """Make the bundle look like one written before bundles carried a self-test."""
    manifest = _manifest(bundle)
    section = manifest.pop("selftest")
    for rel in [section["inputs"], *section["references"]]:
        del manifest["source"]["files"][rel]
    for entry in manifest["artifacts"]:
        del entry["selftest"]
    shutil.rmtree(bundle / "selftest")
    _write_manifest(bundle, manifest)


def test_a_bundle_without_a_self_test_is_skipped_not_failed(bundle_copy, tmp_path, capsys):
    strip_selftest(bundle_copy)
    results = edgeship.open_bundle(bundle_copy).verify_outputs()
    assert all(r.skipped and r.reason == "no self-test in this bundle" for r in results)
    assert main(["verify", str(bundle_copy)]) == 0
    assert "no self-test in this bundle" in capsys.readouterr().out
    with edgeship.load(bundle_copy) as rt:  # the preferred target's first compiled precision, as before
        assert (rt.target, rt.precision) == ("openvino-cpu", "fp32")
    done = install(pack(bundle_copy, tmp_path / "old.tar"), tmp_path / "root")
    assert done.choice.status == "untested" and "no self-test in this bundle" in done.choice.reason


# -- install and serve refuse a failing bundle -------------------------------------------------------
@pytest.fixture
def failing_archive(bundle_copy, tmp_path) -> Path:
    break_reference(bundle_copy)
    return pack(bundle_copy, tmp_path / "line3-v2.edgeship.tar")


def test_install_refuses_a_failing_self_test_and_keeps_the_old_version(digits_bundle, failing_archive, tmp_path,
                                                                      capsys):
    root = tmp_path / "line3"
    before = install(pack(digits_bundle, tmp_path / "line3-v1.edgeship.tar"), root)
    assert before.choice.status == "passed" and before.degraded is None
    with pytest.raises(SelfTestError, match=r"refusing to activate line3-v2-\w+: .*no artifact passes its self-test.*"
                                            r"agreement 0\.000 < .*The current version stays line3-v1-"):
        install(failing_archive, root)
    assert current(root) == before and history(root) == [before.version]
    assert sorted(p.name for p in (root / "versions").iterdir()) == [before.version]  # the extracted copy is gone
    assert main(["install", str(failing_archive), "--into", str(root)]) == 2
    assert "refusing to activate" in capsys.readouterr().err and current(root) == before

    # --allow-degraded activates it and records why in history.json, readable by history()
    assert main(["install", str(failing_archive), "--into", str(root), "--allow-degraded"]) == 0
    assert "installed DEGRADED" in capsys.readouterr().err
    now = current(root)
    assert now.version.startswith("line3-v2-") and history(root) == [before.version, now.version]
    marks = degraded(root)
    assert list(marks) == [now.version] and "agreement 0.000" in marks[now.version]
    assert json.loads((root / "history.json").read_text())["degraded"] == marks
    with pytest.warns(UserWarning, match="installed degraded"):
        with edgeship.load(root) as rt:  # recorded degraded: it runs, with a warning
            assert rt.target in ("openvino-cpu", "onnxruntime-cpu")
    edgeship.device.deploy.rollback(root)
    assert degraded(root) == {}  # the mark leaves with the version


def test_serve_refuses_a_failing_artifact_at_start_and_on_reload(digits_bundle, bundle_copy, tmp_path):
    pytest.importorskip("uvicorn")
    from edgeship.device.deploy import _switch
    from edgeship.device.serve import ModelServer

    break_reference(bundle_copy)
    with pytest.raises(SelfTestError, match="fails its self-test"):
        ModelServer(bundle_copy, "127.0.0.1", 0)
    with pytest.raises(SelfTestError, match="fails its self-test"):
        ModelServer(bundle_copy, "127.0.0.1", 0, target="onnxruntime-cpu", precision="int8")
    root = tmp_path / "line3"
    first = install(pack(digits_bundle, tmp_path / "line3-v1.edgeship.tar"), root)
    server = ModelServer(root, "127.0.0.1", 0)
    try:
        assert server.model.choice.status == "passed"
        shutil.copytree(bundle_copy, root / "versions" / "line3-bad")
        _switch(root, "line3-bad")  # current moves to a version that fails here (not installed degraded)
        assert server.current_model().version == first.version  # still the one that passes
        assert server.metrics.reload_errors == 1
    finally:
        server.close()


# -- the choice: fastest passing, ties to the least modified (given numbers, nothing measured) ------------
def cand(target, precision, p50, ci=None, passed=True, reason=""):
    return Candidate(target, precision, passed, p50, ci if ci is not None else (p50 * 0.98, p50 * 1.02), reason)


def test_the_fastest_passing_variant_wins_when_intervals_do_not_overlap():
    best, notes = select_variant([cand("onnxruntime-cpu", "fp32", 4.4), cand("onnxruntime-cpu", "int8", 2.0)])
    assert (best.target, best.precision) == ("onnxruntime-cpu", "int8")
    assert notes["onnxruntime-cpu fp32"].startswith("slower")


def test_a_tie_goes_to_the_less_modified_variant():
    best, notes = select_variant([cand("openvino-cpu", "int8", 2.0, (1.8, 2.4)),
                                  cand("openvino-cpu", "fp32", 2.2, (2.1, 2.6)),
                                  cand("onnxruntime-cpu", "fp32", 5.0)])
    assert (best.target, best.precision) == ("openvino-cpu", "fp32")
    assert "tied with the fastest" in notes["openvino-cpu fp32"] and "tied" in notes["openvino-cpu int8"]
    # fp16 is less modified than int8, more than fp32
    best, _ = select_variant([cand("openvino-cpu", "int8", 2.0, (1.9, 2.3)), cand("openvino-cpu", "fp16", 2.1, (2.0, 2.3))])
    assert best.precision == "fp16"


def test_int8_slower_than_fp32_is_never_chosen_and_failures_are_rejected():
    best, notes = select_variant([cand("onnxruntime-cpu", "int8", 3.0), cand("onnxruntime-cpu", "fp32", 2.0),
                                  cand("openvino-cpu", "int8", 1.0, passed=False, reason="agreement 0.880 < 0.950")])
    assert (best.target, best.precision) == ("onnxruntime-cpu", "fp32")
    assert "never chosen" in notes["onnxruntime-cpu int8"]
    assert notes["openvino-cpu int8"] == "rejected: agreement 0.880 < 0.950"
    assert select_variant([cand("openvino-cpu", "fp32", 1.0, passed=False, reason="x")])[0] is None


def test_cpu_descriptions():
    assert describe_cpu(["avx", "avx2", "fma"]) == "avx2, no vnni"
    assert describe_cpu(["avx2", "avx512f", "avx512_vnni", "amx_int8"]) == "avx512, vnni, amx"
    assert describe_cpu(["asimd", "asimddp"]) == "arm64, dot product"


# -- the choice cached in the install root --------------------------------------------------------------
def test_install_caches_the_choice_and_load_uses_it(digits_bundle, tmp_path, capsys):
    root = tmp_path / "line3"
    done = install(pack(digits_bundle, tmp_path / "line3-v1.edgeship.tar"), root)
    [entry] = read_choices(root)[done.version]
    assert entry["status"] == "passed" and entry["key"]["version"] == done.version
    assert entry["key"]["cpu_flags"] == edgeship.benchmarks.cpu_flags() and "openvino-cpu" in entry["key"]["backends"]
    assert entry["reason"].startswith(f"this device ({describe_cpu(edgeship.benchmarks.cpu_flags())}): "
                                      f"{entry['target']} {entry['precision']}")
    measured = {(c["target"], c["precision"]) for c in entry["candidates"]}
    assert measured == set(digits_bundle.variants)
    # load of the install root runs the cached choice: make the cache name another passing variant
    data = json.loads((root / CHOICE_FILE).read_text())
    other = next(v for v in digits_bundle.variants if v != (entry["target"], entry["precision"]))
    data["choices"][done.version][0].update(target=other[0], precision=other[1])
    (root / CHOICE_FILE).write_text(json.dumps(data))
    with edgeship.load(root) as rt:
        assert (rt.target, rt.precision) == other
    assert main(["info", str(root)]) == 0
    out = capsys.readouterr().out
    assert f"this device runs {other[0]} {other[1]} (self-test passed" in out and "variants" in out
    assert main(["info", str(digits_bundle.path)]) == 0
    assert "a bundle folder, no cached choice" in capsys.readouterr().out


def test_the_cached_choice_is_measured_again_when_its_key_changes(digits_bundle, tmp_path, monkeypatch):
    root = tmp_path / "line3"
    done = install(pack(digits_bundle, tmp_path / "line3-v1.edgeship.tar"), root)
    bundle = edgeship.open_bundle(root)
    assert cached_choice(root, bundle).cached
    # another backend version (an upgrade of OpenVINO on the device)
    data = json.loads((root / CHOICE_FILE).read_text())
    data["choices"][done.version][0]["key"]["backends"]["openvino-cpu"] = "openvino 2000.0"
    (root / CHOICE_FILE).write_text(json.dumps(data))
    again = cached_choice(root, bundle)
    assert not again.cached and again.key["backends"]["openvino-cpu"] != "openvino 2000.0"
    assert cached_choice(root, bundle).cached  # and cached again
    # other CPU flags (the install root moved to another box)
    monkeypatch.setattr(edgeship.device.choice, "cpu_flags", lambda: ["sse4_2", "avx", "avx2"])
    moved = cached_choice(root, bundle)
    assert not moved.cached and moved.key["cpu_flags"] == ["sse4_2", "avx", "avx2"]
    assert moved.reason.startswith("this device (avx2, no vnni): ")
    assert cached_choice(root, bundle).cached
    # a runtime option is part of the request: its own entry beside the others
    assert not cached_choice(root, bundle, threads=1).cached and cached_choice(root, bundle, threads=1).cached
    assert len(read_choices(root)[done.version]) == 2


def test_load_auto_on_a_bundle_folder_chooses_among_the_preferred_targets_precisions(digits_bundle):
    with edgeship.load(digits_bundle.path) as rt:
        assert rt.target == "openvino-cpu" and rt.precision in ("fp32", "int8")
    with edgeship.load(digits_bundle.path, target="onnxruntime-cpu") as rt:
        assert rt.target == "onnxruntime-cpu"


# -- the margins hold on an AVX2 CPU without VNNI, and the self-test catches INT8 that does not ---------------
_EMULATED = textwrap.dedent("""
    import json, sys
    import edgeship
    from edgeship.bundle.selftest import verify_bundle
    out = []
    for path in sys.argv[1:]:
        out += [[path, r.target, r.precision, r.status, r.agreement, r.reason]
                for r in verify_bundle(edgeship.open_bundle(path), measure=False)]
    print(json.dumps(out))
""")


@pytest.mark.slow
@pytest.mark.skipif(QEMU is None, reason="qemu-x86_64 is not installed (apt-get install qemu-user; .ci/run does)")
def test_on_an_emulated_avx2_cpu_the_fleet_safe_bundle_passes_and_vnni_only_int8_fails(digits_bundle, digits_model,
                                                                                       digits_data, tmp_path):
    """QEMU's ``-cpu EPYC`` (AMD Zen 1: AVX2, no AVX-512, no VNNI): the backends pick their non-VNNI kernels from
    CPUID (the CPU flags edgeship reads from /proc/cpuinfo stay the host's). The default bundle (INT8 safe for any
    AVX2 CPU) passes every self-test there; full-range U8S8 made for a VNNI fleet passes here and fails there
    (measured: top-1 agreement 0.906 of 64 golden inputs under the emulator, 1.0 on this AVX-512 VNNI host)."""
    vnni = edgeship.compress(digits_model, input_spec=edgeship.demo.DIGITS_SPEC, calibration=digits_data[0],
                             preprocess_calibration=True, precision="int8", targets=["onnxruntime-cpu"],
                             output=tmp_path / "vnni.edgeship", recipe=Recipe(cpus="avx512-vnni"), show_progress=False)
    if {"avx512_vnni", "avx_vnni", "amx_int8"} & set(edgeship.benchmarks.cpu_flags()):  # a build machine with VNNI
        assert vnni.artifact("onnxruntime-cpu", "int8")["selftest"]["passed"]
    proc = subprocess.run([QEMU, "-cpu", "EPYC", sys.executable, "-c", _EMULATED, str(digits_bundle.path),
                           str(vnni.path)], capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(proc.stdout.strip().splitlines()[-1])
    default = [r for r in rows if r[0] == str(digits_bundle.path)]
    assert len(default) == 4 and all(r[3] == "passed" for r in default), default
    [(_, target, precision, status, agreement, reason)] = [r for r in rows if r[0] == str(vnni.path)]
    assert status == "failed" and agreement < 0.95 and reason.startswith("agreement"), (agreement, reason)


# -- detection bundles: boxes after edgeship's postprocessing, and the raw head outputs ----------------------
def test_boxes_are_compared_from_a_score_the_reference_reaches():
    from edgeship.bundle.selftest import detection_compare_score

    def answers(*scores):
        return [{"scores": np.asarray(s, dtype=np.float32)} for s in scores]

    assert detection_compare_score(answers([0.9] * 10, [0.6] * 6, [0.1])) == (0.5, 16)  # enough confident boxes
    # an undertrained detector: its 16th best box scores 0.337, compared from 0.33 (17 boxes reach it)
    assert detection_compare_score(answers([0.45, 0.4] * 5, [0.337] * 6 + [0.331], [0.2] * 9)) == (0.33, 17)
    assert detection_compare_score(answers([0.3, 0.2], [0.01] * 40)) == (0.05, 2)  # never below the floor
    assert detection_compare_score(answers([], [])) == (0.05, 0)


@pytest.mark.slow
def test_a_detector_bundle_compares_boxes_and_raw_outputs(tmp_path):
    from test_detection import SSD_SPEC, _blocky_images, _detector

    model = _detector("ssdlite320_mobilenet_v3_large", num_classes=3)
    calib = np.concatenate([SSD_SPEC.apply_preprocess(img) for img in _blocky_images(6, 320, 320, seed=4)])
    bundle = edgeship.compress(model, input_spec=SSD_SPEC, calibration=calib, precision=["fp32", "int8"],
                               targets=["onnxruntime-cpu"], output=tmp_path / "ssd.edgeship", show_progress=False)
    section = bundle.manifest["selftest"]
    assert section["samples"] == 6 and section["outputs"] == ["bbox_regression", "cls_logits"]
    assert section["compared"].startswith("box agreement") and "max abs error of the raw head outputs" in section["compared"]
    fp32 = bundle.artifact("onnxruntime-cpu", "fp32")["selftest"]
    assert fp32["tolerance"]["min_agreement"] == 0.98 and fp32["tolerance"]["max_abs_error"] > 0
    assert all(r.passed for r in bundle.verify_outputs())
    # the reference's class scores shifted: the raw outputs no longer match
    rel = section["references"][1]
    logits = np.load(bundle.path / rel)
    np.save(bundle.path / rel, logits + 1.0, allow_pickle=False)
    manifest = _manifest(bundle.path)
    manifest["source"]["files"][rel] = sha256_file(bundle.path / rel)
    _write_manifest(bundle.path, manifest)
    [result] = edgeship.open_bundle(bundle.path).verify_outputs(precision="fp32")
    assert result.status == "failed" and "max abs error 1 >" in result.reason, result.reason
