"""Hostile configuration and requests for ``edgeship serve`` (a real uvicorn server on 127.0.0.1).

Refused:
- an empty API key (an empty key file would have turned authentication off): ConfigError at start
- JSON inputs holding NaN or Infinity, raw or not: 400 (NaN used to pass the [0, 255] check and cast to 0)
- a .npy body whose header declares more elements than the bytes it holds: 400, nothing allocated
- an .npz body: 400
- 9 stalled uploads (headers sent, body trickling): every other client is still served (they used to hold
  every admission place for the whole body timeout)
- 300 connections that send half their request headers and then nothing: all closed by the server after
  ``header_timeout`` (uvicorn alone held every one open for ever), while other clients are served
- a version name with a quote, backslash and newline: escaped in /metrics (prometheus_client writes it)
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from edgeship.cli import main
from edgeship.device.serve import ModelServer, ServeLimits
from edgeship.errors import ConfigError
from test_serve import request, running


def test_an_empty_api_key_is_refused(labelled_bundle, tmp_path, capsys):
    with pytest.raises(ConfigError, match="API key is empty"):
        ModelServer(labelled_bundle, "127.0.0.1", 0, api_key="  ")
    empty = tmp_path / "key.txt"
    empty.write_text("\n")
    assert main(["serve", str(labelled_bundle), "--port", "0", "--api-key-file", str(empty)]) == 2
    assert "API key is empty" in capsys.readouterr().err


@pytest.mark.parametrize("doc", [b'{"inputs": [[[NaN]]], "raw": true}', b'{"inputs": [[[Infinity]]], "raw": false}',
                                 b'{"inputs": [[[-Infinity]]], "raw": true}'])
def test_non_finite_json_inputs_get_400(labelled_bundle, doc):
    with running(labelled_bundle) as (_, url):
        status, _, reply = request(f"{url}/v1/predict", doc, "application/json")
    assert status == 400 and "finite" in reply["error"]


def test_npy_bodies_that_lie_about_their_size_or_are_archives_get_400(labelled_bundle):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": (10**6, 32, 32, 1)})
    archive = io.BytesIO()
    np.savez(archive, x=np.zeros((1, 32, 32, 1), np.uint8))
    with running(labelled_bundle) as (_, url):
        status, _, reply = request(f"{url}/v1/predict", header.getvalue() + b"\0" * 64, "application/x-npy")
        assert status == 400 and "declares shape (1000000, 32, 32, 1)" in reply["error"]
        status, _, reply = request(f"{url}/v1/predict", archive.getvalue(), "application/x-npy")
        assert status == 400 and "not an .npz" in reply["error"]


def test_metrics_label_values_are_escaped(labelled_bundle, tmp_path):
    """A version name with a quote, a backslash and a newline cannot forge or break /metrics lines."""
    import shutil

    from prometheus_client.parser import text_string_to_metric_families

    odd = tmp_path / 'line"3\\a\nb.edgeship'
    shutil.copytree(labelled_bundle, odd)
    with running(odd) as (_, url):
        status, _, text = request(f"{url}/metrics")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(text)}  # parses: every line is well formed
    (sample,) = families["edgeship_model_info"].samples
    assert sample.labels["version"] == odd.name and sample.value == 1


def test_nine_stalled_uploads_do_not_lock_other_clients_out(labelled_bundle, digits_data):
    from test_serve import _stalled, _wait_for, npy

    body = npy(digits_data[2][:1])
    with running(labelled_bundle, limits=ServeLimits(workers=1, max_queue=8)) as (_, url):
        port = int(url.rsplit(":", 1)[1])
        stalled = [_stalled(port, body) for _ in range(9)]
        try:
            _wait_for(url, "edgeship_uploads", 9)
            for _ in range(3):
                status, _, reply = request(f"{url}/v1/predict", body, "application/x-npy")
                assert status == 200, reply
        finally:
            for s in stalled:
                s.close()


def test_half_sent_headers_are_closed_after_the_header_timeout(labelled_bundle):
    import socket
    import time

    with running(labelled_bundle, limits=ServeLimits(header_timeout=1.0)) as (_, url):
        port = int(url.rsplit(":", 1)[1])
        half = []
        for _ in range(300):
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Le")
            half.append(s)
        try:
            assert request(f"{url}/healthz")[0] == 200  # served while the 300 are held
            deadline = time.monotonic() + 20
            for s in half:  # each is closed by the server: recv sees EOF (b"") or a reset, never a timeout
                s.settimeout(max(0.1, deadline - time.monotonic()))
                try:
                    assert s.recv(1024) == b""
                except ConnectionResetError:
                    pass
            assert request(f"{url}/healthz")[0] == 200
            # a connection that sends whole headers slowly, but within the deadline, is answered
            slow = socket.create_connection(("127.0.0.1", port), timeout=10)
            slow.sendall(b"GET /healthz HTTP/1.1\r\n")
            time.sleep(0.5)
            slow.sendall(b"Host: x\r\n\r\n")
            assert slow.recv(1024).startswith(b"HTTP/1.1 200")
            slow.close()
        finally:
            for s in half:
                s.close()


def test_a_nonpositive_header_timeout_is_refused(labelled_bundle):
    with pytest.raises(ConfigError, match="header_timeout > 0"):
        ModelServer(labelled_bundle, "127.0.0.1", 0, limits=ServeLimits(header_timeout=0))
