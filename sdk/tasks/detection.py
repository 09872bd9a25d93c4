"""Object detection: torchvision detectors exported dense, decoded and NMS'd by edgeship in numpy.

Measured on this CPU, postprocessing inside the graph (decode, score filter, NMS) costs ~90% of a
single-stage detector's latency and INT8 barely helps it; the dense part (backbone + heads' raw
outputs) is where INT8 pays. So single-stage detectors (SSD, SSDlite, RetinaNet, FCOS) are exported
dense and postprocessed here — vectorised decoding and a greedy NMS — while two-stage detectors
(Faster R-CNN), whose second stage depends on the first stage's NMS, are exported whole with
postprocessing in the graph. The choice is recorded in the manifest. Boxes come back in original
image coordinates (the resize is undone), the same on every target.

A two-stage graph is exported with torchvision's ``batched_nms`` replaced by the same coordinate-offset NMS without
its ``if boxes.numel() == 0`` branch: traced, that branch became two ONNX ``If`` nodes, and NNCF cannot build its graph
through them ("Could not find a node Unsqueeze_1572 in NNCFGraph"), so no Faster R-CNN could be quantized for
openvino-cpu. Without them the whole graph quantizes; the data-dependent part (proposal top-k, NMS, RoIAlign) has no
weights and stays FP, and the heads found by :func:`head_layers` stay FP by default, as for single-stage detectors.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from .._lazy import require
from ..errors import ConfigError

BBOX_XFORM_CLIP = math.log(1000.0 / 16)


@dataclass
class DetectionHead:
    """How raw head outputs become detections (single-stage), or that the graph already did it ("graph")."""

    family: str  # "ssd" | "retinanet" | "fcos" | "graph"
    input_size: tuple[int, int]  # (H, W) the model runs at
    num_classes: int
    score_thresh: float
    nms_thresh: float
    detections_per_img: int
    topk_candidates: int
    box_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)
    level_sizes: list[int] = field(default_factory=list)  # anchors per feature level
    outputs: list[str] = field(default_factory=list)  # graph output names, in order
    anchors: np.ndarray | None = field(default=None, repr=False)  # (A, 4) x1y1x2y2 at input_size

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("anchors")
        data["input_size"] = list(self.input_size)
        data["box_weights"] = list(self.box_weights)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], anchors: np.ndarray | None = None) -> "DetectionHead":
        known = {"family", "input_size", "num_classes", "score_thresh", "nms_thresh", "detections_per_img",
                 "topk_candidates", "box_weights", "level_sizes", "outputs"}
        if not isinstance(data, dict) or set(data) - known:
            raise ConfigError(f"invalid detection postprocessing entry; expected keys from {sorted(known)}")
        head = cls(**{**data, "input_size": tuple(data["input_size"]), "box_weights": tuple(data["box_weights"])})
        head.anchors = anchors
        if head.family != "graph" and (anchors is None or len(anchors) != sum(head.level_sizes)):
            raise ConfigError(f"{head.family} postprocessing needs {sum(head.level_sizes)} anchors")
        return head


# -- export ---------------------------------------------------------------------------------------
def detector_family(model: Any) -> str | None:
    """'ssd' / 'retinanet' / 'fcos' / 'rcnn' for a torchvision detector, else None."""
    if not hasattr(model, "transform") or not hasattr(model, "backbone"):
        return None
    names = [c.__name__ for c in type(model).__mro__]
    for family, cls_name in (("ssd", "SSD"), ("retinanet", "RetinaNet"), ("fcos", "FCOS"), ("rcnn", "GeneralizedRCNN")):
        if cls_name in names:
            return family
    return None


def prepare_detector(model: Any, size: tuple[int, int]) -> tuple[Any, DetectionHead]:
    """(module to export, its postprocessing) for a torchvision detector at a fixed input size (H, W).

    The exported module takes images already resized to ``size`` and normalised (the InputSpec's
    preprocessing does both, so calibration and the device do exactly the same).
    """
    torch = require("torch", "exporting a detector")
    family = detector_family(model)
    if family is None:
        raise ConfigError(f"{type(model).__name__} is not a torchvision detector (SSD, RetinaNet, FCOS, Faster R-CNN)")
    if model.training:
        raise ConfigError("the detector is in training mode; call model.eval() first")
    if family == "rcnn":
        extra = [what for what, attr in (("masks", "mask_head"), ("keypoints", "keypoint_head"))
                 if getattr(model.roi_heads, attr, None) is not None]
        if extra:
            raise ConfigError(f"{type(model).__name__} predicts {' and '.join(extra)}, which edgeship does not export "
                              "(a bundle's detections are boxes, scores and labels); compress the Faster R-CNN it is "
                              f"built on instead (set model.roi_heads.{'mask' if 'masks' in extra else 'keypoint'}"
                              "_head = None to drop them knowingly)")
    h, w = size
    DenseDetector, GraphDetector, _ = _wrappers()
    if family == "rcnn":
        return GraphDetector(model, size).eval(), DetectionHead(
            family="graph", input_size=size, num_classes=int(model.roi_heads.box_predictor.cls_score.out_features),
            score_thresh=float(model.roi_heads.score_thresh), nms_thresh=float(model.roi_heads.nms_thresh),
            detections_per_img=int(model.roi_heads.detections_per_img), topk_candidates=0,
            outputs=["boxes", "scores", "labels"])
    from torchvision.models.detection.image_list import ImageList

    dense = DenseDetector(model, family).eval()
    example = torch.zeros(1, 3, h, w)
    with torch.no_grad():
        features = dense.features(example)
        anchors = model.anchor_generator(ImageList(example, [(h, w)]), features)[0]
        outs = dense(example)
    per_position = model.anchor_generator.num_anchors_per_location()  # anchors per position, per level
    level_sizes = [int(f.shape[2] * f.shape[3]) * a for f, a in zip(features, per_position)]
    num_classes = int(outs[1].shape[-1])
    weights = tuple(float(v) for v in getattr(model.box_coder, "weights", (1.0, 1.0, 1.0, 1.0)))
    head = DetectionHead(
        family=family, input_size=size, num_classes=num_classes, score_thresh=float(model.score_thresh),
        nms_thresh=float(model.nms_thresh), detections_per_img=int(model.detections_per_img),
        topk_candidates=int(model.topk_candidates), box_weights=weights, level_sizes=level_sizes,
        outputs=dense.output_names, anchors=anchors.numpy().astype(np.float32))
    return dense, head


# What each dense output is, for label-free losses (distillation, Taylor importance) on a pruned detector.
_DENSE_OUTPUT_KINDS = {"ssd": ("regression", "softmax"), "retinanet": ("regression", "sigmoid"),
                       "fcos": ("regression", "sigmoid", "sigmoid")}


def prunable_view(model: Any) -> tuple[Any, str, tuple[str, ...]]:
    """(module to prune, the name of its part kept whole, what each of its outputs is) for a torchvision detector.

    Pruning sees the backbone together with the head that reads its features, so that the dependency graph
    keeps every feature channel that head reads. Single-stage: backbone + ``head`` (the dense module that is
    exported). Two-stage: backbone + ``rpn``, whose head reads every feature map; the ROI heads read the same
    maps (behind RoIAlign and NMS, which a trace cannot follow), so keeping the RPN's inputs keeps theirs.
    The view shares its modules with ``model``; its outputs are what distillation matches.
    """
    family = detector_family(model)
    if family is None:
        raise ConfigError(f"{type(model).__name__} is not a torchvision detector (SSD, RetinaNet, FCOS, Faster R-CNN)")
    DenseDetector, _, ProposalView = _wrappers()
    if family == "rcnn":
        return ProposalView(model), "rpn", ("regression", "sigmoid", "regression")
    return DenseDetector(model, family), "head", _DENSE_OUTPUT_KINDS[family]


@functools.lru_cache(maxsize=1)
def _wrappers() -> tuple[type, type, type]:
    """The torch wrapper modules, defined on first use so that importing this module never imports torch."""
    torch = require("torch", "exporting a detector")
    nn = torch.nn

    class DenseDetector(nn.Module):
        """Backbone + heads, raw outputs: (bbox_regression, cls_logits[, bbox_ctrness])."""

        def __init__(self, model: Any, family: str) -> None:
            super().__init__()
            self.backbone, self.head, self.family = model.backbone, model.head, family
            self.output_names = ["bbox_regression", "cls_logits"] + (["bbox_ctrness"] if family == "fcos" else [])

        def features(self, x: Any) -> list:
            feats = self.backbone(x)
            return list(feats.values()) if isinstance(feats, dict) else [feats]

        def forward(self, x: Any):
            out = self.head(self.features(x))
            return tuple(out[name] for name in self.output_names)

    class GraphDetector(nn.Module):
        """The whole detector, postprocessing in the graph, for one image: (boxes, scores, labels)."""

        def __init__(self, model: Any, size: tuple[int, int]) -> None:
            super().__init__()
            self.model = copy.deepcopy(model)
            transform = self.model.transform
            transform.min_size = (min(size),)  # no resize inside the graph: the spec resizes
            transform.max_size = max(size)
            transform.image_mean = [0.0, 0.0, 0.0]  # and normalises
            transform.image_std = [1.0, 1.0, 1.0]

        def forward(self, x: Any):
            with _nms_without_if():
                out = self.model([x[0]])[0]
            return out["boxes"], out["scores"], out["labels"]

    class ProposalView(nn.Module):
        """A two-stage detector's backbone + RPN head, for pruning: (features, objectness, box deltas), each flat."""

        def __init__(self, model: Any) -> None:
            super().__init__()
            self.backbone, self.rpn = model.backbone, model.rpn

        def forward(self, x: Any):
            feats = self.backbone(x)
            feats = list(feats.values()) if isinstance(feats, dict) else [feats]
            objectness, deltas = self.rpn.head(feats)
            flat = lambda ts: torch.cat([t.flatten(1) for t in ts], 1)  # noqa: E731
            return flat(feats), flat(objectness), flat(deltas)

    return DenseDetector, GraphDetector, ProposalView


@contextlib.contextmanager
def _nms_without_if() -> Any:
    """Two torchvision functions traced as graphs that hold on every input. ``batched_nms``: one NMS over
    class-offset boxes, with no empty-input branch (see the module doc); the same boxes as torchvision's, empty
    inputs included. ``BoxCoder.decode`` and ``clip_boxes_to_image``: without their reshapes to ``(n, -1)`` /
    ``(n, C, -1)``, because a -1 beside a 0 cannot be inferred: ONNX Runtime failed the whole graph on a frame with no
    proposal left ("Input shape:{0,24}, requested shape:{0,-1}"). For the export of a two-stage graph only: it swaps attributes of
    torchvision while the detector runs (export is single-threaded)."""
    torch = require("torch", "exporting a detector")
    from torchvision.models.detection import _utils as det_utils
    from torchvision.ops import boxes as box_ops

    def batched_nms(boxes: Any, scores: Any, idxs: Any, iou_threshold: float) -> Any:
        top = torch.cat([boxes.flatten(), boxes.new_zeros(1)]).max()  # never a max over nothing
        offsets = idxs.to(boxes) * (top + 1)
        return box_ops.nms(boxes + offsets[:, None], scores, iou_threshold)

    def decode(coder: Any, rel_codes: Any, boxes: Any) -> Any:
        concat_boxes = torch.cat(list(boxes), dim=0)
        width = int(rel_codes.shape[-1])  # 4 x the classes: fixed by the model
        rel_codes = rel_codes.reshape(concat_boxes.shape[0], width)
        return coder.decode_single(rel_codes, concat_boxes).reshape(concat_boxes.shape[0], width // 4, 4)

    def clip_boxes_to_image(boxes: Any, size: Any) -> Any:
        height, width = size
        x = boxes[..., 0::2].clamp(min=0, max=width)
        y = boxes[..., 1::2].clamp(min=0, max=height)
        return torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)  # no reshape to (0, C, -1)

    patched = ((box_ops, "batched_nms", batched_nms), (det_utils.BoxCoder, "decode", decode),
               (box_ops, "clip_boxes_to_image", clip_boxes_to_image))
    originals = [(owner, name, getattr(owner, name)) for owner, name, _ in patched]
    for owner, name, function in patched:
        setattr(owner, name, function)
    try:
        yield
    finally:
        for owner, name, function in originals:
            setattr(owner, name, function)


# -- postprocessing (numpy) ------------------------------------------------------------------------
def decode_boxes(rel: np.ndarray, anchors: np.ndarray, family: str, weights: Sequence[float]) -> np.ndarray:
    """Box regression -> x1y1x2y2 boxes (torchvision's BoxCoder / BoxLinearCoder, vectorised)."""
    if family == "fcos":
        ctr = 0.5 * (anchors[:, :2] + anchors[:, 2:])
        size = anchors[:, 2:] - anchors[:, :2]
        rel = rel * np.concatenate([size, size], axis=1)
        return np.concatenate([ctr - rel[:, :2], ctr + rel[:, 2:]], axis=1)
    wx, wy, ww, wh = weights
    widths = anchors[:, 2] - anchors[:, 0]
    heights = anchors[:, 3] - anchors[:, 1]
    ctr_x = anchors[:, 0] + 0.5 * widths
    ctr_y = anchors[:, 1] + 0.5 * heights
    dx, dy = rel[:, 0] / wx, rel[:, 1] / wy
    dw = np.minimum(rel[:, 2] / ww, BBOX_XFORM_CLIP)
    dh = np.minimum(rel[:, 3] / wh, BBOX_XFORM_CLIP)
    px, py = dx * widths + ctr_x, dy * heights + ctr_y
    pw, ph = np.exp(dw) * widths, np.exp(dh) * heights
    return np.stack([px - 0.5 * pw, py - 0.5 * ph, px + 0.5 * pw, py + 0.5 * ph], axis=1)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of x1y1x2y2 boxes: (len(a), len(b))."""
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou_thresh: float,
                max_keep: int | None = None) -> np.ndarray:
    """Greedy NMS within each class; indices kept, by descending score (torchvision's batched_nms).

    Boxes are visited in global score order and each kept box suppresses only its own class, so
    the work stops once ``max_keep`` boxes are kept — exact, since later boxes could only follow.
    """
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-scores, kind="stable")
    by_label = order[np.argsort(labels[order], kind="stable")]  # grouped by class, by score within
    classes, starts = np.unique(labels[by_label], return_index=True)
    members = dict(zip(classes.tolist(), np.split(by_label, starts[1:])))
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    suppressed = np.zeros(len(boxes), dtype=bool)
    keep: list[int] = []
    x1, y1, x2, y2 = boxes.T
    label_of = labels.tolist()
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        if max_keep is not None and len(keep) >= max_keep:
            break
        same = members[label_of[i]]
        w = np.maximum(np.minimum(x2[i], x2[same]) - np.maximum(x1[i], x1[same]), 0)
        h = np.maximum(np.minimum(y2[i], y2[same]) - np.maximum(y1[i], y1[same]), 0)
        inter = w * h
        iou = inter / np.maximum(areas[i] + areas[same] - inter, 1e-12)
        suppressed[same[iou > iou_thresh]] = True
    return np.asarray(keep, dtype=np.int64)


def postprocess(outputs: Sequence[np.ndarray], head: DetectionHead) -> list[dict[str, np.ndarray]]:
    """Raw head outputs (batch first) -> per image {"boxes", "scores", "labels"} at the model's input size."""
    if head.family == "graph":
        boxes, scores, labels = outputs
        return [{"boxes": boxes.astype(np.float32), "scores": scores.astype(np.float32), "labels": labels.astype(np.int64)}]
    h, w = head.input_size
    results = []
    for i in range(len(outputs[0])):
        rel, logits = outputs[0][i], outputs[1][i]
        if head.family == "ssd":
            boxes, scores, labels = _ssd_candidates(rel, logits, head)
        else:
            ctr = outputs[2][i] if head.family == "fcos" else None
            boxes, scores, labels = _level_candidates(rel, logits, ctr, head)
        boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, w)
        boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, h)
        keep = batched_nms(boxes, scores, labels, head.nms_thresh, max_keep=head.detections_per_img)
        results.append({"boxes": boxes[keep].astype(np.float32), "scores": scores[keep].astype(np.float32),
                        "labels": labels[keep].astype(np.int64)})
    return results


def _ssd_candidates(rel, logits, head):
    """SSD: softmax over classes (0 = background); per class the top-k anchors above the threshold —
    all classes at once with one argpartition instead of a sort per class."""
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    scores = (e / e.sum(axis=1, keepdims=True))[:, 1:]  # (A, C - 1)
    k = min(head.topk_candidates, len(scores))
    if k < len(scores):
        top = np.argpartition(-scores, k - 1, axis=0)[:k]  # (k, C - 1) anchor indices per class
        scores = np.take_along_axis(scores, top, axis=0)
    else:
        top = np.broadcast_to(np.arange(len(scores))[:, None], scores.shape)
    passed = scores > head.score_thresh
    anchor_idx = top[passed]
    labels = np.nonzero(passed)[1].astype(np.int64) + 1
    boxes = decode_boxes(rel[anchor_idx], head.anchors[anchor_idx], "ssd", head.box_weights)
    return boxes, scores[passed], labels


def _level_candidates(rel, logits, ctrness, head):
    """RetinaNet / FCOS: sigmoid scores over (anchor, class) per feature level, threshold, top-k, decode."""
    out_b, out_s, out_l = [], [], []
    start = 0
    for size in head.level_sizes:
        sl = slice(start, start + size)
        start += size
        scores = 1.0 / (1.0 + np.exp(-logits[sl]))
        if ctrness is not None:
            scores = np.sqrt(scores * (1.0 / (1.0 + np.exp(-ctrness[sl]))))
        flat = scores.ravel()
        idx = np.flatnonzero(flat > head.score_thresh)
        if len(idx) > head.topk_candidates:
            idx = idx[np.argsort(-flat[idx], kind="stable")[: head.topk_candidates]]
        anchor_idx, labels = np.divmod(idx, head.num_classes)
        out_b.append(decode_boxes(rel[sl][anchor_idx], head.anchors[sl][anchor_idx], head.family, head.box_weights))
        out_s.append(flat[idx])
        out_l.append(labels.astype(np.int64))
    return np.concatenate(out_b), np.concatenate(out_s), np.concatenate(out_l)


def box_parity(a: dict[str, np.ndarray], b: dict[str, np.ndarray], iou: float = 0.5) -> dict[str, float]:
    """How far two detection sets agree: the fraction of ``a``'s boxes matched in ``b`` (same label, IoU >= iou,
    greedy by score), of ``b``'s matched in ``a``, and the correlation of matched scores."""
    if len(a["boxes"]) == 0 or len(b["boxes"]) == 0:
        both_empty = len(a["boxes"]) == len(b["boxes"])
        return {"recall": 1.0 if both_empty else 0.0, "precision": 1.0 if both_empty else 0.0,
                "score_correlation": float("nan"), "matched": 0}
    ious = box_iou(a["boxes"], b["boxes"])
    ious[a["labels"][:, None] != b["labels"][None, :]] = 0.0
    used = np.zeros(len(b["boxes"]), dtype=bool)
    pairs = []
    for i in np.argsort(-a["scores"], kind="stable"):
        candidates = np.where(~used & (ious[i] >= iou))[0]
        if len(candidates):
            j = candidates[np.argmax(ious[i, candidates])]
            used[j] = True
            pairs.append((i, j))
    sa = np.array([a["scores"][i] for i, _ in pairs])
    sb = np.array([b["scores"][j] for _, j in pairs])
    corr = float("nan")
    if len(pairs) > 2 and sa.std() > 1e-12 and sb.std() > 1e-12:
        with np.errstate(all="ignore"):
            corr = float(np.corrcoef(sa, sb)[0, 1])
    return {"recall": len(pairs) / len(a["boxes"]), "precision": len(pairs) / len(b["boxes"]),
            "score_correlation": corr, "matched": len(pairs)}


# Ops a head output passes through on its way out of the graph without changing which layer made it.
_PASSTHROUGH = {"Reshape", "Transpose", "Concat", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Softmax",
                "Sigmoid", "Relu", "Sqrt", "Cast", "Slice", "Split", "Gather"}  # Relu: FCOS's box distances
_PRODUCERS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}


# In a two-stage graph the heads' outputs are decoded (box deltas against anchors or proposals) before they reach
# top-k and NMS: elementwise arithmetic that does not change which layer made them.
_DECODE = {"Add", "Sub", "Mul", "Div", "Exp", "Min", "Max", "Clip", "Expand", "GatherElements", "GatherND",
           "Where", "Log", "Floor", "Ceil"}
# Where a two-stage graph stops being dense: what feeds these is a head's output.
_DATA_DEPENDENT = {"TopK", "NonMaxSuppression"}


def head_layers(onnx_path: Any, two_stage: bool = False) -> list[str]:
    """The conv/matmul nodes whose outputs reach the graph outputs through reshapes and activations only:
    a detector's box-regression and score heads, found from the graph's shape, not from node names.

    ``two_stage``: postprocessing is in the graph, so start from what feeds its top-k and NMS instead, through the
    box decoding too: the RPN's objectness and delta convolutions, the box predictor's score and delta layers.
    """
    onnx = require("onnx", "finding a detector's heads")
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    producer = {out: node for node in graph.node for out in node.output}
    found: list[str] = []
    seen: set[str] = set()
    follow = _PASSTHROUGH | _DECODE if two_stage else _PASSTHROUGH
    if two_stage:
        stack = [t for node in graph.node if node.op_type in _DATA_DEPENDENT for t in node.input[:2]]
    else:
        stack = [o.name for o in graph.output]
    while stack:
        tensor = stack.pop()
        node = producer.get(tensor)
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type in _PRODUCERS:
            found.append(node.name)
        elif node.op_type in follow:
            stack.extend(node.input)
    return sorted(found)


def postprocessing_nodes(onnx_path: Any) -> list[str]:
    """A two-stage graph's postprocessing: every node fed, directly or not, by its heads (:func:`head_layers`),
    except the conv/matmul layers (the box head after RoIAlign stays quantizable). Box decoding, top-k, NMS and
    RoIAlign carry pixel coordinates: quantized, the trained 320 Faster R-CNN's boxes collapsed to ~(0, 0, 0, 195)
    while its scores survived. These nodes stay FP with the heads."""
    onnx = require("onnx", "finding a detector's postprocessing")
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for tensor in node.input:
            consumers.setdefault(tensor, []).append(node)
    heads = set(head_layers(onnx_path, two_stage=True))
    stack = [t for node in graph.node if node.name in heads for t in node.output]
    found: set[str] = set()
    while stack:
        for node in consumers.get(stack.pop(), ()):
            if node.name in found or node.name in heads:
                continue
            found.add(node.name)
            stack.extend(node.output)
    kinds = {node.name: node.op_type for node in graph.node}
    return sorted(n for n in found if kinds[n] not in _PRODUCERS)


def to_source_boxes(boxes: np.ndarray, source_hw: tuple[int, int], spec: Any) -> np.ndarray:
    """Boxes at the model's input size -> the source image's pixel coordinates (undo the spec's resize)."""
    from ..preprocess import letterbox_geometry

    dst_h, dst_w = (spec.shape[2], spec.shape[3]) if spec.layout == "NCHW" else (spec.shape[1], spec.shape[2])
    src_h, src_w = source_hw
    mode = getattr(spec.preprocess, "resize", "none") if spec.preprocess is not None else "none"
    out = boxes.astype(np.float64).copy()
    if mode == "letterbox":
        g = letterbox_geometry(src_h, src_w, dst_h, dst_w)
        out = g.to_source(out.reshape(-1, 2)).reshape(-1, 4)
    elif mode == "stretch":
        out *= np.array([src_w / dst_w, src_h / dst_h, src_w / dst_w, src_h / dst_h])
    elif mode != "none":
        raise ConfigError(f"detection needs a 'stretch', 'letterbox' or 'none' resize, not {mode!r} (it crops)")
    out[:, 0::2] = np.clip(out[:, 0::2], 0, src_w)
    out[:, 1::2] = np.clip(out[:, 1::2], 0, src_h)
    return out.astype(np.float32)
