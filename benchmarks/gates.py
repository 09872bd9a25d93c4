"""Release gates: limits a report must meet, and the check that names each row and gate that fails.

Units follow the report's rows, except ``min_agreement``, which is a *fraction* (0.98 = 98 % of samples
pick the same class as the reference), as in ``edgeship gate --min-agreement 0.98``; rows store
agreement in percent and the check converts. A value above 1 is refused rather than guessed at.

A gate never trusts a row blindly: every report must be complete, every row must carry the SHA-256
of its bundle's manifest, and the bundle must be here (``require_bundles``, the default) so that its
manifest and the row's artifact files are hashed again; a mismatch fails the gate. The figures that
follow from others are recomputed (a row's drop from its variant's reference row), each variant has
exactly one reference row, FP32 on a reference target, and every artifact of a bundle whose target
was available where the report was measured must have its row (a deleted failing row fails). Numbers
a hand could improve (accuracy, agreement, latency) are protected by the report's signature:
``Report.load(path, public_key=...)``, ``edgeship gate --verify PUB``. Latency and accuracy limits
apply to measured variants, not to the reference row. A value that is missing or NaN where a gate
needs it fails that gate.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BundleIntegrityError, ConfigError
from ..measure.stats import min_runs_for_quantile

if TYPE_CHECKING:
    from .report import Report

REPORT_ROW = "(report)"  # the row name of checks about the report as a whole


@dataclass(frozen=True)
class Tolerance:
    """How much worse than the baseline a row may be before the regression gate fails it.

    Args:
        accuracy_pts: accuracy and agreement may fall by this many percentage points.
        latency_pct: p50 and p99 may grow, and throughput fall, by this many percent.
    """

    accuracy_pts: float = 0.5
    latency_pct: float = 10.0

    def __post_init__(self) -> None:
        for name in ("accuracy_pts", "latency_pct"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"Tolerance.{name} must be a finite number >= 0, got {value!r}")


@dataclass(frozen=True)
class Gates:
    """Limits for a release. ``None`` leaves a gate out; integrity and completeness are always checked.

    Args:
        max_drop: accuracy drop against the reference, in percentage points (1.0 = one point).
        max_relative_drop: accuracy drop in percent of the reference's accuracy (1.0 = 1 %).
        max_p50_ms, max_p99_ms: latency per call, in milliseconds.
        min_throughput: samples per second (one stream).
        min_agreement: top-1 agreement with the reference as a fraction in (0, 1] (0.98 = 98 %).
        baseline: a report (or its path) that no row may be worse than, within ``regression_tolerance``.
        regression_tolerance: how much worse than the baseline is still a pass.
        require_bundles: fail rows whose bundle is not on this machine (the default); False checks the
            recorded hashes where the bundle is reachable and notes which were not re-hashed.
    """

    max_drop: float | None = None
    max_relative_drop: float | None = None
    max_p50_ms: float | None = None
    max_p99_ms: float | None = None
    min_throughput: float | None = None
    min_agreement: float | None = None
    baseline: "Report | str | os.PathLike | None" = None
    regression_tolerance: Tolerance = field(default_factory=Tolerance)
    require_bundles: bool = True

    def __post_init__(self) -> None:
        for name in ("max_drop", "max_relative_drop", "max_p50_ms", "max_p99_ms", "min_throughput", "min_agreement"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"gate {name} must be a finite number, got {value!r}")
            if name.endswith("_ms") or name == "min_throughput":
                if value <= 0:
                    raise ConfigError(f"gate {name} must be > 0, got {value}")
        if self.min_agreement is not None and not 0 < self.min_agreement <= 1:
            raise ConfigError(f"min_agreement is a fraction in (0, 1] (0.98 = 98% agreement), got {self.min_agreement}")
        if self.max_relative_drop is not None and self.max_relative_drop < 0:
            raise ConfigError(f"gate max_relative_drop must be >= 0, got {self.max_relative_drop}")
        if isinstance(self.regression_tolerance, dict):
            object.__setattr__(self, "regression_tolerance", Tolerance(**self.regression_tolerance))
        elif not isinstance(self.regression_tolerance, Tolerance):
            raise ConfigError(f"regression_tolerance must be a Tolerance or a dict, got {self.regression_tolerance!r}")

    def to_dict(self) -> dict[str, Any]:
        """The limits as plain data (the baseline as its path, or 'in memory')."""
        out = {k: getattr(self, k) for k in ("max_drop", "max_relative_drop", "max_p50_ms", "max_p99_ms",
                                             "min_throughput", "min_agreement", "require_bundles")}
        out["baseline"] = None if self.baseline is None else (
            os.fspath(self.baseline) if isinstance(self.baseline, (str, os.PathLike)) else "in memory")
        out["regression_tolerance"] = {"accuracy_pts": self.regression_tolerance.accuracy_pts,
                                       "latency_pct": self.regression_tolerance.latency_pct}
        return out


@dataclass(frozen=True)
class GateCheck:
    """One gate applied to one row: what was measured, the limit, and whether it passed."""

    row: str
    gate: str
    measured: float | str | None
    limit: float | str | None
    passed: bool
    detail: str = ""

    @property
    def measured_text(self) -> str:
        return _text(self.measured)

    @property
    def limit_text(self) -> str:
        return _text(self.limit)

    def __str__(self) -> str:
        verdict = "pass" if self.passed else "FAIL"
        text = f"{verdict}: {self.row}: {self.gate}: measured {self.measured_text}, limit {self.limit_text}"
        return text + (f" ({self.detail})" if self.detail else "")


@dataclass
class GateResult:
    """Every check made; ``passed`` only when none failed. ``notes`` say what could not be checked."""

    checks: list[GateCheck] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failures(self) -> list[GateCheck]:
        return [c for c in self.checks if not c.passed]

    def __bool__(self) -> bool:
        return self.passed

    def summary(self) -> str:
        """One line per failure (or a pass line), then the notes."""
        if self.passed:
            lines = [f"all {len(self.checks)} gate checks passed"]
        else:
            lines = [f"{len(self.failures)} of {len(self.checks)} gate checks failed:"]
            lines += [f"  {c}" for c in self.failures]
        return "\n".join(lines + [f"note: {n}" for n in self.notes])

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "notes": self.notes,
                "checks": [{"row": c.row, "gate": c.gate, "measured": c.measured, "limit": c.limit,
                            "passed": c.passed, "detail": c.detail} for c in self.checks]}


def _text(v: float | str | None) -> str:
    if v is None:
        return "not measured"
    if isinstance(v, float):
        return format(v, ".4g")
    return str(v)


def _le(value: float | None, limit: float) -> bool:
    """value <= limit, where a missing or NaN value fails."""
    return value is not None and not math.isnan(value) and value <= limit


def _ge(value: float | None, limit: float) -> bool:
    return value is not None and not math.isnan(value) and value >= limit


def check(report: "Report", gates: Gates) -> GateResult:
    """Apply ``gates`` to ``report``: completeness, bundle integrity, then each limit on each measured row."""
    if not isinstance(gates, Gates):
        raise ConfigError(f"check needs a Gates, got {type(gates).__name__}")
    result = GateResult()
    add = result.checks.append
    add(GateCheck(REPORT_ROW, "complete", "complete" if report.complete else f"incomplete ({len(report.rows)} rows)",
                  "complete", report.complete, "" if report.complete else "the run was interrupted; rows are missing"))
    measured = [r for r in report.rows if not r.is_reference]
    add(GateCheck(REPORT_ROW, "rows", float(len(measured)), "at least 1 measured variant", bool(measured)))
    _check_integrity(report, gates, result)
    references = _check_references(report, result)
    _check_coverage(report, result)
    for r in measured:
        ref = references.get(r.variant)
        drop = _drop(r, ref)
        if r.drop_pts is not None or drop is not None:
            consistent = drop is not None and r.drop_pts is not None and abs(drop - r.drop_pts) <= 1e-6
            add(GateCheck(r.label, "drop consistent", r.drop_pts, drop, consistent,
                          "recorded drop vs the reference row's accuracy minus this row's"))
        if gates.max_drop is not None:
            add(GateCheck(r.label, "max_drop", drop, gates.max_drop, _le(drop, gates.max_drop),
                          "accuracy points below the reference" if drop is not None else "no labels: no accuracy"))
        if gates.max_relative_drop is not None:
            rel = None
            if ref is not None and ref.accuracy_pct and drop is not None:
                rel = 100.0 * drop / ref.accuracy_pct
            add(GateCheck(r.label, "max_relative_drop", rel, gates.max_relative_drop, _le(rel, gates.max_relative_drop),
                          "% of the reference's accuracy"))
        if gates.max_p50_ms is not None:
            add(GateCheck(r.label, "max_p50_ms", r.p50_ms, gates.max_p50_ms, _le(r.p50_ms, gates.max_p50_ms)))
        if gates.max_p99_ms is not None:
            bounded = r.p99_ci_ms is None or math.isfinite(r.p99_ci_ms[1])
            add(GateCheck(r.label, "max_p99_ms", r.p99_ms, gates.max_p99_ms,
                          bounded and _le(r.p99_ms, gates.max_p99_ms),
                          "" if bounded else f"not enough runs: {r.runs} timed calls cannot bound a p99 "
                          f"(at least {min_runs_for_quantile(0.99)} are needed; bench --runs)"))
        if gates.min_throughput is not None:
            add(GateCheck(r.label, "min_throughput", r.throughput, gates.min_throughput,
                          _ge(r.throughput, gates.min_throughput), "samples/s"))
        if gates.min_agreement is not None:
            frac = None if r.agreement_pct is None else r.agreement_pct / 100.0
            add(GateCheck(r.label, "min_agreement", frac, gates.min_agreement, _ge(frac, gates.min_agreement),
                          "fraction of samples with the reference's top-1"))
    if gates.baseline is not None:
        _check_regression(report, gates, result)
    return result


REFERENCE_TARGETS = ("torch", "onnxruntime-cpu")  # where benchmark measures the FP32 reference


def _drop(row: Any, ref: Any) -> float | None:
    """The row's accuracy drop recomputed from its reference row (None without both accuracies)."""
    if ref is None or ref.accuracy_pct is None or row.accuracy_pct is None:
        return None
    return float(ref.accuracy_pct) - float(row.accuracy_pct)


def _check_references(report: "Report", result: GateResult) -> dict[str, Any]:
    """Exactly one FP32 reference row per variant, on a reference target; returns variant -> that row."""
    found: dict[str, list[Any]] = {}
    for r in report.rows:
        found.setdefault(r.variant, [])
        if r.is_reference:
            found[r.variant].append(r)
    references = {}
    for variant, refs in found.items():
        ok = len(refs) == 1 and refs[0].target in REFERENCE_TARGETS and refs[0].precision == "fp32"
        measured = ", ".join(f"{r.target} {r.precision}" for r in refs) or "none"
        result.checks.append(GateCheck(f"{variant} (ref)", "reference", measured,
                                       f"one fp32 row on {' or '.join(REFERENCE_TARGETS)}", ok,
                                       "" if ok else "the reference every drop is measured against is not unique"))
        if len(refs) == 1:
            references[variant] = refs[0]
    return references


def _check_coverage(report: "Report", result: GateResult) -> None:
    """Every artifact of a reachable bundle has a measured row, where its target was available to the bench."""
    from ..bundle.folder import Bundle

    available = set((report.environment or {}).get("backends") or {})
    chosen = (report.settings or {}).get("targets")
    rows = {(r.bundle, r.target, r.precision) for r in report.rows if not r.is_reference}
    for path in sorted({r.bundle for r in report.rows if r.bundle}):
        try:
            bundle = Bundle.open(path)
        except Exception:  # noqa: BLE001 - unreachable or broken bundles are judged by _check_integrity
            continue
        for target, precision in bundle.variants:
            if target not in available or (chosen and target not in chosen):
                continue
            present = (path, target, precision) in rows
            if not present:
                result.checks.append(GateCheck(f"{bundle.path.name} {target} {precision}", "row present", "missing",
                                               "measured", False, f"{path} holds this artifact and {target} was "
                                               "available where the report was measured, but it has no row"))


def _check_integrity(report: "Report", gates: Gates, result: GateResult) -> None:
    """Each row carries its bundle's manifest hash; re-hash the manifest and the row's files where reachable."""
    from ..bundle.folder import MANIFEST, Bundle, sha256_file

    manifest_hash: dict[str, str | None] = {}  # bundle path -> current hash (None: not reachable)
    unreachable: set[str] = set()
    for r in report.rows:
        if not r.manifest_sha256 or not r.bundle:
            result.checks.append(GateCheck(r.label, "bundle", "no bundle hash recorded", "manifest SHA-256", False,
                                           f"report schema {report.schema_version}: re-run `edgeship bench`"))
            continue
        if r.bundle not in manifest_hash:
            path = Path(r.bundle) / MANIFEST
            try:
                manifest_hash[r.bundle] = sha256_file(path) if path.is_file() else None
            except OSError as exc:  # there but unreadable: that is not a pass
                manifest_hash[r.bundle] = f"unreadable: {exc}"
        current = manifest_hash[r.bundle]
        if current is None:
            unreachable.add(r.bundle)
            if gates.require_bundles:
                result.checks.append(GateCheck(r.label, "bundle", "not found", r.bundle, False,
                                               "the bundle must be present to verify the row"))
            continue
        if current != r.manifest_sha256:
            result.checks.append(GateCheck(r.label, "bundle", f"manifest {current[:12]}…", f"{r.manifest_sha256[:12]}…",
                                           False, f"{r.bundle} changed since it was measured"))
            continue
        try:
            bundle = Bundle.open(r.bundle)
            if r.is_reference:
                bundle.verify({"files": bundle.manifest.source_files})
            else:
                bundle.verify(bundle.artifact(r.target, r.precision))
        except (BundleIntegrityError, ConfigError, OSError) as exc:
            result.checks.append(GateCheck(r.label, "bundle", "mismatch", "files as measured", False, str(exc)))
            continue
        result.checks.append(GateCheck(r.label, "bundle", f"manifest {current[:12]}…", "as measured", True))
    if unreachable and not gates.require_bundles:
        result.notes.append("not re-hashed (bundle not on this machine): " + ", ".join(sorted(unreachable)))


def _check_regression(report: "Report", gates: Gates, result: GateResult) -> None:
    """No row worse than its baseline counterpart by more than the tolerance; no baseline row missing."""
    from .report import Report

    base = gates.baseline if isinstance(gates.baseline, Report) else Report.load(gates.baseline)
    tol = gates.regression_tolerance
    current = {r.key: r for r in report.rows}
    if base.environment.get("cpu") and report.environment.get("cpu") and base.environment["cpu"] != report.environment["cpu"]:
        result.notes.append(f"baseline was measured on {base.environment['cpu']!r}, this report on "
                            f"{report.environment['cpu']!r}: latency comparisons cross machines")
    rename = {}
    base_variants = {b.variant for b in base.rows}
    now_variants = {r.variant for r in report.rows}
    if len(base_variants) == len(now_variants) == 1 and base_variants != now_variants:
        (old_name,), (new_name,) = base_variants, now_variants  # one model per report, renamed between releases
        rename[old_name] = new_name
        result.notes.append(f"baseline variant {old_name!r} compared with {new_name!r}")
    matched = set()
    for b in base.rows:
        key = (rename.get(b.variant, b.variant), *b.key[1:])
        r = current.get(key)
        name = b.label
        if r is None:
            result.checks.append(GateCheck(name, "baseline", "missing", "present", False,
                                           "a row of the baseline is absent from this report"))
            continue
        matched.add(key)
        if b.samples and r.samples and b.samples != r.samples:
            result.notes.append(f"{r.label}: evaluated on {r.samples} samples, the baseline on {b.samples}")
        for attr, what in (("accuracy_pct", "accuracy"), ("agreement_pct", "agreement")):
            old, new = getattr(b, attr), getattr(r, attr)
            if old is None:
                continue
            limit = old - tol.accuracy_pts
            result.checks.append(GateCheck(name, f"regression {what} %", new, limit, _ge(new, limit),
                                           f"baseline {old:.2f}, tolerance {tol.accuracy_pts} pts"))
        if r.is_reference:  # the reference's accuracy counts (a worse model is a regression), its speed does not
            continue
        for attr, what in (("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"), ("throughput", "samples/s")):
            old, new = getattr(b, attr), getattr(r, attr)
            if old is None or not math.isfinite(old):
                result.notes.append(f"{name}: no {what} in the baseline; not compared")
                continue
            faster = attr == "throughput"
            limit = old * (1 - tol.latency_pct / 100) if faster else old * (1 + tol.latency_pct / 100)
            result.checks.append(GateCheck(name, f"regression {what}", new, limit,
                                           _ge(new, limit) if faster else _le(new, limit),
                                           f"baseline {old:.3f}, tolerance {tol.latency_pct}%"))
    new_rows = [r.label for k, r in current.items() if k not in matched]
    if new_rows:
        result.notes.append("not in the baseline (no regression check): " + ", ".join(new_rows))
