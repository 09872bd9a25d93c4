"""The outcome of a sweep: every trial judged and chosen, as a ``TuneResult`` and an edgeship ``Report``."""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ..errors import CompileError, TuneBudgetError
from .executors import Job
from .selection import _apply_reference, _distance, _reference, _tie_note, select
from .space import Budget
from .trial import Trial, TuneResult

if TYPE_CHECKING:
    from ..benchmarks.report import Report, Row

def _stats(trials: Sequence[Trial], planned: int, wall_s: float) -> dict[str, Any]:
    return {"trials": planned, "finished": len(trials), "compiled": sum(t.compiled for t in trials),
            "measured": sum(not t.cached and t.measure_s is not None for t in trials),
            "cached": sum(t.cached for t in trials), "failed": sum(not t.ok for t in trials),
            "retried": sum(t.attempts > 1 for t in trials), "wall_s": wall_s}


def _assemble(trials: list[Trial], budget: Budget, settings: dict[str, Any], stats: dict[str, Any]) -> TuneResult:
    """Judge every trial against the reference and the budget, choose, and build the report."""
    reference = _reference(trials)
    if reference is None:
        errors = "; ".join(t.summary() for t in trials if t.candidate.prune_ratio == 0)
        raise CompileError(f"no FP32 reference: every unpruned trial failed, so no drop can be judged: {errors}")
    _apply_reference(trials, reference)
    best, per_target, excluded = select(trials, budget)
    report = _report(trials, reference, budget, settings, stats, best, per_target, excluded, complete=True)
    front_rows = {id(r) for r in report.pareto_front()}
    # the report holds the reference row, then one row per trial in order
    pareto = sorted((t for t, r in zip(trials, report.rows[1:]) if t.ok and id(r) in front_rows),
                    key=lambda t: t.p50_ms)
    if best is None:
        measured = [t for t in trials if t.ok]
        nearest = sorted(measured, key=lambda t: (id(t) in excluded, *_distance(t, budget), t.p50_ms))[:3]
        failed = len(trials) - len(measured)
        raise TuneBudgetError(
            f"no variant meets the budget ({budget.describe()}, drop vs the FP32 reference at "
            f"{reference.accuracy_pct:.2f}%) among {len(trials)} trials ({len(measured)} measured, {failed} failed); "
            "nearest: " + "; ".join(t.summary() + (f" [{excluded[id(t)]}]" if id(t) in excluded else "") for t in nearest),
            nearest, report)
    return TuneResult(best=best, best_by_target=per_target, trials=trials, pareto=pareto, report=report,
                      budget=budget, stats=stats)


def _report(trials: Sequence[Trial], reference: "Row", budget: Budget, settings: dict[str, Any],
            stats: dict[str, Any], best: Trial | None, per_target: Mapping[str, Trial], excluded: Mapping[int, str],
            complete: bool) -> "Report":
    """An edgeship Report: the reference row, then one row per trial (failed ones flagged, never dropped)."""
    from ..benchmarks.evaluate import environment
    from ..benchmarks.report import Report, Row

    ref = dataclasses.replace(reference, variant="reference", flags=[], recommended=False)
    rows = [ref]
    chosen_ids = {id(t) for t in per_target.values()}
    for t in trials:
        if t.ok:
            row = t.row
            flags = []
            if t is best:
                flags.append("chosen" + _tie_note(t, trials, budget, excluded))
            if row.drop_pts is not None and row.drop_pts > budget.max_drop + 1e-9:
                flags.append(f"drop {row.drop_pts:.2f} pts > budget {budget.max_drop:g}")
            if budget.latency_ms is not None and row.p50_ms > budget.latency_ms:
                flags.append(f"p50 {row.p50_ms:.3f} ms > budget {budget.latency_ms:g}")
            if id(t) in excluded:
                flags.append(excluded[id(t)])
            if t.fp_layers:
                flags.append(f"{t.fp_layers} layers left in FP")
            row = dataclasses.replace(row, variant=t.candidate.variant, precision=t.candidate.precision,
                                      recommended=id(t) in chosen_ids, flags=flags)
            t.row = row  # the trial reports its row as the sweep judged it (the cached measurement is untouched)
        else:
            nan = float("nan")
            row = Row(variant=t.candidate.variant, target=t.candidate.target, precision=t.candidate.precision,
                      accuracy_pct=None, drop_pts=None, agreement_pct=None, p50_ms=nan, p90_ms=nan, p99_ms=nan,
                      throughput=nan, size_mb=None, threads=t.candidate.threads,
                      options=dict(t.candidate.options) or None,
                      flags=[f"failed after {t.attempts} attempt{'s' if t.attempts != 1 else ''}: {t.error}"])
        t.notes = list(row.flags)
        rows.append(row)
    report = Report(rows=rows, metric=str(settings["metric"]), settings=dict(settings), environment=environment(),
                    complete=complete)
    report.link_pruned_variants()
    front = report.pareto_front()
    report.settings.update(stats=stats, chosen=best.label if best is not None else None,
                           fastest_by_target={k: v.label for k, v in per_target.items()},
                           pareto=[f"{r.variant} {r.target} {r.precision}" for r in front],
                           trials=[_trial_info(t) for t in trials])
    report.warnings = report.precision_warnings()
    report.warnings += [f"{t.label} failed after {t.attempts} attempts: {t.error}" for t in trials if not t.ok]
    if not complete:
        report.warnings.insert(0, f"interrupted after {len(trials)} of {stats['trials']} trials: the report is incomplete")
    return report


def _trial_info(t: Trial) -> dict[str, Any]:
    """Per-trial bookkeeping for the report's settings: where and how it ran (Ray: wall-clock submit,
    task start and end, receipt — what the overhead of the cluster is computed from)."""
    return {"label": t.label, "status": t.status, "key": t.key[:16], "cached": t.cached, "attempts": t.attempts,
            "compile_s": t.compile_s, "measure_s": t.measure_s, "worker_s": t.worker_s,
            "roundtrip_s": t.roundtrip_s, "host": t.host, "pid": t.pid, **t.timeline}


def _partial_report(trials: Mapping[str, Trial], jobs: Sequence[Job], budget: Budget, settings: dict[str, Any],
                    started: float) -> "Report | None":
    """The report of the trials finished before an interrupt (None when no reference was measured yet)."""
    ordered = [trials[j.key] for j in jobs if j.key in trials]
    reference = _reference(ordered)
    if reference is None:
        return None
    _apply_reference(ordered, reference)
    best, per_target, excluded = select(ordered, budget)
    stats = _stats(ordered, len(jobs), time.perf_counter() - started)
    return _report(ordered, reference, budget, settings, stats, best, per_target, excluded, complete=False)
