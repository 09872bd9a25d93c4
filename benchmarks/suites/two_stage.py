"""Two-stage detectors (Faster R-CNN) at INT8 on the CPU targets: speed at the sizes users run, and trained accuracy.

    python -m edgeship.benchmarks.suites.two_stage [--train-seconds 900] [--runs 10] [--threads 2] [--skip-latency]

Part 1 (random init: speed only, no hub weights here): fasterrcnn_resnet50_fpn and fasterrcnn_mobilenet_v3_large_fpn
at 512x512 and fasterrcnn_mobilenet_v3_large_320_fpn at 320, compressed FP32 + INT8 for openvino-cpu and
onnxruntime-cpu (the whole graph, postprocessing inside; INT8 on everything but the RPN and box-predictor heads),
calibrated on 32 synthetic scenes; model p50 per variant (median of ``--runs``) and the INT8 speed-up over the same
target's FP32 export, and the FP32 artifacts' boxes against torchvision's on the same image (box_parity: IoU 0.5, same
label). Part 2: a Faster R-CNN (``--trained``: a small ResNet FPN by default, small_resnet_fpn; or torchvision's
fasterrcnn_mobilenet_v3_large_320_fpn) trained from scratch on the synthetic conveyor
scenes for ``--train-seconds`` (weights cached), measured on 200 held-out scenes: mAP@[.5:.95], mAP@.5, box agreement
with the FP32 graph (all boxes, and those scoring >= 0.5), model p50 and end to end from a raw 320x320 frame; then
its backbone pruned by ``--prune`` ratios (30 % and 50 %) with distillation recovery, INT8 on both targets.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..._lazy import require
from ...measure.latency import measure_latency

TARGETS = ("openvino-cpu", "onnxruntime-cpu")
LATENCY_MODELS = (("fasterrcnn_resnet50_fpn", 512), ("fasterrcnn_mobilenet_v3_large_fpn", 512),
                  ("fasterrcnn_mobilenet_v3_large_320_fpn", 320))
TRAINED = "small_resnet_fpn"  # part 2's default model (--trained; TRAINED_MODELS)


def small_resnet_fpn(num_classes: int) -> Any:
    """A Faster R-CNN small enough to train from scratch here: a ResNet body of basic blocks (one per stage, widths
    32-64-128-256), a 128-channel FPN on its last three stages (+ max-pool level; anchors 32-256 px for the scenes'
    40-150 px digits), a 256-wide box head, images kept at 320 (no 800-px resize), 100 proposals at test."""
    torch = require("torch", "the two-stage benchmark")
    require("torchvision", "the two-stage benchmark")
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.resnet import BasicBlock
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    nn = torch.nn

    def stage(cin: int, cout: int, stride: int) -> Any:
        down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        return nn.Sequential(BasicBlock(cin, cout, stride, down))

    body = nn.Sequential()
    body.add_module("stem", nn.Sequential(nn.Conv2d(3, 32, 7, 2, 3, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True),
                                          nn.MaxPool2d(3, 2, 1)))
    for name, (cin, cout, stride) in zip(("layer1", "layer2", "layer3", "layer4"),
                                         ((32, 32, 1), (32, 64, 2), (64, 128, 2), (128, 256, 2))):
        body.add_module(name, stage(cin, cout, stride))
    backbone = BackboneWithFPN(body, return_layers={"layer2": "0", "layer3": "1", "layer4": "2"},
                               in_channels_list=[64, 128, 256], out_channels=128, extra_blocks=LastLevelMaxPool())
    anchors = AnchorGenerator(sizes=((32,), (64,), (128,), (256,)), aspect_ratios=((0.5, 1.0, 2.0),) * 4)
    return FasterRCNN(backbone, num_classes=None, min_size=320, max_size=320, rpn_anchor_generator=anchors,
                      box_head=TwoMLPHead(128 * 7 * 7, 256), box_predictor=FastRCNNPredictor(256, num_classes),
                      rpn_pre_nms_top_n_train=600, rpn_post_nms_top_n_train=300, rpn_pre_nms_top_n_test=300,
                      rpn_post_nms_top_n_test=100, rpn_batch_size_per_image=128, box_batch_size_per_image=128)


# part 2's models: name -> (builder, None for torchvision's own; batch; learning rate; cosine over the time budget)
TRAINED_MODELS: dict[str, tuple[Any, int, float, bool]] = {
    "small_resnet_fpn": (small_resnet_fpn, 8, 1e-3, True),
    "fasterrcnn_mobilenet_v3_large_320_fpn": (None, 8, 1e-3, False),
}


def _spec(model: Any, size: int) -> Any:
    import edgeship

    return edgeship.InputSpec(shape=(1, 3, size, size), preprocess=edgeship.Preprocess(
        scale=1 / 255, mean=tuple(model.transform.image_mean), std=tuple(model.transform.image_std), resize="stretch"))


def _scenes(n: int, split: str, seed: int, size: int) -> tuple[np.ndarray, list[dict[str, Any]]]:
    from ...demo.synthetic import SceneConfig, make_scenes

    return make_scenes(n, split, seed, SceneConfig(size=(size, size), scale=(size // 8, size // 2), objects=(1, 4)))


def latency_rows(runs: int, threads: int, tmp: Path) -> list[dict[str, Any]]:
    """Part 1: FP32 vs INT8 model p50 per target, random-init weights; FP32 box parity with torchvision."""
    import edgeship

    from ...bundle.detector import Detector
    from ...demo.synthetic import _recalibrate_batchnorm
    from ...tasks.detection import box_parity

    torch = require("torch", "the two-stage benchmark")
    D = require("torchvision.models.detection", "the two-stage benchmark")
    rows = []
    for name, size in LATENCY_MODELS:
        torch.manual_seed(0)
        model = getattr(D, name)(weights=None, weights_backbone=None, num_classes=6, min_size=size,
                                 max_size=size).eval()  # torchvision itself runs at the size compared
        spec = _spec(model, size)
        calib, _ = _scenes(32, "train", 1, size)
        # batch-norm statistics of real images: at random init, mobilenet_v3_large_fpn's box head otherwise scores
        # every box 0.17003 (all tied), and which 100 tied boxes come first is arbitrary (parity 0.08, meaningless)
        _recalibrate_batchnorm(model, calib, 8)
        model.eval()
        start = time.perf_counter()
        bundle = edgeship.compress(model, input_spec=spec, calibration=calib, preprocess_calibration=True,
                                   targets=list(TARGETS), precision=["fp32", "int8"], output=tmp / f"{name}.edgeship",
                                   show_progress=False)
        compress_s = time.perf_counter() - start
        image = _scenes(1, "val", 0, size)[0][0]
        x = spec.apply_preprocess(image)
        with torch.no_grad():  # torchvision's own answer on the same image, for the FP32 parity column
            eager = {k: v.numpy() for k, v in model([torch.from_numpy(image).permute(2, 0, 1).float() / 255])[0].items()}
        fp32 = {}
        for target in TARGETS:
            for precision in ("fp32", "int8"):
                with Detector(bundle, target, precision, threads=threads) as det:
                    p50 = measure_latency(lambda: det.runtime.run(x), runs=runs, warmup=2).p50_ms
                    parity = box_parity(eager, det([image])[0]) if precision == "fp32" else None
                fp32.setdefault(target, p50)
                rows.append({"model": f"{name} @{size}", "target": target, "precision": precision, "p50_ms": p50,
                             "speedup": fp32[target] / p50, "compress_s": compress_s, "boxes": len(eager["boxes"]),
                             "parity": parity})
                print(f"{name} {target} {precision}: {p50:.1f} ms", flush=True)
    return rows


def trained_rows(train_seconds: float, runs: int, threads: int, tmp: Path, prune_ratios: tuple[float, ...] = (),
                 distill_epochs: int = 3, targets: tuple[str, ...] = TARGETS, distill_lr: float = 1e-3,
                 trained: str = TRAINED) -> tuple[list[dict[str, Any]], dict]:
    """Part 2: the trained 320 model ``trained``, FP32 vs INT8 on both targets, on 200 held-out scenes; then its backbone pruned
    by each of ``prune_ratios`` with distillation recovery (``distill_epochs`` over the 300 calibration scenes), INT8."""
    import edgeship

    from ...bundle.detector import Detector
    from .. import box_agreement, detection_map
    from .ssdlite_goal import SCENE_SIZE, _scene, train_scene_detector

    from ...demo.synthetic import make_scenes

    build, batch, lr, cosine = TRAINED_MODELS[trained]
    model, info = train_scene_detector(trained, train_seconds, batch=batch, lr=lr, build=build, cosine=cosine)
    scene = _scene()
    val, truth = make_scenes(200, "val", 0, scene)
    calib, _ = make_scenes(300, "train", 1, scene)
    spec = _spec(model, SCENE_SIZE[0])
    torch = require("torch", "the two-stage benchmark")
    with torch.no_grad():
        eager = []
        for i in range(0, len(val), 25):
            x = torch.from_numpy(val[i : i + 25]).permute(0, 3, 1, 2).float().div(255)
            eager += [{k: v.numpy() for k, v in d.items()} for d in model(list(x))]
    rows: list[dict[str, Any]] = [{"variant": "torch eager", **_maps(detection_map(eager, truth))}]
    start = time.perf_counter()
    bundle = edgeship.compress(model, input_spec=spec, calibration=calib, preprocess_calibration=True,
                               targets=list(targets), precision=["fp32", "int8"], output=tmp / "trained.edgeship",
                               show_progress=False)
    info["compress_s"] = time.perf_counter() - start
    variants = [(bundle, target, precision, "") for target in targets for precision in ("fp32", "int8")]
    for ratio in prune_ratios:
        recipe = edgeship.Recipe(prune=edgeship.Prune(ratio=ratio, recover="distill", distill_epochs=distill_epochs,
                                                      distill_lr=distill_lr, distill_samples=len(calib)))
        pruned = edgeship.compress(model, input_spec=spec, calibration=calib, preprocess_calibration=True,
                                   targets=list(targets), precision=["int8"], recipe=recipe,
                                   output=tmp / f"pruned-{ratio:g}.edgeship", show_progress=False)
        variants += [(pruned, target, "int8", f" pruned {ratio:.0%}") for target in targets]
    reference = None
    for b, target, precision, note in variants:
        with Detector(b, target, precision, threads=threads) as det:
            dets = det(list(val))
            x = spec.apply_preprocess(val[0])
            model_ms = measure_latency(lambda: det.runtime.run(x), runs=runs, warmup=3).p50_ms
            e2e_ms = measure_latency(lambda: det([val[0]]), runs=runs, warmup=3).p50_ms
        reference = reference or dets
        selftest = (b.artifact(target, precision).get("selftest") or {})
        rows.append({"variant": f"{target} {precision}{note}", **_maps(detection_map(dets, truth)),
                     "agree_all": box_agreement(dets, reference),
                     "agree_05": box_agreement(dets, reference, min_score=0.5),
                     "model_ms": model_ms, "e2e_ms": e2e_ms, "selftest": selftest.get("agreement")})
    return rows, info


def _maps(m: dict[str, float]) -> dict[str, float]:
    return {"map": 100 * m["map"], "map50": 100 * m["map50"]}


def _print_latency(rows: list[dict[str, Any]], header: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=header)
    for col in ("model", "target", "precision", "model p50 ms", "INT8 speed-up", "FP32 vs torchvision recall / "
                "precision (boxes)", "compress s"):
        table.add_column(col, justify="left" if col in ("model", "target", "precision") else "right")
    for r in rows:
        parity = r["parity"]
        table.add_row(r["model"], r["target"], r["precision"], f"{r['p50_ms']:.1f}",
                      f"{r['speedup']:.2f}x" if r["precision"] == "int8" else "",
                      f"{parity['recall']:.3f} / {parity['precision']:.3f} ({r['boxes']})" if parity else "",
                      f"{r['compress_s']:.0f}")
    Console(width=200).print(table)


def _print_trained(rows: list[dict[str, Any]], header: str) -> None:
    from rich.console import Console
    from rich.table import Table

    cols = [("variant", "variant"), ("mAP", "map"), ("mAP@.5", "map50"), ("agree all", "agree_all"),
            ("agree @0.5", "agree_05"), ("self-test", "selftest"), ("model p50 ms", "model_ms"),
            ("e2e 320 raw ms", "e2e_ms")]
    table = Table(title=header)
    for head, _ in cols:
        table.add_column(head, justify="left" if head == "variant" else "right")
    for r in rows:
        table.add_row(*(r[k] if k == "variant" else ("—" if r.get(k) is None else
                        f"{r[k]:.3f}" if k.startswith("agree") or k == "selftest" else f"{r[k]:.2f}") for _, k in cols))
    Console(width=200).print(table)


def main() -> None:
    from ..._fleet import cpu_flags

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-seconds", type=float, default=900, help="training budget of the 320 model (cached)")
    parser.add_argument("--runs", type=int, default=10, help="timed runs per variant")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-latency", action="store_true", help="only the trained model (part 2)")
    parser.add_argument("--skip-trained", action="store_true", help="only the random-init latencies (part 1)")
    parser.add_argument("--prune", default="0.3,0.5", help="backbone pruning ratios of the trained model ('' for none)")
    parser.add_argument("--distill-epochs", type=int, default=10, help="distillation epochs after pruning")
    parser.add_argument("--distill-lr", type=float, default=1e-3, help="distillation peak learning rate (one cycle)")
    parser.add_argument("--targets", default=",".join(TARGETS), help="targets of the trained model's bundles")
    parser.add_argument("--trained", default=TRAINED, choices=sorted(TRAINED_MODELS), help="the model trained in part 2")
    args = parser.parse_args()
    torch = require("torch", "the two-stage benchmark")
    torch.set_num_threads(args.threads)
    flags = " ".join(f for f in ("avx2", "avx512f", "avx512_vnni", "amx_int8") if f in cpu_flags())
    with tempfile.TemporaryDirectory(prefix="edgeship-two-stage-") as tmp:
        if not args.skip_latency:
            rows = latency_rows(args.runs, args.threads, Path(tmp))
            _print_latency(rows, f"Faster R-CNN, random init, batch 1, {args.threads} threads, model p50 (median of "
                                 f"{args.runs}); CPU flags: {flags}")
        if not args.skip_trained:
            ratios = tuple(float(r) for r in args.prune.split(",") if r.strip())
            rows, info = trained_rows(args.train_seconds, args.runs, args.threads, Path(tmp), ratios,
                                      args.distill_epochs, tuple(args.targets.split(",")), trained=args.trained,
                                      distill_lr=args.distill_lr)
            _print_trained(rows, f"{args.trained} trained {info['train_s']:.0f} s ({info['steps']} steps of "
                                 f"{info['batch']}{', cached' if info['cached'] else ''}) on synthetic scenes; 200 "
                                 f"held-out scenes; batch 1, {args.threads} threads; compress {info['compress_s']:.0f} "
                                 f"s; CPU flags: {flags}")


if __name__ == "__main__":
    main()
