"""Load-test `edgeship serve` on loopback: requests/s and latency at several client counts, then memory over a soak.

    python examples/serve_loadtest.py out/demo/digits.edgeship            # 4/16/64 clients, 10 s each, 120 s soak
    python examples/serve_loadtest.py BUNDLE --seconds 3 --soak 20        # a quick look

It starts `edgeship serve` as a child process on 127.0.0.1 (an ephemeral port), sends one raw image
as .npy per request from closed-loop client threads, and reads the server's resident memory from
/proc every few seconds of the soak. Every request stays on this machine and every loop stops by itself.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np


def rss_mib(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", text, re.M).group(1)) / 1024


def closed_loop(url: str, body: bytes, clients: int, seconds: float) -> dict:
    """``clients`` threads each sending requests back to back for ``seconds``."""
    latencies: list[float] = []
    codes: dict[int, int] = {}
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(_: int) -> None:
        while time.monotonic() < stop:
            req = urllib.request.Request(f"{url}/v1/predict", data=body, headers={"Content-Type": "application/x-npy"})
            start = time.perf_counter()
            try:
                with urllib.request.urlopen(req, timeout=30) as resp:
                    resp.read()
                    code = resp.status
            except urllib.error.HTTPError as exc:
                exc.read()
                code = exc.code
            elapsed = time.perf_counter() - start
            with lock:
                codes[code] = codes.get(code, 0) + 1
                if code == 200:
                    latencies.append(elapsed)

    began = time.monotonic()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(client, range(clients)))
    wall = time.monotonic() - began
    lat = np.asarray(latencies) * 1000
    return {
        "clients": clients,
        "ok_per_s": round(len(latencies) / wall, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 2) if lat.size else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 2) if lat.size else None,
        "codes": {str(k): v for k, v in sorted(codes.items())},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", help="bundle folder or install root (with a 4-D image input and preprocessing)")
    parser.add_argument("--clients", default="4,16,64")
    parser.add_argument("--seconds", type=float, default=10.0, help="per client count")
    parser.add_argument("--soak", type=float, default=120.0, help="seconds of the memory soak (16 clients)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--max-queue", type=int, default=8)
    args = parser.parse_args()

    import edgeship

    spec = edgeship.open_bundle(args.bundle).spec
    height, width = (spec.shape[2], spec.shape[3]) if spec.layout == "NCHW" else (spec.shape[1], spec.shape[2])
    channels = spec.channels or 3
    image = np.random.default_rng(0).integers(0, 256, (height or 224, width or 224, channels), dtype=np.uint8)
    buf = io.BytesIO()
    np.save(buf, image, allow_pickle=False)
    body = buf.getvalue()

    server = subprocess.Popen([sys.executable, "-m", "edgeship", "serve", args.bundle, "--port", "0",
                               "--workers", str(args.workers), "--max-queue", str(args.max_queue)],
                              stdout=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        if not match:
            print(f"the server did not start: {line}", file=sys.stderr)
            return 1
        url = f"http://127.0.0.1:{match.group(1)}"
        print(line.strip())
        rows = [closed_loop(url, body, int(n), args.seconds) for n in args.clients.split(",")]
        for row in rows:
            print(json.dumps(row))
        samples = []
        soak = threading.Thread(target=lambda: samples.append(closed_loop(url, body, 16, args.soak)))
        soak.start()
        rss = []
        while soak.is_alive():
            rss.append(round(rss_mib(server.pid), 1))
            soak.join(timeout=5)
        rss.append(round(rss_mib(server.pid), 1))
        print(json.dumps({"soak": samples[0], "rss_mib": {"first": rss[0], "last": rss[-1], "max": max(rss),
                                                          "samples": rss}}))
    finally:
        server.terminate()
        server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
