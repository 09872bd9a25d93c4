"""Step 'prune': structured channel pruning with Torch-Pruning (DepGraph), and label-free recovery.

Channels are physically removed, so the pruned ``nn.Module`` has fewer parameters and MACs and
exports like any model. Channel counts are rounded to ``round_to`` (default 8) because odd counts
suit no kernel and turn fewer MACs into no speed. The layers that produce the model's outputs are
protected automatically. Pruning is judged by latency measured on the target (``prune_to_latency``
in ``edgeship.compress``), not by MACs.

A torchvision detector is pruned in its backbone (and its neck's inner channels): its heads are kept
whole, and so are the feature-map channels they read, found through the dependency graph. Feature-map
sizes do not change, so anchors stay valid.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from .._lazy import require
from .._progress import progress
from ..errors import CompileError, ConfigError

Importance = Literal["l1", "l2", "bn_scale", "taylor"]
_IMPORTANCES = ("l1", "l2", "bn_scale", "taylor")
# What a model output is, for label-free losses: class logits over the last dim, independent per-class logits, values.
OutputKind = Literal["softmax", "sigmoid", "regression"]


@dataclass(frozen=True)
class Prune:
    """How much to prune and how.

    Give exactly one of ``ratio`` (fraction of channels removed per layer, or globally with
    ``global_pruning``) and ``latency_ms`` (the least pruning whose latency, measured on the first
    target at the first precision, meets the budget: a measured grid up to ``max_ratio``, then bisection, a ratio
    meeting the budget only when its p50's 95 % interval does).

    Args:
        importance: channel importance — "l1"/"l2" weight magnitude, "bn_scale" batch-norm
            scale, "taylor" first-order Taylor on a calibration batch (label-free loss).
        round_to: channel counts become multiples of this (None: no rounding).
        protect: names of modules (``model.named_modules()``) never pruned; output layers always are,
            and so are a detector's heads and the feature-map channels they read.
        recover: "distill" = label-free distillation of the original model's outputs into the
            pruned one on the calibration images; "none" = no recovery (or pass ``finetune`` to compress).
        distill_epochs, distill_loss, distill_lr, distill_samples: the distillation settings.
        search_grid: ratios measured first, evenly over [0, max_ratio] (latency is not monotonic in the ratio).
        search_steps: bisection steps of the latency search between the least grid ratio that meets the budget
            and the one below it.
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
    search_grid: int = 5
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
        if not isinstance(self.search_grid, int) or self.search_grid < 2:
            raise ConfigError(f"Prune.search_grid must be an int >= 2 (0 and max_ratio at least), got {self.search_grid!r}")
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
    scope: str = "whole model"  # what the MACs and parameters were counted on

    def summary(self) -> dict[str, Any]:
        return {
            "ratio": self.ratio,
            "params_before": self.params_before,
            "params_after": self.params_after,
            "macs_before": self.macs_before,
            "macs_after": self.macs_after,
            "macs_ratio": self.macs_after / self.macs_before if self.macs_before else None,
            "protected": self.protected,
            "scope": self.scope,
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

    ``calibration`` (model-ready inputs) is needed for ``importance="taylor"``. A torchvision detector
    comes back as a detector whose backbone is pruned and whose heads are untouched; its MACs are
    counted on :func:`edgeship.tasks.detection.prunable_view` (single-stage: the whole exported dense model).
    """
    from ..tasks.detection import detector_family

    if detector_family(model) is not None:
        return _prune_detector(model, example, config, ratio, calibration)
    return _prune_module(model, example, config, ratio, calibration)


def _prune_detector(model: Any, example: Any, config: Prune, ratio: float, calibration: np.ndarray | None) -> PruneResult:
    """Prune a detector's backbone through its prunable view; the heads and the feature maps' shapes stay."""
    torch = require("torch", "pruning")
    from ..tasks.detection import prunable_view

    if model.training:
        raise ConfigError("the detector is in training mode; call model.eval() first")
    view, frozen, kinds = prunable_view(model)
    with torch.no_grad():
        before = [tuple(f.shape) for f in _features(view.backbone(example))]
    result = _prune_module(view, example, config, ratio, calibration, frozen=frozen, kinds=kinds)
    with torch.no_grad():
        after = [tuple(f.shape) for f in _features(result.model.backbone(example))]
    if after != before:
        raise CompileError(f"pruning changed the feature maps the heads of {type(model).__name__} read: "
                           f"{before} -> {after}; protect the layers that produce them with Prune(protect=[...])")
    # the detector again, its backbone and head replaced by the pruned view's (the memo maps them; the rest is copied)
    memo = {id(getattr(model, name)): module for name, module in result.model.named_children()}
    result.model = copy.deepcopy(model, memo).eval()
    result.scope = ("backbone + head (the exported dense model)" if frozen == "head"
                    else "backbone + RPN head (the ROI heads are unchanged and not counted)")
    return result


def _features(out: Any) -> list[Any]:
    return list(out.values()) if isinstance(out, dict) else [out]


def feeding_layers(model: Any, example: Any, consumer: str) -> list[str]:
    """Names of the conv/linear layers outside module ``consumer`` whose output channels it reads.

    Pruning any of them would change ``consumer``'s input channels (its weights), so keeping ``consumer``
    whole means protecting them too; found through Torch-Pruning's dependency graph, which follows
    residual additions, concatenations and depthwise convolutions back to every layer that owns a channel.
    """
    torch = require("torch", "pruning")
    tp = require("torch_pruning", "pruning")
    layers = (torch.nn.Conv2d, torch.nn.Linear, torch.nn.ConvTranspose2d)  # the layers that own channels
    inside = set(model.get_submodule(consumer).modules())
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    found: set[Any] = set()
    for module in inside:
        pruner = graph.get_pruner_of_module(module) if module in graph.module2node else None
        channels = pruner.get_in_channels(module) if pruner is not None else None
        if channels is None:
            continue
        for dep, _ in graph.get_pruning_group(module, pruner.prune_in_channels, list(range(channels))):
            if graph.is_out_channel_pruning_fn(dep.handler) and dep.target.module not in inside:
                found.add(dep.target.module)
    return [name for name, m in model.named_modules() if m in found and isinstance(m, layers)]


def _prune_module(model: Any, example: Any, config: Prune, ratio: float, calibration: np.ndarray | None,
                  frozen: str | None = None, kinds: tuple[OutputKind, ...] | None = None) -> PruneResult:
    """Prune a copy of a plain module; ``frozen`` names a submodule kept whole (its input and output channels)."""
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
    outputs = output_layers(pruned, example)
    if frozen is not None:
        inside = [n for n in outputs if n.startswith(frozen + ".")]  # the frozen module covers them
        outputs = [frozen] + [n for n in outputs if n not in inside] + feeding_layers(pruned, example, frozen)
    protected = list(dict.fromkeys(outputs + list(config.protect)))
    kept = {name: p.shape for name, p in modules[frozen].named_parameters()} if frozen is not None else {}
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
                _taylor_gradients(pruned, calibration, kinds)
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
        changed = [n for n, p in modules[frozen].named_parameters() if p.shape != kept[n]] if frozen is not None else []
        if changed:
            raise CompileError(f"pruning changed {frozen}'s parameters {changed}, which must stay whole")
    macs_after, params_after = count_macs_params(pruned, example)
    return PruneResult(pruned, ratio, params_before, params_after, macs_before, macs_after, protected)


def _taylor_gradients(model: Any, calibration: np.ndarray | None, kinds: tuple[OutputKind, ...] | None = None) -> None:
    """Gradients of a label-free loss: the model's own predictions as targets (cross-entropy for class
    logits, binary cross-entropy for per-class logits), over up to 64 samples in chunks of 16."""
    torch = require("torch", "pruning")
    F = torch.nn.functional
    if calibration is None:
        raise ConfigError("importance='taylor' needs calibration data")
    batch = torch.from_numpy(calibration[:64])
    model.zero_grad(set_to_none=True)
    for chunk in batch.split(16):
        outs = _outputs(model(chunk), kinds)
        loss = 0.0
        for out, kind in zip(outs, kinds or ("softmax",)):
            if kinds is None:
                logits = out.flatten(1)
                loss = loss + F.cross_entropy(logits, logits.detach().argmax(1))
            elif kind == "softmax":
                logits = out.flatten(0, -2)
                loss = loss + F.cross_entropy(logits, logits.detach().argmax(1))
            elif kind == "sigmoid":
                loss = loss + F.binary_cross_entropy_with_logits(out, (out.detach() > 0).float())
        (loss * (len(chunk) / len(batch))).backward()  # chunks add up to the mean over the batch


def distill(student: Any, teacher: Any, inputs: np.ndarray, config: Prune, show_progress: bool = True) -> Any:
    """Label-free recovery: train ``student`` to match ``teacher``'s outputs on ``inputs`` (seeded).

    A detector is distilled on its prunable view's outputs (single-stage: the dense head outputs; two-stage:
    the feature maps and the RPN's outputs): "kl" matches class logits by KL divergence, per-class
    logits by binary cross-entropy and box regressions by MSE; "mse" uses MSE for all.
    """
    from ..tasks.detection import detector_family, prunable_view

    kinds = None
    if detector_family(student) is not None:
        (student_view, _, kinds), (teacher_view, _, _) = prunable_view(student), prunable_view(teacher)
        _distill(student_view, teacher_view, inputs, config, kinds, show_progress)
        return student.eval()
    return _distill(student, teacher, inputs, config, kinds, show_progress)


def _distill(student: Any, teacher: Any, inputs: np.ndarray, config: Prune, kinds: tuple[OutputKind, ...] | None,
             show_progress: bool) -> Any:
    """The distillation loop: the teacher's outputs once, then epochs of seeded minibatches of 64."""
    torch = require("torch", "distillation")
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    x = torch.from_numpy(np.ascontiguousarray(inputs))
    teacher = teacher.eval()
    with torch.no_grad():
        chunks = [_outputs(teacher(chunk), kinds) for chunk in x.split(256)]
    targets = [torch.cat(parts) for parts in zip(*chunks)]
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
                outs = _outputs(student(x[index]), kinds)
                loss = sum(_distill_loss(out, target[index], kind, config.distill_loss)
                           for out, target, kind in zip(outs, targets, kinds or (None,)))
                loss.backward()
                optimizer.step()
                schedule.step()
            bar.advance(task)
    torch.optim.swa_utils.update_bn(x.split(256), student)  # exact statistics: running averages lag behind training
    return student.eval()


def _distill_loss(out: Any, target: Any, kind: OutputKind | None, loss: str) -> Any:
    """One output's distillation loss; ``kind`` None = a classifier's output, as a whole (flattened)."""
    F = require("torch.nn.functional", "distillation")
    if loss == "mse" or kind == "regression":
        return F.mse_loss(out, target)
    if kind is None:
        return F.kl_div(F.log_softmax(out.flatten(1), 1), F.softmax(target.flatten(1), 1), reduction="batchmean")
    if kind == "softmax":  # per anchor, over the classes
        out, target = out.flatten(0, -2), target.flatten(0, -2)
        return F.kl_div(F.log_softmax(out, 1), F.softmax(target, 1), reduction="batchmean")
    return F.binary_cross_entropy_with_logits(out, target.sigmoid())


def _outputs(out: Any, kinds: tuple[OutputKind, ...] | None) -> list[Any]:
    """The outputs a label-free loss looks at: all of them where their kinds are known, else the first."""
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    return outs if kinds is not None else outs[:1]
