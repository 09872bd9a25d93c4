"""Which trial ``tune`` chooses: drops against the FP32 reference, the budget, INT8 that is slower, latency ties."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Mapping, Sequence

from .space import FALLBACK, Budget
from .trial import Trial

if TYPE_CHECKING:
    from ..benchmarks.report import Row

_HIGHER = ("fp32", "fp16")  # what an INT8 variant must beat on latency to be chosen
_MODIFICATION = {"fp32": 0, "fp16": 1, FALLBACK: 2, "int8": 3}  # among latency ties, the lowest wins


def _reference(trials: Sequence[Trial]) -> "Row | None":
    """The FP32 reference row: the benchmark's FP32 row of an unpruned trial (all unpruned trials share it)."""
    for t in trials:
        if t.ok and t.candidate.prune_ratio == 0 and t.reference is not None and t.reference.accuracy_pct is not None:
            return t.reference
    return None


def _apply_reference(trials: Sequence[Trial], reference: "Row") -> None:
    """Every trial's drop against the unpruned reference (a pruned bundle's own FP32 graph is already pruned):
    each trial's row becomes a copy of the measured one with that drop."""
    for t in trials:
        if t.ok and t.row.accuracy_pct is not None:
            t.row = dataclasses.replace(t.row, drop_pts=reference.accuracy_pct - t.row.accuracy_pct)


def _slower_int8(trials: Sequence[Trial]) -> dict[int, str]:
    """INT8 trials slower (p50) than an FP32/FP16 trial of the same target, pruning and threads -> why."""
    out: dict[int, str] = {}
    for t in trials:
        if not t.ok or t.candidate.base_precision != "int8":
            continue
        for other in trials:
            c, o = t.candidate, other.candidate
            if (other.ok and o.precision in _HIGHER
                    and (o.target, o.prune_ratio, o.threads, o.options) == (c.target, c.prune_ratio, c.threads, c.options)
                    and other.p50_ms < t.p50_ms):
                out[id(t)] = (f"INT8 is slower than {o.precision.upper()} here (p50 {t.p50_ms:.3f} vs "
                              f"{other.p50_ms:.3f} ms): never chosen")
                break
    return out


def select(trials: Sequence[Trial], budget: Budget) -> tuple[Trial | None, dict[str, Trial], dict[int, str]]:
    """(the chosen trial within ``budget``, the chosen one per target, why INT8 trials were excluded).

    The choice is the fastest p50 — but trials whose p50 95% interval overlaps the fastest one's are
    tied with it (the difference is measurement noise), and among tied trials the least modified wins:
    higher precision (fp32, fp16, int8+fallback, int8), then less pruning, then fewer non-default runtime
    options, then the lower p50. So a
    noise-level edge never picks INT8 or pruning over FP32. Trials must carry drops against the
    reference already.
    """
    excluded = _slower_int8(trials)
    eligible = [t for t in trials if t.ok and id(t) not in excluded and budget.meets(t.drop_pts, t.p50_ms)]
    per_target: dict[str, Trial] = {}
    for target in dict.fromkeys(t.candidate.target for t in eligible):
        per_target[target] = _least_modified_of_fastest([t for t in eligible if t.candidate.target == target])
    best = _least_modified_of_fastest(eligible) if eligible else None
    return best, per_target, excluded


def _least_modified_of_fastest(trials: Sequence[Trial]) -> Trial:
    """The fastest trial, or the least modified one among those whose p50 cannot be told from it."""
    fastest = min(trials, key=lambda t: (t.p50_ms, t.label))
    tied = [t for t in trials if t is fastest or _p50_overlaps(t, fastest)]
    return min(tied, key=lambda t: (_MODIFICATION[t.candidate.precision], t.candidate.prune_ratio,
                                    len(t.candidate.options), t.p50_ms, t.label))


def _p50_overlaps(t: Trial, fastest: Trial) -> bool:
    """Whether ``t``'s p50 95% interval reaches down to the fastest trial's (exact p50 when an interval is missing)."""
    a, b = t.row.p50_ci_ms, fastest.row.p50_ci_ms
    if a is None or b is None:
        return t.p50_ms == fastest.p50_ms
    return a[0] <= b[1]


def _current_best(trials: Mapping[str, Trial], budget: Budget) -> Trial | None:
    """The choice so far (for the progress line); None until the reference is measured."""
    done = list(trials.values())
    reference = _reference(done)
    if reference is None:
        return None
    _apply_reference(done, reference)
    return select(done, budget)[0]


def _distance(t: Trial, budget: Budget) -> tuple[int, float]:
    """How far a trial misses the budget: (how many of its limits it misses, the sum of relative overshoots)."""
    overs = [max(0.0, (t.drop_pts or 0.0) - budget.max_drop) / max(budget.max_drop, 1.0)]
    if budget.latency_ms is not None:
        overs.append(max(0.0, t.p50_ms - budget.latency_ms) / budget.latency_ms)
    return sum(o > 0 for o in overs), sum(overs)


def _tie_note(best: Trial, trials: Sequence[Trial], budget: Budget, excluded: Mapping[int, str]) -> str:
    """Why the chosen trial is not the one with the lowest p50, when it is not."""
    eligible = [t for t in trials if t.ok and id(t) not in excluded and budget.meets(t.drop_pts, t.p50_ms)]
    fastest = min(eligible, key=lambda t: (t.p50_ms, t.label))
    if fastest is best:
        return ""
    return (f" over {fastest.label} (p50 {fastest.p50_ms:.3f} vs {best.p50_ms:.3f} ms: the 95% intervals overlap, "
            "so the least modified of the tied variants)")
