"""On-device monitoring: drift from the calibration record, shadow FP32 agreement, captures — on the digits bundle,
a real video through the real stream, a real server on 127.0.0.1, a deliberately damaged INT8 artifact."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import DIGIT_LABELS
from edgeship.bundle.archive import pack
from edgeship.bundle.folder import Bundle, sha256_file
from edgeship.bundle.predictor import Predictor
from edgeship.calibration import InputWindow, check, input_profile
from edgeship.device.deploy import install, set_postprocess
from edgeship.device.monitor import Monitor, MonitorConfig
from edgeship.errors import ConfigError
from edgeship.tasks.postprocess import Postprocess

SHIFT_AT = 60  # the frame where the video's brightness jumps
WINDOW = 30
BRIGHTER = 70  # grey levels added to every pixel after SHIFT_AT


def brighter(image: np.ndarray) -> np.ndarray:
    return np.clip(image.astype(np.int16) + BRIGHTER, 0, 255).astype(np.uint8)


def test_the_bundle_records_its_calibration_profile(digits_bundle, digits_data):
    profile = digits_bundle.manifest.calibration_profile
    channel = profile["input"]["channels"][0]
    assert profile["input"]["samples"] == digits_bundle.manifest.calibration["count"]
    assert channel["range"] == [-1.0, 1.0]  # the interval the digits preprocessing maps 0..255 into
    assert sum(channel["hist"]) == profile["input"]["samples"] * 32 * 32
    out = profile["output"]
    assert len(out["classes"]) == 10 and sum(out["confidence"]) == out["samples"] == sum(out["classes"])
    # the offline check against the record: held-out digits pass, brightened ones drift
    spec = digits_bundle.spec
    assert check(spec.apply_preprocess(digits_data[2]), against=profile["input"], spec=spec).ok
    drifted = check(spec.apply_preprocess(brighter(digits_data[2])), against=profile["input"], spec=spec)
    assert {f.code for f in drifted.errors} >= {"drift-histogram"}


def test_the_window_holds_the_statistics_of_its_last_frames(digits_bundle, digits_data):
    spec = digits_bundle.spec
    reference = digits_bundle.manifest.calibration_profile["input"]
    frames = spec.apply_preprocess(digits_data[2][:25])
    window = InputWindow(reference, window=10)
    for frame in frames:
        window.add(frame[None])
    got, want = window.profile(), input_profile(frames[-10:], spec, like=reference)
    assert got["samples"] == 10 and got["channels"][0]["hist"] == want["channels"][0]["hist"]
    assert got["channels"][0]["mean"] == pytest.approx(want["channels"][0]["mean"], abs=1e-9)
    assert got["channels"][0]["std"] == pytest.approx(want["channels"][0]["std"], abs=1e-9)


@pytest.mark.parametrize("field,value", [("window", 1), ("shadow_rate", 1.5), ("cost_budget", -0.1),
                                         ("min_frames", 1000), ("degrade_health", "yes")])
def test_bad_monitor_config_is_refused_naming_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        MonitorConfig(**{field: value})


def test_shadow_mode_refuses_an_fp32_served_artifact(digits_bundle):
    with pytest.raises(ConfigError, match="compares the served artifact with FP32"):
        Monitor(digits_bundle, MonitorConfig(shadow_rate=0.5), target="onnxruntime-cpu", precision="fp32")


def test_stream_flags_drift_after_the_brightness_shift_and_not_before(labelled_bundle, digits_data, tmp_path):
    cv2 = pytest.importorskip("cv2", reason="OpenCV is not installed (pip install 'edgeship[video]')")
    from edgeship.device.stream import run_stream

    path = tmp_path / "shift.avi"  # FFV1: lossless, so the frames are the digits' own pixels
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 10.0, (32, 32))
    assert writer.isOpened()
    images = digits_data[2][:2 * SHIFT_AT]
    for i, image in enumerate(images):
        grey = image[..., 0] if i < SHIFT_AT else brighter(image)[..., 0]
        writer.write(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR))
    writer.release()
    out = tmp_path / "lines.jsonl"
    config = MonitorConfig(window=WINDOW, min_frames=20, check_every=1, cost_budget=1.0)
    stats = run_stream(labelled_bundle, str(path), out, target="onnxruntime-cpu", precision="int8", monitor=config)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    events = [line for line in lines if "event" in line]
    assert len(lines) - len(events) == 2 * SHIFT_AT == stats.processed
    raised = [e for e in events if e["event"] == "drift" and e["level"] in ("warning", "error")]
    assert raised, f"no drift event in {events}"
    assert all(e["frame"] >= SHIFT_AT for e in raised), f"drift raised before the shift: {raised}"
    first_error = min(e["frame"] for e in raised if e["level"] == "error")
    assert first_error < SHIFT_AT + WINDOW // 2, f"drift error only at frame {first_error}"
    assert stats.monitor["drift"]["level"] == "error" and stats.monitor["frames"] == 2 * SHIFT_AT
    assert {f["code"] for f in stats.monitor["drift"]["findings"]} >= {"drift-histogram"}


# -- shadow mode on a damaged artifact ----------------------------------------------------------------
SWAPPED = [(0, 1), (2, 3), (4, 5)]  # class pairs the damaged INT8 artifact confuses
SEEN_BY_SELFTEST = (6, 7, 8, 9)  # the only classes left in the damaged bundle's golden inputs


def damage_int8_classes(bundle: Path, target: str = "onnxruntime-cpu") -> None:
    """Swap class pairs in the last layer of ``target``'s INT8 artifact (weights, bias, scales, zero points alike),
    so it answers 1 where FP32 answers 0 and so on; fix the file's hash up in the manifest."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    entry = next(e for e in manifest["artifacts"] if e["target"] == target and e["precision"] == "int8")
    rel = next(iter(entry["files"]))
    model = onnx.load(str(bundle / rel))
    order = np.arange(len(DIGIT_LABELS))
    for a, b in SWAPPED:
        order[[a, b]] = order[[b, a]]
    damaged = 0
    for init in model.graph.initializer:  # in the digits CNN only the classifier has a leading axis of 10
        if len(init.dims) and init.dims[0] == len(DIGIT_LABELS):
            init.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(init)[order], init.name))
            damaged += 1
    assert damaged, "no class-axis initializer found to damage"
    onnx.save(model, str(bundle / rel))
    entry["files"][rel] = sha256_file(bundle / rel)
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))


def narrow_golden_inputs(bundle: Path) -> int:
    """Keep only the golden inputs FP32 calls one of SEEN_BY_SELFTEST: a self-test whose data missed the classes
    the damage is in (as a calibration set that missed what the line shows would); the rows kept."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    section = manifest["selftest"]
    [ref_rel] = section["references"]
    inputs, ref = np.load(bundle / section["inputs"]), np.load(bundle / ref_rel)
    keep = np.isin(ref.argmax(1), SEEN_BY_SELFTEST)
    for rel, array in ((section["inputs"], inputs[keep]), (ref_rel, ref[keep])):
        np.save(bundle / rel, array)
        manifest["source"]["files"][rel] = sha256_file(bundle / rel)
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return int(keep.sum())


def test_a_damaged_int8_artifact_in_shadow_mode_drops_agreement_alerts_and_captures(
        digits_bundle, digits_data, tmp_path):
    from test_serve import metric, npy, request, running

    damaged = tmp_path / "damaged.edgeship"
    shutil.copytree(digits_bundle.path, damaged)
    set_postprocess(damaged, labels=DIGIT_LABELS, postprocess=Postprocess(top_k=3))
    damage_int8_classes(damaged)
    assert narrow_golden_inputs(damaged) >= 8
    x_val, y_val = digits_data[2][:60], digits_data[3][:60]
    with Bundle.open(damaged).load("onnxruntime-cpu", "int8") as rt, Bundle.open(damaged).load(
            "onnxruntime-cpu", "fp32") as ref:
        x = rt.preprocess(x_val)
        agree = rt.run(x)["output"].argmax(1) == ref.run(x)["output"].argmax(1)
        assert agree[~np.isin(y_val, np.ravel(SWAPPED))].mean() > 0.9 > 0.2 > agree[np.isin(y_val, np.ravel(SWAPPED))].mean()
    root = tmp_path / "root"
    done = install(pack(damaged, tmp_path / "damaged.tar.gz"), root)
    assert done.degraded is None  # its self-test, blind to the swapped classes, passed
    captures = tmp_path / "captures"
    config = MonitorConfig(shadow_rate=1.0, shadow_budget=1.0, shadow_min=10, degrade_health=True, cost_budget=1.0)
    with running(root, target="onnxruntime-cpu", precision="int8", monitor=config, capture=captures) as (server, url):
        status, _, health = request(url + "/healthz")
        assert status == 200 and health["status"] == "ok"
        snapshot = None
        for image in x_val:
            status, _, reply = request(url + "/v1/predict", npy(image[None]), "application/x-npy")
            assert status == 200, reply
            status, _, snapshot = request(url + "/v1/monitor")
            if snapshot["shadow"]["alert"]:
                break
        deadline = time.monotonic() + 30
        while not snapshot["shadow"]["alert"] and time.monotonic() < deadline:  # the shadow runs on its own thread
            time.sleep(0.1)
            snapshot = request(url + "/v1/monitor")[2]
        shadow = snapshot["shadow"]
        assert shadow["alert"], shadow
        assert shadow["compared"] >= 10 and shadow["agreement"] < 0.8
        assert shadow["interval"][1] < shadow["tolerance"]
        status, _, health = request(url + "/healthz")
        assert status == 503 and health["status"] == "degraded" and "shadow agreement" in health["why"][0]
        text = request(url + "/metrics")[2]
        assert metric(text, "edgeship_shadow_alert") == 1.0
        assert metric(text, "edgeship_shadow_agreement") == pytest.approx(shadow["agreement"], abs=1e-3)
    sidecars = [json.loads(p.read_text()) for p in sorted(captures.glob("*.json"))]
    disagreeing = [s for s in sidecars if "disagreement" in s["reasons"]]
    assert disagreeing, sidecars[:3]
    first = disagreeing[0]
    assert first["bundle"]["precision"] == "int8" and first["scores"]["shadow_agrees"] is False
    assert first["bundle"]["manifest_sha256"] == sha256_file(root / "current" / "manifest.json")
    assert (captures / first["image"]["file"]).is_file()


def test_monitor_endpoint_is_404_when_monitoring_is_off(labelled_bundle):
    from test_serve import request, running

    with running(labelled_bundle) as (_, url):
        status, _, doc = request(url + "/v1/monitor")
    assert status == 404 and "--monitor" in doc["error"]


def test_the_monitor_stays_within_its_cost_budget(digits_bundle, digits_data):
    """The budget is a bound on the monitor's own time (not a speed claim): over it, calls are not looked at."""
    with digits_bundle.load("onnxruntime-cpu", "int8") as rt:
        predictor = Predictor(digits_bundle, rt)
        monitor = Monitor(digits_bundle, MonitorConfig(cost_budget=0.05), target=rt.target, precision=rt.precision)
        for image in digits_data[2][:200]:
            monitor.observe(predictor.infer([image]), [image])
    snap = monitor.snapshot()
    assert snap["frames"] == 200 and 1 <= snap["observed"] <= 200
    cost = snap["cost"]
    # the last call looked at may overshoot the budget by its own cost, never more
    assert cost["monitor_ms_per_frame"] <= 0.05 * cost["model_ms_per_frame"] + cost["monitor_ms_per_observed_frame"] / 200
