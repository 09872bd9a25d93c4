"""Detection metrics: COCO mAP@[.5:.95] and mAP@.5 through pycocotools, and box agreement with a reference.

Boxes are per image: ``{"boxes": (K, 4) x1 y1 x2 y2, "scores": (K,), "labels": (K,)}`` for predictions
and ``{"boxes": (K, 4), "labels": (K,)}`` for ground truth. pycocotools is imported lazily (extra
``edgeship[detection]``); ``box_agreement`` is numpy only.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any, Mapping, Sequence

import numpy as np

from .._lazy import require
from ..errors import ConfigError
from ..measure.stats import bootstrap_indices, percentile_interval

Boxes = Mapping[str, Any]


def _boxes(item: Boxes, where: str, scored: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    try:
        boxes = np.asarray(item["boxes"], dtype=np.float64).reshape(-1, 4)
        labels = np.asarray(item["labels"]).reshape(-1).astype(np.int64)
        scores = np.asarray(item["scores"], dtype=np.float64).reshape(-1) if scored else np.ones(len(boxes))
    except (KeyError, TypeError, ValueError) as exc:
        keys = "boxes (K, 4), scores (K,), labels (K,)" if scored else "boxes (K, 4), labels (K,)"
        raise ConfigError(f"{where} must be a mapping with {keys}: {exc}") from None
    if not len(boxes) == len(labels) == len(scores):
        raise ConfigError(f"{where} has {len(boxes)} boxes, {len(labels)} labels and {len(scores)} scores")
    if len(boxes) and ((boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any()):
        raise ConfigError(f"{where} has a box with x2 < x1 or y2 < y1; boxes must be x1, y1, x2, y2")
    return boxes, labels, scores


def _coco_eval(predictions: Sequence[Boxes], ground_truth: Sequence[Boxes], order: Sequence[int]) -> tuple[float, float]:
    """(mAP@[.5:.95], mAP@.5) over the images ``order`` (an index may repeat: each copy is its own image)."""
    coco_mod = require("pycocotools.coco", "detection mAP")
    cocoeval_mod = require("pycocotools.cocoeval", "detection mAP")
    images, annotations, results, categories = [], [], [], set()
    for image_id, i in enumerate(order, start=1):
        images.append({"id": image_id})
        boxes, labels, _ = _boxes(ground_truth[i], f"ground_truth[{i}]", scored=False)
        for box, label in zip(boxes, labels):
            w, h = box[2] - box[0], box[3] - box[1]
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(label),
                                "bbox": [box[0], box[1], w, h], "area": w * h, "iscrowd": 0})
            categories.add(int(label))
        boxes, labels, scores = _boxes(predictions[i], f"predictions[{i}]", scored=True)
        for box, label, score in zip(boxes, labels, scores):
            results.append({"image_id": image_id, "category_id": int(label), "score": float(score),
                            "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]})
            categories.add(int(label))
    if not annotations:
        return float("nan"), float("nan")
    if not results:
        return 0.0, 0.0
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        gt = coco_mod.COCO()
        gt.dataset = {"images": images, "annotations": annotations,
                      "categories": [{"id": c, "name": str(c)} for c in sorted(categories)]}
        gt.createIndex()
        dt = gt.loadRes(results)
        evaluator = cocoeval_mod.COCOeval(gt, dt, iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[0]), float(evaluator.stats[1])


def _check_lengths(predictions: Sequence[Boxes], ground_truth: Sequence[Boxes]) -> None:
    if len(predictions) != len(ground_truth):
        raise ConfigError(f"{len(predictions)} images of predictions but {len(ground_truth)} of ground truth")
    if not len(ground_truth):
        raise ConfigError("detection mAP needs at least one image")


def detection_map(predictions: Sequence[Boxes], ground_truth: Sequence[Boxes]) -> dict[str, float]:
    """COCO ``{"map": mAP@[.5:.95], "map50": mAP@.5}`` (fractions) with pycocotools' own evaluator.

    Raises:
        ConfigError: malformed boxes, mismatched image counts, or no ground-truth box at all.
    """
    _check_lengths(predictions, ground_truth)
    m, m50 = _coco_eval(predictions, ground_truth, range(len(ground_truth)))
    if np.isnan(m):
        raise ConfigError("the ground truth holds no box; mAP is undefined")
    return {"map": m, "map50": m50}


def detection_map_interval(predictions: Sequence[Boxes], ground_truth: Sequence[Boxes], *, resamples: int = 100,
                           seed: int = 0) -> dict[str, tuple[float, float]]:
    """Bootstrap 95 % intervals of mAP and mAP@.5, resampling whole images with replacement."""
    _check_lengths(predictions, ground_truth)
    values = [_coco_eval(predictions, ground_truth, idx) for idx in bootstrap_indices(len(ground_truth), resamples, seed)]
    maps, maps50 = np.array(values).T
    return {"map": percentile_interval(maps), "map50": percentile_interval(maps50)}


def box_agreement(predictions: Sequence[Boxes], reference: Sequence[Boxes], iou: float = 0.5,
                  min_score: float = 0.0) -> float:
    """How far a variant's boxes match the reference's: 2·matched / (variant boxes + reference boxes).

    Boxes are matched greedily by the variant's score, one to one, same label and IoU >= ``iou``; boxes
    scoring below ``min_score`` are dropped first. 1.0 when both sides found exactly the same boxes
    (or none at all), 0.0 when nothing matches.
    """
    from .detection import box_parity

    _check_lengths(predictions, reference)
    matched = total = 0
    for i, (pred, ref) in enumerate(zip(predictions, reference)):
        pb, pl, ps = _boxes(pred, f"predictions[{i}]", scored=True)
        rb, rl, rs = _boxes(ref, f"reference[{i}]", scored="scores" in ref)
        keep_p, keep_r = ps >= min_score, rs >= min_score
        pb, pl, ps, rb, rl, rs = pb[keep_p], pl[keep_p], ps[keep_p], rb[keep_r], rl[keep_r], rs[keep_r]
        total += len(pb) + len(rb)
        if len(pb) and len(rb):
            matched += box_parity({"boxes": pb, "scores": ps, "labels": pl}, {"boxes": rb, "scores": rs, "labels": rl},
                                  iou=iou)["matched"]
    return 1.0 if total == 0 else 2.0 * matched / total
