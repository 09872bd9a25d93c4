"""Report: one row per (variant, target, precision) with accuracy, drop, agreement, latency, size and memory.

Saved as ``report.json`` (versioned schema, with the environment it was measured in and the SHA-256 of
each bundle's manifest), ``report.md`` and a self-contained ``report.html``; printed as a rich table.
``check(gates)`` judges a release on it (see :mod:`edgeship.benchmarks.gates`).

Units: accuracy, agreement and macro precision / recall / F1 in percent; drop in percentage points
against the reference row; latency in milliseconds per call of ``batch`` samples; throughput in
samples per second.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._files import write_atomic
from ..errors import ConfigError

if TYPE_CHECKING:
    from .gates import GateResult, Gates

# 2: confidence intervals, per-class metrics, end-to-end and stream latency, peak RSS, bundle hashes,
#    flags, recommendations, ``complete``. Version 1 reports still load (they carry no bundle hashes,
#    so a gate cannot trust their rows; they still serve as baselines).
REPORT_SCHEMA_VERSION = 2
READABLE_SCHEMA_VERSIONS = (1, 2)

_INTERVALS = ("accuracy_ci_pct", "agreement_ci_pct", "p50_ci_ms", "p99_ci_ms")
MAX_REPORT_BYTES = 64 << 20  # a report of a thousand rows is well under 2 MB


def _check_row_types(r: Any, i: int) -> None:
    """A row of report.json holds the types the gate reads, else ConfigError naming field, expectation and value."""
    if not isinstance(r, dict):
        raise ConfigError(f"report row {i} must be a JSON object, got {type(r).__name__}")
    where = f"report row {i} ({r.get('variant')} {r.get('target')} {r.get('precision')})"
    for name in ("variant", "target", "precision"):
        if not isinstance(r.get(name), str):
            raise ConfigError(f"{where}: '{name}' must be a string, got {r.get(name)!r}")
    for name in ("bundle", "manifest_sha256", "source"):
        if name in r and not isinstance(r[name], str):
            raise ConfigError(f"{where}: '{name}' must be a string, got {r[name]!r}")
    if not isinstance(r.get("is_reference", False), bool):
        raise ConfigError(f"{where}: 'is_reference' must be true or false, got {r.get('is_reference')!r}")
    for name in ("accuracy_pct", "drop_pts", "agreement_pct", "p50_ms", "p90_ms", "p99_ms", "throughput", "size_mb",
                 "e2e_p50_ms", "e2e_p99_ms", "peak_rss_mb", "streams_throughput", "prune_ratio", "macs_ratio",
                 "latency_ratio"):
        value = r.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ConfigError(f"{where}: '{name}' must be a number or null, got {value!r}")
    for name in ("batch", "runs", "samples", "streams"):
        value = r.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: '{name}' must be an integer, got {value!r}")
    for name in _INTERVALS:
        value = r.get(name)
        if value is not None and not (isinstance(value, (list, tuple)) and len(value) == 2 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
            raise ConfigError(f"{where}: '{name}' must be [low, high] numbers or null, got {value!r}")


@dataclass(frozen=True)
class Row:
    """One measured variant. Accuracy and agreement in percent; drop in percentage points vs the reference.

    Frozen: a row records what was measured; what is derived later (latency ratios, the recommendation, a
    sweep's drops and flags) makes a new row with ``dataclasses.replace``."""

    variant: str
    target: str
    precision: str
    accuracy_pct: float | None
    drop_pts: float | None
    agreement_pct: float | None
    p50_ms: float
    p90_ms: float
    p99_ms: float
    throughput: float
    size_mb: float | None
    is_reference: bool = False
    batch: int = 1
    runs: int = 0
    source: str = ""  # fingerprint of the unpruned source model: variants of one model share it
    prune_ratio: float | None = None
    params: int | None = None
    macs: int | None = None
    macs_ratio: float | None = None  # pruned / unpruned MACs
    latency_ratio: float | None = None  # p50 / the unpruned variant's p50 on the same target and precision
    # -- schema 2 ---------------------------------------------------------------------------
    samples: int = 0  # evaluation samples behind accuracy and agreement
    accuracy_ci_pct: tuple[float, float] | None = None  # 95 %: Wilson for proportions, bootstrap otherwise
    agreement_ci_pct: tuple[float, float] | None = None  # 95 % Wilson
    p50_ci_ms: tuple[float, float] | None = None  # 95 % bootstrap over the timed calls
    p99_ci_ms: tuple[float, float] | None = None
    macro_precision_pct: float | None = None
    macro_recall_pct: float | None = None
    macro_f1_pct: float | None = None
    per_class: dict[str, list[float]] | None = None  # precision / recall / f1 (fractions) and support, by class id
    e2e_p50_ms: float | None = None  # preprocessing + inference + arg-max, on raw inputs
    e2e_p99_ms: float | None = None
    streams: int = 1
    streams_throughput: float | None = None  # samples/s with ``streams`` concurrent runtimes
    peak_rss_mb: float | None = None  # peak resident memory of the benchmarking process during this row
    threads: int | None = None
    options: dict[str, Any] | None = None  # runtime options beside threads, e.g. {"inference_precision": "bf16"}
    host: str | None = None  # the machine that measured the row, when it was not this one (bench on Ray)
    cpu_flags: list[str] | None = None  # the CPU features of the machine that measured the row
    int8_flavour: str | None = None  # how the INT8 artifact was made for its fleet (manifest options.int8_flavour)
    bundle: str = ""  # absolute path of the bundle the row was measured on
    manifest_sha256: str = ""  # SHA-256 of that bundle's manifest.json when it was measured
    recommended: bool = False  # the fastest variant on its target within the accuracy budget
    flags: list[str] = field(default_factory=list)  # what is wrong with this row, in words

    @property
    def label(self) -> str:
        """'variant target precision', '(ref)' appended for the reference: how gates name a row."""
        return f"{self.variant} {self.target} {self.precision}" + (" (ref)" if self.is_reference else "")

    @property
    def key(self) -> tuple[str, str, str, bool]:
        """What matches a row to its counterpart in another report."""
        return (self.variant, self.target, self.precision, self.is_reference)

    @property
    def quality_pct(self) -> float | None:
        """Accuracy where labels were given, else agreement with the reference (the plot's y axis)."""
        return self.accuracy_pct if self.accuracy_pct is not None else self.agreement_pct

    @property
    def drop_bound_pts(self) -> float | None:
        """The accuracy drop, or without labels its upper bound: the share of samples that disagree."""
        if self.drop_pts is not None:
            return self.drop_pts
        return None if self.agreement_pct is None else 100.0 - self.agreement_pct


@dataclass
class Report:
    """Rows of measurements plus the settings and environment they were taken in."""

    rows: list[Row]
    metric: str = "top1"
    settings: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    pruning_search: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # variant -> measured steps
    complete: bool = True  # False while measuring and after an interrupted run: rows are missing
    warnings: list[str] = field(default_factory=list)
    schema_version: int = REPORT_SCHEMA_VERSION  # the version this report was read as (1 for old files)

    # -- analysis ---------------------------------------------------------------------------
    def link_pruned_variants(self) -> None:
        """Fill ``latency_ratio``: each row's p50 over the unpruned variant of the same source, target, precision."""
        base = {(r.source, r.target, r.precision): r.p50_ms for r in self.rows
                if r.source and not r.is_reference and not r.prune_ratio}
        ratio = {}
        for r in self.rows:
            ref = base.get((r.source, r.target, r.precision))
            ratio[id(r)] = r.p50_ms / ref if ref and not r.is_reference else None
        self.rows = [replace(r, latency_ratio=ratio[id(r)]) for r in self.rows]

    def pareto_front(self) -> list[Row]:
        """Measured variants that no other variant beats on both quality and p50 latency, fastest first."""
        cands = [r for r in self.rows if not r.is_reference and r.quality_pct is not None and _finite(r.p50_ms)]
        front = [r for r in cands if not any(
            o is not r and o.quality_pct >= r.quality_pct and o.p50_ms <= r.p50_ms
            and (o.quality_pct > r.quality_pct or o.p50_ms < r.p50_ms) for o in cands)]
        return sorted(front, key=lambda r: r.p50_ms)

    def mark_recommended(self, budget_pts: float) -> dict[str, Row]:
        """Per target, mark the fastest variant (p50) whose drop is within ``budget_pts``; returns them.

        Without labels the drop is bounded by the disagreement with the reference, which is used instead.
        """
        best: dict[str, Row] = {}
        for r in self.rows:
            drop = r.drop_bound_pts
            if r.is_reference or drop is None or not drop <= budget_pts or not _finite(r.p50_ms):
                continue
            if r.target not in best or r.p50_ms < best[r.target].p50_ms:
                best[r.target] = r
        chosen = {id(r) for r in best.values()}
        self.rows = [replace(r, recommended=id(r) in chosen) for r in self.rows]
        return {r.target: r for r in self.rows if r.recommended}

    def precision_warnings(self) -> list[str]:
        """A warning for each INT8 variant that is slower (p50) than the FP32/FP16 one of the same model and target."""
        out = []
        by_key = {(r.variant, r.target, r.precision): r for r in self.rows if not r.is_reference}
        for (variant, target, precision), int8 in by_key.items():
            if precision != "int8":
                continue
            for other in ("fp16", "fp32"):
                ref = by_key.get((variant, target, other))
                if ref is None or not int8.p50_ms > ref.p50_ms:
                    continue
                overlap = (int8.p50_ci_ms is not None and ref.p50_ci_ms is not None
                           and int8.p50_ci_ms[0] <= ref.p50_ci_ms[1])
                out.append(f"{variant} on {target}: INT8 is slower than {other.upper()} (p50 {int8.p50_ms:.3f} ms vs "
                           f"{ref.p50_ms:.3f} ms)" + ("; the 95% intervals overlap, re-run with more --runs" if overlap
                                                      else "; ship the faster one unless memory or size decides"))
        return out

    def check(self, gates: "Gates") -> "GateResult":
        """Judge this report against ``gates``; the result says which row failed which gate (never raises on failure)."""
        from .gates import check  # back-edge: gates read reports; Report.check hands off to them

        return check(self, gates)

    # -- saved forms ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": REPORT_SCHEMA_VERSION,
            "complete": self.complete,
            "metric": self.metric,
            "settings": self.settings,
            "environment": self.environment,
            "warnings": self.warnings,
            "rows": [asdict(r) for r in self.rows],
            "pruning_search": self.pruning_search,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Report":
        """Build a report from its JSON form (schema 1 or 2); anything else is refused with the reason."""
        if not isinstance(data, dict):
            raise ConfigError(f"a report must be a JSON object, got {type(data).__name__}")
        version = data.get("schema_version")
        if version not in READABLE_SCHEMA_VERSIONS:
            newer = isinstance(version, int) and version > REPORT_SCHEMA_VERSION
            raise ConfigError(f"report schema_version {version!r} is not one this edgeship reads "
                              f"{READABLE_SCHEMA_VERSIONS}" + ("; it was written by a newer edgeship" if newer else ""))
        if not isinstance(data.get("complete", True), bool):
            raise ConfigError(f"report 'complete' must be true or false, got {data.get('complete')!r}")
        if not isinstance(data.get("rows"), list):
            raise ConfigError(f"report 'rows' must be a list, got {type(data.get('rows')).__name__}")
        names = {f.name for f in fields(Row)}
        rows = []
        for i, r in enumerate(data["rows"]):
            _check_row_types(r, i)
            values = {k: v for k, v in r.items() if k in names}
            for name in _INTERVALS:
                if values.get(name) is not None:
                    values[name] = tuple(float(v) for v in values[name])
            rows.append(Row(**values))
        return cls(rows=rows, metric=data.get("metric", "top1"), settings=data.get("settings", {}),
                   environment=data.get("environment", {}), pruning_search=data.get("pruning_search", {}),
                   complete=data.get("complete", True), warnings=list(data.get("warnings", [])),
                   schema_version=version)

    @classmethod
    def load(cls, path: str | os.PathLike, public_key: Any = None) -> "Report":
        """Read a report.json (or the folder holding one).

        With ``public_key`` (Ed25519, PEM path or bytes) ``report.json.sig`` beside it must be a signature
        by that key over the file's exact bytes (``save(sign_key=...)``, ``edgeship bench --sign``);
        unsigned or altered reports raise BundleIntegrityError.
        """
        path = Path(path)
        if path.is_dir():
            path = path / "report.json"
        try:
            raw = path.read_bytes()
            if len(raw) > MAX_REPORT_BYTES:
                raise ConfigError(f"report {path} is {len(raw)} bytes; reports are at most {MAX_REPORT_BYTES}")
            if public_key is not None:
                from ..bundle.signing import verify_manifest

                sig = path.with_name(path.name + ".sig")
                verify_manifest(raw, sig.read_bytes() if sig.is_file() else None, public_key,
                                where=f"report {path}", signature_file=sig.name)
            return cls.from_dict(json.loads(raw.decode("utf-8")))
        except RecursionError:
            raise ConfigError(f"cannot read report {path}: JSON nested too deeply") from None
        except (OSError, json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"cannot read report {path}: {exc}") from exc

    def save(self, folder: str | os.PathLike, *, html: bool | None = None,
             gate_result: "GateResult | None" = None, sign_key: Any = None) -> Path:
        """Write report.json, report.md and report.html into ``folder``, each atomically; returns the folder.

        Args:
            html: True: write report.html (needs ``edgeship[report]``); None: write it when jinja2 and
                matplotlib are installed; False: skip it.
            gate_result: gate results to show in the Markdown and HTML.
            sign_key: an Ed25519 private key (PEM path or bytes): write ``report.json.sig`` over the exact
                bytes of report.json, so ``edgeship gate --verify PUB`` refuses an edited report. Without
                it an older signature beside report.json is removed (it would not match).
        """
        from .._lazy import is_installed

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        texts = [("report.json", json.dumps(self.to_dict(), indent=2, allow_nan=True) + "\n"),
                 ("report.md", self.to_markdown(gate_result))]
        if html or (html is None and is_installed("jinja2") and is_installed("matplotlib")):
            texts.append(("report.html", self.to_html(gate_result)))
        signature = None
        if sign_key is not None:
            from ..bundle.signing import sign_manifest

            signature = sign_manifest(texts[0][1].encode("utf-8"), sign_key)
        sig_path = folder / "report.json.sig"
        if sig_path.exists():  # never a stale signature beside a new report.json
            sig_path.unlink()
        for name, text in texts:
            write_atomic(folder / name, text.encode("utf-8"))
        if signature is not None:
            write_atomic(sig_path, signature)
        return folder

    # -- rendering --------------------------------------------------------------------------
    _HEADERS = ("variant", "target", "precision", "acc %", "acc 95% CI", "drop pts", "agree %", "p50 ms", "p90 ms",
                "p99 ms", "p99 95% CI", "samples/s", "size MB", "peak RSS MB", "notes")

    _PRUNE_HEADERS = ("pruned", "params M", "MACs M", "MACs ratio", "latency ratio")

    def _headers(self) -> tuple[str, ...]:
        pruned = any(r.macs is not None for r in self.rows)
        return self._HEADERS + (self._PRUNE_HEADERS if pruned else ())

    def _cells(self, row: Row) -> list[str]:
        cells = [
            row.variant + (" (ref)" if row.is_reference else ""),
            row.target,
            row.precision,
            _num(row.accuracy_pct, ".2f"),
            _interval(row.accuracy_ci_pct, ".1f"),
            _num(row.drop_pts, "+.2f") if not row.is_reference else "—",
            _num(row.agreement_pct, ".2f") if not row.is_reference else "—",
            _num(row.p50_ms, ".3f"),
            _num(row.p90_ms, ".3f"),
            _num(row.p99_ms, ".3f"),
            _interval(row.p99_ci_ms, ".3f"),
            _num(row.throughput, ".1f"),
            _num(row.size_mb, ".2f"),
            _num(row.peak_rss_mb, ".0f"),
            notes(row),
        ]
        if len(self._headers()) > len(self._HEADERS):
            cells += [
                _num(row.prune_ratio, ".0%") if row.prune_ratio is not None else "—",
                _num(row.params / 1e6 if row.params is not None else None, ".3f"),
                _num(row.macs / 1e6 if row.macs is not None else None, ".2f"),
                _num(row.macs_ratio, ".3f"),
                _num(row.latency_ratio, ".3f"),
            ]
        return cells

    def to_markdown(self, gate_result: "GateResult | None" = None) -> str:
        """The report as Markdown: main table, classification, latency details, warnings, gates, environment."""
        lines = [f"# edgeship report ({self.metric})", ""]
        if not self.complete:
            lines += [f"**Incomplete report**: the run stopped after {len(self.rows)} rows; rows are missing.", ""]
        if self.settings:
            lines += ["Settings: " + ", ".join(f"{k}={v}" for k, v in self.settings.items()), ""]
        lines += _md_table(self._headers(), [self._cells(r) for r in self.rows])
        if self.warnings:
            lines += ["", "## Warnings", ""] + [f"- {w}" for w in self.warnings]
        lat = [r for r in self.rows if r.e2e_p50_ms is not None or r.streams_throughput is not None]
        if lat or any(r.p50_ci_ms for r in self.rows):
            lines += ["", "## Latency", ""]
            lines += _md_table(("row", "batch", "threads", "p50 ms", "p50 95% CI", "p99 ms", "p99 95% CI",
                                "end-to-end p50 ms", "end-to-end p99 ms", "streams", "samples/s (streams)"),
                               [[r.label, str(r.batch), _num(r.threads, "d"), _num(r.p50_ms, ".3f"),
                                 _interval(r.p50_ci_ms, ".3f"), _num(r.p99_ms, ".3f"), _interval(r.p99_ci_ms, ".3f"),
                                 _num(r.e2e_p50_ms, ".3f"), _num(r.e2e_p99_ms, ".3f"), str(r.streams),
                                 _num(r.streams_throughput, ".1f")] for r in self.rows])
        classified = [r for r in self.rows if r.per_class]
        if classified:
            lines += ["", "## Classification: precision / recall / F1", ""]
            lines += _md_table(("row", "macro precision %", "macro recall %", "macro F1 %", "worst-class recall %"),
                               [[r.label, _num(r.macro_precision_pct, ".2f"), _num(r.macro_recall_pct, ".2f"),
                                 _num(r.macro_f1_pct, ".2f"), _worst_recall(r)] for r in classified])
            for r in classified:
                if len(r.per_class["support"]) > 50:
                    continue  # long class lists stay in report.json
                lines += ["", f"### {r.label}", ""]
                lines += _md_table(("class", "support", "precision %", "recall %", "F1 %"),
                                   [[str(c), str(s), f"{100 * p:.2f}", f"{100 * rc:.2f}", f"{100 * f:.2f}"]
                                    for c, (s, p, rc, f) in enumerate(zip(r.per_class["support"], r.per_class["precision"],
                                                                         r.per_class["recall"], r.per_class["f1"]))])
        for variant, steps in self.pruning_search.items():
            lines += ["", f"## Latency-driven pruning search: {variant}", "",
                      "| step | ratio | p50 ms | meets budget | MACs M | target | precision |", "|---|---|---|---|---|---|---|"]
            lines += [f"| {i} | {s['ratio']:.3f} | {s['p50_ms']:.3f} | {'yes' if s['meets'] else 'no'} | "
                      f"{s['macs'] / 1e6:.2f} | {s['target']} | {s['precision']} |" for i, s in enumerate(steps, 1)]
        if gate_result is not None:
            lines += ["", f"## Gates: {'PASSED' if gate_result.passed else 'FAILED'}", ""]
            lines += _md_table(("row", "gate", "measured", "limit", "result"),
                               [[c.row, c.gate, c.measured_text, c.limit_text, "pass" if c.passed else "FAIL"]
                                for c in gate_result.checks])
            lines += [f"- {n}" for n in gate_result.notes]
        if self.environment:
            lines += ["", "Environment: " + ", ".join(f"{k}={v}" for k, v in self.environment.items())]
        return "\n".join(lines) + "\n"

    def to_html(self, gate_result: "GateResult | None" = None) -> str:
        """A self-contained HTML page (plot inlined) — needs ``edgeship[report]`` (jinja2, matplotlib)."""
        from ._html import render_html  # back-edge: the HTML page renders a report

        return render_html(self, gate_result)

    def write_html(self, path: str | os.PathLike, gate_result: "GateResult | None" = None) -> Path:
        """Write the HTML page (with gate results, if given) to ``path`` atomically; returns the path."""
        path = Path(path)
        write_atomic(path, self.to_html(gate_result).encode("utf-8"))
        return path

    def print(self) -> None:
        """Show the report as a table in the terminal, then its warnings."""
        from rich.console import Console
        from rich.table import Table

        title = f"edgeship report — {self.metric}" + ("" if self.complete else " — INCOMPLETE")
        if self.settings.get("data"):  # where the samples came from, when not arrays (a device's captures)
            title += f" — {self.settings['data']}"
        table = Table(title=title)
        for header in self._headers():
            table.add_column(header, justify="left" if header in ("variant", "target", "precision", "notes") else "right")
        for row in self.rows:
            table.add_row(*self._cells(row))
        console = Console()
        if not console.is_terminal:  # pipes and CI logs: wide enough that no column is cut
            console = Console(width=max(console.width, 200))
        console.print(table)
        for warning in self.warnings:
            console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)


def notes(row: Row) -> str:
    """The row's recommendation mark and flags, for a table cell."""
    parts = (["fastest within budget"] if row.recommended else []) + list(row.flags)
    return "; ".join(parts) if parts else ""


def _finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


def _num(v: float | None, fmt: str) -> str:
    return "—" if v is None else format(v, fmt)


def _interval(v: tuple[float, float] | None, fmt: str) -> str:
    return "—" if v is None else f"[{format(v[0], fmt)}, {format(v[1], fmt)}]"


def _worst_recall(row: Row) -> str:
    present = [(rc, c) for c, (rc, s) in enumerate(zip(row.per_class["recall"], row.per_class["support"])) if s > 0]
    if not present:
        return "—"
    rc, c = min(present)
    return f"{100 * rc:.2f} (class {c})"


def _md_table(headers: tuple[str, ...] | list[str], rows: list[list[str]]) -> list[str]:
    return (["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
            + ["| " + " | ".join(cells) + " |" for cells in rows])
