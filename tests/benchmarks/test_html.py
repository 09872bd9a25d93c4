"""The HTML report: self-contained, escaped, and it renders in a real browser (headless Chromium)."""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
from dataclasses import replace
import subprocess
from pathlib import Path

import numpy as np
import pytest
from edgeship.benchmarks import Gates
from edgeship.benchmarks._html import pareto_png
from report_support import make_report

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)


def _page(tmp_path: Path, **changes) -> tuple[Path, str]:
    report = make_report(**changes)
    report.mark_recommended(1.0)
    report.warnings = ["digits on openvino-cpu: INT8 is slower than FP32 (a warning as the benchmark writes it)"]
    report.rows[2] = replace(report.rows[2], flags=["agreement 97.00% < 99%"])
    result = report.check(Gates(max_p99_ms=0.25, min_agreement=0.98, require_bundles=False))
    path = report.write_html(tmp_path / "report.html", result)
    return path, path.read_text(encoding="utf-8")


def test_html_is_self_contained_and_holds_plot_tables_and_gates(tmp_path):
    _, html = _page(tmp_path)
    assert html.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html)  # nothing fetched from elsewhere
    assert "<script" not in html
    (png,) = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert base64.b64decode(png).startswith(b"\x89PNG\r\n\x1a\n")
    for heading in ("Accuracy vs latency", "Reference (FP32)", "Target openvino-cpu", "Target onnxruntime-cpu",
                    "Gate results", "Settings and environment"):
        assert f">{heading}<" in html, heading
    assert "Release gates FAILED: 2 of" in html  # FP32 p99 0.3 > 0.25; ORT has no agreement to check
    assert "digits openvino-cpu fp32</td><td class=\"l\">max_p99_ms</td><td>0.3</td><td>0.25</td>" in html
    assert "fastest within budget" in html and "agreement 97.00% &lt; 99%" in html
    assert "INT8 is slower than FP32" in html


def test_html_escapes_what_came_from_files(tmp_path):
    report = make_report()
    report.rows[1] = replace(report.rows[1], variant="<script>alert(1)</script>")
    html = report.to_html()
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_plot_is_a_real_image_and_nothing_is_plotted_without_quality():
    from PIL import Image

    image = Image.open(io.BytesIO(pareto_png(make_report())))
    assert image.size == (990, 572)  # 9 x 5.2 inches at 110 dpi
    pixels = np.asarray(image.convert("RGB")).astype(int)
    coloured = (pixels.max(axis=2) - pixels.min(axis=2)) > 100  # markers, bars, the front: not grey text
    assert coloured.sum() > 300
    bare = make_report()
    bare.rows = [replace(r, accuracy_pct=None, agreement_pct=None) for r in bare.rows]
    assert pareto_png(bare) is None
    assert "Nothing to plot" in bare.to_html()


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install chromium)")
def test_html_renders_in_headless_chromium(tmp_path):
    from PIL import Image

    path, _ = _page(tmp_path)
    shot = tmp_path / "shot.png"
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         f"--screenshot={shot}", "--window-size=1200,900", path.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    image = Image.open(shot).convert("RGB")
    assert image.size == (1200, 900)
    pixels = np.asarray(image).astype(int)
    background = pixels[5, 5]  # the page's own background, top-left corner
    differs = np.abs(pixels - background).sum(axis=2) > 30
    assert differs.mean() > 0.05, f"only {differs.mean():.1%} of the screenshot differs from the background"
    coloured = (pixels.max(axis=2) - pixels.min(axis=2)) > 100  # the inlined plot decoded and was drawn
    assert coloured.sum() > 300
    # the failed-gates banner is drawn in its red near the top
    top = pixels[:300]
    assert (np.abs(top - np.array([0xFF, 0xEB, 0xE9])).sum(axis=2) < 12).sum() > 1000
