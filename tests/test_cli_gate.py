"""``edgeship bench`` and ``edgeship gate`` end to end: real bundles, real reports, the exit codes CI relies on
(0 pass, 1 a gate failed, 2 bad input, 130 interrupted)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from edgeship.benchmarks import Report
from edgeship.cli import main


@pytest.fixture(scope="module")
def val_npz(digits_data, tmp_path_factory):
    """64 raw held-out digits and their labels, as `edgeship bench --data` reads them."""
    path = tmp_path_factory.mktemp("cli-data") / "val.npz"
    np.savez(path, x=digits_data[2][:64], y=digits_data[3][:64])
    return path


def bench(bundle, val_npz, out, *extra) -> int:
    return main(["bench", str(bundle), "--data", str(val_npz), "--preprocess", "--runs", "2", "--warmup", "0",
                 "--report", str(out), *extra])


@pytest.fixture(scope="module")
def report_dir(digits_bundle, val_npz, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli-report") / "report"
    assert bench(digits_bundle.path, val_npz, out) == 0
    return out


def test_bench_writes_json_markdown_and_html(report_dir, digits_bundle):
    assert sorted(p.name for p in report_dir.iterdir()) == ["report.html", "report.json", "report.md"]
    report = Report.load(report_dir)
    assert report.complete and len(report.rows) == 1 + len(digits_bundle.variants)
    assert all(r.manifest_sha256 and r.accuracy_ci_pct for r in report.rows)


def test_gate_passes(report_dir, capsys):
    code = main(["gate", str(report_dir / "report.json"), "--max-drop", "5", "--min-agreement", "0.9",
                 "--max-p50-ms", "10000", "--baseline", str(report_dir / "report.json")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.startswith("all ") and "gate checks passed" in out


def test_gate_fails_naming_each_row_and_gate(report_dir, digits_bundle, capsys, tmp_path):
    code = main(["gate", str(report_dir), "--max-p50-ms", "0.000001", "--html", str(tmp_path / "gates.html")])
    out = capsys.readouterr().out
    assert code == 1
    failed = [line.strip() for line in out.splitlines() if line.strip().startswith("FAIL:")]
    assert failed == [f"FAIL: digits {t} {p}: max_p50_ms: measured {Report.load(report_dir).rows[i + 1].p50_ms:.4g}, "
                      "limit 1e-06" for i, (t, p) in enumerate(digits_bundle.variants)]
    page = (tmp_path / "gates.html").read_text()
    assert "Release gates FAILED" in page and "max_p50_ms" in page


def test_a_p99_gate_fails_when_the_runs_cannot_bound_a_p99(report_dir, capsys):
    """Two timed calls say nothing about the slowest 1 %: the gate fails for want of runs, whatever the limit."""
    assert main(["gate", str(report_dir), "--max-p99-ms", "100000"]) == 1
    assert "not enough runs: 2 timed calls cannot bound a p99 (at least 368 are needed" in capsys.readouterr().out


@pytest.mark.parametrize("args,message", [
    (["{absent}"], "cannot read report"),
    (["{bad_json}"], "cannot read report"),
    (["{report}", "--min-agreement", "98"], "min_agreement is a fraction"),
    (["{report}", "--max-p99-ms", "0"], "gate max_p99_ms must be > 0"),
    (["{report}", "--baseline", "{absent}"], "cannot read report"),
    (["{report}", "--tolerance-latency-pct", "-1"], "Tolerance.latency_pct"),
], ids=["missing", "not-json", "agreement-in-percent", "zero-limit", "missing-baseline", "negative-tolerance"])
def test_gate_bad_input_exits_2(report_dir, tmp_path, capsys, args, message):
    (tmp_path / "bad.json").write_text("{not json")
    paths = {"absent": str(tmp_path / "absent.json"), "bad_json": str(tmp_path / "bad.json"),
             "report": str(report_dir / "report.json")}
    assert main(["gate", *[a.format(**paths) for a in args]]) == 2
    err = capsys.readouterr().err
    assert err.startswith("edgeship gate: error: ") and message in err


def test_gate_fails_a_tampered_bundle(bundle_copy, val_npz, tmp_path, capsys):
    assert bench(bundle_copy, val_npz, tmp_path / "report", "--targets", "openvino-cpu") == 0
    assert main(["gate", str(tmp_path / "report")]) == 0
    with open(bundle_copy / "openvino-cpu" / "int8" / "model.bin", "r+b") as fh:  # flip one weight byte
        first = fh.read(1)
        fh.seek(0)
        fh.write(bytes([first[0] ^ 0xFF]))
    capsys.readouterr()
    assert main(["gate", str(tmp_path / "report")]) == 1
    out = capsys.readouterr().out
    assert "FAIL: copy openvino-cpu int8: bundle: measured mismatch" in out and "was modified" in out
    assert "copy openvino-cpu fp32" not in out  # its files are untouched


def test_an_interrupted_bench_leaves_an_incomplete_report_that_fails_the_gate(bundle_copy, val_npz, tmp_path,
                                                                              monkeypatch, capsys):
    (tmp_path / "interrupting_metric.py").write_text(textwrap.dedent("""
        import numpy as np
        calls = []
        def top1_then_ctrl_c(predictions, labels):
            calls.append(1)
            if len(calls) == 3:
                raise KeyboardInterrupt
            return float(np.mean(predictions.argmax(1) == labels))
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "report"
    code = bench(bundle_copy, val_npz, out, "--metric", "interrupting_metric:top1_then_ctrl_c", "--ci-resamples", "0")
    assert code == 130
    assert "interrupted; the rows measured so far are in" in capsys.readouterr().err
    report = Report.load(out)
    assert not report.complete and len(report.rows) == 2 and report.metric == "top1_then_ctrl_c"
    assert main(["gate", str(out)]) == 1
    assert "FAIL: (report): complete: measured incomplete (2 rows), limit complete" in capsys.readouterr().out


def test_bench_refuses_an_unimportable_metric(report_dir, val_npz, digits_bundle, tmp_path, capsys):
    assert bench(digits_bundle.path, val_npz, tmp_path / "r", "--metric", "no_such_module_xyz:f") == 2
    assert "cannot import metric 'no_such_module_xyz:f'" in capsys.readouterr().err


def test_the_process_exit_code_is_the_gate_verdict(report_dir):
    """What CI sees: the real process's exit status."""
    def run(*args):
        return subprocess.run([sys.executable, "-m", "edgeship", "gate", str(report_dir), *args],
                              capture_output=True, text=True, timeout=120)

    assert run("--max-drop", "50").returncode == 0
    failed = run("--min-throughput", "1e12")
    assert failed.returncode == 1 and "min_throughput" in failed.stdout
    assert run("--min-agreement", "1.5").returncode == 2
    data = json.loads((report_dir / "report.json").read_text())
    assert data["complete"] is True  # gate never writes to the report it judges
