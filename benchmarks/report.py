"""Report: one row per (variant, target, precision) with accuracy, drop, agreement, latency and size.

Saved as ``report.json`` (versioned schema, with the environment it was measured in) and
``report.md``; printed as a rich table.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import ConfigError

REPORT_SCHEMA_VERSION = 1


@dataclass
class Row:
    """One measured variant. Accuracy and agreement in percent; drop in percentage points vs the reference."""

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


@dataclass
class Report:
    """Rows of measurements plus the settings and environment they were taken in."""

    rows: list[Row]
    metric: str = "top1"
    settings: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    pruning_search: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # variant -> measured steps

    def link_pruned_variants(self) -> None:
        """Fill ``latency_ratio``: each row's p50 over the unpruned variant of the same source, target, precision."""
        base = {(r.source, r.target, r.precision): r.p50_ms for r in self.rows
                if r.source and not r.is_reference and not r.prune_ratio}
        for r in self.rows:
            ref = base.get((r.source, r.target, r.precision))
            r.latency_ratio = r.p50_ms / ref if ref and not r.is_reference else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": REPORT_SCHEMA_VERSION,
            "metric": self.metric,
            "settings": self.settings,
            "environment": self.environment,
            "rows": [asdict(r) for r in self.rows],
            "pruning_search": self.pruning_search,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Report":
        if data.get("schema_version") != REPORT_SCHEMA_VERSION:
            raise ConfigError(f"report schema_version {data.get('schema_version')!r} is not {REPORT_SCHEMA_VERSION}")
        names = {f.name for f in fields(Row)}
        rows = [Row(**{k: v for k, v in r.items() if k in names}) for r in data["rows"]]
        return cls(rows=rows, metric=data.get("metric", "top1"), settings=data.get("settings", {}),
                   environment=data.get("environment", {}), pruning_search=data.get("pruning_search", {}))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Report":
        """Read a report.json (or the folder holding one)."""
        path = Path(path)
        if path.is_dir():
            path = path / "report.json"
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ConfigError(f"cannot read report {path}: {exc}") from exc

    def save(self, folder: str | os.PathLike) -> Path:
        """Write report.json and report.md into ``folder``; returns the folder."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in (("report.json", json.dumps(self.to_dict(), indent=2) + "\n"), ("report.md", self.to_markdown())):
            tmp = folder / f".{name}.tmp"
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, folder / name)
        return folder

    # -- rendering --------------------------------------------------------------------------
    _HEADERS = ("variant", "target", "precision", "acc %", "drop pts", "agree %", "p50 ms", "p90 ms", "p99 ms",
                "samples/s", "size MB")

    _PRUNE_HEADERS = ("pruned", "params M", "MACs M", "MACs ratio", "latency ratio")

    def _headers(self) -> tuple[str, ...]:
        pruned = any(r.macs is not None for r in self.rows)
        return self._HEADERS + (self._PRUNE_HEADERS if pruned else ())

    def _cells(self, row: Row) -> list[str]:
        def num(v: float | None, fmt: str) -> str:
            return "—" if v is None else format(v, fmt)

        cells = [
            row.variant + (" (ref)" if row.is_reference else ""),
            row.target,
            row.precision,
            num(row.accuracy_pct, ".2f"),
            num(row.drop_pts, "+.2f") if not row.is_reference else "—",
            num(row.agreement_pct, ".2f") if not row.is_reference else "—",
            num(row.p50_ms, ".3f"),
            num(row.p90_ms, ".3f"),
            num(row.p99_ms, ".3f"),
            num(row.throughput, ".1f"),
            num(row.size_mb, ".2f"),
        ]
        if len(self._headers()) > len(self._HEADERS):
            cells += [
                num(row.prune_ratio, ".0%") if row.prune_ratio is not None else "—",
                num(row.params / 1e6 if row.params is not None else None, ".3f"),
                num(row.macs / 1e6 if row.macs is not None else None, ".2f"),
                num(row.macs_ratio, ".3f"),
                num(row.latency_ratio, ".3f"),
            ]
        return cells

    def to_markdown(self) -> str:
        lines = [f"# edgeship report ({self.metric})", ""]
        if self.settings:
            lines += ["Settings: " + ", ".join(f"{k}={v}" for k, v in self.settings.items()), ""]
        headers = self._headers()
        lines += ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        lines += ["| " + " | ".join(self._cells(r)) + " |" for r in self.rows]
        for variant, steps in self.pruning_search.items():
            lines += ["", f"## Latency-driven pruning search: {variant}", "",
                      "| step | ratio | p50 ms | meets budget | MACs M | target | precision |", "|---|---|---|---|---|---|---|"]
            lines += [f"| {i} | {s['ratio']:.3f} | {s['p50_ms']:.3f} | {'yes' if s['meets'] else 'no'} | "
                      f"{s['macs'] / 1e6:.2f} | {s['target']} | {s['precision']} |" for i, s in enumerate(steps, 1)]
        if self.environment:
            lines += ["", "Environment: " + ", ".join(f"{k}={v}" for k, v in self.environment.items())]
        return "\n".join(lines) + "\n"

    def print(self) -> None:
        """Show the report as a table in the terminal."""
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"edgeship report — {self.metric}")
        for header in self._headers():
            table.add_column(header, justify="left" if header in ("variant", "target", "precision") else "right")
        for row in self.rows:
            table.add_row(*self._cells(row))
        console = Console()
        if not console.is_terminal:  # pipes and CI logs: wide enough that no column is cut
            console = Console(width=max(console.width, 180))
        console.print(table)
