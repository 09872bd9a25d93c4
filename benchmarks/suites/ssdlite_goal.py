"""ssdlite320 trained on synthetic scenes: end-to-end latency and INT8 box parity, the detection goal's numbers.

    python -m edgeship.benchmarks.suites.ssdlite_goal [--train-seconds 720] [--runs 200] [--threads 2]

torchvision's ssdlite320_mobilenet_v3_large (random init: no hub weights here) is trained from scratch
for a fixed time on 320x320 "digits on a conveyor" scenes (``edgeship.demo.synthetic``; 5 digit classes),
its weights cached as .npz. So its heads score like a trained detector's — a few dozen candidates
pass the 0.001 threshold, not the ~27k of random heads — and box parity means something. It is
compressed FP32 + INT8 (heads in FP, and everything INT8 for comparison) for openvino-cpu and
onnxruntime-cpu and measured on 200 held-out scenes: mAP, box agreement with the FP32 graph (all boxes
and those scoring >= 0.5), model p50, postprocessing (median over 50 real outputs), model +
postprocessing, and end to end from a raw 320x320 frame and from a raw 640x480 one (resize included);
latencies are the median of three rounds' p50, the rounds measured in turn.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..._arrays import load_npz_cache
from ..._files import atomic_write
from ..._lazy import require
from ...measure.latency import measure_latency

SCENE_SIZE = (320, 320)


def _scene() -> Any:
    from ...demo.synthetic import SceneConfig

    return SceneConfig(size=SCENE_SIZE, scale=(40, 150), objects=(1, 4))


def train_ssdlite(train_seconds: float, cache_dir: Path | None = None, seed: int = 0) -> tuple[Any, dict[str, Any]]:
    """ssdlite320 trained for ``train_seconds`` (AdamW, batch 16), or its cached weights; eval mode."""
    return train_scene_detector("ssdlite320_mobilenet_v3_large", train_seconds, cache_dir=cache_dir, seed=seed,
                                batch=16, lr=2e-3, key_prefix="ssdlite-v1", cache_name="synthetic_ssdlite")


def train_scene_detector(name: str, train_seconds: float, *, cache_dir: Path | None = None, seed: int = 0,
                         batch: int = 16, lr: float = 2e-3, key_prefix: str | None = None,
                         cache_name: str | None = None, build: Any = None,
                         cosine: bool = False) -> tuple[Any, dict[str, Any]]:
    """The torchvision detector ``name`` (random init; ``build(num_classes)`` makes it when given) trained for
    ``train_seconds`` on the synthetic 320x320 conveyor scenes (AdamW), or its cached weights (.npz keyed by
    everything that shapes them); eval mode. ``cosine``: the learning rate follows a cosine over the time budget."""
    from ..._defaults import cache_dir as default_cache_dir
    from ...demo.synthetic import SCENES_VERSION, _recalibrate_batchnorm, make_scenes

    torch = require("torch", "training a scene detector")
    D = require("torchvision.models.detection", "training a scene detector")
    scene = _scene()
    prefix = (key_prefix or f"{name}-b{batch}-lr{lr:g}-v1") + ("-cosine" if cosine else "")
    key = hashlib.sha256(f"{prefix}|{SCENES_VERSION}|{scene}|{float(train_seconds):g}|{seed}|{torch.__version__}".encode())
    path = (cache_dir or default_cache_dir()) / f"{cache_name or 'synthetic_' + name}_{key.hexdigest()[:12]}.npz"
    torch.manual_seed(seed)
    model = build(scene.num_classes) if build is not None else \
        getattr(D, name)(weights=None, weights_backbone=None, num_classes=scene.num_classes)
    stored = load_npz_cache(path, f"{name} weights")
    if stored is not None:
        model.load_state_dict({k: torch.from_numpy(v) for k, v in stored.items() if not k.startswith("_")})
        info = {"train_s": float(stored["_train_seconds"]), "steps": int(stored["_steps"]), "cached": True,
                "batch": batch}
        return model.eval(), info
    images, truth = make_scenes(2000, "train", seed, scene)
    targets = [{"boxes": torch.from_numpy(t["boxes"]), "labels": torch.from_numpy(t["labels"])} for t in truth]
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    start, steps = time.perf_counter(), 0
    while time.perf_counter() - start < train_seconds:
        if cosine:
            for group in optimizer.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (time.perf_counter() - start) / train_seconds)))
        idx = torch.randint(0, len(images), (batch,), generator=generator).tolist()
        x = torch.from_numpy(images[idx]).permute(0, 3, 1, 2).float().div_(255)
        loss = sum(model(list(x), [targets[i] for i in idx]).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        steps += 1
        if steps % 50 == 0:
            print(f"{name}: step {steps}, {time.perf_counter() - start:.0f} s, loss {float(loss.detach()):.3f}",
                  flush=True)
    train_s = time.perf_counter() - start
    _recalibrate_batchnorm(model, images, batch, limit=512)  # exact batch-norm statistics of the final weights
    with atomic_write(path) as fh:
        np.savez(fh, _train_seconds=np.float64(train_s), _steps=np.int64(steps),
                 **{k: v.detach().numpy() for k, v in model.state_dict().items()})
    return model.eval(), {"train_s": train_s, "steps": steps, "cached": False, "batch": batch}


def run(train_seconds: float = 720, runs: int = 200, threads: int = 2) -> list[dict[str, Any]]:
    import edgeship

    from ...bundle.detector import Detector
    from ...demo.synthetic import make_scenes
    from ...tasks.detection import postprocess
    from .. import box_agreement, detection_map

    torch = require("torch", "the ssdlite benchmark")
    torch.set_num_threads(threads)
    model, info = train_ssdlite(train_seconds)
    scene = _scene()
    val, truth = make_scenes(200, "val", 0, scene)
    calib, _ = make_scenes(300, "train", 1, scene)
    spec = edgeship.InputSpec(shape=(1, 3, *SCENE_SIZE), preprocess=edgeship.Preprocess(
        scale=1 / 255, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), resize="stretch"))
    with torch.no_grad():
        eager = []
        for i in range(0, len(val), 25):
            x = torch.from_numpy(val[i : i + 25]).permute(0, 3, 1, 2).float().div(255)
            eager += [{k: v.numpy() for k, v in d.items()} for d in model(list(x))]
    frame = np.ascontiguousarray(np.kron(val[0], np.ones((2, 2, 1), np.uint8))[:480, :640])  # a raw 640x480 frame
    rows: list[dict[str, Any]] = [{"variant": "torch eager", **_maps(detection_map(eager, truth))}]
    with tempfile.TemporaryDirectory(prefix="edgeship-ssdlite-") as tmp:
        start = time.perf_counter()
        bundle = edgeship.compress(model, input_spec=spec, calibration=calib, preprocess_calibration=True,
                                   precision=["fp32", "int8"], output=Path(tmp) / "ssd.edgeship", show_progress=False)
        compress_s = time.perf_counter() - start
        all_int8 = edgeship.compress(model, input_spec=spec, calibration=calib, preprocess_calibration=True,
                                     precision=["int8"], targets=["openvino-cpu"], recipe=edgeship.Recipe(keep_fp=()),
                                     output=Path(tmp) / "ssd_all_int8.edgeship", show_progress=False)
        variants = [("openvino-cpu", "fp32", bundle, ""), ("openvino-cpu", "int8", bundle, " (heads FP)"),
                    ("openvino-cpu", "int8", all_int8, " (all INT8)"), ("onnxruntime-cpu", "fp32", bundle, ""),
                    ("onnxruntime-cpu", "int8", bundle, " (heads FP)")]
        reference = None
        for target, precision, b, note in variants:
            with Detector(b, target, precision, threads=threads) as det:
                dets = det(list(val))
                x, names = spec.apply_preprocess(val[0]), det.head.outputs
                outs = [det.runtime.run(spec.apply_preprocess(v)) for v in val[:50]]
                post = [measure_latency(lambda o=o: postprocess([o[n] for n in names], det.head), runs=5, warmup=1).p50_ms
                        for o in outs]
                rounds = [(measure_latency(lambda: det.runtime.run(x), runs=runs, warmup=20).p50_ms,
                           measure_latency(lambda: det([val[0]]), runs=runs, warmup=10).p50_ms,
                           measure_latency(lambda: det([frame]), runs=runs // 2, warmup=5).p50_ms) for _ in range(3)]
                model_ms, e2e_320, e2e_640 = (float(np.median(r)) for r in zip(*rounds))  # median of 3 rounds' p50
            reference = reference or dets
            rows.append({"variant": f"{target} {precision}{note}", **_maps(detection_map(dets, truth)),
                         "agree_all": box_agreement(dets, reference), "agree_05": box_agreement(dets, reference, min_score=0.5),
                         "model_ms": model_ms, "post_ms": float(np.median(post)), "model_post_ms": model_ms + float(np.median(post)),
                         "e2e_320_ms": e2e_320, "e2e_640_ms": e2e_640})
    _print(rows, info, compress_s, threads)
    return rows


def _maps(m: dict[str, float]) -> dict[str, float]:
    return {"map": 100 * m["map"], "map50": 100 * m["map50"]}


def _print(rows: list[dict[str, Any]], info: dict[str, Any], compress_s: float, threads: int) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"ssdlite320 trained {info['train_s']:.0f} s ({info['steps']} steps of 16"
                        f"{', cached' if info['cached'] else ''}) on synthetic scenes; 200 held-out scenes; batch 1, "
                        f"{threads} threads; compress {compress_s:.0f} s")
    cols = [("variant", "variant"), ("mAP", "map"), ("mAP@.5", "map50"), ("agree all", "agree_all"),
            ("agree @0.5", "agree_05"), ("model ms", "model_ms"), ("post ms", "post_ms"), ("model+post ms", "model_post_ms"),
            ("e2e 320 raw ms", "e2e_320_ms"), ("e2e 640x480 raw ms", "e2e_640_ms")]
    for head, _ in cols:
        table.add_column(head, justify="left" if head == "variant" else "right")
    for r in rows:
        table.add_row(*(r[k] if k == "variant" else ("—" if r.get(k) is None else
                        f"{r[k]:.3f}" if k.startswith("agree") else f"{r[k]:.2f}") for _, k in cols))
    Console(width=200).print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-seconds", type=float, default=720)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    run(args.train_seconds, args.runs, args.threads)


if __name__ == "__main__":
    main()
