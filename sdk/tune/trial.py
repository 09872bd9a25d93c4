"""What ``tune`` measured: a ``Trial`` per candidate (its row, or why it failed) and the ``TuneResult``."""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from .cache import TrialCache
from .space import Budget, Candidate

if TYPE_CHECKING:
    from ..benchmarks.report import Report, Row
    from ..bundle.folder import Bundle

_TIMELINE = ("submitted_at", "task_started_at", "task_finished_at", "received_at")


@dataclass
class Trial:
    """One candidate's outcome: the measured row (accuracy, drop, latency) or why it failed."""

    candidate: Candidate
    status: str  # "ok" | "failed"
    row: "Row | None"
    reference: "Row | None" = None  # the benchmark's FP32 row of the same bundle's source graph
    error: str | None = None
    attempts: int = 1
    cached: bool = False
    compiled: bool = False
    compile_s: float | None = None
    measure_s: float | None = None
    worker_s: float | None = None
    roundtrip_s: float | None = None
    host: str | None = None
    pid: int | None = None
    bundle_path: Path | None = None
    fp_layers: int | None = None
    key: str = ""
    timeline: dict[str, float] = field(default_factory=dict)  # Ray: submitted_at, task_started_at, ... (unix s)
    notes: list[str] = field(default_factory=list)  # why it was or was not chosen

    @property
    def ok(self) -> bool:
        return self.status == "ok" and self.row is not None

    @property
    def label(self) -> str:
        return self.candidate.label

    @property
    def p50_ms(self) -> float | None:
        return self.row.p50_ms if self.row is not None else None

    @property
    def accuracy_pct(self) -> float | None:
        return self.row.accuracy_pct if self.row is not None else None

    @property
    def drop_pts(self) -> float | None:
        return self.row.drop_pts if self.row is not None else None

    @property
    def bundle(self) -> "Bundle":
        """The compiled bundle this trial measured (in the cache folder)."""
        from ..bundle.folder import Bundle

        if self.bundle_path is None:
            raise ConfigError(f"trial {self.label} has no bundle: it {self.status} ({self.error})")
        return Bundle.open(self.bundle_path)

    def save(self, path: str | os.PathLike) -> "Bundle":
        """Copy this trial's bundle to ``path`` (written atomically, verified first); returns it."""
        from ..bundle.folder import Bundle, atomic_folder

        source = self.bundle
        source.verify()
        with atomic_folder(Path(path)) as tmp:
            shutil.copytree(source.path, tmp, dirs_exist_ok=True)
        return Bundle.open(path)

    def summary(self) -> str:
        if not self.ok:
            return f"{self.label}: failed ({self.error})"
        return (f"{self.label}: {_fmt(self.accuracy_pct, '.2f')}% (drop {_fmt(self.drop_pts, '+.2f')} pts), "
                f"p50 {_fmt(self.p50_ms, '.3f')} ms")

    @classmethod
    def from_record(cls, candidate: Candidate, record: dict[str, Any], cache: TrialCache, cached: bool) -> "Trial":
        """Rebuild a trial from its JSON record (rows parsed by the report's own reader)."""
        from ..benchmarks.report import REPORT_SCHEMA_VERSION, Report

        row = reference = None
        bundle_path = None
        if record.get("status") == "ok" and record.get("rows"):
            parsed = Report.from_dict({"schema_version": REPORT_SCHEMA_VERSION,
                                       "rows": [record["rows"]["variant"], record["rows"]["reference"]]})
            bundle_path = cache.bundle_path(record["compile_key"])
            here = str(bundle_path.resolve())  # where it lives now (a Ray worker measured it elsewhere)
            row, reference = (replace(r, bundle=here) for r in parsed.rows)
        return cls(candidate=candidate, status=record.get("status", "failed"), row=row, reference=reference,
                   error=record.get("error"), attempts=int(record.get("attempts", 1)), cached=cached,
                   compiled=bool(record.get("compiled")) and not cached, compile_s=record.get("compile_s"),
                   measure_s=record.get("measure_s"), worker_s=record.get("worker_s"),
                   roundtrip_s=record.get("roundtrip_s"), host=record.get("host"), pid=record.get("pid"),
                   bundle_path=bundle_path,
                   fp_layers=record.get("fp_layers"), key=record.get("key", ""),
                   timeline={k: record[k] for k in _TIMELINE if record.get(k) is not None})


@dataclass
class TuneResult:
    """What ``tune`` measured and chose.

    Attributes:
        best: the chosen trial (``best.bundle``, ``best.row``, ``best.save(path)``).
        best_by_target: per target, the fastest trial within the budget.
        trials: every trial, in sweep order (failed ones included).
        pareto: the trials no other beats on both accuracy and p50 latency, fastest first.
        report: an edgeship Report with every trial (``report.save(folder)``).
        stats: counts (trials, compiled, measured, cached, failed) and the wall time.
    """

    best: Trial
    best_by_target: dict[str, Trial]
    trials: list[Trial]
    pareto: list[Trial]
    report: "Report"
    budget: Budget
    stats: dict[str, Any]

    @property
    def bundle(self) -> "Bundle":
        """The chosen bundle."""
        return self.best.bundle

    def save(self, folder: str | os.PathLike) -> Path:
        """Write the chosen bundle to ``folder/best.edgeship`` and the report to ``folder/report``."""
        folder = Path(folder)
        self.best.save(folder / "best.edgeship")
        self.report.save(folder / "report")
        return folder

    def summary(self) -> str:
        lines = [f"chosen: {self.best.summary()} — the fastest of {len(self.trials)} trials within {self.budget.describe()}"]
        lines += [f"  fastest on {t}: {trial.summary()}" for t, trial in self.best_by_target.items() if trial is not self.best]
        return "\n".join(lines)


def _fmt(v: float | None, spec: str) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)
