"""What ``import edgeship`` loads, what loading a bundle loads, and the public surface (STYLE #7, #10).

Every check that looks at ``sys.modules`` runs in a fresh interpreter: the test process itself has
torch, onnx and both backends imported long before these tests run.
"""

from __future__ import annotations

import edgeship
import numpy as np
import pytest
from conftest import BLOCK_COMPRESS_EXTRAS, run_python

HEAVY = ("torch", "torchvision", "onnx", "onnxscript", "nncf", "torch_pruning", "sklearn", "openvino",
         "onnxruntime", "tensorrt", "starlette", "uvicorn")  # the web stack loads only when a server is built


def loaded(modules=HEAVY) -> str:
    return f"sorted(m for m in {tuple(modules)!r} if m in sys.modules)"


# -- import edgeship is light ---------------------------------------------------------------------
def test_import_edgeship_loads_no_backend_and_no_torch():
    result = run_python(f"""
        import sys, json
        import edgeship
        import edgeship.targets, edgeship.calibration, edgeship.benchmarks, edgeship.demo, edgeship.build.export
        import edgeship.device.serve
        print(json.dumps({{"loaded": {loaded()}}}))
    """)
    assert result["loaded"] == []


def test_import_edgeship_needs_no_posix_only_module():
    """Windows has no fcntl or resource: ``import edgeship`` (and its subpackages) must not need them."""
    result = run_python("""
        import json, sys
        for name in ("fcntl", "resource", "pwd", "grp", "termios"):
            sys.modules[name] = None  # import of it raises ImportError, as on Windows
        import edgeship, edgeship.benchmarks, edgeship.calibration, edgeship.device.deploy, edgeship.device.serve
        print(json.dumps({"ok": True, "peak_rss": edgeship.measure.latency.peak_rss_mb()}))
    """)
    assert result == {"ok": True, "peak_rss": None}


def test_list_targets_imports_backends_but_not_torch():
    """Asking what is available may import the backends themselves, never the compress-time libraries."""
    result = run_python(f"""
        import sys, json
        import edgeship
        targets = edgeship.list_targets()
        print(json.dumps({{"targets": targets, "loaded": {loaded(("torch", "onnx", "nncf", "sklearn"))}}}))
    """)
    assert {"openvino-cpu", "onnxruntime-cpu"} <= set(result["targets"])
    assert result["loaded"] == []


# -- loading and running a bundle on a device ------------------------------------------------------
@pytest.fixture(scope="module")
def expected_outputs(digits_bundle, digits_data, tmp_path_factory):
    """Raw test images and each (target, precision)'s outputs on them, computed in this process."""
    folder = tmp_path_factory.mktemp("import-io")
    raw = digits_data[2][:8]
    np.save(folder / "raw.npy", raw)
    outputs = {}
    for target, precision in digits_bundle.variants:
        with digits_bundle.load(target, precision) as rt:
            outputs[(target, precision)] = rt.run(raw, preprocess=True)["output"]
    return folder, outputs


@pytest.mark.parametrize("target,backend", [("openvino-cpu", "openvino"), ("onnxruntime-cpu", "onnxruntime")])
def test_load_and_run_bundle_imports_only_its_backend(digits_bundle, expected_outputs, target, backend):
    folder, outputs = expected_outputs
    result = run_python(f"""
        import sys, json
        import numpy as np
        import edgeship
        raw = np.load({str(folder / "raw.npy")!r})
        results = {{}}
        for precision in ("fp32", "int8"):
            with edgeship.load({str(digits_bundle.path)!r}, target={target!r}, precision=precision) as rt:
                results[precision] = rt.run(raw, preprocess=True)["output"].tolist()
        print(json.dumps({{"out": results, "loaded": {loaded()}}}))
    """)
    # ONNX Runtime does not import the onnx package, and neither target imports torch or NNCF
    assert result["loaded"] == [backend]
    for precision in ("fp32", "int8"):
        np.testing.assert_allclose(np.asarray(result["out"][precision], dtype=np.float32),
                                   outputs[(target, precision)], rtol=1e-5, atol=1e-5)


def test_load_without_target_picks_openvino_and_imports_only_it(digits_bundle):
    result = run_python(f"""
        import sys, json
        import edgeship
        with edgeship.load({str(digits_bundle.path)!r}) as rt:
            target = rt.target
        print(json.dumps({{"target": target, "loaded": {loaded()}}}))
    """)
    assert result == {"target": "openvino-cpu", "loaded": ["openvino"]}


def test_bundle_loads_and_runs_with_torch_onnx_nncf_uninstalled(digits_bundle, expected_outputs):
    """A device without the compress extra (no torch, onnx, NNCF, scikit-learn) runs every artifact."""
    folder, outputs = expected_outputs
    result = run_python(BLOCK_COMPRESS_EXTRAS + f"""
import json
import numpy as np
import edgeship
try:
    import torch
    torch_importable = True
except ImportError:
    torch_importable = False
raw = np.load({str(folder / "raw.npy")!r})
out = {{}}
for target, precision in edgeship.open_bundle({str(digits_bundle.path)!r}).variants:
    with edgeship.load({str(digits_bundle.path)!r}, target=target, precision=precision) as rt:
        out[target + "/" + precision] = rt.run(raw, preprocess=True)["output"].tolist()
print(json.dumps({{"torch_importable": torch_importable, "out": out,
                   "loaded": sorted(m for m in ("torch", "onnx", "nncf", "sklearn") if m in sys.modules)}}))
""")
    assert result["torch_importable"] is False  # the block works
    assert result["loaded"] == []
    assert sorted(result["out"]) == sorted(f"{t}/{p}" for t, p in outputs)
    for (target, precision), expected in outputs.items():
        np.testing.assert_allclose(np.asarray(result["out"][f"{target}/{precision}"], dtype=np.float32), expected,
                                   rtol=1e-5, atol=1e-5)


def test_compress_without_compress_extra_names_the_extra(small_onnx, tmp_path):
    result = run_python(BLOCK_COMPRESS_EXTRAS + f"""
import json
import edgeship
try:
    edgeship.compress({str(small_onnx)!r}, input_spec=edgeship.InputSpec(shape=(None, 3, 16, 16)),
                      output={str(tmp_path / "out.edgeship")!r}, precision="fp32", show_progress=False)
    error = None
except edgeship.MissingDependencyError as exc:
    error = str(exc)
print(json.dumps({{"error": error}}))
""")
    assert result["error"] is not None
    assert "onnx" in result["error"] and 'edgeship[compress]' in result["error"]
    assert not (tmp_path / "out.edgeship").exists()
    assert list(tmp_path.iterdir()) == []  # no temporary folder left behind either


# -- the public surface --------------------------------------------------------------------------
PUBLIC_API = [
    "__version__",
    "AccuracyBudgetError",
    "Budget",
    "Bundle",
    "BundleIntegrityError",
    "CompileError",
    "ConfigError",
    "EdgeshipError",
    "Executor",
    "InputSpec",
    "InputValidationError",
    "LatencyBudgetError",
    "Measurement",
    "MissingDependencyError",
    "Preprocess",
    "Prune",
    "QAT",
    "Recipe",
    "Report",
    "Runtime",
    "RuntimeStateError",
    "SearchSpace",
    "SelfTestError",
    "TuneBudgetError",
    "UnknownTargetError",
    "benchmark",
    "compress",
    "get_target",
    "list_targets",
    "load",
    "open_bundle",
    "sensitivity",
    "tune",
]


def test_all_is_pinned_and_resolves():
    assert sorted(edgeship.__all__) == sorted(PUBLIC_API)
    assert len(set(edgeship.__all__)) == len(edgeship.__all__)
    for name in edgeship.__all__:
        assert getattr(edgeship, name) is not None, name
    assert edgeship.__version__ == "0.1.0"


@pytest.mark.parametrize("module", ["edgeship.targets", "edgeship.calibration", "edgeship.benchmarks",
                                    "edgeship.errors"])
def test_subpackage_all_resolves(module):
    import importlib

    mod = importlib.import_module(module)
    assert mod.__all__
    for name in mod.__all__:
        assert hasattr(mod, name), f"{module}.{name}"


def test_error_tree():
    """Every public error derives from EdgeshipError, and the ones users catch by builtin type still work."""
    errors = [edgeship.ConfigError, edgeship.MissingDependencyError, edgeship.UnknownTargetError,
              edgeship.CompileError, edgeship.InputValidationError, edgeship.BundleIntegrityError,
              edgeship.RuntimeStateError, edgeship.LatencyBudgetError]
    for err in errors:
        assert issubclass(err, edgeship.EdgeshipError), err
    assert issubclass(edgeship.ConfigError, ValueError)
    assert issubclass(edgeship.MissingDependencyError, ImportError)
    assert issubclass(edgeship.UnknownTargetError, edgeship.ConfigError)
    assert issubclass(edgeship.UnknownTargetError, KeyError)
    assert issubclass(edgeship.LatencyBudgetError, edgeship.CompileError)
    assert str(edgeship.UnknownTargetError("unknown target 'x'")) == "unknown target 'x'"  # no KeyError repr quoting


def test_compress_prints_no_cuda_warning_on_a_cpu_machine(tmp_path):
    """NNCF imports torch's C++ extension builder, which warns "No CUDA runtime is found" on any machine
    without CUDA; edgeship builds no extension, so the first screen (the demo's compress) should not show it."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(f"""
        import edgeship
        from edgeship import demo
        x_train = demo.digits_data()[0]
        edgeship.compress(demo.train_digits_cnn(cache_dir={str(tmp_path)!r}), input_spec=demo.DIGITS_SPEC,
                          output={str(tmp_path / "b.edgeship")!r}, calibration=x_train[:32],
                          targets=["openvino-cpu"], precision=["int8"], preprocess_calibration=True,
                          show_progress=False)
        print("compressed")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "compressed" in proc.stdout, proc.stderr
    assert "No CUDA runtime" not in proc.stderr, proc.stderr
