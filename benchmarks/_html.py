"""The report as one self-contained HTML page: jinja2 template, matplotlib plot inlined as a PNG."""

from __future__ import annotations

import base64
import io
import math
from importlib import resources
from typing import TYPE_CHECKING, Any

from .._lazy import require

if TYPE_CHECKING:
    from .gates import GateResult
    from .report import Report, Row

_MARKERS = {"fp32": "o", "fp16": "s", "int8": "^"}


def pareto_png(report: "Report") -> bytes | None:
    """Accuracy (or agreement) against p50 latency, with 95 % intervals and the Pareto front; None if nothing to plot."""
    require("matplotlib", "the HTML report's plot")
    from matplotlib.figure import Figure  # the OO API: no pyplot, no GUI backend, no global state

    rows = [r for r in report.rows if r.quality_pct is not None and _finite(r.quality_pct) and _finite(r.p50_ms)]
    if not rows:
        return None
    y_name = "accuracy" if any(r.accuracy_pct is not None for r in rows) else "agreement with the reference"
    fig = Figure(figsize=(9, 5.2), dpi=110)
    ax = fig.add_subplot()
    targets = sorted({r.target for r in rows if not r.is_reference})
    colors = {t: f"C{i}" for i, t in enumerate(targets)}
    for i, r in enumerate(rows):
        xerr = _err(r.p50_ms, r.p50_ci_ms)
        yerr = _err(r.quality_pct, r.accuracy_ci_pct if r.accuracy_pct is not None else r.agreement_ci_pct)
        color = "0.35" if r.is_reference else colors[r.target]
        marker = "*" if r.is_reference else _MARKERS.get(r.precision, "D")
        ax.errorbar([r.p50_ms], [r.quality_pct], xerr=xerr, yerr=yerr, fmt=marker, color=color, ecolor=color,
                    elinewidth=0.8, capsize=2, markersize=11 if r.is_reference else 8, alpha=0.9,
                    markeredgecolor="black" if r.recommended else color, markeredgewidth=1.6 if r.recommended else 0.5)
        ax.annotate(f"{r.variant} {r.precision}" + (" (ref)" if r.is_reference else ""), (r.p50_ms, r.quality_pct),
                    textcoords="offset points", xytext=(6, 5 if i % 2 else -12), fontsize=8)  # staggered
    front = report.pareto_front()
    if front:
        ax.step([r.p50_ms for r in front], [r.quality_pct for r in front], where="post", color="crimson",
                linewidth=1.4, alpha=0.7, label="Pareto front")
    for t in targets:
        ax.plot([], [], "o", color=colors[t], label=t)
    for precision, marker in _MARKERS.items():
        if any(r.precision == precision and not r.is_reference for r in rows):
            ax.plot([], [], marker, color="0.5", label=precision)
    if any(r.is_reference for r in rows):
        ax.plot([], [], "*", color="0.35", markersize=11, label="reference")
    latencies = [r.p50_ms for r in rows]
    if min(latencies) > 0 and max(latencies) / min(latencies) > 20:
        ax.set_xscale("log")
    ax.set_xlabel("p50 latency per call, ms (bars: 95% CI)")
    ax.set_ylabel(f"{y_name}, % (bars: 95% CI)")
    ax.set_title(f"{report.metric}: {y_name} vs latency")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def render_html(report: "Report", gate_result: "GateResult | None" = None) -> str:
    """Render ``report`` (and gate results) with the packaged jinja2 template; everything inline."""
    jinja2 = require("jinja2", "the HTML report")
    from .report import _interval, _num, _worst_recall, notes

    source = resources.files("edgeship.benchmarks").joinpath("report.html.j2").read_text(encoding="utf-8")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(num=_num, interval=_interval)
    png = pareto_png(report)
    groups: dict[str, list["Row"]] = {}
    for r in report.rows:
        groups.setdefault("reference" if r.is_reference else r.target, []).append(r)
    context: dict[str, Any] = {
        "report": report,
        "plot": base64.b64encode(png).decode("ascii") if png else None,
        "groups": groups,
        "front": {id(r) for r in report.pareto_front()},
        "gates": gate_result,
        "notes": notes,
        "worst_recall": _worst_recall,
        "classified": [r for r in report.rows if r.per_class],
        "id_of": id,
        "bundles": {r.bundle: r.manifest_sha256 or "not recorded" for r in report.rows if r.bundle},
    }
    return env.from_string(source).render(**context)


def _finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


def _err(value: float, ci: tuple[float, float] | None) -> list[list[float]] | None:
    if ci is None or not (_finite(ci[0]) and _finite(ci[1])):
        return None
    return [[max(0.0, value - ci[0])], [max(0.0, ci[1] - value)]]
