"""Watch a served bundle: drift from its calibration record, live INT8-vs-FP32 agreement, hard-example captures.

``edgeship serve --monitor`` and ``edgeship stream --monitor`` hand every answered call to a :class:`Monitor`:

- **Drift.** What the model is given (per input channel: mean, std, value histogram on the calibration record's
  bins, :class:`edgeship.calibration.InputWindow`) and what it answers (a classifier's top-1 confidence histogram
  and class mix; a detector's detections per frame) over the last ``window`` frames, judged every ``check_every``
  frames once ``min_frames`` arrived, with the offline checks' limits (mean shift, std ratio, Jensen-Shannon
  divergence; :mod:`edgeship.calibration`). The reference is the manifest's ``calibration.profile``; a bundle
  without one (FP32-only builds, older bundles) is compared with its golden inputs and says so.
- **Shadow mode.** On a ``shadow_rate`` fraction of calls (a deterministic accumulator, not a coin) the bundle's
  FP32 artifact runs on the same model-ready input, while shadow time stays under ``shadow_budget`` x serving
  time; top-1 agreement (classifiers, :func:`edgeship.measure.fidelity.agrees`) or box agreement (detectors,
  :func:`edgeship.tasks.metrics.box_agreement` at score >= 0.5) over the last ``shadow_window`` comparisons, with a
  Wilson 95 % interval. An alert fires when the interval's upper end falls below the served artifact's self-test
  ``min_agreement`` (so a handful of unlucky frames cannot raise it) and clears when it no longer does.
- **Captures.** Frames with low confidence, detections near the score threshold, shadow disagreement, or taken
  while drift is at error level (every ``drift_capture_every``-th) go to a :class:`CaptureStore` with why.

Cost per frame is measured (``cost`` in :meth:`Monitor.snapshot`): the monitor's own time against the model's.
"""

from __future__ import annotations

import hashlib
import sys
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from ..calibration import InputWindow, input_profile
from ..calibration._checks import DRIFT_JS, Finding, _level, js_bits
from ..errors import ConfigError
from ..measure.fidelity import agrees
from ..measure.stats import wilson_interval
from ..tasks.postprocess import CONFIDENCE_BINS, Postprocess, confidence_bins, confidences

if TYPE_CHECKING:
    from ..bundle.folder import Bundle
    from ..bundle.predictor import Inference
    from .captures import CaptureStore

__all__ = ["Monitor", "MonitorConfig"]

# the answers' histograms are judged from this many on: Jensen-Shannon divergence of a histogram of n answers from
# its own distribution is ~ (bins - 1) / (2 n ln 4) bits by chance alone, 0.02 bits for 10 bins at 200 answers
OUTPUT_MIN_ANSWERS = 200
DETECTION_SCORE = 0.5  # the detections an application keeps (as the self-test compares them)
_LEVELS = {None: 0, "warning": 1, "error": 2}


def _integer(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _fraction(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1


@dataclass(frozen=True)
class MonitorConfig:
    """What a :class:`Monitor` watches and how hard; validated when built (ConfigError naming the field).

    ``window`` frames of drift statistics, judged every ``check_every`` frames once ``min_frames`` arrived.
    ``shadow_rate``: fraction of calls the FP32 artifact also runs on (0: no shadow mode), while shadow time
    stays under ``shadow_budget`` x the served model's time; agreement over the last ``shadow_window``
    comparisons, judged from ``shadow_min`` on. Captured: a classifier's answers under ``low_confidence``,
    detections within ``near_threshold`` of the 0.5 score threshold, disagreements, and every
    ``drift_capture_every``-th frame while drift is at error level. ``degrade_health``: ``/healthz`` answers
    503 "degraded" while the shadow alert holds. ``cost_budget``: the monitor's own time stays under this fraction
    of the model's — a call arriving while it is over is counted but not looked at (1.0: look at every call
    whatever it costs), so a tiny model is watched on a sample of its frames rather than slowed down.
    """

    window: int = 300
    check_every: int = 10
    min_frames: int = 30
    shadow_rate: float = 0.0
    shadow_budget: float = 0.25
    shadow_window: int = 200
    shadow_min: int = 20
    low_confidence: float = 0.5
    near_threshold: float = 0.1
    drift_capture_every: int = 10
    degrade_health: bool = False
    cost_budget: float = 0.03

    def __post_init__(self) -> None:
        for name, low in (("window", 2), ("check_every", 1), ("min_frames", 1), ("shadow_window", 1),
                          ("shadow_min", 1), ("drift_capture_every", 1)):
            if not _integer(getattr(self, name), low):
                raise ConfigError(f"MonitorConfig.{name} must be an integer >= {low}, got {getattr(self, name)!r}")
        for name in ("shadow_rate", "shadow_budget", "low_confidence", "near_threshold", "cost_budget"):
            if not _fraction(getattr(self, name)):
                raise ConfigError(f"MonitorConfig.{name} must be a number in [0, 1], got {getattr(self, name)!r}")
        if self.min_frames > self.window:
            raise ConfigError(f"MonitorConfig.min_frames ({self.min_frames}) must not exceed window ({self.window})")
        if not isinstance(self.degrade_health, bool):
            raise ConfigError(f"MonitorConfig.degrade_health must be true or false, got {self.degrade_health!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Monitor:
    """One served version's monitor (see the module doc); thread-safe: serve's workers share it.

    ``target`` / ``precision``: the artifact being served (its self-test tolerance is the alert's limit; the FP32
    artifact of the same target is the shadow, else any FP32 artifact this machine runs). ``asynchronous``: run
    the shadow on a thread of its own (serve: a sampled request is not delayed; a sample arriving while the shadow
    is busy is skipped and counted) or inline (stream: one frame after another, reproducible).
    """

    def __init__(self, bundle: "Bundle", config: MonitorConfig | None = None, *, target: str, precision: str,
                 capture: "CaptureStore | None" = None, asynchronous: bool = False, **options: Any) -> None:
        self.config = config = MonitorConfig() if config is None else config
        if not isinstance(config, MonitorConfig):
            raise ConfigError(f"config must be a MonitorConfig, got {type(config).__name__}")
        self.bundle, self.target, self.precision, self.capture = bundle, target, precision, capture
        manifest = bundle.manifest
        self.detection = manifest.detection is not None
        self.postprocess = Postprocess.of_manifest(manifest)
        self._lock = threading.Lock()
        self.frames = 0
        self.observed = 0  # frames looked at (the rest arrived while the monitor was over its cost budget)
        self._model_seconds = 0.0
        self._monitor_seconds = 0.0
        self._since_check = 0
        self._since_drift_capture = 0
        self.drift_level: str | None = None
        self.findings: list[Finding] = []
        self._drift_rows: list[dict[str, Any]] = []
        self._output_drift: dict[str, float] = {}
        self.checked_at: int | None = None
        self.identity = {"version": bundle.path.name, "manifest_sha256": hashlib.sha256(
            (bundle.path / "manifest.json").read_bytes()).hexdigest(), "target": target, "precision": precision}
        self._reference(manifest)
        self._confidence: deque[int] = deque(maxlen=config.window)
        self._classes: deque[int] = deque(maxlen=config.window)
        self._boxes: deque[int] = deque(maxlen=config.window)
        self._shadow_setup(options)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="edgeship-shadow") if asynchronous and self._shadow else None
        self._shadow_busy = False
        self._closed = False

    # -- what is compared with what ------------------------------------------------------------------
    def _reference(self, manifest: Any) -> None:
        profile = manifest.calibration_profile or {}
        self.output_reference = profile.get("output")
        reference = profile.get("input")
        self.reference_source = str((reference or {}).get("source") or "the calibration record")
        if reference is None:
            from ..bundle.selftest import load_golden

            golden = load_golden(self.bundle)
            if golden is not None and golden.inputs.ndim >= 2:
                reference = input_profile(golden.inputs, self.bundle.spec)
                self.reference_source = (f"the bundle's {len(golden.inputs)} golden inputs (it records no calibration "
                                         "profile: rebuild it with this edgeship for a calibration-set reference)")
        self.inputs = InputWindow(reference, self.config.window) if reference is not None else None
        if self.inputs is None:
            self.reference_source = "none: the bundle has neither a calibration profile nor golden inputs"

    def _shadow_setup(self, options: dict[str, Any]) -> None:
        self._shadow: Any = None
        self._shadow_detector: Any = None
        self.shadow_reason = None
        self._agree: deque[tuple[float, int]] = deque(maxlen=self.config.shadow_window)
        self._credit = 0.0
        self.shadow_runs = self.shadow_skipped_budget = self.shadow_skipped_busy = 0
        self._shadow_seconds = 0.0
        self.alert = False
        entry = self.bundle.artifact(self.target, self.precision)
        tolerance = (entry.get("selftest") or {}).get("tolerance") or {}
        self.tolerance = tolerance.get("min_agreement")
        if self.config.shadow_rate <= 0:
            self.shadow_reason = "off (shadow_rate 0)"
            return
        if self.precision == "fp32":
            raise ConfigError(f"shadow mode compares the served artifact with FP32, but {self.target} fp32 is being "
                              "served; serve an int8 (or fp16) artifact, or leave the shadow rate at 0")
        variants = [(self.target, "fp32")] + [(t, p) for t, p in self.bundle.variants if p == "fp32" and t != self.target]
        errors = []
        for target, precision in variants:
            if (target, precision) not in self.bundle.variants:
                continue
            try:
                self._shadow = self.bundle.load(target, precision, **options)
            except Exception as exc:  # noqa: BLE001 - a backend this machine lacks: try the next FP32 artifact
                errors.append(f"{target}: {exc}")
                continue
            self.shadow_target = target
            break
        if self._shadow is None:
            raise ConfigError("shadow mode needs an FP32 artifact this machine runs; the bundle has "
                              f"{self.bundle.variants}" + (f" ({'; '.join(errors)})" if errors else ""))
        if self.detection:
            from ..bundle.detector import Detector

            self._shadow_detector = Detector(self.bundle, runtime=self._shadow)
        if self.tolerance is None:
            self.shadow_reason = "no self-test tolerance recorded for the served artifact: agreement is reported, no alert"

    # -- one answered call ---------------------------------------------------------------------------
    def observe(self, inference: "Inference", images: list[np.ndarray] | None = None,
                where: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Take one answered call (``images``: the raw images it answered, for captures; None for tensors);
        returns the events it raised (drift level changes, shadow alerts), each a JSON-ready dict."""
        start = time.perf_counter()
        batch = inference.batch
        n = len(batch)
        with self._lock:
            self._model_seconds += inference.seconds
            self.frames += n
            over = self.config.cost_budget < 1 and self._monitor_seconds > self.config.cost_budget * self._model_seconds
            run_shadow = self._sample_shadow(inference.seconds)
        if over:
            events: list[dict[str, Any]] = []
            reasons: list[list[str]] = [[] for _ in range(n)]
            scores: list[dict[str, Any]] = [{} for _ in range(n)]
        else:
            events, reasons, scores = self._look(inference, images, where, run_shadow)
            with self._lock:
                self._monitor_seconds += time.perf_counter() - start
        if run_shadow:  # the shadow captures, knowing whether the frames agreed; its time is counted apart
            if self._pool is not None:
                try:
                    self._pool.submit(self._shadow_job, inference, images, reasons, scores, where)
                except RuntimeError:  # closed meanwhile (a reload retired this version)
                    with self._lock:
                        self._shadow_busy = False
            else:
                events.extend(self._shadow_compare(inference, images, reasons, scores, where))
        return events

    def _look(self, inference: "Inference", images: list[np.ndarray] | None, where: Mapping[str, Any] | None,
              shadowed: bool) -> tuple[list[dict[str, Any]], list[list[str]], list[dict[str, Any]]]:
        """(events, capture reasons, scores per frame): statistics, drift judgement and captures of one call."""
        batch = inference.batch
        n = len(batch)
        if self.inputs is not None:
            self.inputs.add(batch)
        reasons: list[list[str]] = [[] for _ in range(n)]
        scores: list[dict[str, Any]] = [{} for _ in range(n)]
        if inference.detections is not None:
            counts = [int((d["scores"] >= DETECTION_SCORE).sum()) for d in inference.detections]
            for i, det in enumerate(inference.detections):
                near = np.abs(det["scores"] - DETECTION_SCORE) <= self.config.near_threshold
                scores[i] = {"detections": counts[i], "near_threshold": int(near.sum())}
                if near.any():
                    reasons[i].append("near-threshold")
            confidence = classes = None
        else:
            confidence, classes = confidences(inference.outputs, self.postprocess)
            for i in range(n):
                scores[i] = {"confidence": round(float(confidence[i]), 6), "class": int(classes[i])}
                if confidence[i] < self.config.low_confidence:
                    reasons[i].append("low-confidence")
        events: list[dict[str, Any]] = []
        with self._lock:
            self.observed += n
            if inference.detections is not None:
                self._boxes.extend(counts)
            else:
                self._confidence.extend(confidence_bins(confidence))
                self._classes.extend(int(c) for c in classes)
            self._since_check += n
            if self._since_check >= self.config.check_every and self.observed >= self.config.min_frames:
                self._since_check = 0
                event = self._judge_drift()
                if event:
                    events.append(event)
            if self.drift_level == "error":
                self._since_drift_capture += n
                if self._since_drift_capture >= self.config.drift_capture_every:
                    self._since_drift_capture = 0
                    reasons[-1].append("drift")
        if not shadowed:  # else the shadow captures, once it knows whether the frames agreed
            self._capture(inference, images, reasons, scores, where)
        return events, reasons, scores

    def _sample_shadow(self, model_seconds: float) -> bool:
        """Whether this call is shadowed (under the lock): the rate's accumulator, then the budget and the slot."""
        if self._shadow is None or self._closed:
            return False
        self._credit += self.config.shadow_rate
        if self._credit < 1.0:
            return False
        self._credit -= 1.0
        if self._shadow_seconds > self.config.shadow_budget * self._model_seconds:
            self.shadow_skipped_budget += 1
            return False
        if self._pool is not None:
            if self._shadow_busy:
                self.shadow_skipped_busy += 1
                return False
            self._shadow_busy = True
        return True

    def _shadow_job(self, *args: Any) -> None:
        try:
            for event in self._shadow_compare(*args):
                print(f"edgeship monitor: {event['message']}", file=sys.stderr, flush=True)
        except Exception as exc:  # noqa: BLE001 - the shadow must never take the server down
            print(f"edgeship monitor: shadow run failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        finally:
            with self._lock:
                self._shadow_busy = False

    def _shadow_compare(self, inference: "Inference", images: list[np.ndarray] | None, reasons: list[list[str]],
                        scores: list[dict[str, Any]], where: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        start = time.perf_counter()
        if self._shadow_detector is not None:
            from ..tasks.metrics import box_agreement

            if images is None:
                return []
            reference, _ = self._shadow_detector.detect(list(images))
            results = []
            for got, want in zip(inference.detections, reference):
                total = int((got["scores"] >= DETECTION_SCORE).sum() + (want["scores"] >= DETECTION_SCORE).sum())
                value = box_agreement([got], [want], iou=0.5, min_score=DETECTION_SCORE)
                results.append((value * total, total, value >= 1.0))
        else:
            reference = self._shadow.run(inference.batch)
            name = next(iter(inference.outputs))
            same = agrees(np.asarray(inference.outputs[name]), np.asarray(reference[name]))
            results = [(float(s), 1, bool(s)) for s in same]
        seconds = time.perf_counter() - start
        for i, (_, _, agreed) in enumerate(results):
            scores[i]["shadow_agrees"] = agreed
            if not agreed:
                reasons[i].append("disagreement")
        events = []
        with self._lock:
            self._shadow_seconds += seconds
            self.shadow_runs += 1
            self._agree.extend((s, t) for s, t, _ in results if t)
            event = self._judge_alert()
            if event:
                events.append(event)
        self._capture(inference, images, reasons, scores, where)
        return events

    # -- judgements (under the lock) ------------------------------------------------------------------
    def _judge_drift(self) -> dict[str, Any] | None:
        findings: list[Finding] = []
        if self.inputs is not None:
            self._drift_rows, findings = self.inputs.drift(self.reference_source)
        self._output_drift = {}
        ref = self.output_reference
        if ref is not None and len(self._confidence) >= OUTPUT_MIN_ANSWERS:
            conf = np.bincount(np.asarray(self._confidence), minlength=CONFIDENCE_BINS)
            mix = np.bincount(np.asarray(self._classes), minlength=len(ref["classes"]))
            for code, what, current, recorded in (
                    ("drift-confidence", "top-1 confidence histogram", conf, ref["confidence"]),
                    ("drift-class-mix", "predicted class mix", mix, ref["classes"])):
                if len(current) != len(recorded):
                    continue
                js = js_bits(current, recorded)
                self._output_drift[code] = round(js, 4)
                level = _level(js, DRIFT_JS)
                if level:
                    findings.append(Finding(level, code, (
                        f"the {what} of the last {len(self._confidence)} answers differs from the FP32 model's on the "
                        f"calibration set: Jensen-Shannon divergence {js:.3f} bits; expected under {DRIFT_JS[0]}")))
        self.findings = findings
        self.checked_at = self.frames
        level = max((f.level for f in findings), key=_LEVELS.get, default=None)
        if level == self.drift_level:
            return None
        previous, self.drift_level = self.drift_level, level
        message = (f"drift {level or 'cleared'} at frame {self.frames} (was {previous or 'ok'}): "
                   + ("; ".join(f.message for f in findings) if findings else "the window matches the reference"))
        return {"event": "drift", "level": level or "ok", "frame": self.frames, "message": message,
                "findings": [f.to_dict() for f in findings]}

    def _agreement(self) -> tuple[float | None, tuple[float, float] | None, int]:
        trials = sum(t for _, t in self._agree)
        if not trials:
            return None, None, 0
        successes = sum(s for s, _ in self._agree)
        return successes / trials, wilson_interval(int(round(successes)), trials), trials

    def _judge_alert(self) -> dict[str, Any] | None:
        if self.tolerance is None:
            return None
        value, interval, trials = self._agreement()
        if value is None or len(self._agree) < self.config.shadow_min:
            return None
        alert = interval[1] < self.tolerance
        if alert == self.alert:
            return None
        self.alert = alert
        verb = "below" if alert else "back within"
        message = (f"shadow agreement {value:.1%} (95 % interval {interval[0]:.1%}..{interval[1]:.1%}, {trials} "
                   f"compared) is {verb} the self-test's {self.tolerance:.1%} for {self.target} {self.precision}")
        return {"event": "shadow-alert" if alert else "shadow-ok", "frame": self.frames, "message": message,
                "agreement": round(value, 4), "interval": [round(v, 4) for v in interval],
                "tolerance": self.tolerance}

    # -- captures ------------------------------------------------------------------------------------
    def _capture(self, inference: "Inference", images: list[np.ndarray] | None, reasons: list[list[str]],
                 scores: list[dict[str, Any]], where: Mapping[str, Any] | None) -> None:
        if self.capture is None or images is None:
            return
        results = inference.reply.get("results")
        for i, why in enumerate(reasons):
            if not why or i >= len(images):
                continue
            self.capture.save(images[i], {
                "reasons": why, "scores": scores[i], "result": results[i] if results and i < len(results) else None,
                "bundle": self.identity, "drift": self.drift_level or "ok", "where": dict(where or {}),
                "label": None})

    # -- what is exposed ------------------------------------------------------------------------------
    def health(self) -> tuple[str, list[str]]:
        """("ok" | "degraded", why): degraded while the shadow alert holds and ``degrade_health`` is set."""
        with self._lock:
            if self.alert and self.config.degrade_health:
                value, interval, _ = self._agreement()
                return "degraded", [f"shadow agreement {value:.1%} (upper 95 % bound {interval[1]:.1%}) is below "
                                    f"the self-test's {self.tolerance:.1%}"]
        return "ok", []

    def snapshot(self) -> dict[str, Any]:
        """Everything the monitor knows, JSON-ready (``GET /v1/monitor``)."""
        with self._lock:
            value, interval, trials = self._agreement()
            outputs: dict[str, Any]
            if self.detection:
                boxes = list(self._boxes)
                outputs = {"detections_per_frame": round(float(np.mean(boxes)), 4) if boxes else None,
                           "frames_without_detections": int(sum(b == 0 for b in boxes))}
            else:
                outputs = {"confidence_histogram": np.bincount(np.asarray(self._confidence, dtype=np.int64),
                                                               minlength=CONFIDENCE_BINS).tolist(),
                           "class_mix": np.bincount(np.asarray(self._classes, dtype=np.int64)).tolist(),
                           "reference": self.output_reference}
            per_frame = 1000.0 / max(self.frames, 1)
            return {
                "bundle": self.identity, "config": self.config.to_dict(), "frames": self.frames,
                "observed": self.observed,
                "drift": {"level": self.drift_level or "ok", "reference": self.reference_source,
                          "checked_at_frame": self.checked_at, "window": min(self.frames, self.config.window),
                          "input": self._drift_rows, "output": self._output_drift,
                          "findings": [f.to_dict() for f in self.findings]},
                "outputs": outputs,
                "shadow": {"enabled": self._shadow is not None, "note": self.shadow_reason,
                           "target": getattr(self, "shadow_target", None), "runs": self.shadow_runs,
                           "skipped_budget": self.shadow_skipped_budget, "skipped_busy": self.shadow_skipped_busy,
                           "agreement": None if value is None else round(value, 4),
                           "interval": None if interval is None else [round(v, 4) for v in interval],
                           "compared": trials, "tolerance": self.tolerance, "alert": self.alert},
                "captures": self.capture.stats() if self.capture is not None else None,
                "cost": {"model_ms_per_frame": round(self._model_seconds * per_frame, 4),
                         "monitor_ms_per_frame": round(self._monitor_seconds * per_frame, 4),
                         "monitor_ms_per_observed_frame": round(self._monitor_seconds * 1000.0 / max(self.observed, 1), 4),
                         "shadow_ms_per_frame": round(self._shadow_seconds * per_frame, 4)},
            }

    def metric_families(self) -> list[Any]:
        """The monitor's Prometheus gauges and counters (prometheus_client metric families) for ``/metrics``."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        snap = self.snapshot()
        drift, shadow = snap["drift"], snap["shadow"]
        level = GaugeMetricFamily("edgeship_drift_level", "Drift from the calibration record: 0 ok, 1 warning, 2 error.",
                                  value=_LEVELS[self.drift_level])
        families = [level, CounterMetricFamily("edgeship_monitor_frames", "Frames the monitor has seen.",
                                               value=snap["frames"])]
        for key, name, doc in (("mean_shift", "edgeship_drift_mean_shift", "Window mean shift in reference stds."),
                               ("std_ratio", "edgeship_drift_std_ratio", "Window std over the reference's."),
                               ("js_divergence", "edgeship_drift_js_bits", "Jensen-Shannon divergence of the value "
                                                                           "histogram from the reference's (bits).")):
            family = GaugeMetricFamily(name, doc, labels=["channel"])
            for row in drift["input"]:
                family.add_metric([str(row["channel"])], row[key])
            families.append(family)
        output = GaugeMetricFamily("edgeship_output_drift_js_bits", "Jensen-Shannon divergence of the answers' "
                                   "confidence histogram / class mix from the FP32 reference's (bits).", labels=["what"])
        for code, js in drift["output"].items():
            output.add_metric([code.removeprefix("drift-")], js)
        families.append(output)
        if shadow["enabled"]:
            for name, doc, value in (
                    ("edgeship_shadow_agreement", "INT8-vs-FP32 agreement over the shadow window.", shadow["agreement"]),
                    ("edgeship_shadow_agreement_lower", "Lower end of its Wilson 95 % interval.",
                     shadow["interval"][0] if shadow["interval"] else None),
                    ("edgeship_shadow_agreement_upper", "Upper end of its Wilson 95 % interval.",
                     shadow["interval"][1] if shadow["interval"] else None),
                    ("edgeship_shadow_alert", "1 while agreement is confidently below the self-test's tolerance.",
                     int(shadow["alert"]))):
                if value is not None:
                    families.append(GaugeMetricFamily(name, doc, value=value))
            families.append(CounterMetricFamily("edgeship_shadow_runs", "Calls the FP32 shadow also ran.",
                                                value=shadow["runs"]))
        if snap["captures"] is not None:
            caps = CounterMetricFamily("edgeship_captures", "Capture attempts by outcome.", labels=["outcome"])
            for key in ("saved", "rate_limited", "rotated", "too_large", "refused", "errors"):
                if key in snap["captures"]:
                    caps.add_metric([key], snap["captures"][key])
            families.append(caps)
        return families

    def close(self) -> None:
        """Wait for a shadow run in flight, then release the shadow runtime."""
        with self._lock:
            self._closed = True
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        if self._shadow is not None:
            self._shadow.close()
