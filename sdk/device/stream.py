"""Run a bundle over a video file, an RTSP/HTTP stream or a camera, one JSON line per processed frame.

OpenCV (``pip install "edgeship[video]"``, imported only here) decodes the frames. Each frame is
converted from OpenCV's BGR to RGB (grey for one-channel models) and handed to
:class:`edgeship.bundle.predictor.Predictor`: when the manifest's preprocessing does not resize, it resizes
frames to the input spec's size with the preprocessing's own resizer, then preprocesses them as the manifest
says. A reader thread decodes while the model runs:

- live sources (camera index, ``rtsp://``, ``http(s)://``, or any source with ``live=True``) keep only
  the newest frame, so the output never falls behind; frames replaced before the model took them
  are counted as dropped. When a live source ends or fails it is reopened with exponential backoff.
- files are read frame by frame with back-pressure: nothing is dropped, the end of the file ends the run.

Each line: ``{"frame": index in the source, "timestamp": seconds (position in a file, wall-clock time
for a live source), "results": [...]}`` (or ``"outputs"`` when the manifest records no postprocessing).
A detection bundle's results are its boxes in the frame's own pixels (``{"detections": [{"box", "score",
"index", "label"}]}``), decoded and NMS'd by :class:`edgeship.bundle.detector.Detector`.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Callable

import numpy as np

from .._lazy import require
from ..bundle.folder import Bundle
from ..bundle.predictor import Predictor
from ..bundle.signing import configured_public_key
from ..errors import ConfigError

if TYPE_CHECKING:
    from .captures import CaptureStore
    from .monitor import MonitorConfig

__all__ = ["StreamStats", "run_stream"]

_NETWORK_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")


@dataclass
class StreamStats:
    """What a run did: frames the source delivered, frames the model processed, frames dropped, reconnects."""

    frames_read: int = 0
    processed: int = 0
    dropped: int = 0
    reconnects: int = 0
    ended: str = "end of stream"  # or "max frames", "disconnected"
    monitor: dict[str, Any] | None = None  # the monitor's snapshot at the end, when the run was monitored

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if data["monitor"] is None:
            data.pop("monitor")
        return data


def _parse_source(source: str | int) -> tuple[str | int, bool]:
    """(what cv2.VideoCapture opens, whether it is live)."""
    if isinstance(source, int) or (isinstance(source, str) and source.isdigit()):
        return int(source), True
    text = str(source)
    if text.lower().startswith(_NETWORK_SCHEMES):
        return text, True
    if not Path(text).is_file():
        raise ConfigError(f"video source {text!r} is not a file, a camera index or an rtsp:// / http(s):// URL")
    return text, False


class _Reader(threading.Thread):
    """Decodes frames into a one-slot buffer: live sources overwrite it (drops), files wait for it to empty."""

    def __init__(self, cv2: Any, source: str | int, live: bool, max_reconnects: int, backoff: float,
                 stats: StreamStats) -> None:
        super().__init__(daemon=True, name="edgeship-stream-reader")
        self.cv2, self.source, self.live = cv2, source, live
        self.max_reconnects, self.backoff = max_reconnects, backoff
        self.stats = stats
        self.cond = threading.Condition()
        self.slot: tuple[int, float, np.ndarray] | None = None
        self.done = False
        self.stopping = False
        self.error: str | None = None

    def _open(self):
        cap = self.cv2.VideoCapture(self.source)
        if not cap.isOpened():
            cap.release()
            return None
        return cap

    def run(self) -> None:
        index = 0
        attempts = 0
        cap = self._open()
        if cap is None and not self.live:
            self.error = f"OpenCV cannot open video source {self.source!r}"
        try:
            while not self.stopping and self.error is None:
                ok, frame = cap.read() if cap is not None else (False, None)
                if not ok:
                    if cap is not None:
                        cap.release()
                        cap = None
                    if not self.live:
                        break
                    if attempts >= self.max_reconnects:
                        self.stats.ended = "disconnected"
                        break
                    time.sleep(min(self.backoff * (2 ** attempts), 30.0))  # exponential backoff, capped
                    attempts += 1
                    self.stats.reconnects += 1
                    cap = self._open()
                    continue
                attempts = 0
                stamp = time.time() if self.live else cap.get(self.cv2.CAP_PROP_POS_MSEC) / 1000.0
                with self.cond:
                    if not self.live:  # back-pressure: wait until the model took the previous frame
                        while self.slot is not None and not self.stopping:
                            self.cond.wait()
                    if self.stopping:
                        break
                    self.stats.frames_read += 1
                    if self.slot is not None:
                        self.stats.dropped += 1  # live: the model did not take the previous frame in time
                    self.slot = (index, stamp, frame)
                    self.cond.notify_all()
                index += 1
        finally:
            if cap is not None:
                cap.release()
            with self.cond:
                self.done = True
                self.cond.notify_all()

    def take(self) -> tuple[int, float, np.ndarray] | None:
        """The next frame, or None when the source has ended."""
        with self.cond:
            while self.slot is None and not self.done:
                self.cond.wait()
            item, self.slot = self.slot, None
            self.cond.notify_all()
            return item

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()


def _frame_to_raw(cv2: Any, frame: np.ndarray, spec: Any) -> np.ndarray:
    """A BGR frame -> a raw RGB (or grey) HWC uint8 image at its own size (the Predictor fits it to the spec's)."""
    if spec.preprocess is None:
        raise ConfigError("this bundle's input spec has no preprocessing, so raw video frames cannot be fed to it")
    channels = spec.channels
    if frame.ndim == 2:
        frame = frame[..., None]
    if channels == 1:
        image = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if frame.shape[2] == 3 else frame[..., 0]
    else:
        image = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) if frame.shape[2] == 3 else cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    if image.ndim == 2:
        image = image[..., None]
    return np.ascontiguousarray(image, dtype=np.uint8)


def run_stream(path: str | os.PathLike, source: str | int, out: str | os.PathLike | IO[str] = "-", *,
               target: str | None = None, precision: str | None = None, public_key: Any = None,
               max_frames: int | None = None, live: bool | None = None, max_reconnects: int = 10,
               backoff: float = 0.5, on_result: Callable[[dict[str, Any]], None] | None = None,
               monitor: "MonitorConfig | None" = None, capture: "str | os.PathLike | CaptureStore | None" = None,
               **options: Any) -> StreamStats:
    """Run the bundle (or install root's current version) at ``path`` over ``source``; write JSON lines to ``out``.

    Args:
        source: a video file, an rtsp:// or http(s):// URL, or a camera index (int or digits).
        out: a file path, ``"-"`` for stdout, or an open text stream.
        max_frames: stop after this many processed frames (None: until the source ends).
        live: override whether the source is treated as live (newest frame only, reconnect on loss).
        max_reconnects, backoff: reconnect attempts for a live source, and the first delay in seconds
            (doubled per attempt, at most 30 s).
        public_key: the bundle must be signed with this key (default ``$EDGESHIP_PUBLIC_KEY``).
        on_result: called with each line's dict as well.
        monitor: watch the run (:class:`edgeship.device.monitor.Monitor`: drift from the calibration record,
            shadow FP32 agreement, captures); a threshold crossed is a line of its own, ``{"event": "drift" |
            "shadow-alert" | "shadow-ok", "frame", "message", ...}``, and the end snapshot is ``StreamStats.monitor``.
        capture: a capture folder (or a CaptureStore) for the monitor's hard examples (needs ``monitor``).
    """
    cv2 = require("cv2", "video streams")
    if max_frames is not None and max_frames < 1:
        raise ConfigError(f"max_frames must be >= 1, got {max_frames}")
    opened, is_live = _parse_source(source)
    if live is not None:
        is_live = live
    if not is_live:  # fail before any output is written
        probe = cv2.VideoCapture(opened)
        ok = probe.isOpened()
        probe.release()
        if not ok:
            raise ConfigError(f"OpenCV cannot open video file {opened!r} (not a video, or a codec it lacks)")
    if capture is not None and monitor is None:
        raise ConfigError("capture needs monitor: the monitor decides which frames are hard examples")
    bundle = Bundle.open(path, public_key=configured_public_key(public_key))
    stats = StreamStats()
    own = not hasattr(out, "write")
    sink: IO[str] = (sys.stdout if str(out) == "-" else open(out, "w", encoding="utf-8")) if own else out  # type: ignore[assignment]
    reader = _Reader(cv2, opened, is_live, max_reconnects, backoff, stats)
    watcher = None
    try:
        with bundle.load(target, precision, **options) as rt:
            predictor = Predictor(bundle, rt)
            if monitor is not None:
                from .captures import CaptureStore
                from .monitor import Monitor

                store = capture if capture is None or isinstance(capture, CaptureStore) else CaptureStore(capture)
                watcher = Monitor(bundle, monitor, target=rt.target, precision=rt.precision, capture=store, **options)
            reader.start()
            while True:
                item = reader.take()
                if item is None:
                    break
                index, stamp, frame = item
                raw = _frame_to_raw(cv2, frame, bundle.spec)
                inference = predictor.infer([raw])
                line: dict[str, Any] = {"frame": index, "timestamp": round(stamp, 6), **inference.reply}
                sink.write(json.dumps(line) + "\n")
                if watcher is not None:
                    for event in watcher.observe(inference, [raw], {"frame": index, "timestamp": round(stamp, 6)}):
                        sink.write(json.dumps({**event, "frame": index}) + "\n")
                sink.flush()
                stats.processed += 1
                if on_result is not None:
                    on_result(line)
                if max_frames is not None and stats.processed >= max_frames:
                    stats.ended = "max frames"
                    break
    finally:
        reader.stop()
        reader.join(timeout=5)
        if watcher is not None:
            watcher.close()
            stats.monitor = watcher.snapshot()
        if own and sink is not sys.stdout:
            sink.close()
    if reader.slot is not None:  # read but never processed (the run stopped at max_frames)
        stats.dropped += 1
    if reader.error is not None:
        raise ConfigError(reader.error)
    return stats
