"""Classification postprocessing as the manifest records it: softmax, top-k, labels, and bad entries refused."""

from __future__ import annotations

import numpy as np
import pytest
from edgeship import ConfigError, InputValidationError
from edgeship.tasks.postprocess import Postprocess, read_labels


def test_softmax_top_k_with_labels():
    logits = np.array([[1.0, 3.0, 2.0], [0.0, 0.0, 5.0]], np.float32)
    results = Postprocess(top_k=2).apply({"logits": logits}, ["a", "b", "c"])
    probs = np.exp(logits[0]) / np.exp(logits[0]).sum()
    assert [(t["index"], t["label"]) for t in results[0]["top_k"]] == [(1, "b"), (2, "c")]
    np.testing.assert_allclose([t["score"] for t in results[0]["top_k"]], probs[[1, 2]], rtol=1e-6)
    assert results[1]["top_k"][0]["index"] == 2


def test_raw_scores_ties_and_nchw_outputs():
    scores = np.array([[0.2, 0.5, 0.5]], np.float32).reshape(1, 3, 1, 1)  # (N, C, 1, 1), e.g. a conv head
    top = Postprocess(softmax=False, top_k=10).apply({"out": scores})[0]["top_k"]
    assert [t["index"] for t in top] == [1, 2, 0]  # stable among equal scores, k capped at the class count
    assert top[0]["score"] == pytest.approx(0.5) and top[0]["label"] is None


def test_named_output_among_several():
    outs = {"feat": np.zeros((1, 8), np.float32), "cls": np.array([[0.0, 1.0]], np.float32)}
    with pytest.raises(ConfigError, match=r"has outputs \['cls', 'feat'\]; name one"):
        Postprocess().apply(outs)
    assert Postprocess(output="cls", top_k=1).apply(outs)[0]["top_k"][0]["index"] == 1
    with pytest.raises(ConfigError, match="reads output 'nope'"):
        Postprocess(output="nope").apply(outs)


@pytest.mark.parametrize("entry, match", [
    ({"task": "detection"}, "detection bundle.s postprocessing is its"),
    ({"top_k": 0}, "top_k must be a positive integer"),
    ({"softmax": "yes"}, "softmax must be true or false"),
    ({"temperature": 2}, r"unknown postprocess keys \['temperature'\]"),
])
def test_bad_entries_refused(entry, match):
    with pytest.raises(ConfigError, match=match):
        Postprocess.from_dict(entry)


def test_label_count_and_shape_checked():
    with pytest.raises(ConfigError, match="2 labels but the model outputs 3 classes"):
        Postprocess().apply({"o": np.zeros((1, 3), np.float32)}, ["a", "b"])
    with pytest.raises(InputValidationError, match=r"shape \(batch, classes\), got \(1, 3, 2\)"):
        Postprocess().apply({"o": np.zeros((1, 3, 2), np.float32)})
    with pytest.raises(ConfigError, match="must be a list of strings"):
        read_labels({"labels": [1, 2]})
    assert read_labels({}) is None
    assert Postprocess.of_manifest({}) is None
    assert Postprocess.of_manifest({"postprocess": {"top_k": 1}}) == Postprocess(top_k=1)
