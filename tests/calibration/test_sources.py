"""Calibration sources -> a seeded, checked subset of model-ready samples."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from edgeship import ConfigError, InputSpec, Preprocess
from edgeship.calibration import CalibrationSet, collect, from_arrays
from torch.utils.data import DataLoader, TensorDataset

SPEC = InputSpec(shape=(None, 3, 4, 4), preprocess=Preprocess(scale=1 / 255.0, mean=(0.5,), std=(0.5,)))


@pytest.fixture
def data(rng):
    """40 distinct model-ready samples: sample i is filled with the value i, so indices are recoverable."""
    return np.broadcast_to(np.arange(40, dtype=np.float32)[:, None, None, None], (40, 3, 4, 4)).copy()


def ids(calib: CalibrationSet) -> list[int]:
    """Which samples of ``data`` were drawn."""
    return [int(s[0, 0, 0, 0]) for s in calib.samples]


def check_samples(calib: CalibrationSet, count: int) -> None:
    assert len(calib) == count
    for sample in calib:
        assert sample.shape == (1, 3, 4, 4) and sample.dtype == np.float32


# -- every source kind ----------------------------------------------------------------------------
def test_ndarray(data):
    calib = collect(data, SPEC, size=10, seed=0)
    check_samples(calib, 10)
    drawn = ids(calib)
    assert drawn == sorted(drawn) and len(set(drawn)) == 10  # a subset, in source order
    assert calib.as_batch().shape == (10, 3, 4, 4)
    assert calib.source.startswith("array (40, 3, 4, 4)")


def test_ndarray_float64_is_cast_and_unbatched_sample_accepted(data):
    calib = collect(data.astype(np.float64), SPEC, size=40)
    check_samples(calib, 40)
    assert ids(calib) == list(range(40))
    one = collect([data[7]], SPEC)  # a single sample without batch dim
    check_samples(one, 1)
    assert ids(one) == [7]


def test_torch_tensor_dataset_with_labels(data):
    dataset = TensorDataset(torch.from_numpy(data), torch.arange(40))
    calib = collect(dataset, SPEC, size=12, seed=3)
    check_samples(calib, 12)
    assert calib.source == "TensorDataset of 40 items"
    # a dataset and the same array give the same subset for the same seed
    assert ids(calib) == ids(collect(data, SPEC, size=12, seed=3))


def test_torch_dataloader_reads_its_dataset(data):
    loader = DataLoader(TensorDataset(torch.from_numpy(data)), batch_size=8, shuffle=True)
    calib = collect(loader, SPEC, size=12, seed=3)
    check_samples(calib, 12)
    assert ids(calib) == ids(collect(data, SPEC, size=12, seed=3))  # unaffected by the loader's shuffling


def test_generator_of_batches(data):
    def batches():
        for start in range(0, 40, 8):
            yield data[start : start + 8], np.zeros(8)  # (inputs, labels) pairs

    calib = collect(batches(), SPEC, size=15, seed=5)
    check_samples(calib, 15)
    assert len(set(ids(calib))) == 15
    assert "40 samples read" in calib.source
    assert ids(calib) == ids(collect(batches(), SPEC, size=15, seed=5))


def test_list_of_batches_and_of_torch_tensors(data):
    as_list = [data[i : i + 10] for i in range(0, 40, 10)]
    calib = collect(as_list, SPEC, size=40)
    check_samples(calib, 40)
    assert sorted(ids(calib)) == list(range(40))
    tensors = [torch.from_numpy(b) for b in as_list]
    assert collect(tensors, SPEC, size=9, seed=2).sha256 == collect(as_list, SPEC, size=9, seed=2).sha256


def test_raw_images_are_preprocessed(rng):
    raw = rng.integers(0, 256, size=(6, 4, 4, 3), dtype=np.uint8)
    calib = collect(raw, SPEC, size=6, preprocess=True)
    check_samples(calib, 6)
    assert calib.preprocessed
    np.testing.assert_allclose(calib.as_batch(), SPEC.apply_preprocess(raw))


def test_calibration_set_passes_through(data):
    calib = collect(data, SPEC, size=5)
    assert collect(calib, SPEC, size=1) is calib


def test_calibration_set_must_fit_the_spec_it_is_used_with(rng):
    raw = rng.integers(0, 256, size=(6, 4, 4, 3), dtype=np.uint8)
    calib = from_arrays(raw, SPEC, preprocess=True)
    other_pre = InputSpec(shape=(None, 3, 4, 4), preprocess=Preprocess(scale=1 / 255.0))
    with pytest.raises(ConfigError, match="preprocessed with .* but the input spec declares"):
        collect(calib, other_pre)
    with pytest.raises(ConfigError, match=r"row \d+\) has shape \(1, 3, 4, 4\) float32; the input spec expects"):
        collect(calib, InputSpec(shape=(None, 3, 8, 8), preprocess=SPEC.preprocess))
    # model-ready samples carry no preprocessing of edgeship's, so any spec with their shape takes them
    ready = from_arrays(SPEC.apply_preprocess(raw), SPEC)
    assert collect(ready, other_pre) is ready


# -- subset size and seed -------------------------------------------------------------------------
@pytest.mark.parametrize("make", [lambda d: d, lambda d: TensorDataset(torch.from_numpy(d)), lambda d: iter(list(d))],
                         ids=["array", "dataset", "iterator"])
def test_size_honoured_and_seed_reproducible(data, make):
    first = collect(make(data), SPEC, size=10, seed=11)
    again = collect(make(data), SPEC, size=10, seed=11)
    other = collect(make(data), SPEC, size=10, seed=12)
    assert len(first) == 10
    assert ids(first) == ids(again) and first.sha256 == again.sha256
    assert ids(first) != ids(other) and first.sha256 != other.sha256
    assert len(collect(make(data), SPEC, size=1000)) == 40  # all of them when the source has fewer


def test_sha256_is_content_hash_in_order(data):
    calib = collect(data, SPEC, size=40)
    import hashlib

    digest = hashlib.sha256()
    for i in range(40):
        digest.update(data[i : i + 1].tobytes())
    assert calib.sha256 == digest.hexdigest()
    # a pinned value: the hash must not change between releases for the same samples
    assert collect(np.zeros((2, 3, 4, 4), np.float32), SPEC).sha256 == hashlib.sha256(bytes(2 * 48 * 4)).hexdigest()


def test_summary(data):
    summary = collect(data, SPEC, size=8, seed=4).summary()
    assert summary == {
        "count": 8,
        "source": "array (40, 3, 4, 4) float32",
        "selection": "random",
        "seed": 4,
        "sha256": collect(data, SPEC, size=8, seed=4).sha256,
        "preprocessed_by_edgeship": False,
        "preprocessing": None,  # model-ready samples: edgeship applied nothing
        "class_counts": None,
    }


def test_summary_records_preprocessing_selection_and_classes(rng):
    raw = rng.integers(0, 256, size=(30, 4, 4, 3), dtype=np.uint8)
    labels = np.repeat([0, 1, 2], [15, 10, 5])
    calib = from_arrays(raw, SPEC, labels=labels, size=12, seed=1, preprocess=True)
    summary = json.loads(json.dumps(calib.summary()))  # what the manifest holds
    assert summary["selection"] == "stratified"
    assert summary["class_counts"] == {"0": 6, "1": 4, "2": 2}
    assert summary["preprocessing"] == SPEC.to_dict()["preprocess"]
    assert summary["sha256"] == calib.sha256 and summary["count"] == 12 and summary["seed"] == 1
    # the recorded preprocessing rebuilds the spec that made the samples
    rebuilt = InputSpec.from_dict({**SPEC.to_dict(), "preprocess": summary["preprocessing"]})
    np.testing.assert_array_equal(rebuilt.apply_preprocess(raw[calib_rows(calib)]), calib.as_batch())


def calib_rows(calib: CalibrationSet) -> list[int]:
    """Row numbers of an array-made set, from its origins ("row 17")."""
    return [int(origin.split()[1]) for origin in calib.origins]


# -- bad data -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "source, match",
    [
        (np.zeros((4, 3, 5, 4), np.float32), r"dim 2 differs"),
        (np.zeros((4, 1, 4, 4), np.float32), r"dim 1 differs"),
        (np.zeros((4, 4), np.float32), r"shape \(4, 4\); expected \(None, 3, 4, 4\)"),
        (np.zeros((2, 2, 3, 4, 4), np.float32), "expected"),
        ([np.zeros((2, 3, 4, 5), np.float32)], "dim 3 differs"),
        (np.array([["a"]]), "must be numeric"),
        (np.zeros((0, 3, 4, 4), np.float32), "gave no samples"),
        ([], "gave no samples"),
        (42, "calibration must be an np.ndarray"),
        ([{"input": np.zeros((1, 3, 4, 4))}], "dicts are not supported"),
    ],
    ids=["height", "channels", "rank2", "rank5", "iterable-width", "strings", "empty-array", "empty-list", "int",
         "dict-items"],
)
def test_bad_sources_raise_config_error(source, match):
    with pytest.raises(ConfigError, match=match):
        collect(source, SPEC)


@pytest.mark.parametrize("source", ["calib/images", b"calib"], ids=["str", "bytes"])
def test_path_string_is_refused_with_what_is_accepted(source):
    with pytest.raises(ConfigError, match="calibration must be an np.ndarray"):
        collect(source, SPEC)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_refused(data, bad):
    data[17, 1, 2, 3] = bad
    with pytest.raises(ConfigError, match="NaN or Inf"):
        collect(data, SPEC, size=40)
    with pytest.raises(ConfigError, match="NaN or Inf"):
        collect(TensorDataset(torch.from_numpy(data)), SPEC, size=40)


def test_size_must_be_positive(data):
    with pytest.raises(ConfigError, match="size must be >= 1"):
        collect(data, SPEC, size=0)


@pytest.mark.parametrize("raw_shape", [(4, 5, 5, 3), (4, 4, 4, 1)], ids=["size", "channels"])
def test_preprocessed_raw_images_of_wrong_shape_refused(raw_shape):
    raw = np.zeros(raw_shape, np.uint8)
    with pytest.raises(ConfigError, match="expected"):
        collect(raw, SPEC, preprocess=True)


def test_a_calibration_set_goes_through_compress_and_its_record_into_the_manifest(small_onnx, tmp_path, rng):
    import edgeship
    from conftest import SMALL_SPEC

    raw = rng.integers(0, 256, size=(40, 16, 16, 3), dtype=np.uint8)
    calib = from_arrays(raw, SMALL_SPEC, labels=np.arange(40) % 4, size=20, preprocess=True)
    bundle = edgeship.compress(str(small_onnx), input_spec=SMALL_SPEC, calibration=calib, targets=["onnxruntime-cpu"],
                               precision="int8", output=tmp_path / "b.edgeship", show_progress=False)
    record = bundle.manifest["calibration"]
    for key, value in json.loads(json.dumps(calib.summary())).items():
        assert record[key] == value, key
    assert record["selection"] == "stratified" and record["class_counts"] == {"0": 5, "1": 5, "2": 5, "3": 5}
    assert record["preprocessing"]["reverse_channels"] is True
