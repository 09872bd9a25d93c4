"""Checks of a calibration set: size, near-duplicates, value range, and drift from a reference sample.

Thresholds (module constants, so a reviewer can see and a test can pin them):

- **size**: an error under ``MIN_SAMPLES_ERROR`` (10) samples, a warning under ``MIN_SAMPLES_WARN`` (100).
- **near-duplicates**: two samples are near-identical when the RMS difference of their 8x8
  thumbnails (the cheap embedding of ``select="diverse"``) is under ``DUPLICATE_DISTANCE`` (2 %) of
  the set's value range; a warning when more than ``DUPLICATE_WARN`` (10 %) of the samples have such a
  neighbour, an error above ``DUPLICATE_ERROR`` (50 %: the set is effectively half its size or less).
- **value range**: the preprocessing maps 8-bit images into a known per-channel interval; an error
  when a channel's 0.1st..99.9th percentile reaches more than one interval width outside it (e.g.
  0..255 pixels where mean/std normalisation implies roughly -2..2), a warning when the whole set
  spans under ``RANGE_NARROW`` (5 %) of it (e.g. 0..1 images scaled by 1/255 a second time).
- **drift** against a validation or production sample, per channel: the mean shift in units of the
  reference's standard deviation (warning over 0.25, error over 1.0), the ratio of standard
  deviations (warning outside 1/1.5..1.5, error outside 1/2.5..2.5) and the Jensen-Shannon
  divergence of 64-bin value histograms in bits, 0..1 (warning over 0.05, error over 0.2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Callable, Literal

import numpy as np

from ..errors import ConfigError
from ._select import EMBED_SIDE, cheap_embedding
from ._set import CalibrationSet

if TYPE_CHECKING:
    from ..spec import InputSpec

MIN_SAMPLES_ERROR = 10
MIN_SAMPLES_WARN = 100
DUPLICATE_DISTANCE = 0.02
DUPLICATE_WARN = 0.10
DUPLICATE_ERROR = 0.50
RANGE_NARROW = 0.05
DRIFT_MEAN = (0.25, 1.0)  # |mean shift| / reference std: warning, error
DRIFT_STD = (1.5, 2.5)  # std ratio (either way): warning, error
DRIFT_JS = (0.05, 0.2)  # Jensen-Shannon divergence, bits: warning, error
HIST_BINS = 64
# Percentiles and histograms use at most this many values per channel (a seeded sample, with replacement).
_MAX_VALUES = 1_000_000

Level = Literal["warning", "error"]


@dataclass(frozen=True)
class Finding:
    """One problem: its level, a stable code, and what was found against what was expected."""

    level: Level
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.level}: {self.message} [{self.code}]"

    def to_dict(self) -> dict[str, str]:
        return {"level": self.level, "code": self.code, "message": self.message}


@dataclass(frozen=True)
class CheckResult:
    """The findings of :func:`check`, and the numbers they were judged on (``stats``)."""

    findings: tuple[Finding, ...]
    count: int
    source: str
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """No errors (warnings allowed)."""
        return not self.errors

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "warning"]

    def __str__(self) -> str:
        verdict = "OK" if self.ok else "FAILED"
        counts = f"{len(self.errors)} error(s), {len(self.warnings)} warning(s)"
        lines = [f"calibration check {verdict}: {self.count} samples from {self.source}; {counts}"]
        lines += [f"  {f}" for f in sorted(self.findings, key=lambda f: f.level != "error")]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ok, findings and stats (what a bundle manifest can record)."""
        return {"ok": self.ok, "count": self.count, "source": self.source,
                "findings": [f.to_dict() for f in self.findings], "stats": self.stats}


def check(calib: CalibrationSet | np.ndarray, against: CalibrationSet | np.ndarray | Mapping | None = None,
          spec: "InputSpec | None" = None) -> CheckResult:
    """Check a calibration set; optionally compare it with a validation or production sample.

    Args:
        calib: a :class:`CalibrationSet`, or model-ready samples (N, ...).
        against: a reference sample preprocessed the same way (a CalibrationSet from the same spec,
            or model-ready samples with the same channels), or a bundle's input profile (the manifest's
            ``calibration.profile.input``, see :func:`edgeship.calibration.input_profile`); enables the drift check.
        spec: the model input (layout and preprocessing); defaults to the one the set was made with.
    Returns:
        A :class:`CheckResult`; ``.ok`` is False when any finding is an error.
    """
    batch, origins, source, spec = _unpack(calib, spec, "calib")
    findings: list[Finding] = []
    stats: dict[str, Any] = {}
    n = len(batch)
    _check_count(n, findings)
    if n >= 2:
        _check_duplicates(batch, spec, origins, findings, stats)
    channel_axis = _channel_axis(batch, spec)
    values = _channel_values(batch, channel_axis)
    _check_range(values, spec, findings, stats)
    if isinstance(against, Mapping):  # a bundle's calibration record (its input profile)
        from ._profile import compare_profiles, input_profile

        source_name = str(against.get("source") or "the reference profile")
        rows, drifted = compare_profiles(input_profile(batch, spec, like=against), against, source_name)
        stats["drift"] = rows
        findings.extend(drifted)
    elif against is not None:
        ref_batch, _, ref_source, _ = _unpack(against, spec, "against")
        ref_values = _channel_values(ref_batch, _channel_axis(ref_batch, spec))
        if len(ref_values) != len(values):
            raise ConfigError(f"against has {len(ref_values)} channels but the calibration set has {len(values)}; "
                              "preprocess both with the same InputSpec")
        _check_drift(values, ref_values, ref_source, findings, stats)
    return CheckResult(findings=tuple(findings), count=n, source=source, stats=stats)


# -- the checks ----------------------------------------------------------------------------------
def _check_count(n: int, findings: list[Finding]) -> None:
    stats_msg = (f"{n} calibration samples; INT8 ranges estimated from so few are noisy — expected at least "
                 f"{MIN_SAMPLES_WARN} (at least {MIN_SAMPLES_ERROR} at the very least)")
    if n < MIN_SAMPLES_ERROR:
        findings.append(Finding("error", "too-few-samples", stats_msg))
    elif n < MIN_SAMPLES_WARN:
        findings.append(Finding("warning", "few-samples", stats_msg))


def _check_duplicates(batch: np.ndarray, spec: "InputSpec | None", origins: tuple[str, ...] | None,
                      findings: list[Finding], stats: dict[str, Any]) -> None:
    emb = cheap_embedding(batch, spec) if spec is not None else _fallback_embedding(batch)
    dist, nearest = _nearest_neighbours(emb)
    lo, hi = np.percentile(emb, [0.1, 99.9])
    span = float(hi - lo)
    limit = DUPLICATE_DISTANCE * span
    dup = dist <= limit if span > 0 else np.ones(len(emb), dtype=bool)
    fraction = float(dup.mean())
    stats["duplicate_fraction"] = round(fraction, 4)
    if fraction <= DUPLICATE_WARN:
        return
    level: Level = "error" if fraction > DUPLICATE_ERROR else "warning"
    i = int(np.flatnonzero(dup)[0])
    name = (lambda k: origins[k]) if origins else (lambda k: f"sample {k}")
    findings.append(Finding(
        level, "near-duplicates",
        f"{int(dup.sum())} of {len(emb)} samples ({fraction:.0%}) have a near-identical neighbour (RMS difference "
        f"of {EMBED_SIDE}x{EMBED_SIDE} thumbnails under {DUPLICATE_DISTANCE:.0%} of the value range), e.g. "
        f"{name(i)} ~ {name(int(nearest[i]))}; expected at most {DUPLICATE_WARN:.0%}: duplicates add no information "
        "— sample the source less densely or use select='diverse'"))


def _check_range(values: list[np.ndarray], spec: "InputSpec | None", findings: list[Finding],
                 stats: dict[str, Any]) -> None:
    observed = [tuple(float(v) for v in np.percentile(v, [0.1, 99.9])) for v in values]
    stats["range"] = [[round(lo, 4), round(hi, 4)] for lo, hi in observed]
    if spec is None or spec.preprocess is None:
        return
    pre = spec.preprocess
    expected = expected_ranges(spec, len(values))
    stats["expected_range"] = [[round(lo, 4), round(hi, 4)] for lo, hi in expected]
    described = _describe(pre)
    for c, ((lo, hi), (elo, ehi)) in enumerate(zip(observed, expected)):
        width = ehi - elo
        if hi > ehi + width or lo < elo - width:
            findings.append(Finding(
                "error", "range-contradicts-preprocessing",
                f"channel {c} spans {lo:.3g}..{hi:.3g} (0.1st..99.9th percentile) but {described} maps 8-bit images "
                f"into {elo:.3g}..{ehi:.3g}; the samples do not look preprocessed that way (raw 0..255 pixels given as "
                "model-ready input?) — give raw images with preprocess=True, or use from_folder"))
            return
    spread = max(hi - lo for lo, hi in observed)
    width = max(ehi - elo for elo, ehi in expected)
    if spread < RANGE_NARROW * width:
        findings.append(Finding(
            "warning", "range-too-narrow",
            f"all values lie within {spread:.3g} of each other, but {described} maps 8-bit images into an interval "
            f"{width:.3g} wide; expected at least {RANGE_NARROW:.0%} of it — were the images already scaled "
            "(e.g. 0..1 floats scaled by 1/255 again), or are they blank?"))


def _check_drift(values: list[np.ndarray], ref_values: list[np.ndarray], ref_source: str,
                 findings: list[Finding], stats: dict[str, Any]) -> None:
    rows = [drift_row(c, float(x.mean()), float(x.std()), float(r.mean()), float(r.std()), _js_divergence(x, r))
            for c, (x, r) in enumerate(zip(values, ref_values))]
    stats["drift"] = rows
    findings.extend(judge_drift(rows, ref_source))


# Each drift check: (finding code, score of a channel's drift row, (warning, error) limits, message).
_DRIFT_CHECKS: tuple[tuple[str, Callable[[dict], float], tuple[float, float], Callable[[dict, str], str]], ...] = (
    ("drift-mean", lambda r: r["mean_shift"], DRIFT_MEAN, lambda r, src: (
        f"channel {r['channel']} mean is {r['mean']:.3g} against {r['reference_mean']:.3g} in {src}: "
        f"a shift of {r['mean_shift']:.2f} reference standard deviations; expected under {DRIFT_MEAN[0]} "
        "(is the lighting, camera or exposure different?)")),
    ("drift-std", lambda r: max(r["std_ratio"], 1 / r["std_ratio"]), DRIFT_STD, lambda r, src: (
        f"channel {r['channel']} standard deviation is {r['std']:.3g} against {r['reference_std']:.3g} in "
        f"{src} (ratio {r['std_ratio']:.2f}); expected within 1/{DRIFT_STD[0]}..{DRIFT_STD[0]} "
        "(is the contrast different?)")),
    ("drift-histogram", lambda r: r["js_divergence"], DRIFT_JS, lambda r, src: (
        f"channel {r['channel']} value histogram differs from {src}'s: Jensen-Shannon divergence "
        f"{r['js_divergence']:.3f} bits; expected under {DRIFT_JS[0]} (the calibration data do not look like the "
        "data the model will see)")),
)


# -- helpers -------------------------------------------------------------------------------------
def expected_ranges(spec: "InputSpec", channels: int) -> list[tuple[float, float]]:
    """Per channel, the interval the spec's preprocessing maps 8-bit pixels (0..255) into."""
    pre = spec.preprocess
    out = []
    for c in range(channels):
        mean = pre.mean[c if len(pre.mean) > 1 else 0] if pre.mean else 0.0
        std = pre.std[c if len(pre.std) > 1 else 0] if pre.std else 1.0
        a, b = (0 * pre.scale - mean) / std, (255 * pre.scale - mean) / std
        out.append((min(a, b), max(a, b)))
    return out


def judge_drift(rows: list[dict], ref_source: str) -> list[Finding]:
    """The drift findings of per-channel drift rows (mean_shift, std_ratio, js_divergence): the worst channel on
    each measure against the (warning, error) limits above."""
    findings = []
    for code, score, limits, say in _DRIFT_CHECKS:
        worst = max(rows, key=score)  # the channel that drifted most on this measure
        level = _level(score(worst), limits)
        if level:
            findings.append(Finding(level, code, say(worst, ref_source)))
    return findings


def drift_row(channel: int, mean: float, std: float, rmean: float, rstd: float, js: float) -> dict[str, Any]:
    """One channel's drift: its mean and std against the reference's, the shift, the ratio and the divergence."""
    floor = 1e-6 * max(abs(rmean), 1.0)
    shift = abs(mean - rmean) / max(rstd, floor)
    ratio = max(std, floor) / max(rstd, floor)
    return {"channel": channel, "mean": round(mean, 4), "reference_mean": round(rmean, 4), "std": round(std, 4),
            "reference_std": round(rstd, 4), "mean_shift": round(shift, 4), "std_ratio": round(ratio, 4),
            "js_divergence": round(js, 4)}


def _level(value: float, limits: tuple[float, float]) -> Level | None:
    if value > limits[1]:
        return "error"
    if value > limits[0]:
        return "warning"
    return None


def _unpack(data: Any, spec: "InputSpec | None", what: str
            ) -> tuple[np.ndarray, tuple[str, ...] | None, str, "InputSpec | None"]:
    if isinstance(data, CalibrationSet):
        if not len(data):
            raise ConfigError(f"{what} is an empty calibration set")
        try:
            batch = data.as_batch()
        except ValueError:
            raise ConfigError(f"{what} holds samples of different shapes; checks need one shape") from None
        return batch, data.origins, data.source, spec if spec is not None else data.spec
    if hasattr(data, "detach") and hasattr(data, "cpu"):
        data = data.detach().cpu().numpy()
    if not isinstance(data, np.ndarray) or data.dtype.kind not in "uif" or data.ndim < 2 or not len(data):
        raise ConfigError(f"{what} must be a CalibrationSet or a non-empty numeric array of samples (N, ...), "
                          f"got {type(data).__name__}{getattr(data, 'shape', '')}")
    if not np.isfinite(data).all():
        raise ConfigError(f"{what} contains NaN or Inf")
    return data, None, f"array {tuple(data.shape)}", spec


def _channel_axis(batch: np.ndarray, spec: "InputSpec | None") -> int | None:
    if batch.ndim != 4:
        return None
    return 3 if spec is not None and spec.layout == "NHWC" else 1


def _channel_values(batch: np.ndarray, axis: int | None) -> list[np.ndarray]:
    """Per-channel flat float64 values, subsampled (seeded) to at most _MAX_VALUES each."""
    if axis is None:
        channels = [batch.reshape(-1)]
    else:
        channels = [np.take(batch, c, axis=axis).reshape(-1) for c in range(batch.shape[axis])]
    out = []
    for values in channels:
        if values.size > _MAX_VALUES:
            values = values[np.random.default_rng(0).integers(0, values.size, _MAX_VALUES)]
        out.append(values.astype(np.float64))
    return out


def _js_divergence(x: np.ndarray, r: np.ndarray) -> float:
    """Jensen-Shannon divergence (bits) of two value histograms on a shared range."""
    lo = min(np.percentile(x, 0.1), np.percentile(r, 0.1))
    hi = max(np.percentile(x, 99.9), np.percentile(r, 99.9))
    if hi <= lo:
        return 0.0 if np.isclose(x.mean(), r.mean()) else 1.0
    edges = np.linspace(lo, hi, HIST_BINS + 1)
    p = np.histogram(np.clip(x, lo, hi), edges)[0]
    q = np.histogram(np.clip(r, lo, hi), edges)[0]
    return js_bits(p, q)


def js_bits(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence (bits, 0..1) of two histograms (counts or frequencies) on the same bins."""
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    if p.sum() <= 0 or q.sum() <= 0:
        return 0.0
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        mask = a > 0
        return float((a[mask] * np.log2(a[mask] / m[mask])).sum())

    return float(min(max((kl(p) + kl(q)) / 2, 0.0), 1.0))


def _nearest_neighbours(emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RMS distance (per dimension) of every row to its nearest other row, and that row's index."""
    e = emb.astype(np.float64)
    norms = (e**2).sum(1)
    dist = np.empty(len(e))
    nearest = np.empty(len(e), dtype=np.int64)
    for start in range(0, len(e), 512):
        block = e[start : start + 512]
        d2 = norms[start : start + 512, None] - 2 * block @ e.T + norms[None, :]
        d2[np.arange(len(block)), np.arange(start, start + len(block))] = np.inf
        nearest[start : start + 512] = d2.argmin(1)
        dist[start : start + 512] = d2.min(1)
    return np.sqrt(np.maximum(dist, 0.0) / e.shape[1]), nearest


def _fallback_embedding(batch: np.ndarray) -> np.ndarray:
    from ..spec import InputSpec

    if batch.ndim == 4:
        return cheap_embedding(batch, InputSpec(shape=(None, *batch.shape[1:]), preprocess=None))
    return batch.reshape(len(batch), -1).astype(np.float32)


def _describe(pre: Any) -> str:
    parts = [f"scale {pre.scale:.4g}"]
    if pre.mean:
        parts.append("mean " + "/".join(f"{m:g}" for m in pre.mean))
    if pre.std:
        parts.append("std " + "/".join(f"{s:g}" for s in pre.std))
    return "the preprocessing (" + ", ".join(parts) + ")"
