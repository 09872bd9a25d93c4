"""Serve a bundle over HTTP on Starlette + uvicorn (``pip install "edgeship[serve]"``).

Endpoints::

    POST /v1/predict   body: .npy (application/x-npy), PNG/JPEG (image/*, needs Pillow) or JSON
                       {"inputs": [...], "raw": false}; uint8 arrays and images are raw images and get
                       the bundle's preprocessing, float arrays go to the model as they are.
                       -> {"version", "target", "precision", "results": [...]} (manifest postprocessing)
                          or {"outputs": {name: nested list}} when the manifest records none
                          a detection bundle: {"results": [{"detections": [{"box" (the image's own
                          pixels), "score", "index", "label"}]}]}; it takes raw images only
    GET  /healthz      liveness and the version that serves
    GET  /v1/model     the manifest, the version, target and precision, the self-test's verdict
    GET  /metrics      Prometheus text: requests, predict latency histogram, queue depth (and, monitored, the
                       drift, shadow-agreement and capture gauges)
    GET  /v1/monitor   with ``monitor=MonitorConfig(...)`` (``--monitor``): drift from the calibration record, live
                       INT8-vs-FP32 agreement, captures (:class:`edgeship.device.monitor.Monitor`); 404 without

Load is bounded (:class:`ServeLimits`): at most ``workers`` inferences run and ``workers + max_queue``
requests are admitted (reading their body, waiting or running); a request beyond that gets 429 with
Retry-After before its body is read, so memory does not grow with the load.
Bodies past ``max_body`` get 413, bodies that stall get 408. When the served path is an install root,
a switch of ``current`` (install or rollback) is picked up on the next request. Every version runs its
self-test (:mod:`edgeship.bundle.selftest`) before it serves, at start and on every reload: a failing artifact is
refused (a reload keeps the old version serving) unless the install recorded it as degraded; without a
precision the variant is the device's measured choice. SIGTERM/SIGINT stop
accepting connections and let in-flight requests finish (uvicorn's graceful shutdown).

The event loop only parses requests and answers; decoding, inference and postprocessing run on the
server's ``workers`` inference threads and reloads on one more, so the loop stays responsive under load.
Starlette and uvicorn are imported when a server is built, not by ``import edgeship``.
"""

from __future__ import annotations

import asyncio
import hmac
import io
import json
import os
import signal
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from .._lazy import require
from ..bundle.folder import CURRENT, Bundle
from ..bundle.predictor import Predictor, fit_image
from ..bundle.signing import configured_public_key
from ..errors import ConfigError, EdgeshipError, InputValidationError, MissingDependencyError

__all__ = ["ModelServer", "ServeLimits", "decode_body", "serve"]

API_KEY_ENV = "EDGESHIP_API_KEY"
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_PATHS = ("/v1/predict", "/healthz", "/v1/model", "/metrics", "/v1/monitor")
from ..preprocess import MAX_IMAGE_PIXELS as _MAX_IMAGE_PIXELS  # one cap for files and requests
from ._http import header_deadline_protocol
from .limits import ServeLimits

_METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH"]
_DRAIN_LIMIT = 1 << 20  # refused bodies up to this size are drained (keep-alive); larger ones close the connection


class _HTTPError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


# -- decoding request bodies ----------------------------------------------------------------------
def _image_to_array(body: bytes, spec: Any) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:
        raise _HTTPError(415, "image bodies need Pillow on the server (pip install \"edgeship[serve]\"); "
                              "send .npy (application/x-npy) or JSON instead") from None
    try:
        img = Image.open(io.BytesIO(body))
        if img.width * img.height > _MAX_IMAGE_PIXELS:
            raise _HTTPError(413, f"image of {img.width}x{img.height} pixels is larger than the "
                                  f"{_MAX_IMAGE_PIXELS} pixels this server decodes")
        array = np.asarray(img.convert("L" if spec.channels == 1 else "RGB"), dtype=np.uint8)
    except _HTTPError:
        raise
    except Exception as exc:  # Pillow raises many types for undecodable data
        raise _HTTPError(400, f"the body is not a decodable image: {type(exc).__name__}: {exc}") from None
    return array[..., None] if array.ndim == 2 else array


def decode_body(body: bytes, content_type: str, spec: Any) -> tuple[np.ndarray, bool]:
    """A request body -> (array with a batch axis, whether it holds raw images to preprocess); an image file
    comes at the spec's size (:func:`edgeship.bundle.predictor.fit_image`)."""
    x, raw, image = _decode(body, content_type, spec)
    return (np.stack([fit_image(i, spec) for i in x]) if image else x), raw


def _decode(body: bytes, content_type: str, spec: Any) -> tuple[np.ndarray, bool, bool]:
    """A request body -> (array with a batch axis, whether it holds raw images to preprocess, whether it was an
    image file: at its own size, which the Predictor fits to the spec's)."""
    kind = content_type.split(";")[0].strip().lower()
    if kind in ("application/x-npy", "application/octet-stream") or body.startswith(b"\x93NUMPY"):
        from .._arrays import read_npy

        if body.startswith(b"PK"):
            raise _HTTPError(400, "send one .npy array, not an .npz archive")
        try:
            x = read_npy(body, "the body")
        except ConfigError as exc:
            raise _HTTPError(400, str(exc)) from None
        raw = x.dtype == np.uint8
    elif kind == "application/json":
        try:
            doc = json.loads(body)
            raw = bool(doc.get("raw", False)) if isinstance(doc, dict) else False
            if not isinstance(doc, dict) or "inputs" not in doc:
                raise ValueError('expected an object {"inputs": nested list, "raw": false}')
            x = np.asarray(doc["inputs"], dtype=np.float64)
        except (ValueError, TypeError) as exc:
            raise _HTTPError(400, f"invalid JSON body: {exc}") from None
        if not np.isfinite(x).all():
            raise _HTTPError(400, "JSON inputs must be finite numbers (NaN / Infinity given)")
        if raw:
            if x.size and (x.min() < 0 or x.max() > 255):
                raise _HTTPError(400, "raw JSON inputs must be pixel values in [0, 255]")
            x = x.astype(np.uint8)
        else:
            x = x.astype(spec.dtype)
    elif kind.startswith("image/"):
        return _image_to_array(body, spec)[None], True, True
    else:
        raise _HTTPError(415, f"unsupported Content-Type {content_type!r}; send application/x-npy, "
                              "application/json or image/png|jpeg")
    rank = len(spec.shape)
    if x.ndim == rank - 1:  # one image or one sample: add the batch axis
        x = x[None]
    return x, raw, False


# -- the loaded model -----------------------------------------------------------------------------
class _Loaded:
    """One version's runtimes (a pool of ``workers``), each with its Predictor (what the outputs mean)."""

    def __init__(self, bundle: Bundle, workers: int, target: str | None, precision: str | None,
                 options: dict[str, Any], choice: Any = None, monitor: Any = None, capture: Any = None) -> None:
        self.bundle = bundle
        self.monitor: Any = None
        self.choice = choice  # the self-test's verdict and why this variant (edgeship.bundle.selftest.Choice)
        self._idle: list[Any] = []
        self._cond = threading.Condition()
        self._retired = False
        runtimes = []
        try:
            for _ in range(workers):
                runtimes.append(bundle.load(target, precision, **options))
            # one Predictor (what the outputs mean, detection included) per runtime: each runs on one thread
            self.predictors = {id(rt): Predictor(bundle, rt) for rt in runtimes}
        except BaseException:
            for rt in runtimes:
                rt.close()
            raise
        self._idle.extend(runtimes)
        self.target, self.precision = runtimes[0].target, runtimes[0].precision
        self.version = bundle.path.name
        if monitor is not None:
            from .monitor import Monitor

            try:
                self.monitor = Monitor(bundle, monitor, target=self.target, precision=self.precision, capture=capture,
                                       asynchronous=True, **options)
            except BaseException:
                for rt in runtimes:
                    rt.close()
                raise

    def acquire(self) -> Any | None:
        """An idle runtime, waiting for one if all are busy; None once this version is retired (reloaded)."""
        with self._cond:
            while not self._idle and not self._retired:
                self._cond.wait()
            return None if self._retired else self._idle.pop()

    def release(self, rt: Any) -> None:
        with self._cond:
            if self._retired:
                rt.close()
            else:
                self._idle.append(rt)
                self._cond.notify()

    def retire(self) -> None:
        """Close idle runtimes now and busy ones when they come back; waiters move to the new version."""
        with self._cond:
            self._retired = True
            for rt in self._idle:
                rt.close()
            self._idle.clear()
            self._cond.notify_all()
        if self.monitor is not None:
            self.monitor.close()


class _Metrics:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = {}
        self.buckets = [0] * len(_LATENCY_BUCKETS)
        self.latency_sum = 0.0
        self.latency_count = 0
        self.admitted = 0
        self.running = 0
        self.uploading = 0  # bodies being read (not yet admitted to inference)
        self.inflight_max = 0
        self.reloads = 0
        self.reload_errors = 0

    def count(self, path: str, status: int) -> None:
        with self.lock:
            key = (path if path in _PATHS else "other", status)
            self.requests[key] = self.requests.get(key, 0) + 1

    def observe(self, seconds: float) -> None:
        with self.lock:
            self.latency_sum += seconds
            self.latency_count += 1
            for i, bound in enumerate(_LATENCY_BUCKETS):
                if seconds <= bound:
                    self.buckets[i] += 1

    def render(self, model: _Loaded) -> str:
        """The Prometheus text exposition, written by ``prometheus_client`` (label values escaped)."""
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        with self.lock:
            requests = CounterMetricFamily("edgeship_requests", "HTTP requests by path and status code.",
                                           labels=["path", "code"])
            for (path, status), n in sorted(self.requests.items()):
                requests.add_metric([path, str(status)], n)
            latency = HistogramMetricFamily("edgeship_predict_latency_seconds",
                                            "Time to decode, run and postprocess one predict request.")
            latency.add_metric([], [(repr(float(bound)), n) for bound, n in zip(_LATENCY_BUCKETS, self.buckets)]
                               + [("+Inf", self.latency_count)], sum_value=self.latency_sum)
            families = [
                requests, latency,
                GaugeMetricFamily("edgeship_queue_depth", "Admitted predict requests waiting for a runtime.",
                                  value=self.admitted - self.running),
                GaugeMetricFamily("edgeship_inflight", "Predict requests admitted to inference (waiting or running).",
                                  value=self.admitted),
                GaugeMetricFamily("edgeship_uploads", "Predict request bodies being read (not yet admitted).",
                                  value=self.uploading),
                GaugeMetricFamily("edgeship_inflight_max", "Most predict requests admitted at once "
                                  "(bounded by workers + max_queue).", value=self.inflight_max),
                CounterMetricFamily("edgeship_reloads", "Switches to a new version of the install root.",
                                    value=self.reloads),
                CounterMetricFamily("edgeship_reload_errors", "New versions refused (kept serving the old one).",
                                    value=self.reload_errors),
            ]
        info = GaugeMetricFamily("edgeship_model_info", "The version, target and precision being served.",
                                 labels=["version", "target", "precision"])
        info.add_metric([str(model.version), str(model.target), str(model.precision)], 1)
        families.append(info)
        if model.monitor is not None:
            families.extend(model.monitor.metric_families())

        class _Snapshot:
            def collect(self):  # noqa: ANN202 - prometheus_client's collector protocol
                return iter(families)

        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Snapshot())
        return generate_latest(registry).decode("utf-8")


class ModelServer:
    """An HTTP server (a Starlette app on uvicorn) for one bundle folder or install root; see the module doc.

    The constructor loads the model and binds the socket (``server_address`` holds the bound address; pass
    ``port=0`` for an ephemeral one). ``serve_forever()`` runs uvicorn until ``shutdown()`` (from another
    thread) or, in the main thread, SIGTERM/SIGINT; in-flight requests finish first. ``close()`` stops it
    and releases the runtimes. ``app`` is the ASGI application, ``uvicorn`` the ``uvicorn.Server``.
    """

    backlog = 128  # the listen backlog; the bounded queue, not the kernel, turns clients away

    def __init__(self, path: str | os.PathLike, host: str = "127.0.0.1", port: int = 8080, *,
                 target: str | None = None, precision: str | None = None, limits: ServeLimits | None = None,
                 api_key: str | None = None, public_key: Any = None, verbose: bool = False,
                 monitor: Any = None, capture: Any = None, **options: Any) -> None:
        """``limits`` (default ``ServeLimits()``): workers, queue, body, upload and connection limits.
        ``public_key`` (default ``$EDGESHIP_PUBLIC_KEY``): every version served, reloads included, must be
        signed with it. ``monitor``: a :class:`edgeship.device.monitor.MonitorConfig` to watch every version
        served (``GET /v1/monitor``); ``capture``: a capture folder or CaptureStore for its hard examples.
        ``options`` go to the target (e.g. ``threads``)."""
        misplaced = sorted(set(options) & {f.name for f in fields(ServeLimits)})
        if misplaced:  # would otherwise reach the target as runtime options
            raise ConfigError(f"{', '.join(misplaced)} {'is a limit' if len(misplaced) == 1 else 'are limits'}: "
                              f"pass limits=ServeLimits({', '.join(f'{n}=...' for n in misplaced)})")
        if limits is None:
            limits = ServeLimits()
        elif not isinstance(limits, ServeLimits):
            raise ConfigError(f"limits must be a ServeLimits, got {type(limits).__name__}")
        self.limits = limits
        uvicorn = require("uvicorn", "edgeship serve")
        self.path = Path(path)
        self.install_root = self.path if (self.path / CURRENT).is_symlink() else None
        if api_key is not None and not api_key.strip():
            raise ConfigError("the API key is empty: an empty key would let every request in; give a non-empty key "
                              "or none (no authentication)")
        self.api_key = api_key
        self.verbose = verbose
        if capture is not None and monitor is None:
            raise ConfigError("capture needs monitor: the monitor decides which requests are hard examples")
        if monitor is not None:
            from .captures import CaptureStore
            from .monitor import MonitorConfig

            if not isinstance(monitor, MonitorConfig):
                raise ConfigError(f"monitor must be a MonitorConfig, got {type(monitor).__name__}")
            if capture is not None and not isinstance(capture, CaptureStore):
                capture = CaptureStore(capture)
        self._monitoring = (monitor, capture)
        self._requests = 0
        self._load_args = (target, precision, options)
        self._public_key = public_key
        self.metrics = _Metrics()
        self._admission = threading.BoundedSemaphore(limits.workers + limits.max_queue)
        self._uploads = threading.BoundedSemaphore(self.limits.uploads)
        self._reload_lock = threading.Lock()
        self._failed_reload: str | None = None
        # blocking work runs off the event loop on threads this server owns (joined by close()): inference on
        # ``workers`` threads (the limiter: more admitted requests wait in the loop, holding no thread), model
        # checks and reloads on one more, so /healthz and /metrics answer while every runtime is busy
        self._inference = ThreadPoolExecutor(limits.workers, thread_name_prefix="edgeship-infer")
        self._control = ThreadPoolExecutor(1, thread_name_prefix="edgeship-reload")
        self.app = self._build_app()
        self.model = self._load(self.path)
        try:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            self.socket = socket.create_server((host, port), family=family, backlog=self.backlog)
        except OSError:
            self.model.retire()
            raise
        self.server_address = self.socket.getsockname()
        config = uvicorn.Config(self.app, lifespan="on", log_config=uvicorn.config.LOGGING_CONFIG if verbose else None,
                                access_log=verbose, log_level="info" if verbose else "warning", server_header=False,
                                backlog=self.backlog, timeout_graceful_shutdown=limits.graceful_timeout,
                                limit_concurrency=limits.max_connections,
                                http=header_deadline_protocol(limits.header_timeout))
        self.uvicorn = uvicorn.Server(config)
        self._serving = threading.Event()
        self._stopped = threading.Event()

    # -- the model, admission and prediction (no HTTP here) ----------------------------------------
    def _load(self, path: Path) -> _Loaded:
        from .choice import device_variant

        target, precision, options = self._load_args
        bundle = Bundle.open(path, public_key=configured_public_key(self._public_key))
        # the self-test before it serves: SelfTestError for a failing artifact (a reload keeps the old one)
        choice = device_variant(bundle, target, precision or "auto", install_root=self.install_root, **options)
        monitor, capture = self._monitoring
        return _Loaded(bundle, self.limits.workers, choice.target, choice.precision, options, choice, monitor, capture)

    def current_model(self) -> _Loaded:
        """The loaded version, reloaded first if an install root's ``current`` moved since (blocking: call it
        from a worker thread, not the event loop)."""
        if self.install_root is not None:
            now = os.path.realpath(self.install_root / CURRENT)
            if now != str(self.model.bundle.path) and now != self._failed_reload:
                with self._reload_lock:
                    if now != str(self.model.bundle.path) and now != self._failed_reload:
                        try:
                            new = self._load(Path(now))
                        except EdgeshipError as exc:  # keep serving the version that works
                            self._failed_reload = now
                            with self.metrics.lock:
                                self.metrics.reload_errors += 1
                            print(f"edgeship serve: cannot load {now}, still serving {self.model.version}: {exc}",
                                  file=sys.stderr)
                        else:
                            old, self.model = self.model, new
                            old.retire()
                            self._failed_reload = None
                            with self.metrics.lock:
                                self.metrics.reloads += 1
        return self.model

    def _busy(self, headers: dict[str, str]) -> _HTTPError:
        """The 429 for a request that finds every inference place taken."""
        return _HTTPError(429, f"server busy: {self.limits.workers} running and {self.limits.max_queue} waiting; "
                               "retry later", headers)

    def queue_full(self) -> bool:
        """Whether every inference place (workers + max_queue) is taken right now."""
        with self.metrics.lock:
            return self.metrics.admitted >= self.limits.workers + self.limits.max_queue

    def admit(self) -> bool:
        """Take a place in the bounded queue; False when it is full."""
        if not self._admission.acquire(blocking=False):
            return False
        with self.metrics.lock:
            self.metrics.admitted += 1
            self.metrics.inflight_max = max(self.metrics.inflight_max, self.metrics.admitted)
        return True

    def leave(self) -> None:
        with self.metrics.lock:
            self.metrics.admitted -= 1
        self._admission.release()

    def predict(self, body: bytes, content_type: str) -> dict[str, Any]:
        """Decode, run and postprocess one request body (blocking; the caller holds an admission)."""
        while True:  # a reload while this request waited retires its version: decode again for the new one
            model = self.current_model()
            x, raw, image = _decode(body, content_type, model.bundle.spec)
            rt = model.acquire()
            if rt is not None:
                break
        with self.metrics.lock:
            self.metrics.running += 1
        predictor = model.predictors[id(rt)]
        try:
            if predictor.detector is not None and not raw:
                raise _HTTPError(400, "a detection bundle takes raw images (image/png, image/jpeg, or a uint8 "
                                      ".npy) so that its boxes come back in the image's own pixels")
            # image files are fitted to the spec's size; arrays are taken as they are (a wrong shape is an error)
            inference = predictor.infer(x, fit=image) if raw else predictor.infer_tensors(x)
        finally:
            with self.metrics.lock:
                self.metrics.running -= 1
                self._requests += 1
                request_id = self._requests
            model.release(rt)
        if model.monitor is not None:  # raw images are what a capture keeps; tensors are watched, not captured
            images = list(x) if raw and x.ndim == 4 else None
            for event in model.monitor.observe(inference, images, {"request": request_id}):
                print(f"edgeship serve: monitor: {event['message']}", file=sys.stderr, flush=True)
        return {"version": model.version, "target": model.target, "precision": model.precision, **inference.reply}

    # -- the ASGI application ----------------------------------------------------------------------
    def _build_app(self) -> Any:
        require("starlette", "edgeship serve")
        from starlette.applications import Starlette
        from starlette.exceptions import HTTPException
        from starlette.routing import Route

        async def refused(request: Any, exc: Any) -> Any:  # Starlette's own 404 (unknown path) and 405
            path = request.url.path
            if exc.status_code == 404:
                message = f"no endpoint {path}; endpoints: {', '.join(_PATHS)}"
            else:
                message = f"{path} does not take {request.method}"
            return self._answer(path, exc.status_code, {"error": message}, dict(exc.headers or {}))

        routes = [Route(p, self._endpoint, methods=_METHODS) for p in _PATHS]
        return Starlette(routes=routes, exception_handlers={HTTPException: refused})

    def _answer(self, path: str, status: int, doc: Any, headers: dict[str, str] | None = None) -> Any:
        from starlette.responses import Response

        self.metrics.count(path, status)
        return Response((json.dumps(doc) + "\n").encode("utf-8"), status, headers, media_type="application/json")

    def _authorised(self, headers: Any) -> bool:
        if self.api_key is None:
            return True
        given = headers.get("x-api-key") or ""
        auth = headers.get("authorization") or ""
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        return hmac.compare_digest(given.encode(), self.api_key.encode())

    async def _current(self) -> _Loaded:
        return await asyncio.get_running_loop().run_in_executor(self._control, self.current_model)

    async def _endpoint(self, request: Any) -> Any:
        from starlette.responses import Response

        path, method = request.url.path, request.method
        method = "GET" if method == "HEAD" else method
        try:
            if path == "/healthz" and method == "GET":
                model = await self._current()
                status, why = model.monitor.health() if model.monitor is not None else ("ok", [])
                doc = {"status": status, "version": model.version, "target": model.target,
                       "precision": model.precision}
                return self._answer(path, 200 if status == "ok" else 503, {**doc, "why": why} if why else doc)
            expected = "POST" if path == "/v1/predict" else "GET"
            if method != expected:
                raise _HTTPError(405, f"{path} takes {expected}, got {method}", {"Allow": expected})
            if not self._authorised(request.headers):
                raise _HTTPError(401, "missing or wrong API key (send 'Authorization: Bearer KEY' or 'X-API-Key')",
                                 {"WWW-Authenticate": "Bearer"})
            if path == "/metrics":
                text = self.metrics.render(await self._current())
                self.metrics.count(path, 200)
                return Response(text.encode("utf-8"), 200, media_type="text/plain; version=0.0.4")
            if path == "/v1/monitor":
                model = await self._current()
                if model.monitor is None:
                    raise _HTTPError(404, "monitoring is off: start the server with --monitor "
                                          "(ModelServer(..., monitor=MonitorConfig()))")
                return self._answer(path, 200, model.monitor.snapshot())
            if path == "/v1/model":
                model = await self._current()
                return self._answer(path, 200, {"version": model.version, "target": model.target,
                                                "precision": model.precision, "signed_by": model.bundle.signed_by,
                                                "selftest": None if model.choice is None else
                                                {"status": model.choice.status, "reason": model.choice.reason},
                                                "manifest": model.bundle.manifest})
            return self._answer(path, 200, await self._predict(request))
        except _HTTPError as exc:
            return self._answer(path, exc.status, {"error": exc.message}, exc.headers)
        except (InputValidationError, ConfigError) as exc:
            return self._answer(path, 400, {"error": str(exc)})
        except MissingDependencyError as exc:
            return self._answer(path, 501, {"error": str(exc)})
        except Exception as exc:  # a backend's own error: answer it rather than drop the connection
            return self._answer(path, 500, {"error": f"{type(exc).__name__}: {exc}"})

    async def _predict(self, request: Any) -> dict[str, Any]:
        import anyio
        from starlette.requests import ClientDisconnect

        length_text = request.headers.get("content-length")
        if length_text is None or not length_text.isdigit():
            raise _HTTPError(411, "POST /v1/predict needs a Content-Length header (chunked bodies are not accepted)",
                             {"Connection": "close"})
        length = int(length_text)
        # refusals come before the body is read: uvicorn drops the unread body (flow control keeps at most
        # ~64 KiB of it buffered); bodies past _DRAIN_LIMIT close the connection instead of being drained
        drop = {"Connection": "close"} if length > _DRAIN_LIMIT else {}
        if length > self.limits.max_body:
            raise _HTTPError(413, f"body of {length} bytes is larger than the {self.limits.max_body} bytes allowed",
                             drop)
        busy = {"Retry-After": "1", **drop}
        if self.queue_full():  # cheap refusal before a byte of the body is read
            raise self._busy(busy)
        # the body is read under an upload place of its own, with a deadline that a trickle cannot stretch:
        # stalled uploads fill the upload places, never the inference queue
        if not self._uploads.acquire(blocking=False):
            raise _HTTPError(429, f"server busy: {self.limits.uploads} uploads in progress; retry later", busy)
        start = time.perf_counter()
        deadline = max(self.limits.body_timeout, length / self.limits.min_upload_rate)
        with self.metrics.lock:
            self.metrics.uploading += 1
        try:
            with anyio.fail_after(deadline):
                body = await request.body()
        except TimeoutError:
            raise _HTTPError(408, f"the body did not arrive within {deadline:g} s (at least "
                                  f"{self.limits.min_upload_rate / 1024:g} KiB/s)", {"Connection": "close"}) from None
        except ClientDisconnect:
            raise _HTTPError(400, "the client disconnected before sending the whole body") from None
        finally:
            with self.metrics.lock:
                self.metrics.uploading -= 1
            self._uploads.release()
        if len(body) != length:
            raise _HTTPError(400, f"the body ended after {len(body)} of {length} bytes", {"Connection": "close"})
        if not self.admit():
            raise self._busy({"Retry-After": "1"})
        try:
            reply = await asyncio.get_running_loop().run_in_executor(
                self._inference, self.predict, body, request.headers.get("content-type", ""))
        finally:
            self.leave()
        self.metrics.observe(time.perf_counter() - start)
        return reply

    # -- running and stopping ----------------------------------------------------------------------
    def serve_forever(self) -> None:
        """Run uvicorn on the bound socket until :meth:`shutdown` (or SIGTERM/SIGINT in the main thread)."""
        self._serving.set()
        try:
            self.uvicorn.run(sockets=[self.socket])
        finally:
            self._stopped.set()

    def shutdown(self, timeout: float | None = None) -> None:
        """Ask uvicorn to stop (in-flight requests finish) and wait for :meth:`serve_forever` to return."""
        self.uvicorn.should_exit = True
        if self._serving.is_set():
            self._stopped.wait(timeout)

    def close(self) -> None:
        """Stop serving (if serving), wait for in-flight requests and release the runtimes."""
        self.shutdown()
        self.socket.close()
        self._inference.shutdown(wait=True)
        self._control.shutdown(wait=True)
        self.model.retire()


def serve(path: str | os.PathLike, host: str = "127.0.0.1", port: int = 8080, **kwargs: Any) -> None:
    """Serve until SIGTERM or SIGINT, then finish in-flight requests and exit (see :class:`ModelServer`)."""
    server = ModelServer(path, host, port, **kwargs)
    host_shown, port_shown = server.server_address[:2]
    model = server.model
    print(f"edgeship serve: {model.version} ({model.target} {model.precision}) on http://{host_shown}:{port_shown}",
          flush=True)
    if model.choice is not None:
        print(f"edgeship serve: self-test {model.choice.status}: {model.choice.reason}", file=sys.stderr, flush=True)
    # uvicorn catches SIGTERM/SIGINT for its graceful shutdown, then raises them again with the handlers it
    # found: make those no-ops while it runs, so a stop signal ends in a normal return (exit status 0)
    previous = {sig: signal.signal(sig, lambda signum, frame: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.serve_forever()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.close()
        print("edgeship serve: stopped", flush=True)
