"""Fidelity benchmark: how faithful edgeship's INT8 is to FP32, and to the quantizers called directly.

    python -m edgeship.benchmarks.suites.fidelity [--out out/fidelity] [--quick] [--runs 100] [--threads 2]

Trains two CNNs on the full Fashion-MNIST (Debian's ``dataset-fashion-mnist``; seeded, weights cached
as .npz under ``<cache>/fidelity``, their SHA-256 printed so runs elsewhere can be compared): a
ResNet-style one (residual blocks with batch norm) and a MobileNet-style one (inverted residuals,
depthwise-separable). Each is compressed by edgeship twice, for the default fleet
(``Recipe(cpus="x86-64-v3")``: INT8 that cannot saturate without VNNI) and for
``Recipe(cpus="avx512-vnni")`` (full-range U8S8, no overflow fix), on openvino-cpu and onnxruntime-cpu.
From the same FP32 ONNX graph, the same 300 calibration samples and the same 10k test images, it
also quantizes with NNCF + OpenVINO and with ONNX Runtime's ``quantize_static`` called directly with
their defaults. Every row gets top-1, top-1 agreement with the FP32 graph on ONNX Runtime (Wilson
95 % intervals), for ONNX Runtime INT8 the agreement of the fused kernels with the same file's
fake-quant numerics (Q/DQ run as float), and p50 latency at batch 1 on the very runtime that was
evaluated. Writes ``fidelity.json`` and ``fidelity.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gzip
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..._arrays import load_npz_cache
from ..._files import atomic_write, write_json_atomic
from ..._lazy import require
from ..._progress import console, progress
from ...errors import ConfigError, EdgeshipError
from ...measure.latency import measure_latency
from ...measure.metrics import proportion_interval, top1, top1_agreement
from ...spec import InputSpec, Preprocess
from ...targets.openvino import shared_core
from ..evaluate import cpu_flags, environment

DATA_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
FASHION_SPEC = InputSpec(shape=(None, 1, 28, 28),
                         preprocess=Preprocess(scale=1 / 255.0, mean=(0.2860,), std=(0.3530,)))
TARGETS = ("openvino-cpu", "onnxruntime-cpu")
#: the edgeship variants: row name -> Recipe.cpus
FLEETS = {"edgeship fleet-safe": "x86-64-v3", "edgeship vnni": "avx512-vnni"}
EPOCHS = {"resnet": 3, "mobilenet": 3}
QUICK_IMAGES = 10_000  # --quick: training images, one epoch
BN_SAMPLES = 10_000  # training images the batch-norm statistics are re-estimated on
BATCH = 64  # evaluation batch


# -- the data ----------------------------------------------------------------------------------
def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An IDX file of unsigned bytes (gzip-compressed or not) as a uint8 array of its declared shape."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as exc:
        raise ConfigError(f"cannot read IDX file {path}: {exc}") from None
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ConfigError(f"{path} is not an IDX file of unsigned bytes: header {data[:4].hex() or 'empty'}, "
                          "expected 0000 08 <ndim>")
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise ConfigError(f"{path}: IDX header declares {ndim} dimensions but the file has {len(data)} bytes")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    if len(data) - header != int(np.prod(shape)):
        raise ConfigError(f"{path}: shape {shape} needs {int(np.prod(shape))} bytes of data, "
                          f"the file has {len(data) - header}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def load_fashion_mnist(folder: str | os.PathLike = DATA_DIR) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fashion-MNIST from its IDX files: (train images, train labels, test images, test labels).

    Images are uint8 (N, 28, 28), labels int64 in [0, 10): 60,000 for training, 10,000 for testing.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"Fashion-MNIST not found at {folder}; "
                          "install it with `apt-get install dataset-fashion-mnist`")
    arrays = []
    for split in ("train", "t10k"):
        images_path = folder / f"{split}-images-idx3-ubyte.gz"
        labels_path = folder / f"{split}-labels-idx1-ubyte.gz"
        for p in (images_path, labels_path):
            if not p.is_file():
                raise ConfigError(f"{p} is missing; "
                                  "reinstall it with `apt-get install --reinstall dataset-fashion-mnist`")
        images, labels = read_idx(images_path), read_idx(labels_path).astype(np.int64)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ConfigError(f"Fashion-MNIST {split}: images {images.shape} and labels {labels.shape} do not match; "
                              "expected (N, 28, 28) and (N,)")
        if labels.size and labels.max() >= len(CLASSES):
            raise ConfigError(f"Fashion-MNIST {split} labels reach {labels.max()}, expected [0, {len(CLASSES)})")
        arrays += [images, labels]
    return arrays[0], arrays[1], arrays[2], arrays[3]


def nhwc(images: np.ndarray) -> np.ndarray:
    """(N, 28, 28) grey images as the raw (N, 28, 28, 1) channels-last layout Preprocess reads."""
    return images[..., None] if images.ndim == 3 else images


# -- the models --------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _blocks() -> tuple[type, type]:
    nn = require("torch.nn", "the fidelity benchmark")

    class BasicBlock(nn.Module):
        """ResNet's basic block: two 3x3 conv-bn, a projection shortcut when the shape changes."""

        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x):
            y = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
            return self.relu(y + self.shortcut(x))

    class InvertedResidual(nn.Module):
        """MobileNetV2's block: 1x1 expand, 3x3 depthwise, linear 1x1 project; residual when shapes match."""

        def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
            super().__init__()
            hidden = cin * expand
            layers: list = []
            if expand != 1:
                layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)]
            layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
                       nn.ReLU6(inplace=True), nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
            self.block = nn.Sequential(*layers)
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            y = self.block(x)
            return x + y if self.residual else y

    return BasicBlock, InvertedResidual


def build_resnet(width: int = 32):
    """ResNet-style CNN for 1x28x28: a 3x3 stem and three basic blocks (stride 2 each); ~224k params at 32."""
    nn = require("torch.nn", "the fidelity benchmark")
    basic, _ = _blocks()
    return nn.Sequential(
        nn.Conv2d(1, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
        basic(width, width, 2), basic(width, 2 * width, 2), basic(2 * width, 3 * width, 2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3 * width, 10),
    )


def build_mobilenet(width: int = 16):
    """MobileNetV2-style CNN for 1x28x28: a stride-2 stem, seven inverted residuals, a 1x1 head; ~119k params."""
    nn = require("torch.nn", "the fidelity benchmark")
    _, inverted = _blocks()
    w = width
    config = [(w, 1, 1), (3 * w // 2, 1, 4), (3 * w // 2, 1, 4), (3 * w, 2, 4), (3 * w, 1, 4), (4 * w, 1, 4),
              (4 * w, 1, 4)]  # (out channels, stride, expansion)
    layers: list = [nn.Conv2d(1, w, 3, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU6(inplace=True)]
    cin = w
    for cout, stride, expand in config:
        layers.append(inverted(cin, cout, stride, expand))
        cin = cout
    layers += [nn.Conv2d(cin, 16 * w, 1, bias=False), nn.BatchNorm2d(16 * w), nn.ReLU6(inplace=True),
               nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16 * w, 10)]
    return nn.Sequential(*layers)


ARCHITECTURES: dict[str, Callable[[], Any]] = {"resnet": build_resnet, "mobilenet": build_mobilenet}


def train_model(arch: str, images: np.ndarray, labels: np.ndarray, epochs: int, seed: int = 0,
                cache_dir: str | os.PathLike | None = None, threads: int = 2,
                show_progress: bool = True) -> tuple[Any, dict[str, Any]]:
    """``arch`` trained on ``images`` (uint8 (N, 28, 28)), or reloaded from the cache; (model, info).

    Seeded (torch.manual_seed, a Generator for the shuffles), Adam with a one-cycle schedule, batch
    128, channels-last while training; batch-norm statistics re-estimated on the final weights. The
    cache key hashes the architecture, epochs, number of images, seed and torch version. ``info``
    holds the weights' SHA-256 (``edgeship.demo.weights_digest``), training seconds and the file.
    """
    from ...demo.digits import default_cache_dir, weights_digest

    if arch not in ARCHITECTURES:
        raise ConfigError(f"unknown architecture {arch!r}; known: {sorted(ARCHITECTURES)}")
    if epochs < 1:
        raise ConfigError(f"epochs must be >= 1, got {epochs}")
    torch = require("torch", "the fidelity benchmark")
    torch.set_num_threads(threads)
    model = ARCHITECTURES[arch]()
    key = hashlib.sha256(f"fidelity-{arch}-v1-{epochs}-{len(images)}-{seed}-{torch.__version__}".encode()).hexdigest()
    folder = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / "fidelity"
    weights = folder / f"{arch}_{key[:12]}.npz"
    record = weights.with_suffix(".json")
    state = load_npz_cache(weights, f"{arch} weights")
    if state is not None:
        model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
        info = json.loads(record.read_text()) if record.is_file() else {}
        info.update(cached=True, weights=str(weights), sha256=weights_digest(state))
        return model.eval(), info
    torch.manual_seed(seed)
    inputs = torch.from_numpy(FASHION_SPEC.apply_preprocess(nhwc(images)))
    targets = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    batch = 128
    steps = -(-len(inputs) // batch)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=epochs * steps)
    loss_fn = torch.nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(seed)
    model = model.to(memory_format=torch.channels_last)  # ~25 % faster on CPU; the weights go back below
    model.train()
    start = time.perf_counter()
    with progress(show_progress) as bar:
        task = bar.add_task(f"train {arch} ({len(inputs)} images x {epochs} epochs)", total=epochs * steps)
        for _ in range(epochs):
            for idx in torch.randperm(len(inputs), generator=generator).split(batch):
                optimizer.zero_grad()
                x = inputs[idx].contiguous(memory_format=torch.channels_last)
                loss_fn(model(x), targets[idx]).backward()
                optimizer.step()
                schedule.step()
                bar.advance(task)
    model = model.to(memory_format=torch.contiguous_format)
    torch.optim.swa_utils.update_bn(inputs[:BN_SAMPLES].split(256), model)  # exact statistics of the final weights
    train_s = time.perf_counter() - start
    model.eval()
    state = {k: v.detach().contiguous().numpy() for k, v in model.state_dict().items()}
    with atomic_write(weights) as fh:
        np.savez(fh, **state)
    info = {"arch": arch, "epochs": epochs, "images": len(images), "seed": seed, "torch": torch.__version__,
            "train_s": train_s, "threads": threads}
    write_json_atomic(record, info)
    return model, {**info, "cached": False, "weights": str(weights), "sha256": weights_digest(state)}


# -- measuring ---------------------------------------------------------------------------------
def _evaluate(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, runs: int) -> tuple[np.ndarray, Any]:
    """Outputs over ``x`` in batches of BATCH, then latency at batch 1, both on the same ``predict``."""
    out = np.concatenate([predict(x[i : i + BATCH]) for i in range(0, len(x), BATCH)])
    one = np.ascontiguousarray(x[:1])
    return out, measure_latency(lambda: predict(one), runs=runs, warmup=10)


def _row(model: str, variant: str, target: str, precision: str, flavour: str, out: np.ndarray, labels: np.ndarray,
         reference: np.ndarray, latency: Any, **extra: Any) -> dict[str, Any]:
    n = len(labels)
    accuracy, agreement = top1(out, labels), top1_agreement(out, reference)
    return {"model": model, "variant": variant, "target": target, "precision": precision, "flavour": flavour,
            "samples": n, "top1": accuracy, "top1_ci": proportion_interval(accuracy, n),
            "agreement": agreement, "agreement_ci": proportion_interval(agreement, n),
            "fused_vs_fake": None, "fused_vs_fake_ci": None, "fake_agreement": None, "fake_agreement_ci": None,
            "p50_ms": latency.p50_ms, "p50_ci_ms": latency.p50_ci, "batch": 1, "runs": latency.runs,
            "cpu_flags": cpu_flags(), **extra}


def _fake_quant(row: dict[str, Any], fused: np.ndarray, path: Path, x: np.ndarray, reference: np.ndarray,
                threads: int) -> None:
    """Add to an ONNX Runtime INT8 row the agreement of its fused kernels with the file's fake-quant numerics."""
    from ...targets.onnxruntime import _predict, _session

    session = _session(path, threads=threads, fake_quant=True)
    fake = _predict(session, session.get_inputs()[0].name, x, batch=BATCH)
    n = len(fake)
    row["fused_vs_fake"] = top1_agreement(fused, fake)
    row["fused_vs_fake_ci"] = proportion_interval(row["fused_vs_fake"], n)
    row["fake_agreement"] = top1_agreement(fake, reference)
    row["fake_agreement_ci"] = proportion_interval(row["fake_agreement"], n)


def _nncf_direct(onnx_path: Path, samples: list[np.ndarray], threads: int, dst: Path) -> tuple[Callable, str]:
    """NNCF + OpenVINO with their defaults on the FP32 graph: (predict on the compiled model, flavour)."""
    ov = require("openvino", "the fidelity benchmark")
    nncf = require("nncf", "the fidelity benchmark")
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters

    core = shared_core()
    with contextlib.redirect_stdout(sys.stderr):  # NNCF's progress bars: with the other progress, off the table
        quantized = nncf.quantize(core.read_model(str(onnx_path)), nncf.Dataset(samples), subset_size=len(samples))
    ov.save_model(quantized, str(dst))  # kept for inspection; the row runs the in-memory model
    compiled = core.compile_model(quantized, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
                                                     "INFERENCE_NUM_THREADS": threads})
    request, port = compiled.create_infer_request(), compiled.outputs[0]
    fix = AdvancedQuantizationParameters().overflow_fix
    if fix is None:  # resolved inside NNCF's MinMax algorithm
        try:
            from nncf.quantization.algorithms.min_max.algorithm import MODE_BASED_DEFAULTS

            fix = MODE_BASED_DEFAULTS[None].overflow_fix
        except (ImportError, KeyError, AttributeError):
            fix = "default"
    flavour = f"nncf defaults, overflow_fix={getattr(fix, 'value', fix)}"
    return (lambda x: request.infer({0: x})[port]), flavour


def _ort_direct(onnx_path: Path, samples: list[np.ndarray], input_name: str, threads: int,
                dst: Path) -> Callable:
    """ONNX Runtime's quantize_static with its defaults (QDQ, U8 activations, S8 per-channel weights)."""
    ort = require("onnxruntime", "the fidelity benchmark")
    quantization = require("onnxruntime.quantization", "the fidelity benchmark")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(quantization.CalibrationDataReader):
        def __init__(self) -> None:
            self._samples = iter(samples)

        def get_next(self) -> dict[str, np.ndarray] | None:
            sample = next(self._samples, None)
            return None if sample is None else {input_name: sample}

    prepared = dst.with_name(dst.stem + "_prepared.onnx")
    quant_pre_process(str(onnx_path), str(prepared))
    quantization.quantize_static(str(prepared), str(dst), Reader(), quant_format=quantization.QuantFormat.QDQ,
                                 activation_type=quantization.QuantType.QUInt8,
                                 weight_type=quantization.QuantType.QInt8, per_channel=True)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(dst), options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {input_name: x})[0]


def measure_model(name: str, model: Any, train_images: np.ndarray, test_images: np.ndarray, test_labels: np.ndarray,
                  out_dir: str | os.PathLike, runs: int = 100, threads: int = 2,
                  show_progress: bool = True) -> list[dict[str, Any]]:
    """Compress ``model`` for both fleets, quantize it directly with NNCF and ONNX Runtime, measure every row.

    ``train_images`` (raw uint8) supply the calibration subset (``Recipe`` defaults: 300, seed 0),
    the same for every quantizer; ``test_images`` / ``test_labels`` the evaluation.
    """
    import edgeship

    from ...calibration import collect
    from ...targets.torch import TorchRuntime

    x = FASHION_SPEC.apply_preprocess(nhwc(test_images))
    with TorchRuntime(model, FASHION_SPEC, threads=threads) as rt:  # first: torch slowed down after OpenVINO ran
        eager, eager_latency = _evaluate(lambda b: rt.run(b)["output"], x, runs)
    out_dir = Path(out_dir)
    (out_dir / "direct").mkdir(parents=True, exist_ok=True)
    raw = nhwc(train_images)
    bundles = {}
    for variant, cpus in FLEETS.items():
        precisions = ["fp32", "int8"] if not bundles else ["int8"]  # the FP32 artifacts are measured once
        with contextlib.redirect_stdout(sys.stderr):  # NNCF's progress bars
            bundles[variant] = edgeship.compress(model, input_spec=FASHION_SPEC, calibration=raw,
                                                 preprocess_calibration=True, targets=list(TARGETS),
                                                 precision=precisions, output=out_dir / f"{name}_{cpus}.edgeship",
                                                 recipe=edgeship.Recipe(cpus=cpus), show_progress=show_progress)
    first = bundles[next(iter(FLEETS))]
    recipe = edgeship.Recipe()
    calib = collect(raw, FASHION_SPEC, size=recipe.calibration_size, seed=recipe.seed, preprocess=True)
    for variant, bundle in bundles.items():
        if bundle.manifest.calibration["sha256"] != calib.sha256:
            raise EdgeshipError(f"{variant} was calibrated on other samples "
                                f"({bundle.manifest['calibration']['sha256'][:16]}…) than the direct baselines "
                                f"({calib.sha256[:16]}…)")
    rows: list[dict[str, Any]] = []
    with progress(show_progress) as bar:
        task = bar.add_task(f"measure {name}", total=2 + len(TARGETS) * len(bundles) + 2)

        def load(bundle: Any, target: str, precision: str) -> tuple[np.ndarray, Any, dict[str, Any]]:
            bar.update(task, description=f"measure {name}: {target} {precision}")
            with bundle.load(target, precision, threads=threads) as rt:
                output = rt.outputs[0].name
                out, latency = _evaluate(lambda b: rt.run(b)[output], x, runs)
            bar.advance(task)
            return out, latency, bundle.artifact(target, precision)

        ort_fp32, ort_latency, _ = load(first, "onnxruntime-cpu", "fp32")  # the reference: the FP32 graph on ORT
        ov_fp32, ov_latency, _ = load(first, "openvino-cpu", "fp32")
        rows.append(_row(name, "fp32", "torch", "fp32", "— (eager)", eager, test_labels, ort_fp32, eager_latency))
        rows.append(_row(name, "fp32", "openvino-cpu", "fp32", "—", ov_fp32, test_labels, ort_fp32, ov_latency))
        rows.append(_row(name, "fp32", "onnxruntime-cpu", "fp32", "— (reference)", ort_fp32, test_labels, ort_fp32,
                         ort_latency))
        for variant, bundle in bundles.items():
            for target in TARGETS:
                out, latency, entry = load(bundle, target, "int8")
                options = entry.get("options", {})
                row = _row(name, variant, target, "int8", options.get("int8_flavour", "?"), out, test_labels, ort_fp32,
                           latency, flavour_choice=options.get("flavour_choice"), bundle=str(bundle.path))
                if target == "onnxruntime-cpu":
                    path = bundle.path / next(f for f in entry["files"] if f.endswith(".onnx"))
                    _fake_quant(row, out, path, x, ort_fp32, threads)
                rows.append(row)
        bar.update(task, description=f"measure {name}: nncf direct")
        predict, flavour = _nncf_direct(first.source_onnx, calib.samples, threads,
                                        out_dir / "direct" / f"{name}_nncf.xml")
        out, latency = _evaluate(predict, x, runs)
        rows.append(_row(name, "nncf direct", "openvino-cpu", "int8", flavour, out, test_labels, ort_fp32, latency))
        bar.advance(task)
        bar.update(task, description=f"measure {name}: onnxruntime direct")
        path = out_dir / "direct" / f"{name}_ort_qdq.onnx"
        predict = _ort_direct(first.source_onnx, calib.samples, FASHION_SPEC.name, threads, path)
        out, latency = _evaluate(predict, x, runs)
        row = _row(name, "ort direct", "onnxruntime-cpu", "int8", "u8s8, ORT defaults (per-channel)", out, test_labels,
                   ort_fp32, latency)
        _fake_quant(row, out, path, x, ort_fp32, threads)
        rows.append(row)
        bar.advance(task)
    return rows


# -- the run -----------------------------------------------------------------------------------
def run_fidelity(out: str | os.PathLike = "out/fidelity", quick: bool = False,
                 models: tuple[str, ...] = tuple(ARCHITECTURES), runs: int = 100, threads: int = 2, seed: int = 0,
                 cache_dir: str | os.PathLike | None = None, data_dir: str | os.PathLike = DATA_DIR,
                 show_progress: bool = True) -> dict[str, Any]:
    """Train (or reload) each model, measure every row, print the table, write fidelity.json and .md."""
    x_train, y_train, x_test, y_test = load_fashion_mnist(data_dir)
    if quick:
        x_train, y_train = x_train[:QUICK_IMAGES], y_train[:QUICK_IMAGES]
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    result: dict[str, Any] = {"schema_version": 1, "quick": quick, "models": {}, "rows": [],
                              "settings": {"runs": runs, "threads": threads, "batch": 1, "eval_batch": BATCH,
                                           "seed": seed, "train_images": len(x_train), "test_images": len(x_test),
                                           "reference": "the FP32 ONNX graph on onnxruntime-cpu",
                                           "calibration": "300 training images, seed 0 (Recipe defaults), "
                                                          "the same samples for every quantizer",
                                           "intervals": "95 %: Wilson for top-1 and agreements, bootstrap for p50"}}
    for arch in models:
        epochs = 1 if quick else EPOCHS[arch]
        model, info = train_model(arch, x_train, y_train, epochs, seed, cache_dir, threads, show_progress)
        info["params"] = int(sum(p.numel() for p in model.parameters()))
        console.print(f"{arch}: {info['params']:,} params, {epochs} epoch(s) on {len(x_train):,} images, "
                      + (f"trained in {info['train_s']:.0f} s" if "train_s" in info else "training time unknown")
                      + (" (cached weights)" if info["cached"] else "") + f"; weights SHA-256 {info['sha256']}")
        rows = measure_model(arch, model, x_train, x_test, y_test, folder, runs, threads, show_progress)
        result["models"][arch] = info
        result["rows"] += rows
    result["environment"] = environment(threads)
    result["cpu_flags"] = cpu_flags()
    result["seconds"] = time.perf_counter() - started
    _print(result)
    (folder / "fidelity.json").write_text(json.dumps(result, indent=2, default=_json) + "\n")
    (folder / "fidelity.md").write_text(_markdown(result))
    console.print(f"wrote {folder / 'fidelity.json'} and {folder / 'fidelity.md'}")
    return result


def _json(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


HEADERS = ("model", "variant", "target", "flavour", "top-1 % [95% CI]", "agree FP32 % [95% CI]",
           "fused = fake-quant %", "fake-quant agree FP32 %", "p50 ms")


def _pct(value: float | None, ci: Any = None) -> str:
    if value is None:
        return "—"
    return f"{100 * value:.2f}" + (f" [{100 * ci[0]:.2f}, {100 * ci[1]:.2f}]" if ci is not None else "")


def _cells(row: dict[str, Any]) -> list[str]:
    return [row["model"], row["variant"], row["target"], row["flavour"], _pct(row["top1"], row["top1_ci"]),
            _pct(row["agreement"], row["agreement_ci"]), _pct(row["fused_vs_fake"], row["fused_vs_fake_ci"]),
            _pct(row["fake_agreement"]), f"{row['p50_ms']:.3f}"]


def _title(result: dict[str, Any]) -> str:
    s = result["settings"]
    return (f"Fashion-MNIST INT8 fidelity — {s['test_images']:,} test images, {s['train_images']:,} training images"
            f"{' (--quick)' if result['quick'] else ''}; p50 at batch 1, {s['threads']} threads, {s['runs']} runs")


def _print(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=_title(result))
    for h in HEADERS:
        table.add_column(h, justify="left" if h in ("model", "variant", "target", "flavour") else "right")
    previous = None
    for row in result["rows"]:
        if previous is not None and row["model"] != previous:
            table.add_section()
        previous = row["model"]
        table.add_row(*_cells(row))
    out = Console(width=220)
    out.print(table)
    for line in _model_lines(result):
        out.print(line, highlight=False)
    out.print(f"CPU flags: {' '.join(result['cpu_flags'])}", highlight=False)
    out.print("agree FP32: top-1 agreement with the FP32 graph on onnxruntime-cpu. fused = fake-quant: ONNX Runtime's "
              "fused INT8 kernels vs the same file with Q/DQ run as float (session.disable_quant_qdq).")


def _model_lines(result: dict[str, Any]) -> list[str]:
    lines = []
    for arch, info in result["models"].items():
        train = f"{info['train_s']:.0f} s" if "train_s" in info else "unknown"
        lines.append(f"{arch}: {info['params']:,} params, {info.get('epochs', '?')} epoch(s) on "
                     f"{info.get('images', 0):,} images, trained in {train} with {info.get('threads', '?')} threads"
                     f"{' (weights from the cache)' if info['cached'] else ''}; weights SHA-256 {info['sha256']}")
    return lines


def _markdown(result: dict[str, Any]) -> str:
    lines = [f"# {_title(result)}", "", "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in result["rows"]]
    lines += ["", f"CPU flags: {' '.join(result['cpu_flags'])}", ""]
    lines += [f"- {line}" for line in _model_lines(result)]
    lines += ["", "Reference: the FP32 ONNX graph on onnxruntime-cpu. Calibration: the same 300 training images for "
              "every quantizer. Each INT8 row's flavour choice (reason, measured candidates) is in fidelity.json.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/fidelity", help="folder for fidelity.json, fidelity.md and the bundles")
    parser.add_argument("--quick", action="store_true",
                        help=f"train on {QUICK_IMAGES:,} images for one epoch (smoke run)")
    parser.add_argument("--models", default="resnet,mobilenet")
    parser.add_argument("--runs", type=int, default=100, help="timed runs per latency")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", default=None,
                        help="weights cache (default: $EDGESHIP_CACHE, else ~/.cache/edgeship)")
    parser.add_argument("--data", default=str(DATA_DIR), help="folder with Fashion-MNIST's IDX files")
    args = parser.parse_args()
    try:
        run_fidelity(args.out, args.quick, tuple(args.models.split(",")), args.runs, args.threads, args.seed,
                     args.cache_dir, args.data)
    except ConfigError as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
