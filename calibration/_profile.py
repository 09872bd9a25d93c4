"""What the model is given, as statistics: the calibration record's profile, and the same numbers over a window.

A bundle records, per input channel of its calibration set, the mean, the standard deviation and a value
histogram on fixed bins (:func:`input_profile`, in the manifest's ``calibration.profile.input``). On the device,
:class:`InputWindow` keeps the same statistics over the last ``window`` frames, on the same bins, at a bounded cost
per frame (at most ``VALUES_PER_FRAME`` values per channel, strided) and in bounded memory (one row of sums and
one histogram per frame in a ring), and judges them with the drift checks of :func:`edgeship.calibration.check`
(mean shift, std ratio, Jensen-Shannon divergence; the same limits), so "drifted" means the same offline and live.

Bins: where the spec's preprocessing is known, the interval it maps 8-bit pixels into (every raw image lands
inside, so a brightness shift moves mass between bins rather than out of them); else the calibration values'
0.1st..99.9th percentiles widened by half their width on each side. Values outside are counted in the end bins.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError
from ._checks import HIST_BINS, Finding, _channel_axis, _channel_values, drift_row, expected_ranges, js_bits, judge_drift

if TYPE_CHECKING:
    from ..spec import InputSpec

__all__ = ["InputWindow", "VALUES_PER_FRAME", "compare_profiles", "input_profile"]

VALUES_PER_FRAME = 4096  # per channel: a strided subset of each frame's values goes into the window
PROFILE_SCHEMA = 1


def input_profile(batch: np.ndarray, spec: "InputSpec | None", like: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Per-channel mean, std and value histogram (counts on ``HIST_BINS`` fixed bins) of model-ready samples;
    on the bins of the profile ``like`` when given (to compare with it)."""
    batch = np.asarray(batch)
    if batch.ndim < 2 or not len(batch):
        raise ConfigError(f"a profile needs model-ready samples (N, ...), got shape {batch.shape}")
    axis = _channel_axis(batch, spec)
    values = _channel_values(batch, axis)
    if like is not None:
        check_profile(like, "the reference profile")
        if len(like["channels"]) != len(values):
            raise ConfigError(f"the samples have {len(values)} channels but the reference profile has "
                              f"{len(like['channels'])}; preprocess them with the bundle's InputSpec")
        ranges = [tuple(ch["range"]) for ch in like["channels"]]
    else:
        ranges = _bins(values, spec)
    channels = []
    for v, (lo, hi) in zip(values, ranges):
        channels.append({"mean": float(v.mean()), "std": float(v.std()), "range": [lo, hi],
                         "hist": _histogram(v[None], np.array([lo]), np.array([hi]))[0].tolist()})
    return {"schema": PROFILE_SCHEMA, "samples": int(len(batch)), "bins": HIST_BINS,
            "layout": None if axis is None else ("NHWC" if axis == 3 else "NCHW"), "channels": channels}


def compare_profiles(current: Mapping[str, Any], reference: Mapping[str, Any], source: str
                     ) -> tuple[list[dict[str, Any]], list[Finding]]:
    """(per-channel drift rows, findings) of one profile against a reference profile on the same bins."""
    check_profile(reference, "the reference profile")
    cur, ref = current["channels"], reference["channels"]
    if len(cur) != len(ref):
        raise ConfigError(f"the profile has {len(cur)} channels but the reference has {len(ref)}; "
                          "both must come from the same input spec")
    rows = []
    for c, (x, r) in enumerate(zip(cur, ref)):
        if list(x["range"]) != list(r["range"]) or len(x["hist"]) != len(r["hist"]):
            raise ConfigError(f"channel {c}: histogram bins differ from the reference's; profile both with "
                              "the same InputSpec")
        rows.append(drift_row(c, x["mean"], x["std"], r["mean"], r["std"], js_bits(x["hist"], r["hist"])))
    return rows, judge_drift(rows, source)


def check_profile(profile: Any, what: str) -> None:
    """ConfigError unless ``profile`` is an input profile as :func:`input_profile` writes it."""
    ok = isinstance(profile, Mapping) and isinstance(profile.get("channels"), list) and profile["channels"]
    if ok:
        for ch in profile["channels"]:
            ok = (isinstance(ch, Mapping) and all(isinstance(ch.get(k), (int, float)) for k in ("mean", "std"))
                  and isinstance(ch.get("range"), list) and len(ch["range"]) == 2
                  and isinstance(ch.get("hist"), list) and len(ch["hist"]) >= 2)
            if not ok:
                break
    if not ok:
        raise ConfigError(f"{what} is not an input profile (expected {{'channels': [{{'mean', 'std', 'range', "
                          f"'hist'}}, ...]}} as edgeship.calibration.input_profile writes)")


class InputWindow:
    """The reference's statistics over the last ``window`` frames, on the reference's bins; thread-safe.

    Memory: ``window`` x channels x (bins + 3) numbers, whatever the frame size. Cost per frame: one strided
    subset of at most ``VALUES_PER_FRAME`` values per channel, one ``bincount``.
    """

    def __init__(self, reference: Mapping[str, Any], window: int = 300) -> None:
        check_profile(reference, "the reference profile")
        if not isinstance(window, int) or isinstance(window, bool) or window < 2:
            raise ConfigError(f"the drift window must be an integer >= 2 frames, got {window!r}")
        self.reference, self.window = reference, window
        channels = reference["channels"]
        self.layout = reference.get("layout")
        self.channels, self.bins = len(channels), len(channels[0]["hist"])
        self._lo = np.array([ch["range"][0] for ch in channels], dtype=np.float64)
        self._hi = np.array([ch["range"][1] for ch in channels], dtype=np.float64)
        self._ring_moments = np.zeros((window, self.channels, 3))  # count, sum, sum of squares
        self._ring_hist = np.zeros((window, self.channels, self.bins), dtype=np.int64)
        self._moments = np.zeros((self.channels, 3))
        self._hist = np.zeros((self.channels, self.bins), dtype=np.int64)
        self._next = 0
        self.frames = 0  # frames seen in all (the window holds the last min(frames, window))
        self._lock = threading.Lock()

    def add(self, batch: np.ndarray) -> None:
        """Add model-ready samples (N, ...) as N frames."""
        for sample in np.asarray(batch):
            values = self._values(sample)
            hist = _histogram(values, self._lo, self._hi, self.bins)
            moments = np.stack([np.full(self.channels, values.shape[1], dtype=np.float64),
                                values.sum(1), np.einsum("ij,ij->i", values, values)], axis=1)
            with self._lock:
                slot = self._next
                self._moments += moments - self._ring_moments[slot]
                self._hist += hist - self._ring_hist[slot]
                self._ring_moments[slot], self._ring_hist[slot] = moments, hist
                self._next = (slot + 1) % self.window
                self.frames += 1
                if self._next == 0:  # once per window: sums again from the ring, so float error cannot build up
                    self._moments = self._ring_moments.sum(0)

    def profile(self) -> dict[str, Any]:
        """The window as a profile (what :func:`compare_profiles` takes); ``samples`` frames."""
        with self._lock:
            moments, hist, frames = self._moments.copy(), self._hist.copy(), min(self.frames, self.window)
        channels = []
        for c in range(self.channels):
            n, s, ss = moments[c]
            mean = s / n if n else 0.0
            std = float(np.sqrt(max(ss / n - mean * mean, 0.0))) if n else 0.0
            channels.append({"mean": float(mean), "std": std, "range": [float(self._lo[c]), float(self._hi[c])],
                             "hist": hist[c].tolist()})
        return {"schema": PROFILE_SCHEMA, "samples": frames, "bins": self.bins, "layout": self.layout,
                "channels": channels}

    def drift(self, source: str) -> tuple[list[dict[str, Any]], list[Finding]]:
        """(per-channel drift rows, findings) of the window against the reference."""
        return compare_profiles(self.profile(), self.reference, source)

    def _values(self, sample: np.ndarray) -> np.ndarray:
        if sample.ndim == 3 and self.layout in ("NCHW", "NHWC"):
            flat = sample.reshape(sample.shape[0], -1) if self.layout == "NCHW" else sample.reshape(-1, sample.shape[-1]).T
        else:
            flat = sample.reshape(1, -1)
        if flat.shape[0] != self.channels:
            raise ConfigError(f"a frame with {flat.shape[0]} channels, but the reference profile has {self.channels}")
        step = -(-flat.shape[1] // VALUES_PER_FRAME)
        return np.asarray(flat[:, ::step], dtype=np.float64)


def _bins(values: list[np.ndarray], spec: "InputSpec | None") -> list[tuple[float, float]]:
    if spec is not None and spec.preprocess is not None:
        return [(float(lo), float(hi)) for lo, hi in expected_ranges(spec, len(values))]
    out = []
    for v in values:
        lo, hi = (float(q) for q in np.percentile(v, [0.1, 99.9]))
        pad = 0.5 * (hi - lo) if hi > lo else max(abs(lo), 1.0)
        out.append((lo - pad, hi + pad))
    return out


def _histogram(values: np.ndarray, lo: np.ndarray, hi: np.ndarray, bins: int = HIST_BINS) -> np.ndarray:
    """Counts per channel (rows of ``values``) on ``bins`` equal bins of [lo, hi]; outside values in the end bins."""
    width = np.where(hi > lo, hi - lo, 1.0)
    index = ((values - lo[:, None]) * (bins / width)[:, None]).astype(np.int64)
    np.clip(index, 0, bins - 1, out=index)
    index += (np.arange(len(values)) * bins)[:, None]
    return np.bincount(index.ravel(), minlength=len(values) * bins).reshape(len(values), bins)
