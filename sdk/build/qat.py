"""Quantization-aware training (QAT) for when post-training INT8 loses too much.

``Recipe(qat=QAT(epochs=5, lr=1e-3))``: batch norm folded into the convolutions (torch.fx), NNCF's fake
quantization inserted into the torch model (``nncf.quantize``: 8-bit, per-channel symmetric weights, per-tensor
activations, ranges from the calibration set) and the model fine-tuned with its weights and ranges trainable,
label-free by default — the fake-quantized model learns the FP32 model's outputs on calibration images, as
pruning's distillation does — or with the user's own loop (``compress(qat_train=fn)``).

What ships is the trained fake-quantized graph itself, with its learned ranges (``qat.onnx``, NNCF's FakeQuantize
ops): OpenVINO reads those ops natively; for ONNX Runtime each becomes Q/DQ in uint8 with the same scale and an
integer zero point (U8U8, which cannot saturate on AVX2 CPUs without VNNI), so both run the numerics QAT
trained, not a re-calibration of its weights (measured: re-calibrating lost most of what QAT gained).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Any, Callable, Literal

import numpy as np

from .._lazy import require
from .._progress import progress
from ..errors import ConfigError

__all__ = ["QAT", "export_qat_graph", "quantization_aware_train"]


@dataclass(frozen=True)
class QAT:
    """How to fine-tune with fake quantization before INT8.

    Args:
        epochs: passes over the training samples.
        lr: Adam's peak learning rate (one-cycle schedule); QAT wants it small (the model is already trained).
        samples: calibration images drawn for training (from the raw ``calibration`` source; a CalibrationSet is
            used as it is).
        loss: "kl" (class scores: KL divergence to the FP32 model's softmax) or "mse" (any output).
        batch_size: samples per step.
        seed: seeds the sample draw, the batch order and torch.
    """

    epochs: int = 5
    lr: float = 1e-4
    samples: int = 2000
    loss: Literal["kl", "mse"] = "kl"
    batch_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "samples", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"QAT.{name} must be an int >= 1, got {value!r}")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not 0 < self.lr < 1:
            raise ConfigError(f"QAT.lr must be a learning rate in (0, 1), got {self.lr!r}")
        if self.loss not in ("kl", "mse"):
            raise ConfigError(f"QAT.loss must be 'kl' or 'mse', got {self.loss!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"QAT.seed must be an int, got {self.seed!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def quantization_aware_train(model: Any, inputs: np.ndarray, config: QAT, *,
                             train: Callable[[Any], Any] | None = None, saturating_fleet: bool = True,
                             show_progress: bool = True) -> tuple[Any, dict[str, Any]]:
    """(the fake-quantized, trained model, a summary for the manifest); ``model`` is left untouched.

    ``saturating_fleet``: the bundle may run on a CPU without VNNI, so weights train on 7-bit grids (NNCF's
    OverflowFix.ENABLE, as post-training INT8 for such a fleet does), whose u8 x s8 pair sums cannot saturate.

    Batch norm is folded into the convolutions first (``torch.fx`` conv-bn fusion, the inference graph), so the
    weights NNCF quantizes per channel are the ones the targets run. ``inputs`` are model-ready samples (N, ...):
    NNCF's initial ranges come from them, and label-free training matches the FP32 model's outputs on 90 % of
    them; the epoch (0 = the ranges as calibrated) whose outputs are closest to FP32 on the other 10 % is kept.
    ``train`` replaces the label-free loop with the user's own.
    """
    torch = require("torch", "quantization-aware training")
    nncf = require("nncf", "quantization-aware training")
    if not isinstance(model, torch.nn.Module):
        raise ConfigError(f"QAT needs a torch.nn.Module, got {type(model).__name__}")
    from ..tasks.detection import detector_family

    if detector_family(model) is not None:
        raise ConfigError("QAT supports classifiers (one output of class scores); a detector's INT8 recovery is "
                          "pruning's distillation or Recipe(keep_fp=...) — drop Recipe(qat=...) for this model")
    if model.training:
        raise ConfigError("the model is in training mode; call model.eval() first")
    torch.manual_seed(config.seed)
    teacher = model.eval()
    folded, bn_folded = _fold_batch_norm(model)
    x = torch.from_numpy(np.ascontiguousarray(inputs))
    calib = [x[i : i + config.batch_size] for i in range(0, min(len(x), 300), config.batch_size)]
    # inside a container of its own: NNCF adds its hook storage as a child module, which an nn.Sequential would run
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    overflow_fix = "enable" if saturating_fleet else "disable"
    student = nncf.quantize(_Holder(folded), nncf.Dataset(calib), subset_size=len(calib),
                            preset=nncf.QuantizationPreset.PERFORMANCE,
                            advanced_parameters=AdvancedQuantizationParameters(overflow_fix=OverflowFix(overflow_fix)))
    quantizers = _count_quantizers(student)
    held = max(1, len(x) // 10) if len(x) >= 20 else 0
    train_x, check_x = (x[:-held], x[-held:]) if held else (x, x)
    before = _error(student, teacher, check_x)
    if train is not None:
        trained = train(student)
        if not isinstance(trained, torch.nn.Module):
            raise ConfigError(f"qat_train must return the nn.Module it was given, got {type(trained).__name__}")
        student, epochs = trained.eval(), None
    else:
        epochs = _distill(student, teacher, train_x, check_x, config, show_progress)
    after = _error(student, teacher, check_x)
    summary = {"config": config.to_dict(), "method": "nncf.quantize (torch) + " +
               ("user training" if train is not None else f"label-free distillation ({config.loss})"),
               "samples": int(len(train_x)), "held_out": int(held), "quantizers": quantizers,
               "batch_norm_folded": bn_folded, "overflow_fix": overflow_fix, "fake_quant_error_before": before, "fake_quant_error_after": after,
               "epoch_kept": epochs}
    return student, summary


def export_qat_graph(student: Any, spec: Any, path: Any, output_names: list[str], check: np.ndarray) -> None:
    """The fake-quantized model as ONNX (NNCF's FakeQuantize ops, domain org.openvinotoolkit), checked against torch
    on ``check`` (model-ready samples) in OpenVINO, which reads those ops natively: relative RMS error <= 5e-2 and
    top-1 agreement >= 0.98. Not bit-exact: a value on a rounding boundary may land one level apart, and the
    difference carries (measured up to 1.05e-2 with top-1 agreement 1.0 on a 70 %-pruned Fashion-MNIST ResNet)."""
    torch = require("torch", "quantization-aware training")
    from ..errors import CompileError
    from .export import export_onnx

    export_onnx(student, spec, path, output_names=output_names, check_parity=False)
    x = np.ascontiguousarray(check[:64])
    with torch.no_grad():
        want = _first(student(torch.from_numpy(x))).numpy()
    ov = require("openvino", "checking a QAT graph")
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    batch = spec.shape[0] or len(x)
    got = np.concatenate([next(iter(compiled(x[i : i + batch]).values())) for i in range(0, len(x), batch)])
    error = float(np.sqrt(np.mean((got - want) ** 2)) / (np.sqrt(np.mean(want**2)) or 1.0))
    agreement = float((got.reshape(len(x), -1).argmax(1) == want.reshape(len(x), -1).argmax(1)).mean())
    if not (error <= 5e-2 and agreement >= 0.98):
        raise CompileError(f"the exported QAT graph (OpenVINO) differs from the fake-quantized torch model: relative "
                           f"RMS error {error:.2e} (<= 5e-2 expected), top-1 agreement {agreement:.3f} (>= 0.98)")


def _fold_batch_norm(model: Any) -> tuple[Any, bool]:
    """(a copy of ``model`` with each conv-bn pair fused, whether it could be): torch.fx traces it, so a model fx
    cannot trace is trained unfused (the targets fold batch norm themselves; its weights' ranges then apply
    before the fold)."""
    require("torch", "quantization-aware training")
    from torch.fx.experimental.optimization import fuse

    try:
        return fuse(copy.deepcopy(model)).eval(), True
    except Exception:  # noqa: BLE001 - not fx-traceable: dynamic control flow, data-dependent shapes
        return copy.deepcopy(model).eval(), False


def _distill(student: Any, teacher: Any, x: Any, check: Any, config: QAT, show_progress: bool) -> int:
    """Seeded minibatches: the fake-quantized student learns the FP32 teacher's outputs on ``x``. Returns the
    epoch kept: the one whose outputs on ``check`` are closest to the teacher's (0: as calibrated)."""
    torch = require("torch", "quantization-aware training")
    F = torch.nn.functional
    with torch.no_grad():
        targets = torch.cat([_first(teacher(chunk)) for chunk in x.split(256)])
    generator = torch.Generator().manual_seed(config.seed)
    params = [p for p in student.parameters() if p.requires_grad]  # the weights and NNCF's ranges
    optimizer = torch.optim.Adam(params, lr=config.lr)
    steps = config.epochs * -(-len(x) // config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=steps)
    best, best_epoch, best_state = _error(student, teacher, check), 0, copy.deepcopy(student.state_dict())
    with progress(show_progress) as bar:
        task = bar.add_task(f"quantization-aware training ({config.loss})", total=config.epochs)
        for epoch in range(1, config.epochs + 1):
            student.train()
            for module in student.modules():  # batch-norm statistics stay (unfused models): few samples move them
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.eval()
            for index in torch.randperm(len(x), generator=generator).split(config.batch_size):
                optimizer.zero_grad()
                loss = _loss(_first(student(x[index])), targets[index], config.loss, F)
                loss.backward()
                optimizer.step()
                schedule.step()
            error = _error(student, teacher, check)
            if error < best:
                best, best_epoch, best_state = error, epoch, copy.deepcopy(student.state_dict())
            bar.advance(task)
    student.load_state_dict(best_state)
    student.eval()
    return best_epoch


def _loss(out: Any, target: Any, kind: str, F: Any) -> Any:
    if kind == "mse":
        return F.mse_loss(out, target)
    return F.kl_div(F.log_softmax(out.flatten(1), 1), F.softmax(target.flatten(1), 1), reduction="batchmean")


def _first(out: Any) -> Any:
    return out[0] if isinstance(out, (tuple, list)) else out


def _error(student: Any, teacher: Any, x: Any) -> float:
    """Relative RMS error of the fake-quantized outputs against FP32 on the first 512 samples."""
    torch = require("torch", "quantization-aware training")
    with torch.no_grad():
        sample = x[:512]
        got, want = _first(student.eval()(sample)), _first(teacher(sample))
    return float(torch.sqrt(torch.mean((got - want) ** 2)) / (torch.sqrt(torch.mean(want**2)) + 1e-12))


def _count_quantizers(model: Any) -> int:
    from nncf.torch.quantization.layers import BaseQuantizer

    return sum(isinstance(m, BaseQuantizer) for m in model.modules())


def _holder() -> type:
    torch = require("torch", "quantization-aware training")

    class Holder(torch.nn.Module):
        """The model as ``self.model``: what NNCF wraps and fine-tunes."""

        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: Any) -> Any:
            return self.model(x)

    return Holder


def _Holder(model: Any) -> Any:  # noqa: N802 - a class made on first use (torch is imported lazily)
    global _HOLDER
    if _HOLDER is None:
        _HOLDER = _holder()
    return _HOLDER(model)


_HOLDER: Any = None
