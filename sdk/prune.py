"""Step 'prune': structured channel pruning with Torch-Pruning (DepGraph), and label-free recovery.

Channels are physically removed, so the pruned ``nn.Module`` has fewer parameters and MACs and
exports like any model. Channel counts are rounded to ``round_to`` (default 8) because odd counts
suit no kernel and turn fewer MACs into no speed. The layers that produce the model's outputs are
protected automatically. Pruning is judged by latency measured on the target (``prune_to_latency``
in ``edgeship.compress``), not by MACs.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Literal

import numpy as np

from ._lazy import require
from ._progress import progress
from .errors import CompileError, ConfigError

Importance = Literal["l1", "l2", "bn_scale", "taylor"]
_IMPORTANCES = ("l1", "l2", "bn_scale", "taylor")


@dataclass(frozen=True)
class Prune:
    """How much to prune and how.

    Give exactly one of ``ratio`` (fraction of channels removed per layer, or globally with
    ``global_pruning``) and ``latency_ms`` (the least pruning whose latency, measured on the first
    target at the first precision, meets the budget; searched by bisection up to ``max_ratio``).

    Args:
        importance: channel importance — "l1"/"l2" weight magnitude, "bn_scale" batch-norm
            scale, "taylor" first-order Taylor on a calibration batch (label-free loss).
        round_to: channel counts become multiples of this (None: no rounding).
        protect: names of modules (``model.named_modules()``) never pruned; output layers always are.
        recover: "distill" = label-free distillation of the original model's outputs into the
            pruned one on the calibration images; "none" = no recovery (or pass ``finetune`` to compress).
        distill_epochs, distill_loss, distill_lr, distill_samples: the distillation settings.
        search_steps: bisection steps of the latency search.
    """

    ratio: float | None = None
    latency_ms: float | None = None
    importance: Importance = "l2"
    global_pruning: bool = False
    round_to: int | None = 8
    protect: tuple[str, ...] = ()
    recover: Literal["none", "distill"] = "none"
    distill_epochs: int = 20
    distill_loss: Literal["kl", "mse"] = "kl"
    distill_lr: float = 1e-2
    distill_samples: int = 2000
    max_ratio: float = 0.9
    search_steps: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        if (self.ratio is None) == (self.latency_ms is None):
            raise ConfigError("Prune needs exactly one of ratio (0 <= ratio < 1) or latency_ms (> 0)")
        if self.ratio is not None and not 0.0 <= self.ratio < 1.0:
            raise ConfigError(f"Prune.ratio must be in [0, 1), got {self.ratio}")
        if self.latency_ms is not None and not self.latency_ms > 0:
            raise ConfigError(f"Prune.latency_ms must be > 0, got {self.latency_ms}")
        if self.importance not in _IMPORTANCES:
            raise ConfigError(f"Prune.importance must be one of {_IMPORTANCES}, got {self.importance!r}")
        if self.round_to is not None and (not isinstance(self.round_to, int) or self.round_to < 1):
            raise ConfigError(f"Prune.round_to must be a positive int or None, got {self.round_to!r}")
        if self.recover not in ("none", "distill"):
            raise ConfigError(f"Prune.recover must be 'none' or 'distill', got {self.recover!r}")
        if self.distill_loss not in ("kl", "mse"):
            raise ConfigError(f"Prune.distill_loss must be 'kl' or 'mse', got {self.distill_loss!r}")
        if not 0.0 < self.max_ratio < 1.0:
            raise ConfigError(f"Prune.max_ratio must be in (0, 1), got {self.max_ratio}")
        if self.distill_epochs < 1 or self.search_steps < 1 or self.distill_samples < 1:
            raise ConfigError("Prune.distill_epochs, search_steps and distill_samples must be >= 1")
        object.__setattr__(self, "protect", tuple(self.protect))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["protect"] = list(self.protect)
        return data


@dataclass
class PruneResult:
    """The pruned model and what pruning did to it."""

    model: Any
    ratio: float
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    protected: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "ratio": self.ratio,
            "params_before": self.params_before,
            "params_after": self.params_after,
            "macs_before": self.macs_before,
            "macs_after": self.macs_after,
            "macs_ratio": self.macs_after / self.macs_before if self.macs_before else None,
            "protected": self.protected,
        }


def model_fingerprint(model: Any) -> str:
    """SHA-256 over a torch model's state (names, shapes, values): identifies the unpruned source."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def count_macs_params(model: Any, example: Any) -> tuple[int, int]:
    """(MACs, parameters) of ``model`` for one ``example`` input, by Torch-Pruning's counter."""
    tp = require("torch_pruning", "pruning")
    macs, params = tp.utils.count_ops_and_params(model, example)
    return int(macs), int(params)


def output_layers(model: Any, example: Any) -> list[str]:
    """Names of the conv/linear modules that produce the model's outputs (never pruned)."""
    torch = require("torch", "pruning")
    executed: list[tuple[str, Any]] = []
    hooks = [
        module.register_forward_hook(lambda m, i, o, name=name: executed.append((name, o)))
        for name, module in model.named_modules()
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear, torch.nn.ConvTranspose2d))
    ]
    try:
        with torch.no_grad():
            out = model(example)
    finally:
        for hook in hooks:
            hook.remove()
    outs = out if isinstance(out, (tuple, list)) else [out]
    ids = {id(t) for t in outs}
    direct = [name for name, o in executed if id(o) in ids]
    if direct:
        return direct
    return [executed[-1][0]] if executed else []


def prune_model(model: Any, example: Any, config: Prune, ratio: float, calibration: np.ndarray | None = None) -> PruneResult:
    """A pruned deep copy of ``model`` at ``ratio`` (the original is left untouched).

    ``calibration`` (model-ready inputs) is needed for ``importance="taylor"``.
    """
    torch = require("torch", "pruning")
    tp = require("torch_pruning", "pruning")
    if not isinstance(model, torch.nn.Module):
        raise ConfigError(f"pruning needs a torch.nn.Module, got {type(model).__name__}")
    pruned = copy.deepcopy(model).eval()
    modules = dict(pruned.named_modules())
    unknown = [name for name in config.protect if name not in modules]
    if unknown:
        raise ConfigError(f"Prune.protect names {unknown} that are not modules of the model; "
                          f"module names look like {[n for n in list(modules)[1:6]]}")
    protected = list(dict.fromkeys(output_layers(pruned, example) + list(config.protect)))
    macs_before, params_before = count_macs_params(pruned, example)
    if ratio > 0:
        importance = {
            "l1": lambda: tp.importance.GroupMagnitudeImportance(p=1),
            "l2": lambda: tp.importance.GroupMagnitudeImportance(p=2),
            "bn_scale": lambda: tp.importance.BNScaleImportance(),
            "taylor": lambda: tp.importance.GroupTaylorImportance(),
        }[config.importance]()
        try:
            pruner = tp.pruner.MetaPruner(
                pruned,
                example,
                importance=importance,
                pruning_ratio=ratio,
                global_pruning=config.global_pruning,
                ignored_layers=[modules[name] for name in protected],
                round_to=config.round_to,
            )
            if config.importance == "taylor":
                _taylor_gradients(pruned, calibration)
            pruner.step()
        except ConfigError:
            raise
        except Exception as exc:
            raise CompileError(f"Torch-Pruning could not prune {type(model).__name__}: {type(exc).__name__}: {exc}") from exc
        pruned.zero_grad(set_to_none=True)
        try:
            with torch.no_grad():
                pruned(example)
        except Exception as exc:
            raise CompileError(f"the pruned {type(model).__name__} no longer runs ({exc}); "
                               "protect the layer named in the error with Prune(protect=[...])") from exc
    macs_after, params_after = count_macs_params(pruned, example)
    return PruneResult(pruned, ratio, params_before, params_after, macs_before, macs_after, protected)


def _taylor_gradients(model: Any, calibration: np.ndarray | None) -> None:
    """Gradients of a label-free loss (cross-entropy against the model's own predictions)."""
    torch = require("torch", "pruning")
    if calibration is None:
        raise ConfigError("importance='taylor' needs calibration data")
    batch = torch.from_numpy(calibration[:64])
    model.zero_grad(set_to_none=True)
    out = model(batch)
    out = out[0] if isinstance(out, (tuple, list)) else out
    logits = out.flatten(1)
    loss = torch.nn.functional.cross_entropy(logits, logits.detach().argmax(1))
    loss.backward()


def distill(student: Any, teacher: Any, inputs: np.ndarray, config: Prune, show_progress: bool = True) -> Any:
    """Label-free recovery: train ``student`` to match ``teacher``'s outputs on ``inputs`` (seeded)."""
    torch = require("torch", "distillation")
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    x = torch.from_numpy(np.ascontiguousarray(inputs))
    teacher = teacher.eval()
    with torch.no_grad():
        targets = torch.cat([_first(teacher(chunk)) for chunk in x.split(256)])
    optimizer = torch.optim.Adam(student.parameters(), lr=config.distill_lr)
    batches_per_epoch = -(-len(x) // 64)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.distill_lr,
                                                   total_steps=config.distill_epochs * batches_per_epoch)
    student.train()
    with progress(show_progress) as bar:
        task = bar.add_task(f"distil into pruned model ({config.distill_loss})", total=config.distill_epochs)
        for _ in range(config.distill_epochs):
            for index in torch.randperm(len(x), generator=generator).split(64):
                optimizer.zero_grad()
                out = _first(student(x[index]))
                if config.distill_loss == "kl":
                    loss = torch.nn.functional.kl_div(
                        torch.log_softmax(out.flatten(1), 1), torch.softmax(targets[index].flatten(1), 1),
                        reduction="batchmean")
                else:
                    loss = torch.nn.functional.mse_loss(out, targets[index])
                loss.backward()
                optimizer.step()
                schedule.step()
            bar.advance(task)
    _reestimate_batchnorm(student, x)
    return student.eval()


def _reestimate_batchnorm(model: Any, x: Any) -> None:
    """Exact batch-norm statistics for the final weights (running averages lag behind training)."""
    torch = require("torch", "distillation")
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches
    model.train()
    with torch.no_grad():
        for chunk in x.split(256):
            model(chunk)
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
    model.eval()


def _first(out: Any) -> Any:
    return out[0] if isinstance(out, (tuple, list)) else out
