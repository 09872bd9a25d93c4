"""The variant a device runs: the fastest artifact that passes the bundle's self-test here, by measurement.

:func:`choose` runs the self-test (:mod:`edgeship.bundle.selftest`) of every artifact available here and measures
the passing ones; :func:`select_variant` keeps the fastest, with tune's rules (:mod:`edgeship.tune`): where
p50 95% intervals overlap the fastest one's the least modified variant wins (fp32 < fp16 < int8), and an
INT8 artifact slower than the FP32/FP16 one of its target is never chosen. :func:`cached_choice` keeps the
choice in an install root's ``choice.json``, keyed by the version, this CPU's flags, the backend versions
and the request, and measures again when one changes; :func:`device_variant` is what ``load``, ``serve``
and ``install`` call. Re-exported by :mod:`edgeship.bundle.selftest`.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Mapping, Sequence

from .._files import write_atomic
from .._fleet import cpu_flags
from .._version import __version__
from ..bundle.folder import CURRENT, MANIFEST, Bundle
from ..bundle.selftest import NO_SELFTEST, _fmt, verify_bundle
from ..bundle.signing import configured_public_key
from ..errors import SelfTestError, UnknownTargetError
from ..targets import get_target_class

CHOICE_FILE = "choice.json"  # in an install root: the variant each installed version runs here
CHOICE_SCHEMA_VERSION = 1
_CHOICES_PER_VERSION = 4  # cached choices kept per version (one per requested target / runtime options)


# -- choosing the variant this device runs -----------------------------------------------------------
@dataclass(frozen=True)
class Candidate:
    """One artifact as the choice sees it: whether it passed here, and its measured p50 with its 95% interval."""

    target: str
    precision: str
    passed: bool
    p50_ms: float | None = None
    p50_ci_ms: tuple[float, float] | None = None
    reason: str = ""  # why it failed, when it did

    @property
    def label(self) -> str:
        return f"{self.target} {self.precision}"


class _AsTrial:
    """A candidate in the shape of a tune trial, so that tune's own tie and slower-INT8 rules judge it."""

    def __init__(self, c: Candidate) -> None:
        self.c, self.ok, self.p50_ms, self.label = c, True, c.p50_ms, c.label
        self.candidate = SimpleNamespace(target=c.target, precision=c.precision, base_precision=c.precision,
                                         prune_ratio=0.0, threads=None, options={})
        self.row = SimpleNamespace(p50_ci_ms=tuple(c.p50_ci_ms) if c.p50_ci_ms is not None else None)


def select_variant(candidates: Sequence[Candidate]) -> tuple[Candidate | None, dict[str, str]]:
    """(the chosen candidate or None, a note per candidate label) by tune's rule.

    Among the passing candidates with a measured p50, the fastest wins — but those whose p50 95% interval
    overlaps the fastest one's are tied with it and the least modified of them wins (fp32 < fp16 < int8),
    and an INT8 candidate slower than the FP32/FP16 one of its target is never chosen.
    """
    from ..tune.sweep import _least_modified_of_fastest, _p50_overlaps, _slower_int8

    notes: dict[str, str] = {}
    runnable = []
    for c in candidates:
        if not c.passed:
            notes[c.label] = f"rejected: {c.reason or 'failed its self-test'}"
        elif c.p50_ms is None or not math.isfinite(c.p50_ms):
            notes[c.label] = "not measured"
        else:
            runnable.append(_AsTrial(c))
    excluded = _slower_int8(runnable)
    for t in runnable:
        if id(t) in excluded:
            notes[t.label] = excluded[id(t)]
    eligible = [t for t in runnable if id(t) not in excluded]
    if not eligible:
        return None, notes
    best = _least_modified_of_fastest(eligible)
    fastest = min(eligible, key=lambda t: (t.p50_ms, t.label))
    for t in eligible:
        if t is best:
            notes[t.label] = "chosen" + ("" if t is fastest else f" (tied with the fastest, {fastest.label} "
                                         f"{fastest.p50_ms:.3f} ms: p50 intervals overlap, the less modified wins)")
        elif t is fastest or _p50_overlaps(t, fastest):
            notes[t.label] = f"{t.p50_ms:.3f} ms, tied with the fastest: the less modified variant wins"
        else:
            notes[t.label] = f"slower ({t.p50_ms:.3f} ms)"
    return best.c, notes


def describe_cpu(flags: Sequence[str]) -> str:
    """This CPU in the words that matter for INT8, e.g. "avx2, no vnni" or "avx512, vnni, amx"."""
    flags = set(flags)
    if "asimd" in flags:
        return "arm64" + (", dot product" if "asimddp" in flags else "") + (", i8mm" if "i8mm" in flags else "")
    parts = ["avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "no avx2"]
    vnni = {"avx512_vnni", "avx_vnni"} & flags
    parts.append("vnni" if vnni else "no vnni")
    if "amx_int8" in flags:
        parts.append("amx")
    return ", ".join(parts)


@dataclass
class Choice:
    """The variant this device runs, and why. ``status``: "passed" (the fastest passing one), "failed" (none
    passes; the default artifact is named), or "untested" (the bundle carries no self-test)."""

    target: str
    precision: str
    status: str
    reason: str
    p50_ms: float | None = None
    candidates: list[dict[str, Any]] = field(default_factory=list)
    key: dict[str, Any] = field(default_factory=dict)
    measured_at: str = ""
    cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("cached")
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], cached: bool = False) -> "Choice":
        known = {k: data[k] for k in ("target", "precision", "status", "reason", "p50_ms", "candidates", "key",
                                      "measured_at") if k in data}
        if not isinstance(known.get("target"), str) or not isinstance(known.get("precision"), str):
            raise ValueError("a choice names a target and a precision")
        return cls(**known, cached=cached)


def choose(bundle: "Bundle", target: str | None = None, *, key: dict[str, Any] | None = None,
           **options: Any) -> Choice:
    """Run the self-test of every artifact available here (of ``target`` when given), measure them, and
    choose by :func:`select_variant`."""

    results = verify_bundle(bundle, target, None, measure=True, **options)
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    measured = [r.to_dict() | {"build": None} for r in results]
    device = f"this device ({describe_cpu(cpu_flags())})"
    ran = [r for r in results if not r.skipped]
    skipped = [f"{r.target} {r.precision} skipped: {r.reason}" for r in results if r.skipped]
    if not ran:
        default = bundle.artifact(target, None)
        why = results[0].reason if all(r.reason.startswith(NO_SELFTEST) for r in results) else "; ".join(skipped)
        return Choice(default["target"], default["precision"], "untested", f"{device}: {why}; "
                      f"{default['target']} {default['precision']} (the first compiled of the preferred target)",
                      candidates=measured, key=key or {}, measured_at=now)
    candidates = [Candidate(r.target, r.precision, r.passed, r.p50_ms, r.p50_ci_ms, r.reason) for r in ran]
    best, notes = select_variant(candidates)
    others = [f"{c.label} {notes[c.label]}" for c in candidates if best is None or c.label != best.label]
    if best is None:
        first = ran[0]
        return Choice(first.target, first.precision, "failed",
                      f"{device}: no artifact passes its self-test: " + "; ".join(others + skipped),
                      candidates=measured, key=key or {}, measured_at=now)
    head = f"{device}: {best.label} {best.p50_ms:.2f} ms"
    return Choice(best.target, best.precision, "passed", "; ".join([head, *others, *skipped]), p50_ms=best.p50_ms,
                  candidates=measured, key=key or {}, measured_at=now)


def choice_key(bundle: "Bundle", target: str | None = None, options: Mapping[str, Any] | None = None, *,
               version: str | None = None) -> dict[str, Any]:
    """What a cached choice depends on: the version (default: the bundle's folder name) and its manifest hash,
    this CPU's flags, the backend versions, and the request (target, runtime options)."""

    backends = {}
    for name in [target] if target else sorted({e["target"] for e in bundle.manifest.artifacts}):
        try:
            ok, info = get_target_class(name).availability()
        except UnknownTargetError:
            ok, info = False, "not registered"
        backends[name] = info if ok else f"unavailable: {info}"
    return {"version": version or bundle.path.name,
            "manifest_sha256": hashlib.sha256((bundle.path / "manifest.json").read_bytes()).hexdigest(),
            "cpu_flags": cpu_flags(), "backends": backends, "edgeship": __version__, "target": target,
            "options": dict(sorted((options or {}).items()))}


def read_choices(root: Path) -> dict[str, list[dict[str, Any]]]:
    """An install root's ``choice.json``: {version: [cached choice, ...]} ({} when absent or unreadable)."""
    try:
        data = json.loads((Path(root) / CHOICE_FILE).read_text(encoding="utf-8"))
        choices = data["choices"]
        if data.get("schema_version") != CHOICE_SCHEMA_VERSION or not isinstance(choices, dict):
            return {}
        return {v: [c for c in entries if isinstance(c, dict)] for v, entries in choices.items() if isinstance(entries, list)}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}  # a cache: what cannot be read is measured again


def read_choice(root: Path, version: str) -> Choice | None:
    """The last choice cached for ``version`` under ``root`` (whatever its key), for display."""
    for data in reversed(read_choices(root).get(version, [])):
        try:
            return Choice.from_dict(data, cached=True)
        except (ValueError, TypeError):
            continue
    return None


def store_choice(root: Path, choice: Choice, keep: Sequence[str] | None = None) -> None:
    """Write ``choice`` into ``root/choice.json`` (atomically), replacing one of the same request; ``keep``:
    drop the versions not listed."""

    choices = read_choices(root)
    version = choice.key.get("version", "")
    request = (choice.key.get("target"), choice.key.get("options"))
    mine = [c for c in choices.get(version, [])
            if (c.get("key", {}).get("target"), c.get("key", {}).get("options")) != request]
    choices[version] = (mine + [choice.to_dict()])[-_CHOICES_PER_VERSION:]
    if keep is not None:
        choices = {v: c for v, c in choices.items() if v in set(keep)}
    data = {"schema_version": CHOICE_SCHEMA_VERSION, "choices": choices}
    write_atomic(Path(root) / CHOICE_FILE, (json.dumps(data, indent=2) + "\n").encode("utf-8"))


def cached_choice(root: Path, bundle: "Bundle", target: str | None = None, **options: Any) -> Choice:
    """The choice cached in the install root ``root`` for ``bundle`` (its current version), measured and cached
    again when the key (version, CPU flags, backend versions, request) changed."""
    key = choice_key(bundle, target, options)
    for data in read_choices(root).get(key["version"], []):
        if data.get("key") == key:
            try:
                return Choice.from_dict(data, cached=True)
            except (ValueError, TypeError):
                break
    choice = choose(bundle, target, key=key, **options)
    try:
        store_choice(root, choice)
    except OSError as exc:  # a read-only install root: the choice holds for this process only
        warnings.warn(f"cannot cache the choice in {root / CHOICE_FILE}: {exc}", stacklevel=2)
    return choice


_MEMO: dict[str, Choice] = {}  # bundle folders: one choice per process, so load and serve agree


def device_variant(bundle: "Bundle", target: str | None = None, precision: str | None = "auto", *,
                   install_root: Path | None = None, **options: Any) -> Choice:
    """The (target, precision) this device runs for a request, after its self-test; SelfTestError when it
    fails (unless the install root recorded the version as installed degraded, then a warning).

    ``precision="auto"``: an install root's cached choice over all its targets; a bundle folder's choice
    among the precisions of ``target`` (None: the preferred target available here). A named precision:
    that artifact, its self-test run here.
    """
    if precision in (None, "auto"):
        if install_root is not None:
            choice = cached_choice(install_root, bundle, target, **options)
        else:
            if target is None:
                target = bundle.artifact(None, None)["target"]  # the preferred target available here
            key = choice_key(bundle, target, options) | {"path": os.path.realpath(bundle.path)}
            memo = json.dumps(key, sort_keys=True, default=str)
            if memo not in _MEMO:
                _MEMO[memo] = choose(bundle, target, key=key, **options)
            choice = _MEMO[memo]
    else:
        entry = bundle.artifact(target, precision)

        [result] = verify_bundle(bundle, entry["target"], entry["precision"], measure=False, **options)
        status = {"passed": "passed", "failed": "failed", "skipped": "untested"}[result.status]
        choice = Choice(result.target, result.precision, status,
                        result.reason or f"{result.target} {result.precision} passes its self-test here")
    if choice.status == "failed":
        degraded = _degraded_reason(install_root, bundle.path.name) if install_root is not None else None
        if degraded is None:
            raise SelfTestError(f"bundle {bundle.path}: {choice.target} {choice.precision} fails its self-test on "
                                f"this device: {choice.reason}")
        warnings.warn(f"{bundle.path.name} was installed degraded ({degraded}); running {choice.target} "
                      f"{choice.precision}, which fails its self-test here: {choice.reason}", stacklevel=2)
    return choice


def _degraded_reason(root: Path, version: str) -> str | None:
    from .deploy import degraded  # points up: deploy owns history.json, where installs record degraded versions

    return degraded(root).get(version)


# -- showing it ----------------------------------------------------------------------------------------
def print_info(path: str | os.PathLike, console: Any = None) -> None:
    """What ``edgeship info`` prints: the bundle's variants and their self-test at build, and for an install
    root the variant this device runs (the cached choice) and why."""
    from rich.console import Console
    from rich.table import Table


    given = Path(path)
    root = given if (given / CURRENT).is_symlink() and not (given / MANIFEST).exists() else None
    bundle = Bundle.open(given)
    m = bundle.manifest
    out = console or Console(width=160)
    flags = (m.get("build_host") or {}).get("cpu_flags") or []
    out.print(f"bundle {bundle.path}" + (f" (current version of install root {root})" if root else ""))
    out.print(f"model {m.get('model')}, task {m.get('task', 'classification')}, built {m.get('created')} on a CPU with "
              f"{describe_cpu(flags)} ({' '.join(flags) or 'flags unknown'})")
    section = m.get("selftest")
    if not isinstance(section, dict):
        out.print(f"self-test: {NO_SELFTEST} (made before bundles carried one)")
    elif section.get("skipped"):
        out.print(f"self-test: {NO_SELFTEST}: {section['skipped']}")
    else:
        out.print(f"self-test: {section['samples']} golden inputs from the {section['source']}, {section['selection']}; "
                  f"reference {section['reference']}; compared: {section['compared']}")
    table = Table(title="variants, and their self-test on the build machine")
    for header in ("target", "precision", "MB", "agreement", "max error", "tolerance", "build"):
        table.add_column(header, justify="right" if header in ("MB", "agreement", "max error") else "left")
    for entry in m["artifacts"]:
        st = entry.get("selftest") or {}
        tol = st.get("tolerance") or {}
        parts = [f"agree >= {tol['min_agreement']:.3f}"] if tol.get("min_agreement") is not None else []
        parts += [f"err <= {tol['max_abs_error']:.2g}"] if tol.get("max_abs_error") is not None else []
        verdict = "—" if not st else "not run there" if st.get("passed") is None else "pass" if st["passed"] else "FAIL"
        size = sum((bundle.path / f).stat().st_size for f in entry["files"] if (bundle.path / f).is_file()) / 1e6
        table.add_row(entry["target"], entry["precision"], f"{size:.2f}", _fmt(st.get("agreement"), ".3f"),
                      _fmt(st.get("max_abs_error"), ".2g"), ", ".join(parts) or "—", verdict)
    out.print(table)
    if root is None:
        out.print("this device: a bundle folder, no cached choice (an install root caches it; "
                  "`edgeship verify` runs the self-test here)")
        return
    version = bundle.path.name
    choice = read_choice(root, version)
    if choice is None:
        out.print("this device: no choice cached yet (install, load or serve measures it)")
    else:
        now = {"cpu_flags": cpu_flags(), "backends": choice_key(bundle, choice.key.get("target"))["backends"]}
        stale = [k.replace("_", " ") for k, v in now.items() if choice.key.get(k) != v]
        note = f"; stale: {' and '.join(stale)} changed since, the next load measures again" if stale else ""
        out.print(f"this device runs {choice.target} {choice.precision} (self-test {choice.status}, "
                  f"measured {choice.measured_at}{note})")
        out.print(f"  {choice.reason}")
    why = _degraded_reason(root, version)
    if why is not None:
        out.print(f"installed DEGRADED (allow_degraded): {why}")


def load(path: str | os.PathLike, target: str | None = None, precision: str | None = "auto", *,
         public_key: Any = None, **options: Any):
    """Open the bundle at ``path``, verify the chosen artifact and return its Runtime.

    Args:
        path: a bundle folder, or an install root whose ``current`` version is loaded.
        target: a target name; None picks the best one available here (TensorRT, OpenVINO, ONNX Runtime).
        precision: "auto" (default): the fastest artifact that passes the bundle's self-test here, measured
            (:mod:`edgeship.bundle.selftest`) — on an install root the choice cached at install over all its
            targets (measured again when the CPU or a backend changed), on a bundle folder among the
            precisions of ``target``; a named precision loads that artifact unchecked; None the first
            compiled one.
        public_key: verify the manifest's signature with this Ed25519 public key (PEM path or bytes);
            default ``$EDGESHIP_PUBLIC_KEY``; unsigned or tampered bundles are then refused.
        options: runtime options for the target, e.g. ``threads=2``.
    Raises:
        SelfTestError: with "auto", no artifact passes its self-test here.
    """
    bundle = Bundle.open(path, public_key=configured_public_key(public_key))
    if precision == "auto":
        given = Path(path)
        root = given if (given / CURRENT).is_symlink() and not (given / MANIFEST).exists() else None
        choice = device_variant(bundle, target, "auto", install_root=root, **options)
        target, precision = choice.target, choice.precision
    return bundle.load(target, precision, **options)
