"""The embedded demo: a small CNN trained on scikit-learn's digits, compressed for both CPU targets.

``edgeship demo`` loads the digits CNN shipped with edgeship (pinned weights), compresses it to FP32
and INT8 for openvino-cpu and onnxruntime-cpu (INT8 safe on any AVX2 CPU), benchmarks every artifact
against torch eager FP32 on held-out digits, prints the table, saves the report, and ends with what
this device should ship: the fastest artifact that passes the bundle's self-test here, and why.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .._arrays import load_npz, load_npz_cache
from .._defaults import CPU_TARGETS, cache_dir
from .._files import atomic_write
from .._lazy import require
from .._progress import console, progress
from ..errors import EdgeshipError
from ..spec import InputSpec, Preprocess

IMAGE_SIZE = 32
DIGITS_SPEC = InputSpec(
    shape=(None, 1, IMAGE_SIZE, IMAGE_SIZE),
    preprocess=Preprocess(scale=1 / 255.0, mean=(0.5,), std=(0.5,)),
)


default_cache_dir = cache_dir  # the demo's name for it


def digits_data(seed: int = 0, test_fraction: float = 0.3) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 digits as raw uint8 images (N, 32, 32, 1), split stratified and seeded.

    Returns (train images, train labels, test images, test labels).
    """
    datasets = require("sklearn.datasets", "the digits demo")
    digits = datasets.load_digits()
    images = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)  # 0..16 -> 0..255
    factor = IMAGE_SIZE // images.shape[1]
    images = images.repeat(factor, axis=1).repeat(factor, axis=2)[..., None]  # 8x8 -> 32x32, NHWC
    labels = digits.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), dtype=bool)
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        test[idx[: int(round(len(idx) * test_fraction))]] = True
    return images[~test], labels[~test], images[test], labels[test]


def build_digits_cnn(width: int = 16):
    """A small CNN for 1x32x32 inputs and 10 classes (conv-bn-relu blocks, global pooling, linear)."""
    nn = require("torch.nn", "the digits demo")

    def block(cin: int, cout: int) -> list:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    return nn.Sequential(
        *block(1, width), nn.MaxPool2d(2),
        *block(width, 2 * width), nn.MaxPool2d(2),
        *block(2 * width, 4 * width), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(4 * width, 10),
    )


#: the digits CNN's weights as trained by ``train_digits_cnn(pinned=False)`` with the defaults, shipped with
#: edgeship and pinned by content hash: torch's CPU kernels differ between AVX2 and AVX-512 machines, and so
#: would freshly trained weights; the demo, tests and benchmarks measure this very model on every CPU.
PINNED_WEIGHTS = Path(__file__).parent.parent / "data" / "digits_cnn.npz"
PINNED_SHA256 = "49950f705fb7e52d432102fbd812b7b8481b9f8657479378e79fee23cf86ed67"


def weights_digest(state: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over a state dict's names, dtypes, shapes and bytes, in name order (not the .npz file's bytes)."""
    digest = hashlib.sha256()
    for name in sorted(state):
        array = np.ascontiguousarray(state[name])
        digest.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _load_pinned_weights(model: Any) -> Any:
    state = load_npz(PINNED_WEIGHTS, "the shipped digits CNN weights")
    if weights_digest(state) != PINNED_SHA256:
        raise EdgeshipError(f"the shipped digits CNN weights {PINNED_WEIGHTS} do not match their pinned SHA-256 "
                            f"{PINNED_SHA256[:16]}… (got {weights_digest(state)[:16]}…); reinstall edgeship")
    return _with_weights(model, state)


def _with_weights(model: Any, state: Mapping[str, np.ndarray]) -> Any:
    torch = require("torch", "the digits demo")
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    return model.eval()


def train_digits_cnn(cache_dir: str | os.PathLike | None = None, epochs: int = 12, seed: int = 0,
                     show_progress: bool = True, pinned: bool = True) -> Any:
    """The trained digits CNN. By default the weights shipped with edgeship (checked against
    ``PINNED_SHA256``), the same on every machine; ``pinned=False`` (or other epochs / seed) trains it,
    seeded, or reuses the weights cached as .npz (no pickle) in ``cache_dir``."""
    torch = require("torch", "the digits demo")
    model = build_digits_cnn()
    if pinned and epochs == 12 and seed == 0:
        return _load_pinned_weights(model)
    x_train, y_train, _, _ = digits_data(seed)
    key = hashlib.sha256(f"digits-cnn-v2-{epochs}-{seed}-{torch.__version__}".encode()).hexdigest()[:12]
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    weights = cache / f"digits_cnn_{key}.npz"
    cached = load_npz_cache(weights, "digits CNN weights")
    if cached is not None:
        return _with_weights(model, cached)
    torch.manual_seed(seed)
    inputs = torch.from_numpy(DIGITS_SPEC.apply_preprocess(x_train))
    targets = torch.from_numpy(y_train)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    steps_per_epoch = -(-len(inputs) // 64)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=epochs * steps_per_epoch)
    loss_fn = torch.nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(seed)
    model.train()
    with progress(show_progress) as bar:
        task = bar.add_task("train digits CNN", total=epochs)
        for _ in range(epochs):
            for batch in torch.randperm(len(inputs), generator=generator).split(64):
                optimizer.zero_grad()
                loss_fn(model(inputs[batch]), targets[batch]).backward()
                optimizer.step()
                schedule.step()
            bar.advance(task)
    torch.optim.swa_utils.update_bn(inputs.split(256), model)  # exact batch-norm statistics of the final weights
    model.eval()
    with atomic_write(weights) as fh:
        np.savez(fh, **{k: v.detach().numpy() for k, v in model.state_dict().items()})
    return model


def run_demo(out_dir: str | os.PathLike = "out/demo", cache_dir: str | os.PathLike | None = None,
             runs: int = 200, threads: int | None = None, show_progress: bool = True):
    """Train (or reuse), compress to FP32 + INT8 for both CPU targets, benchmark; returns the Report."""
    from ..benchmarks import benchmark
    from ..measure.plan import Measurement
    from ..build.compress import compress

    out = Path(out_dir)
    x_train, _, x_test, y_test = digits_data()
    model = train_digits_cnn(cache_dir, show_progress=show_progress)
    bundle = compress(
        model,
        input_spec=DIGITS_SPEC,
        calibration=x_train,
        preprocess_calibration=True,
        targets=list(CPU_TARGETS),
        precision=["fp32", "int8"],
        output=out / "digits.edgeship",
        show_progress=show_progress,
    )
    report = benchmark([bundle], data=(x_test, y_test), metric="top1", reference=model, preprocess=True,
                       show_progress=show_progress, measure=Measurement(runs=runs, threads=threads))
    report.save(out / "report")
    report.print()
    console.print(f"bundle: {bundle.path}\nreport: {out / 'report' / 'report.md'}")
    from ..device.choice import choose

    choice = choose(bundle, **({"threads": threads} if threads else {}))
    verdict = (f"[bold]ship {choice.target} {choice.precision}[/bold]" if choice.status == "passed"
               else "[bold red]ship nothing[/bold red]")
    console.print(f"what this device should ship: {verdict}\n  why: {choice.reason}")
    return report
