"""Hard-example captures: the capture folder under a flood (cap, rate limit, atomic writes), packs (hashes, signatures,
hostile members), and the round trip monitor -> capture -> pack -> calib check -> compress on the digits bundle."""

from __future__ import annotations

import io
import json
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import DIGIT_LABELS
from edgeship.bundle.folder import SOURCE_ONNX, Bundle
from edgeship.bundle.predictor import Predictor
from edgeship.calibration import captures_validation, from_captures, is_captures, read_captures
from edgeship.cli import main
from edgeship.demo import DIGITS_SPEC
from edgeship.device.captures import CaptureStore, list_captures, pack_captures, prune_captures, verify_pack
from edgeship.device.monitor import Monitor, MonitorConfig
from edgeship.errors import BundleIntegrityError, ConfigError


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def noise(rng: np.random.Generator, side: int = 48) -> np.ndarray:
    return rng.integers(0, 256, (side, side, 3), dtype=np.uint8)  # PNG cannot shrink noise: ~7 kB a frame


def folder_bytes(root: Path) -> int:
    total = 0
    for f in list(root.iterdir()):
        try:
            total += f.stat().st_size
        except FileNotFoundError:  # rotated away between listing and stat
            pass
    return total


def fill(root: Path, n: int, reasons=("low-confidence",), seed: int = 0) -> CaptureStore:
    store = CaptureStore(root, max_per_minute=1e6)
    rng = np.random.default_rng(seed)
    for i in range(n):
        assert store.save(noise(rng), {"reasons": list(reasons), "scores": {"confidence": 0.3}, "label": i % 3})
    return store


def test_a_flood_from_many_threads_never_takes_the_folder_past_its_cap(tmp_path):
    cap = 60_000
    store = CaptureStore(tmp_path / "c", max_bytes=cap, max_per_minute=1e6)
    seen, stop = [], threading.Event()

    def watch():
        while not stop.is_set():
            seen.append(folder_bytes(store.root))

    def flood(seed):
        rng = np.random.default_rng(seed)
        for _ in range(60):
            store.save(noise(rng), {"reasons": ["drift"], "label": None})

    watcher = threading.Thread(target=watch)
    watcher.start()
    floods = [threading.Thread(target=flood, args=(s,)) for s in range(4)]
    for t in floods:
        t.start()
    for t in floods:
        t.join()
    stop.set()
    watcher.join()
    stats = store.stats()
    assert stats["saved"] == 240 and stats["rotated"] == 240 - stats["held"] and stats["held"] >= 4
    assert max(seen) <= cap and folder_bytes(store.root) == stats["bytes"] <= cap
    assert len(list(read_captures(store.root))) == stats["held"]  # every capture left is whole and hash-checked


def test_the_rate_limit_drops_a_broken_cameras_burst(tmp_path):
    clock = FakeClock()
    store = CaptureStore(tmp_path, max_per_minute=60, clock=clock)  # 1 a second, bursts of 6
    rng = np.random.default_rng(0)
    kept = [store.save(noise(rng, 8), {"reasons": ["drift"]}) for _ in range(20)]
    assert sum(k is not None for k in kept) == 6 and store.stats()["rate_limited"] == 14
    clock.now += 3.0  # three tokens back
    assert sum(store.save(noise(rng, 8), {"reasons": ["drift"]}) is not None for _ in range(5)) == 3
    assert store.save(np.zeros((8, 8, 3), np.float32), {}) is None and store.stats()["refused"] == 1
    with pytest.raises(ConfigError, match="per minute"):
        CaptureStore(tmp_path, max_per_minute=0)


def test_a_restart_removes_half_written_captures_and_adopts_whole_ones(tmp_path):
    store = fill(tmp_path, 3)
    whole = sorted(p.stem for p in tmp_path.glob("*.json"))
    (tmp_path / ".tmp-crashed").write_bytes(b"partial")
    (tmp_path / "20260101T000000.000000Z-000009.png").write_bytes(b"an image without its sidecar")
    again = CaptureStore(tmp_path, max_bytes=store.stats()["bytes"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{n}{s}" for n in whole for s in (".json", ".png"))
    assert again.stats()["held"] == 3
    assert again.save(noise(np.random.default_rng(1)), {"reasons": ["drift"]}) is not None
    assert again.stats()["rotated"] >= 1 and again.stats()["bytes"] <= store.stats()["bytes"]


def test_a_pack_round_trips_and_refuses_tampering(tmp_path, signing_keys):
    fill(tmp_path / "c", 4)
    pack = pack_captures(tmp_path / "c", tmp_path / "p.tar.gz", sign_key=signing_keys["private"])
    assert is_captures(pack) and is_captures(tmp_path / "c") and not is_captures(tmp_path)
    assert [c.name for c in read_captures(pack)] == [c.name for c in read_captures(tmp_path / "c")]
    assert len(verify_pack(pack, signing_keys["public"])) == 64
    with pytest.raises(BundleIntegrityError, match="not by the configured key"):
        verify_pack(pack, signing_keys["other_public"])
    unsigned = pack_captures(tmp_path / "c", tmp_path / "u.tar.gz")
    with pytest.raises(BundleIntegrityError, match="not signed"):
        verify_pack(unsigned, signing_keys["public"])

    def rewrite(src: Path, dst: Path, change) -> Path:
        with tarfile.open(src, "r:gz") as tar:
            members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
        with tarfile.open(dst, "w:gz") as out:
            for m, data in change(members):
                m.size = len(data)
                out.addfile(m, io.BytesIO(data))
        return dst

    def flip_a_png(members):
        return [(m, data[:-20] + bytes(20)) if m.name.endswith(".png") else (m, data) for m, data in members]

    with pytest.raises(BundleIntegrityError, match="SHA-256"):
        list(read_captures(rewrite(pack, tmp_path / "t.tar.gz", flip_a_png)))

    def hostile_index(members):
        out = []
        for m, data in members:
            if m.name == "index.json":
                index = json.loads(data)
                index["captures"][0]["name"] = "../../etc/passwd"
                data = json.dumps(index).encode()
            out.append((m, data))
        return out

    with pytest.raises(BundleIntegrityError, match="bad name"):
        list(read_captures(rewrite(pack, tmp_path / "h.tar.gz", hostile_index)))
    first = next(iter(sorted((tmp_path / "c").glob("*.png"))))
    first.write_bytes(first.read_bytes()[:100])  # truncated in the folder
    with pytest.raises(BundleIntegrityError, match="changed or truncated"):
        list(read_captures(tmp_path / "c"))
    with pytest.raises(ConfigError, match="capture folder"):
        list(read_captures(tmp_path / "nothing-here"))


def test_prune_by_reason_and_by_size(tmp_path):
    fill(tmp_path, 3, reasons=("drift",))
    fill(tmp_path, 3, reasons=("disagreement",), seed=1)
    assert prune_captures(tmp_path, reasons=["drift"])["removed"] == 3
    assert {r for c in list_captures(tmp_path) for r in c["reasons"]} == {"disagreement"}
    left = prune_captures(tmp_path, max_bytes=1)
    assert left == {"removed": 3, "held": 0, "bytes": 0}
    with pytest.raises(ConfigError, match="what to remove"):
        prune_captures(tmp_path)


def test_labelled_captures_are_calibration_and_validation_data(tmp_path, digits_data):
    x, y = digits_data[2][:12], digits_data[3][:12]
    store = CaptureStore(tmp_path, max_per_minute=1e6)
    for image, label in zip(x, y):
        store.save(image, {"reasons": ["low-confidence"], "label": None})
    with pytest.raises(ConfigError, match="no labelled captures"):
        captures_validation(tmp_path, DIGITS_SPEC)
    for sidecar, label in zip(sorted(tmp_path.glob("*.json")), y):  # a person labels them
        doc = json.loads(sidecar.read_text())
        doc["label"] = DIGIT_LABELS[label]
        sidecar.write_text(json.dumps(doc))
    x_val, y_val = captures_validation(tmp_path, DIGITS_SPEC, classes=DIGIT_LABELS)
    np.testing.assert_array_equal(y_val, y)
    np.testing.assert_allclose(x_val, DIGITS_SPEC.apply_preprocess(x), atol=1e-6)  # PNG is lossless
    calib = from_captures(tmp_path, DIGITS_SPEC, size=6, select="stratified", classes=DIGIT_LABELS)
    assert len(calib) == 6 and calib.labels is not None and "captures" in calib.source
    with pytest.raises(ConfigError, match="not a class"):
        captures_validation(tmp_path, DIGITS_SPEC)  # names, without classes=


@pytest.mark.slow
def test_round_trip_monitor_capture_pack_calib_check_compress(labelled_bundle, digits_data, tmp_path, capsys):
    """What the line struggled with (brighter frames) goes back into the build: captured by the monitor, labelled,
    packed, found drifted against the bundle's record, and used as calibration and validation data."""
    folder = tmp_path / "captures"
    bundle = Bundle.open(labelled_bundle)
    frames = np.clip(digits_data[2][:80].astype(np.int16) + 70, 0, 255).astype(np.uint8)
    store = CaptureStore(folder, max_per_minute=1e6)
    with bundle.load("onnxruntime-cpu", "int8") as rt:
        predictor = Predictor(bundle, rt)
        monitor = Monitor(bundle, MonitorConfig(low_confidence=1.0, cost_budget=1.0), target=rt.target,
                          precision=rt.precision, capture=store)
        for frame in frames:
            monitor.observe(predictor.infer([frame]), [frame])
    rows = list_captures(folder)
    assert len(rows) >= 40 and all(r["bundle"] == labelled_bundle.name for r in rows)
    by_name = {}
    for sidecar in folder.glob("*.json"):  # a person labels the captures: the frame's true digit
        doc = json.loads(sidecar.read_text())
        by_name[doc["name"]] = doc
    assert main(["captures", "list", str(folder)]) == 0
    assert f"{len(rows)} captures (0 labelled)" in capsys.readouterr().out
    index = {frame.tobytes(): label for frame, label in zip(frames, digits_data[3][:80])}
    for c in read_captures(folder):
        doc = by_name[c.name]
        doc["label"] = int(index[c.image(1).tobytes()])
        (folder / f"{c.name}.json").write_text(json.dumps(doc))
    pack = tmp_path / "line3.tar.gz"
    assert main(["captures", "pack", str(folder), "-o", str(pack)]) == 0
    capsys.readouterr()
    assert main(["calib", "check", str(pack), "--against", str(labelled_bundle), "--size", "64"]) == 1
    report = capsys.readouterr().out
    assert "drift" in report
    out = tmp_path / "next.edgeship"
    assert main(["compress", str(labelled_bundle / SOURCE_ONNX), "--shape", "?,1,32,32", "--mean", "0.5",
                 "--std", "0.5", "--calib", str(pack), "--val", str(pack), "--targets", "onnxruntime-cpu",
                 "--precision", "int8", "--max-drop", "5", "-o", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["calibration"]["source"].endswith(f"line3.tar.gz ({len(rows)} frames)")
    assert manifest["calibration"]["count"] == len(rows)
    capsys.readouterr()
    assert main(["bench", str(out), "--data", str(pack), "--runs", "5", "--warmup", "1"]) == 0
    assert f"captures line3.tar.gz: {len(rows)} labelled" in capsys.readouterr().out
