"""The fidelity benchmark: its Fashion-MNIST loader (real Debian files; refused inputs) and its rows.

The rows come from a tiny untrained ResNet-style model on random images: every variant is there, with
intervals around its numbers and the INT8 flavour the fleet asks for. Latencies and margins between
variants are measured, never asserted: they depend on this CPU (VNNI or not) and its load.
"""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from conftest import CPU_TARGETS, target_param
from edgeship import ConfigError
from edgeship.benchmarks.suites import fidelity
from edgeship.targets import get_target_class
from edgeship.targets.onnxruntime import FLEET_SAFE_FLAVOURS

needs_data = pytest.mark.skipif(not fidelity.DATA_DIR.is_dir(),
                                reason=f"{fidelity.DATA_DIR} is absent (apt-get install dataset-fashion-mnist)")


@needs_data
def test_loader_reads_the_debian_files():
    x_train, y_train, x_test, y_test = fidelity.load_fashion_mnist()
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert x_train.dtype == x_test.dtype == np.uint8
    assert y_train.dtype == y_test.dtype == np.int64
    assert y_train.shape == (60000,) and y_test.shape == (10000,)
    for labels, per_class in ((y_train, 6000), (y_test, 1000)):
        assert labels.min() == 0 and labels.max() == 9
        assert np.bincount(labels).tolist() == [per_class] * 10
    assert x_train.max() == 255 and x_train.mean() == pytest.approx(0.2860 * 255, abs=0.5)


# -- what the loader refuses -------------------------------------------------------------------
def test_missing_folder_names_the_debian_package(tmp_path):
    with pytest.raises(ConfigError, match="apt-get install dataset-fashion-mnist"):
        fidelity.load_fashion_mnist(tmp_path / "absent")


def _write(path, payload: bytes) -> None:
    with gzip.open(path, "wb") as fh:
        fh.write(payload)


@pytest.mark.parametrize("payload,match", [
    (b"", "not an IDX file"),
    (b"\x00\x00\x0d\x01" + (4).to_bytes(4, "big") + b"\x00" * 16, "not an IDX file of unsigned bytes"),  # float data
    (b"\x00\x00\x08\x03" + (2).to_bytes(4, "big"), "declares 3 dimensions"),  # header cut short
    (b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + b"\x01\x02", "needs 5 bytes"),  # data cut short
])
def test_read_idx_refuses(tmp_path, payload, match):
    path = tmp_path / "bad-idx1-ubyte.gz"
    _write(path, payload)
    with pytest.raises(ConfigError, match=match):
        fidelity.read_idx(path)


def test_read_idx_reads_shape_and_bytes(tmp_path):
    path = tmp_path / "ok-idx3-ubyte.gz"
    _write(path, b"\x00\x00\x08\x03" + b"".join(d.to_bytes(4, "big") for d in (2, 3, 4)) + bytes(range(24)))
    assert fidelity.read_idx(path).tolist() == np.arange(24, dtype=np.uint8).reshape(2, 3, 4).tolist()


def test_missing_file_in_the_folder_is_named(tmp_path):
    with pytest.raises(ConfigError, match="train-images-idx3-ubyte.gz is missing"):
        fidelity.load_fashion_mnist(tmp_path)


# -- the rows ----------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("target", [target_param(t) for t in CPU_TARGETS])
def test_every_variant_gets_a_row_with_intervals_and_its_flavour(tiny_rows, target):
    rows = [r for r in tiny_rows if r["target"] == target]
    variants = {r["variant"] for r in rows}
    assert variants == {"fp32", "edgeship fleet-safe", "edgeship vnni",
                        "nncf direct" if target == "openvino-cpu" else "ort direct"}
    for r in rows:
        assert r["samples"] == 64 and r["cpu_flags"] == fidelity.cpu_flags()
        for key in ("top1", "agreement", "fused_vs_fake"):
            if r[key] is not None:
                lo, hi = r[key + "_ci"]
                assert 0 <= lo <= r[key] <= hi <= 1
        assert (r["fused_vs_fake"] is not None) == (target == "onnxruntime-cpu" and r["precision"] == "int8")
    by_variant = {r["variant"]: r for r in rows}
    if target == "onnxruntime-cpu":
        assert by_variant["fp32"]["agreement"] == 1.0  # the reference itself
        assert by_variant["edgeship fleet-safe"]["flavour"] in FLEET_SAFE_FLAVOURS
        assert by_variant["edgeship fleet-safe"]["flavour_choice"]["measured"]  # the candidates, measured
        assert by_variant["edgeship vnni"]["flavour"] == "u8s8"
    else:
        assert by_variant["edgeship fleet-safe"]["flavour"] == "nncf overflow_fix=enable"
        assert by_variant["edgeship vnni"]["flavour"] == "nncf overflow_fix=disable"
        assert by_variant["nncf direct"]["flavour"].startswith("nncf defaults")


@pytest.mark.slow
def test_rows_write_json_and_markdown(tiny_rows, tmp_path):
    result = {"quick": True, "rows": tiny_rows, "cpu_flags": fidelity.cpu_flags(), "models": {},
              "settings": {"test_images": 64, "train_images": 400, "threads": 1, "runs": 3}}
    text = json.dumps(result, default=fidelity._json)
    assert json.loads(text)["rows"][0]["variant"] == "fp32"
    markdown = fidelity._markdown(result)
    assert markdown.count("| tiny |") == len(tiny_rows)


@pytest.fixture(scope="module")
def tiny_rows(tmp_path_factory):
    """Every row for an untrained width-8 ResNet-style model: 400 random training images, 64 test images."""
    import torch

    for target in CPU_TARGETS:  # every row needs both targets
        ok, reason = get_target_class(target).availability()
        if not ok:
            pytest.skip(f"{target}: {reason}")
    torch.manual_seed(0)
    model = fidelity.build_resnet(width=8).eval()
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, (400, 28, 28), dtype=np.uint8)
    x_test = rng.integers(0, 256, (64, 28, 28), dtype=np.uint8)
    y_test = rng.integers(0, 10, 64)
    return fidelity.measure_model("tiny", model, x_train, x_test, y_test, tmp_path_factory.mktemp("fidelity"),
                                  runs=3, threads=1, show_progress=False)
