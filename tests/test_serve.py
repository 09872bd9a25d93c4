"""The HTTP server: a real uvicorn server (the Starlette app) on an ephemeral loopback port in a background
thread, real requests with urllib."""

from __future__ import annotations

import contextlib
import io
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import edgeship
import numpy as np
import pytest
from conftest import DIGIT_LABELS
from edgeship.bundle.archive import pack
from edgeship.device.deploy import install, rollback
from edgeship.device.serve import ModelServer, ServeLimits
from edgeship.errors import ConfigError
from edgeship.targets import get_target_class
from edgeship.tasks.postprocess import Postprocess


@contextlib.contextmanager
def running(path, **kwargs):
    server = ModelServer(path, "127.0.0.1", 0, **kwargs)
    thread = threading.Thread(target=server.serve_forever, daemon=True)  # uvicorn.Server.run on the bound socket
    thread.start()
    try:
        yield server, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.uvicorn.should_exit = True  # uvicorn's own stop flag: in-flight requests finish
        thread.join(timeout=30)
        assert not thread.is_alive(), "uvicorn did not stop"
        server.close()


def request(url, body=None, content_type=None, headers=None, method=None):
    """(status, headers, parsed body) for one request; HTTP errors are answers too."""
    req = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    if content_type:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            status, hdrs, data = resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        status, hdrs, data = exc.code, exc.headers, exc.read()
    kind = hdrs.get("Content-Type", "")
    return status, hdrs, json.loads(data) if kind.startswith("application/json") else data.decode()


def npy(array) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert match, f"{name} not in metrics:\n{text}"
    return float(match.group(1))


@pytest.fixture(scope="module")
def expected(labelled_bundle, digits_data):
    """Raw test images and what the bundle's default artifact predicts for them, computed in-process."""
    raw = digits_data[2][:5]
    with edgeship.load(labelled_bundle) as rt:
        logits = rt.run(raw, preprocess=True)["output"]
        target, precision = rt.target, rt.precision
    return raw, logits, target, precision


def check_results(results, logits):
    assert len(results) == len(logits)
    for result, row in zip(results, logits):
        top = result["top_k"]
        assert len(top) == 3
        order = np.argsort(-row)[:3]
        assert [t["index"] for t in top] == order.tolist()
        assert [t["label"] for t in top] == [DIGIT_LABELS[i] for i in order]
        probs = np.exp(row - row.max()) / np.exp(row - row.max()).sum()
        np.testing.assert_allclose([t["score"] for t in top], probs[order], rtol=1e-5)


def test_health_model_and_predict_formats(labelled_bundle, expected):
    raw, logits, target, precision = expected
    with running(labelled_bundle) as (server, url):
        status, _, health = request(f"{url}/healthz")
        assert status == 200 and health == {"status": "ok", "version": "digits.edgeship", "target": target,
                                            "precision": precision}
        status, _, model = request(f"{url}/v1/model")
        assert status == 200 and model["manifest"] == edgeship.open_bundle(labelled_bundle).manifest

        # raw uint8 images as .npy: the bundle's preprocessing, then softmax/top-3 with labels
        status, _, reply = request(f"{url}/v1/predict", npy(raw), "application/x-npy")
        assert status == 200, reply
        assert (reply["target"], reply["precision"]) == (target, precision)
        check_results(reply["results"], logits)

        # one raw image (no batch axis), as JSON
        status, _, reply = request(f"{url}/v1/predict", json.dumps({"inputs": raw[0].tolist(), "raw": True}).encode(),
                                   "application/json")
        assert status == 200, reply
        check_results(reply["results"], logits[:1])

        # already-preprocessed float32 tensors go to the model as they are
        ready = server.model.bundle.spec.apply_preprocess(raw)
        status, _, reply = request(f"{url}/v1/predict", npy(ready), "application/x-npy")
        check_results(reply["results"], logits)

        # a PNG (lossless) of the first image, through Pillow
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(raw[0][..., 0]).save(buf, format="PNG")
        status, _, reply = request(f"{url}/v1/predict", buf.getvalue(), "image/png")
        assert status == 200, reply
        check_results(reply["results"], logits[:1])

        status, _, text = request(f"{url}/metrics")
        assert status == 200
        assert metric(text, 'edgeship_requests_total{code="200",path="/v1/predict"}') == 4
        assert metric(text, "edgeship_predict_latency_seconds_count") == 4
        assert metric(text, "edgeship_queue_depth") == 0


def test_bad_requests_get_clear_answers(labelled_bundle, expected):
    raw = expected[0]
    with running(labelled_bundle, limits=ServeLimits(max_body=64 << 10)) as (server, url):
        status, _, reply = request(f"{url}/v1/predict", npy(raw[:, :16]), "application/x-npy")
        assert status == 400 and "must have shape" in reply["error"]
        status, _, reply = request(f"{url}/v1/predict", b"hello", "text/plain")
        assert status == 415 and "unsupported Content-Type 'text/plain'" in reply["error"]
        status, _, reply = request(f"{url}/v1/predict", npy(np.zeros((80, 32, 32, 1), np.uint8)), "application/x-npy")
        assert status == 413 and "larger than the 65536 bytes allowed" in reply["error"]
        status, _, reply = request(f"{url}/v1/predict", b"{not json", "application/json")
        assert status == 400 and "invalid JSON body" in reply["error"]
        status, _, reply = request(f"{url}/v1/predict", b"\x89PNG\r\n\x1a\nbroken", "image/png")
        assert status == 400 and "not a decodable image" in reply["error"]
        status, _, reply = request(f"{url}/v1/predict")
        assert status == 405 and "takes POST, got GET" in reply["error"]
        status, _, reply = request(f"{url}/predict", b"x", "application/json")
        assert status == 404 and "/v1/predict" in reply["error"]
        status, _, reply = request(f"{url}/v1/predict", json.dumps({"inputs": [[300]], "raw": True}).encode(),
                                   "application/json")
        assert status == 400 and "[0, 255]" in reply["error"]


def test_api_key(labelled_bundle, expected):
    raw = expected[0]
    with running(labelled_bundle, api_key="s3cret") as (_, url):
        assert request(f"{url}/healthz")[0] == 200  # liveness stays open
        status, headers, reply = request(f"{url}/v1/predict", npy(raw), "application/x-npy")
        assert status == 401 and headers["WWW-Authenticate"] == "Bearer"
        assert request(f"{url}/v1/model", headers={"Authorization": "Bearer wrong"})[0] == 401
        assert request(f"{url}/v1/predict", npy(raw), "application/x-npy", {"Authorization": "Bearer s3cret"})[0] == 200
        assert request(f"{url}/metrics", headers={"X-API-Key": "s3cret"})[0] == 200


def _stalled(port: int, body: bytes) -> socket.socket:
    """A connection that sent its headers and 10 bytes of its body, and then nothing."""
    slow = socket.create_connection(("127.0.0.1", port), timeout=30)
    slow.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-npy\r\n"
                 + f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:10])
    return slow


def _wait_for(url: str, name: str, value: float) -> None:
    deadline = time.monotonic() + 30
    while metric(request(f"{url}/metrics")[2], name) != value and time.monotonic() < deadline:
        time.sleep(0.02)
    assert metric(request(f"{url}/metrics")[2], name) == value


def test_a_stalled_upload_holds_an_upload_place_not_an_inference_one(labelled_bundle, expected):
    """With one worker and no queue, a client that sent its headers but not its body does not block the next
    request (bodies are read before admission); with every upload place taken the next one gets 429 before its
    body is read; the held request completes normally."""
    raw = expected[0]
    body = npy(raw)
    with running(labelled_bundle, limits=ServeLimits(workers=1, max_queue=0, max_uploads=1)) as (_, url):
        port = int(url.rsplit(":", 1)[1])
        with _stalled(port, body) as slow:
            _wait_for(url, "edgeship_uploads", 1)
            assert metric(request(f"{url}/metrics")[2], "edgeship_inflight") == 0
            status, headers, reply = request(f"{url}/v1/predict", body, "application/x-npy")
            assert status == 429 and headers["Retry-After"] == "1"
            assert "1 uploads in progress" in reply["error"]
            slow.sendall(body[10:])  # the held request completes normally
            answer = b""
            while b"\r\n\r\n" not in answer:
                answer += slow.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200")
        _, _, text = request(f"{url}/metrics")
        assert metric(text, 'edgeship_requests_total{code="429",path="/v1/predict"}') == 1
    # default max_uploads: 4 upload places per inference place
    with running(labelled_bundle, limits=ServeLimits(workers=1, max_queue=0)) as (_, url):
        port = int(url.rsplit(":", 1)[1])
        with _stalled(port, body):
            _wait_for(url, "edgeship_uploads", 1)
            status, _, reply = request(f"{url}/v1/predict", body, "application/x-npy")
            assert status == 200, reply  # the stalled upload took no inference place


@pytest.mark.parametrize("field,value", [("workers", 0), ("max_queue", -1), ("max_body", 0), ("body_timeout", 0),
                                         ("graceful_timeout", -1.0), ("max_uploads", 0), ("min_upload_rate", 0),
                                         ("max_connections", 0), ("header_timeout", 0), ("workers", 1.5)])
def test_bad_serve_limits_are_refused_naming_the_field(field, value):
    with pytest.raises(ConfigError, match=re.escape(f"{field}={value}")):
        ServeLimits(**{field: value})


def test_limits_given_as_keywords_are_refused_not_passed_to_the_target(labelled_bundle):
    """The limits live in ServeLimits; ``workers=2`` would otherwise reach the target as a runtime option."""
    with pytest.raises(ConfigError, match=r"limits=ServeLimits\(workers=\.\.\.\)"):
        ModelServer(labelled_bundle, "127.0.0.1", 0, workers=2)


def test_concurrent_load_is_bounded(labelled_bundle, expected):
    """48 clients at once against 1 worker + 2 queue places: every answer is 200 or 429, never more than
    3 requests are admitted at once, and the counters agree with what the clients saw."""
    body = npy(expected[0][:1])
    with running(labelled_bundle, limits=ServeLimits(workers=1, max_queue=2)) as (_, url):
        with ThreadPoolExecutor(max_workers=48) as pool:
            statuses = list(pool.map(lambda _: request(f"{url}/v1/predict", body, "application/x-npy")[0], range(144)))
        assert set(statuses) <= {200, 429}
        assert statuses.count(200) >= 1
        _, _, text = request(f"{url}/metrics")
        assert 1 <= metric(text, "edgeship_inflight_max") <= 3
        assert metric(text, "edgeship_inflight") == 0
        for code in (200, 429):
            seen = statuses.count(code)
            assert seen == 0 or metric(text, f'edgeship_requests_total{{code="{code}",path="/v1/predict"}}') == seen


def test_hot_reload_follows_current(labelled_bundle, bundle_copy, tmp_path, expected):
    v1 = pack(labelled_bundle, tmp_path / "line3-v1.edgeship.tar")
    edgeship.device.deploy.set_postprocess(bundle_copy, labels=[f"v2-{x}" for x in DIGIT_LABELS], postprocess=Postprocess(top_k=1))
    v2 = pack(bundle_copy, tmp_path / "line3-v2.edgeship.tar")
    root = tmp_path / "line3"
    first = install(v1, root)
    body = npy(expected[0][:2])
    with running(root) as (server, url):
        status, _, reply = request(f"{url}/v1/predict", body, "application/x-npy")
        assert reply["version"] == first.version and reply["results"][0]["top_k"][0]["label"] in DIGIT_LABELS
        second = install(v2, root)
        status, _, reply = request(f"{url}/v1/predict", body, "application/x-npy")
        assert status == 200 and reply["version"] == second.version
        assert len(reply["results"][0]["top_k"]) == 1 and reply["results"][0]["top_k"][0]["label"].startswith("v2-")
        rollback(root)
        assert request(f"{url}/healthz")[2]["version"] == first.version
        assert metric(request(f"{url}/metrics")[2], "edgeship_reloads_total") == 2


def test_reload_of_an_untrusted_version_keeps_the_old_one_serving(labelled_bundle, bundle_copy, signing_keys,
                                                                  tmp_path, expected):
    """The server verifies signatures; an unsigned version installed without verification is not swapped in."""
    root = tmp_path / "line3"
    first = install(pack(labelled_bundle, tmp_path / "v1.tar", sign_key=signing_keys["private"]), root)
    with running(root, public_key=signing_keys["public"]) as (_, url):
        assert request(f"{url}/healthz")[2]["version"] == first.version
        install(pack(bundle_copy, tmp_path / "v2.tar"), root)  # current moves to an unsigned version
        for _ in range(2):  # it is tried once, then left alone until current moves again
            status, _, reply = request(f"{url}/v1/predict", npy(expected[0]), "application/x-npy")
            assert status == 200 and reply["version"] == first.version
        text = request(f"{url}/metrics")[2]
        assert metric(text, "edgeship_reload_errors_total") == 1 and metric(text, "edgeship_reloads_total") == 0
        rollback(root)
        assert request(f"{url}/healthz")[2]["version"] == first.version


def test_bundle_without_postprocess_returns_raw_outputs(digits_bundle, expected):
    raw, logits = expected[0], expected[1]
    with running(digits_bundle.path, target=expected[2], precision=expected[3]) as (_, url):
        status, _, reply = request(f"{url}/v1/predict", npy(raw), "application/x-npy")
    assert status == 200 and "results" not in reply
    np.testing.assert_allclose(np.asarray(reply["outputs"]["output"], np.float32), logits, rtol=1e-5, atol=1e-5)


def _predict_then_signal(path, images, sig):
    """``edgeship serve path`` in a child process: one predict request, then ``sig``.
    Returns (status, reply, exit status, stdout, stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "edgeship", "serve", str(path), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        match = re.search(r"on http://127\.0\.0\.1:(\d+)", line)
        assert match, line + proc.stderr.read()
        status, _, reply = request(f"http://127.0.0.1:{match.group(1)}/v1/predict", npy(images), "application/x-npy")
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return status, reply, proc.returncode, out, err


def test_cli_serve_stops_gracefully_on_sigterm(labelled_bundle, expected):
    status, reply, returncode, out, err = _predict_then_signal(labelled_bundle, expected[0], signal.SIGTERM)
    assert status == 200 and len(reply["results"]) == len(expected[0])
    assert returncode == 0, err
    assert "edgeship serve: stopped" in out


@pytest.mark.skipif(not all(get_target_class(t).availability()[0] for t in ("openvino-cpu", "onnxruntime-cpu")),
                    reason="needs both CPU backends")
def test_sigint_after_choosing_across_both_cpu_backends_exits_cleanly(labelled_bundle, expected, tmp_path):
    """The device choice runs OpenVINO and ONNX Runtime in the server process and releases the losers; a later
    SIGINT used to segfault (rc -11): two OpenVINO Cores released out of order left the main thread's
    alternate signal stack pointing at freed memory. One process-wide Core (targets.openvino.shared_core)."""
    root = tmp_path / "root"
    install(pack(labelled_bundle, tmp_path / "v1.tar"), root)
    (root / "choice.json").unlink()  # the choice is made again, in the server process
    status, _, returncode, out, err = _predict_then_signal(root, expected[0], signal.SIGINT)
    assert status == 200
    assert "openvino-cpu" in err and "onnxruntime-cpu" in err, err  # the self-test line: both backends ran
    assert returncode == 0, err
    assert "edgeship serve: stopped" in out


def test_stalled_body_gets_408_and_the_connection_closes(labelled_bundle, expected):
    body = npy(expected[0][:1])
    with running(labelled_bundle, limits=ServeLimits(body_timeout=0.5)) as (_, url):
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=30) as slow:
            slow.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-npy\r\n"
                         + f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:10])
            answer = b""
            while chunk := slow.recv(65536):  # the server closes the connection after answering
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive within 0.5 s" in answer
        text = request(f"{url}/metrics")[2]
        assert metric(text, "edgeship_uploads") == 0 and metric(text, "edgeship_inflight") == 0  # places given back
        assert request(f"{url}/v1/predict", body, "application/x-npy")[0] == 200


def test_shutdown_lets_an_in_flight_request_finish(labelled_bundle, expected):
    """should_exit while a request is admitted (its body half sent): uvicorn stops accepting, the request completes."""
    body = npy(expected[0][:1])
    with running(labelled_bundle) as (server, url):
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=30) as slow:
            slow.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-npy\r\n"
                         + f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:10])
            _wait_for(url, "edgeship_uploads", 1)
            server.uvicorn.should_exit = True
            time.sleep(0.5)  # the listener is closed by now; the admitted request is still being waited for
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
            slow.sendall(body[10:])
            answer = b""
            while chunk := slow.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200") and b'"results"' in answer


def test_event_loop_answers_while_the_runtimes_are_busy(labelled_bundle, expected):
    """Inference runs in worker threads: /healthz answers while the only runtime is held by slow runs."""
    body = npy(np.repeat(expected[0], 200, axis=0))  # a large batch keeps the one runtime busy a while
    with running(labelled_bundle, limits=ServeLimits(workers=1, max_queue=4)) as (_, url):
        with ThreadPoolExecutor(max_workers=4) as pool:
            busy = [pool.submit(request, f"{url}/v1/predict", body, "application/x-npy") for _ in range(4)]
            start = time.perf_counter()
            assert request(f"{url}/healthz")[0] == 200
            health_s = time.perf_counter() - start
            assert all(f.result()[0] == 200 for f in busy)
        assert health_s < 2.0, health_s
