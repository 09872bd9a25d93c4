"""Confidence intervals, per-class classification metrics and detection mAP, on numbers worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
from edgeship import ConfigError
from edgeship.benchmarks import (
    bootstrap_interval,
    box_agreement,
    classification_report,
    detection_map,
    detection_map_interval,
    measure_latency,
    wilson_interval,
)
from edgeship.measure.latency import latency_stats, measure_streams, peak_rss_mb
from edgeship.measure.metrics import proportion_interval


# -- Wilson ---------------------------------------------------------------------------------------
def test_wilson_known_values():
    assert wilson_interval(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)  # the textbook example
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)


@pytest.mark.parametrize("p", [0.0, 0.03, 0.5, 0.97, 1.0])
def test_wilson_contains_the_estimate_and_shrinks_with_n(p):
    widths = []
    for n in (20, 200, 2000, 20000):
        k = round(p * n)
        lo, hi = wilson_interval(k, n)
        assert 0.0 <= lo <= k / n <= hi <= 1.0
        widths.append(hi - lo)
    assert widths == sorted(widths, reverse=True) and widths[-1] < widths[0] / 10


def test_wilson_refuses_impossible_counts():
    with pytest.raises(ConfigError, match="n >= 1"):
        wilson_interval(0, 0)
    with pytest.raises(ConfigError, match=r"successes must be in \[0, n=5\], got 6"):
        wilson_interval(6, 5)


def test_proportion_interval_from_a_fraction():
    assert proportion_interval(0.8, 10) == wilson_interval(8, 10)


# -- bootstrap ------------------------------------------------------------------------------------
def test_bootstrap_contains_the_estimate_shrinks_with_n_and_is_seeded():
    rng = np.random.default_rng(0)
    widths = []
    for n in (30, 300, 3000):
        ms = rng.lognormal(0.0, 0.3, size=n)
        lo, hi = bootstrap_interval(ms, 50.0)
        assert lo <= np.percentile(ms, 50) <= hi
        lo99, hi99 = bootstrap_interval(ms, 99.0)
        assert lo99 <= np.percentile(ms, 99) <= hi99 and lo99 >= lo
        widths.append(hi - lo)
        assert bootstrap_interval(ms, 50.0, seed=0) == (lo, hi)  # same seed, same interval
    assert widths == sorted(widths, reverse=True)
    assert bootstrap_interval([5.0] * 10, 50.0) == (5.0, 5.0)  # no spread, no width
    mean_lo, mean_hi = bootstrap_interval(np.arange(100.0), lambda draws: draws.mean(axis=1), resamples=500)
    assert mean_lo < 49.5 < mean_hi


def test_bootstrap_in_chunks_equals_one_pass_in_distribution():
    ms = np.random.default_rng(1).normal(10, 1, size=50_000)  # 1000 resamples x 50k: drawn in chunks
    lo, hi = bootstrap_interval(ms, 50.0, resamples=200)
    assert lo < np.median(ms) < hi and hi - lo < 0.05


def test_bootstrap_refuses_bad_arguments():
    with pytest.raises(ConfigError, match="at least one sample"):
        bootstrap_interval([], 50.0)
    with pytest.raises(ConfigError, match="level must be in"):
        bootstrap_interval([1.0], 50.0, level=1.5)


# -- latency --------------------------------------------------------------------------------------
def test_latency_stats_intervals_bracket_the_percentiles():
    ms = np.concatenate([np.full(95, 1.0), np.linspace(1.0, 3.0, 5)])
    stats = latency_stats(ms, batch=2)
    assert stats.p50_ci[0] <= stats.p50_ms <= stats.p50_ci[1]
    assert stats.p99_ci[0] <= stats.p99_ms <= stats.p99_ci[1]
    assert stats.runs == 100 and stats.throughput == pytest.approx(2000.0 / ms.mean())


def test_measure_latency_counts_calls_and_orders_percentiles():
    calls = []
    stats = measure_latency(lambda: calls.append(1), runs=7, warmup=3, batch=4)
    assert len(calls) == 10
    assert stats.runs == 7 and stats.batch == 4
    assert 0 <= stats.min_ms <= stats.p50_ms <= stats.p90_ms <= stats.p99_ms
    assert stats.p50_ci[0] <= stats.p50_ms <= stats.p50_ci[1]
    assert stats.to_dict()["throughput"] == pytest.approx(4 * 1000.0 / stats.mean_ms)
    with pytest.raises(ValueError, match="runs must be >= 1"):
        measure_latency(lambda: None, runs=0)


def test_measure_streams_runs_every_stream_and_reraises_errors():
    counts = [0, 0, 0]

    def stream(i):
        def call():
            counts[i] += 1
        return call

    throughput = measure_streams([stream(i) for i in range(3)], calls=20, batch=2, warmup=1)
    assert counts == [21, 21, 21] and throughput > 0

    def broken():
        raise RuntimeError("stream 2 broke")

    with pytest.raises(RuntimeError, match="stream 2 broke"):
        measure_streams([lambda: None, broken], calls=3, warmup=0)


def test_peak_rss_is_at_least_the_current_allocation():
    block = np.ones(40_000_000 // 8)  # 40 MB, touched
    assert peak_rss_mb() >= block.nbytes / 1e6


# -- per-class classification -----------------------------------------------------------------------
def test_classification_report_by_hand():
    # labels 0 0 1 1 2; predictions 0 1 1 1 1 (class 2 never predicted, class 3 never used)
    scores = np.eye(4)[[0, 1, 1, 1, 1]]
    report = classification_report(scores, np.array([0, 0, 1, 1, 2]))
    assert report["support"] == [2, 2, 1, 0]
    assert report["precision"] == pytest.approx([1.0, 0.5, 0.0, 0.0])
    assert report["recall"] == pytest.approx([0.5, 1.0, 0.0, 0.0])
    assert report["f1"] == pytest.approx([2 / 3, 2 / 3, 0.0, 0.0])
    assert report["macro_precision"] == pytest.approx(0.5)  # over classes 0, 1, 2: class 3 never occurs
    assert report["macro_f1"] == pytest.approx(4 / 9)


def test_classification_report_matches_scikit_learn(rng):
    metrics = pytest.importorskip("sklearn.metrics")
    scores = rng.normal(size=(500, 7))
    labels = np.where(rng.random(500) < 0.7, scores.argmax(1), rng.integers(0, 6, 500))  # class 6: predicted, rare
    ours = classification_report(scores, labels)
    p, r, f, s = metrics.precision_recall_fscore_support(labels, scores.argmax(1), labels=range(7), zero_division=0)
    np.testing.assert_allclose(ours["precision"], p)
    np.testing.assert_allclose(ours["recall"], r)
    np.testing.assert_allclose(ours["f1"], f)
    assert ours["support"] == s.tolist()
    macro = metrics.precision_recall_fscore_support(labels, scores.argmax(1), average="macro", zero_division=0)
    assert (ours["macro_precision"], ours["macro_recall"], ours["macro_f1"]) == pytest.approx(macro[:3])


def test_classification_report_refuses_bad_labels():
    with pytest.raises(ConfigError, match="integer class labels"):
        classification_report(np.eye(3), np.array([0.0, 1.0, 2.0]))
    with pytest.raises(ConfigError, match=r"labels must be class ids in \[0, 3\)"):
        classification_report(np.eye(3), np.array([0, 1, 3]))


# -- detection --------------------------------------------------------------------------------------
def _gt(*boxes_labels):
    return {"boxes": np.array([b for b, _ in boxes_labels], float).reshape(-1, 4),
            "labels": np.array([lab for _, lab in boxes_labels])}


def _pred(*boxes_labels_scores):
    return {"boxes": np.array([b for b, _, _ in boxes_labels_scores], float).reshape(-1, 4),
            "labels": np.array([lab for _, lab, _ in boxes_labels_scores]),
            "scores": np.array([s for _, _, s in boxes_labels_scores], float)}


GT = [_gt(([0, 0, 100, 100], 1), ([200, 200, 300, 260], 2)), _gt(([50, 50, 150, 150], 1))]


def test_map_perfect_predictions():
    pytest.importorskip("pycocotools")
    preds = [_pred(*[(b.tolist(), int(lab), 0.9) for b, lab in zip(g["boxes"], g["labels"])]) for g in GT]
    assert detection_map(preds, GT) == pytest.approx({"map": 1.0, "map50": 1.0})


def test_map_of_a_loose_box_counts_only_low_iou_thresholds():
    pytest.importorskip("pycocotools")
    gt = [_gt(([0, 0, 100, 100], 1))]
    loose = [_pred(([0, 0, 100, 62], 1, 0.8))]  # IoU 0.62: a match at 0.50, 0.55, 0.60 of the ten thresholds
    assert detection_map(loose, gt) == pytest.approx({"map": 0.3, "map50": 1.0})
    wrong_class = [_pred(([0, 0, 100, 100], 2, 0.8))]
    assert detection_map(wrong_class, gt) == pytest.approx({"map": 0.0, "map50": 0.0})
    assert detection_map([_pred()], gt) == {"map": 0.0, "map50": 0.0}


def test_map_half_recall_is_51_of_101_points():
    pytest.importorskip("pycocotools")
    gt = [_gt(([0, 0, 100, 100], 1), ([200, 0, 300, 100], 1))]
    one = [_pred(([0, 0, 100, 100], 1, 0.9))]
    assert detection_map(one, gt)["map50"] == pytest.approx(51 / 101)  # COCO's 101-point precision/recall curve


def test_map_interval_brackets_the_estimate():
    pytest.importorskip("pycocotools")
    gt = [_gt(([0, 0, 100, 100], 1)) for _ in range(12)]
    preds = [_pred(([0, 0, 100, 100], 1, 0.9)) if i % 3 else _pred(([0, 0, 100, 55], 1, 0.9)) for i in range(12)]
    point = detection_map(preds, gt)
    ci = detection_map_interval(preds, gt, resamples=40, seed=0)
    for key in ("map", "map50"):
        assert 0.0 <= ci[key][0] <= point[key] <= ci[key][1] <= 1.0
    assert ci["map"][0] < ci["map"][1]  # images differ, so resamples differ
    assert detection_map_interval(preds, gt, resamples=40, seed=0) == ci


def test_map_refuses_malformed_input():
    pytest.importorskip("pycocotools")
    with pytest.raises(ConfigError, match="2 images of predictions but 1"):
        detection_map([_pred(), _pred()], [_gt()])
    with pytest.raises(ConfigError, match="x2 < x1"):
        detection_map([_pred(([10, 0, 0, 10], 1, 0.5))], [_gt(([0, 0, 10, 10], 1))])
    with pytest.raises(ConfigError, match="scores"):
        detection_map([{"boxes": np.zeros((1, 4)), "labels": [1]}], [_gt(([0, 0, 10, 10], 1))])
    with pytest.raises(ConfigError, match="no box"):
        detection_map([_pred()], [_gt()])


def test_box_agreement():
    ref = [_pred(([0, 0, 100, 100], 1, 0.9), ([200, 0, 300, 100], 2, 0.8))]
    assert box_agreement(ref, ref) == 1.0
    shifted = [_pred(([10, 0, 110, 100], 1, 0.9), ([200, 0, 300, 100], 1, 0.8))]  # IoU 0.82 same class; other relabelled
    assert box_agreement(shifted, ref) == pytest.approx(0.5)
    extra = [_pred(([0, 0, 100, 100], 1, 0.9), ([200, 0, 300, 100], 2, 0.8), ([500, 500, 600, 600], 3, 0.7))]
    assert box_agreement(extra, ref) == pytest.approx(2 * 2 / 5)
    assert box_agreement(extra, ref, min_score=0.75) == 1.0
    assert box_agreement([_pred()], [_pred()]) == 1.0
    assert box_agreement([_pred(([0, 0, 100, 40], 1, 0.9))], [_pred(([0, 0, 100, 100], 1, 0.9))]) == 0.0  # IoU 0.4


# -- order-statistic intervals of latency quantiles ------------------------------------------------
def test_quantile_interval_needs_368_runs_to_bound_a_p99():
    from edgeship.benchmarks import min_runs_for_quantile, quantile_interval

    assert min_runs_for_quantile(0.99) == 368 and min_runs_for_quantile(0.5) == 6
    ms = np.arange(1.0, 368.0)  # 367 runs
    assert quantile_interval(ms, 0.99)[1] == np.inf
    lo, hi = quantile_interval(np.arange(1.0, 369.0), 0.99)
    assert np.isfinite(hi) and lo <= np.percentile(np.arange(1.0, 369.0), 99) <= hi


def test_quantile_interval_covers_the_true_quantile_at_its_level():
    """Seeded: 95 % intervals of an exponential's median and p99 (1000 runs) cover the truth ~95 % of the time."""
    from edgeship.benchmarks import quantile_interval

    rng = np.random.default_rng(0)
    for q in (0.5, 0.99):
        truth = -np.log(1 - q)
        covered = [lo <= truth <= hi for lo, hi in (quantile_interval(rng.exponential(size=1000), q) for _ in range(400))]
        assert 0.92 <= np.mean(covered) <= 0.99, (q, np.mean(covered))
