"""The conformance suite: every registered target compiles and runs the same small model the same way.

Parametrized over the registry (STYLE #12); a target that cannot run here is skipped with its reason.
"""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import edgeship
import numpy as np
import pytest
from conftest import ALL_TARGETS, CPU_TARGETS, SMALL_SPEC, run_python, target_param, torch_forward
from edgeship import ConfigError, InputSpec, InputValidationError, RuntimeStateError, UnknownTargetError, demo
from edgeship.targets import RuntimeState, TensorInfo, get_target_class

TARGETS = [target_param(name) for name in ALL_TARGETS]
FP32_TOL = {"rtol": 1e-4, "atol": 1e-4}


@pytest.fixture(scope="module", params=TARGETS)
def target(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def compiled(target, small_cnn, tmp_path_factory):
    """The small CNN compiled for ``target`` in every float precision it supports."""
    precisions = [p for p in ("fp32", "fp16") if p in get_target_class(target).precisions]
    return edgeship.compress(small_cnn, input_spec=SMALL_SPEC, targets=[target], precision=precisions,
                             output=tmp_path_factory.mktemp(f"conf-{target}") / "small.edgeship", show_progress=False)


@pytest.fixture
def rt(compiled, target):
    with compiled.load(target, "fp32") as runtime:
        yield runtime


@pytest.fixture(scope="module")
def inputs():
    return np.random.default_rng(7).standard_normal((5, 3, 16, 16)).astype(np.float32)


# -- numerics -------------------------------------------------------------------------------------
def test_fp32_matches_torch_and_onnxruntime(rt, small_cnn, compiled, inputs):
    import onnxruntime as ort

    got = rt.run(inputs)
    assert list(got) == [o.name for o in rt.outputs] == ["output"]
    assert got["output"].shape == (5, 5) and got["output"].dtype == np.float32
    np.testing.assert_allclose(got["output"], torch_forward(small_cnn, inputs), **FP32_TOL)
    session = ort.InferenceSession(str(compiled.source_onnx), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(got["output"], session.run(None, {"input": inputs})[0], **FP32_TOL)


def test_fp16_close_to_torch(compiled, target, small_cnn, inputs):
    if "fp16" not in get_target_class(target).precisions:
        pytest.skip(f"{target} has no fp16")
    with compiled.load(target, "fp16") as rt:
        got = rt.run(inputs)["output"]
    expected = torch_forward(small_cnn, inputs)
    np.testing.assert_allclose(got, expected, atol=2e-2 * float(np.abs(expected).max()))


def test_io_description(rt, target):
    assert rt.target == target and rt.precision == "fp32"
    assert rt.inputs == [TensorInfo("input", (None, 3, 16, 16), "float32")]
    assert len(rt.outputs) == 1
    assert rt.outputs[0].name == "output" and rt.outputs[0].dtype == "float32"
    assert rt.outputs[0].shape == (None, 5)


@pytest.mark.parametrize("batch", [1, 5])
def test_dynamic_batch(rt, small_cnn, inputs, batch):
    out = rt.run(inputs[:batch])["output"]
    assert out.shape == (batch, 5)
    np.testing.assert_allclose(out, torch_forward(small_cnn, inputs[:batch]), **FP32_TOL)


def test_batches_are_independent(rt, inputs):
    """Each sample's output is the same alone and in a batch, and later runs do not overwrite earlier results."""
    whole = rt.run(inputs)["output"]
    kept = whole.copy()
    singles = np.concatenate([rt.run(inputs[i : i + 1])["output"] for i in range(len(inputs))])
    np.testing.assert_allclose(singles, whole, rtol=1e-5, atol=1e-5)
    rt.run(np.zeros_like(inputs))
    np.testing.assert_array_equal(whole, kept)


def test_non_contiguous_input(rt, inputs):
    nhwc = np.ascontiguousarray(inputs.transpose(0, 2, 3, 1))
    view = nhwc.transpose(0, 3, 1, 2)  # NCHW values, not C-contiguous
    assert not view.flags.c_contiguous
    np.testing.assert_allclose(rt.run(view)["output"], rt.run(inputs)["output"], rtol=1e-6, atol=1e-6)


def test_dict_input(rt, inputs):
    np.testing.assert_array_equal(rt.run({"input": inputs})["output"], rt.run(inputs)["output"])


def test_preprocess_true_equals_explicit_preprocess(rt, compiled):
    raw = np.random.default_rng(3).integers(0, 256, size=(4, 16, 16, 3), dtype=np.uint8)
    assert compiled.spec == SMALL_SPEC
    by_runtime = rt.run(raw, preprocess=True)["output"]
    by_hand = rt.run(compiled.spec.apply_preprocess(raw))["output"]
    np.testing.assert_array_equal(by_runtime, by_hand)
    np.testing.assert_array_equal(rt.preprocess(raw), SMALL_SPEC.apply_preprocess(raw))
    # a single HWC image is accepted too
    np.testing.assert_array_equal(rt.run(raw[0], preprocess=True)["output"], by_hand[:1])


def test_threads_option(compiled, target, inputs):
    with compiled.load(target, "fp32", threads=1) as rt:
        assert rt.run(inputs)["output"].shape == (5, 5)
    with pytest.raises(ConfigError, match="threads must be >= 1"):
        compiled.load(target, "fp32", threads=0)


# -- validation -----------------------------------------------------------------------------------
def _nan(x):
    x = x.copy()
    x[1, 2, 3, 4] = np.nan
    return x


def _inf(x):
    x = x.copy()
    x[0, 0, 0, 0] = -np.inf
    return x


SHAPE = r"must have shape \('?\?'?, 3, 16, 16\)"  # the dynamic batch is shown as ?
BAD_INPUTS = [
    pytest.param(lambda x: x[0], SHAPE + r".*got \(3, 16, 16\)", id="rank-3"),
    pytest.param(lambda x: x[None], SHAPE + r".*got \(1, 5, 3, 16, 16\)", id="rank-5"),
    pytest.param(lambda x: x[:, :1], SHAPE + r".*got \(5, 1, 16, 16\)", id="channels"),
    pytest.param(lambda x: x[:, :, :8], SHAPE + r".*got \(5, 3, 8, 16\)", id="height"),
    pytest.param(lambda x: np.ascontiguousarray(x.transpose(0, 2, 3, 1)),
                 SHAPE + r".*got \(5, 16, 16, 3\)", id="nhwc"),
    pytest.param(lambda x: x.astype(np.float64), r"must have dtype float32, got float64", id="float64"),
    pytest.param(lambda x: x.astype(np.float16), r"must have dtype float32, got float16", id="float16"),
    pytest.param(lambda x: np.zeros((5, 16, 16, 3), np.uint8),
                 r"must have dtype float32, got uint8; pass preprocess=True", id="uint8-raw"),
    pytest.param(_nan, r"contains 1 NaN/Inf values; expected finite", id="nan"),
    pytest.param(_inf, r"contains 1 NaN/Inf values; expected finite", id="inf"),
    pytest.param(lambda x: x.tolist(), r"must be a numpy.ndarray, got list", id="list"),
    pytest.param(lambda x: x[:0], r"must hold at least one sample.*got shape \(0, 3, 16, 16\)", id="batch-0"),
    pytest.param(lambda x: {"image": x}, r"expected inputs \['input'\], got \['image'\]", id="wrong-name"),
    pytest.param(lambda x: {"input": x, "extra": x}, r"expected inputs \['input'\], got \['extra', 'input'\]",
                 id="extra-name"),
]


@pytest.mark.parametrize("make_bad, message", BAD_INPUTS)
def test_invalid_inputs_raise_with_expected_and_got(rt, inputs, make_bad, message):
    with pytest.raises(InputValidationError, match=message):
        rt.run(make_bad(inputs))
    assert rt.run(inputs)["output"].shape == (5, 5)  # the runtime is still usable


def test_zero_size_raw_batch_is_refused(rt):
    """An empty batch never reaches the backend (OpenVINO returned the previous caller's outputs for one)."""
    rt.run(np.ones((2, 3, 16, 16), np.float32))
    with pytest.raises(InputValidationError, match=r"at least one sample.*got shape \(0, 3, 16, 16\)"):
        rt.run(np.zeros((0, 16, 16, 3), np.uint8), preprocess=True)


def test_preprocess_true_with_wrong_raw_size(rt):
    with pytest.raises(InputValidationError, match=r"got \(2, 3, 12, 16\)"):
        rt.run(np.zeros((2, 12, 16, 3), np.uint8), preprocess=True)


def test_fixed_batch_is_enforced(target, small_cnn, tmp_path):
    spec = InputSpec(shape=(2, 3, 16, 16), preprocess=None)
    bundle = edgeship.compress(small_cnn, input_spec=spec, targets=[target], precision="fp32",
                               output=tmp_path / "fixed.edgeship", show_progress=False)
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    with bundle.load(target) as rt:
        assert rt.inputs[0].shape == (2, 3, 16, 16)
        np.testing.assert_allclose(rt.run(x)["output"], torch_forward(small_cnn, x), **FP32_TOL)
        with pytest.raises(InputValidationError, match=r"must have shape \(2, 3, 16, 16\).*got \(1, 3, 16, 16\)"):
            rt.run(x[:1])


# -- lifecycle ------------------------------------------------------------------------------------
def test_run_after_close_raises(compiled, target, inputs):
    rt = compiled.load(target, "fp32")
    assert rt.state is RuntimeState.OPEN
    rt.run(inputs)
    rt.close()
    assert rt.state is RuntimeState.CLOSED and "closed" in repr(rt)
    with pytest.raises(RuntimeStateError, match="closed"):
        rt.run(inputs)
    rt.close()  # idempotent
    with pytest.raises(RuntimeStateError):
        rt.run(inputs)


def test_context_manager_closes(compiled, target, inputs):
    with compiled.load(target, "fp32") as rt:
        rt.run(inputs)
    assert rt.state is RuntimeState.CLOSED
    with pytest.raises(RuntimeStateError):
        rt.run(inputs)


# -- threads: one runtime shared by many callers -------------------------------------------------------
def _thread_batches(shape: tuple[int, ...], threads: int = 8, runs: int = 40, seed: int = 11) -> list[list[np.ndarray]]:
    """For each thread, ``runs`` seeded random batches of different contents, of batch 1 or 3."""
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal((1 if (t + i) % 3 else 3, *shape)).astype(np.float32) for i in range(runs)]
            for t in range(threads)]


def _assert_threads_match_single_thread(rt, batches: list[list[np.ndarray]]) -> None:
    """Every thread's outputs, compared once all threads are done (so a result that aliases a reused buffer
    shows), are exactly the single-threaded outputs of the same inputs."""
    name = rt.outputs[0].name
    expected = [[rt.run(x)[name] for x in per_thread] for per_thread in batches]
    start = threading.Barrier(len(batches))

    def work(per_thread: list[np.ndarray]) -> list[np.ndarray]:
        start.wait(timeout=60)
        return [rt.run(x)[name] for x in per_thread]

    with ThreadPoolExecutor(len(batches)) as pool:
        got = list(pool.map(work, batches))
    differ = sum(not np.array_equal(g, e) for gs, es in zip(got, expected) for g, e in zip(gs, es))
    assert differ == 0, f"{differ} of {sum(map(len, batches))} results differ from the single-threaded ones"


def test_shared_by_threads_equals_single_thread(rt):
    _assert_threads_match_single_thread(rt, _thread_batches((3, 16, 16)))


@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("cpu_target", [target_param(name) for name in CPU_TARGETS])
def test_digits_shared_by_threads_equals_single_thread(digits_bundle, cpu_target, precision):
    with digits_bundle.load(cpu_target, precision) as rt:
        _assert_threads_match_single_thread(rt, _thread_batches(demo.DIGITS_SPEC.example_shape(1)[1:], seed=5))


def test_close_waits_for_runs_in_flight(compiled, target, inputs):
    """close() refuses new runs at once but returns, and releases the backend, only after every run in flight
    has finished; each run either returns a full result or raises RuntimeStateError; two close() calls are fine."""
    rt = compiled.load(target, "fp32")
    expected = rt.run(inputs)["output"]
    inner_run, inner_close = rt._run, rt._close
    lock = threading.Lock()
    in_backend = [0]
    exits: list[int] = []  # perf_counter_ns when each backend run finished
    closes: list[int] = []  # runs inside the backend when _close was called
    hold, held, release = threading.Event(), threading.Event(), threading.Event()

    def tracked_run(feed):
        with lock:
            in_backend[0] += 1
        try:
            if hold.is_set() and not held.is_set():  # the first run after hold: stays in flight until release
                held.set()
                assert release.wait(timeout=60)
            return inner_run(feed)
        finally:
            with lock:
                exits.append(time.perf_counter_ns())
                in_backend[0] -= 1

    def tracked_close():
        closes.append(in_backend[0])
        inner_close()

    rt._run, rt._close = tracked_run, tracked_close
    stop = threading.Event()

    def loop() -> tuple[int, int]:
        ok = refused = 0
        while not stop.is_set():
            try:
                out = rt.run(inputs)["output"]
            except RuntimeStateError:
                refused += 1
                continue
            assert out.shape == (5, 5) and np.array_equal(out, expected)
            ok += 1
        return ok, refused

    with ThreadPoolExecutor(4) as pool:
        workers = [pool.submit(loop) for _ in range(4)]
        hold.set()
        assert held.wait(timeout=60)
        closers = [threading.Thread(target=rt.close) for _ in range(2)]
        for c in closers:
            c.start()
        deadline = time.monotonic() + 60
        while rt.state is not RuntimeState.CLOSED and time.monotonic() < deadline:
            time.sleep(0.001)
        assert rt.state is RuntimeState.CLOSED
        with pytest.raises(RuntimeStateError, match="closed"):  # refused at once, while a run is still in flight
            rt.run(inputs)
        assert all(c.is_alive() for c in closers) and closes == []  # both wait for the held run
        release.set()
        for c in closers:
            c.join(timeout=60)
        returned = time.perf_counter_ns()
        assert not any(c.is_alive() for c in closers)
        stop.set()
        results = [w.result(timeout=60) for w in workers]  # re-raises anything but RuntimeStateError
    assert closes == [0]  # released once, with no run inside the backend
    assert exits and max(exits) < returned
    assert sum(ok for ok, _ in results) >= 1  # the held run, at least, returned a full result
    with pytest.raises(RuntimeStateError):
        rt.run(inputs)
    rt.close()
    assert closes == [0]


# -- the registry and compile-time checks ---------------------------------------------------------
def test_target_registry_entry(target):
    cls = get_target_class(target)
    assert cls.name == target
    ok, info = cls.availability()
    assert ok and info
    assert edgeship.list_targets(available_only=True)[target] == info
    assert type(edgeship.get_target(target)) is cls
    assert "fp32" in cls.precisions and "int8" in cls.precisions


def test_unsupported_precision_refused_before_any_work(target, small_cnn, tmp_path):
    cls = get_target_class(target)
    bad = next(p for p in ("fp16", "int4") if p not in cls.precisions)
    with pytest.raises(ConfigError, match=rf"target '{target}' supports precisions .*got '{bad}'"):
        edgeship.compress(small_cnn, input_spec=SMALL_SPEC, targets=[target], precision=bad,
                          output=tmp_path / "x.edgeship", show_progress=False)
    assert list(tmp_path.iterdir()) == []


def test_int8_needs_calibration(target, small_cnn, tmp_path):
    with pytest.raises(ConfigError, match="calibration"):
        edgeship.compress(small_cnn, input_spec=SMALL_SPEC, targets=[target], precision="int8",
                          output=tmp_path / "x.edgeship", show_progress=False)
    assert list(tmp_path.iterdir()) == []


def test_int8_runs_and_tracks_fp32(target, small_cnn, tmp_path, inputs):
    """INT8 on a random-init model: right shapes, and close to FP32 in the large (not a top-1 test)."""
    calib = np.random.default_rng(1).standard_normal((32, 3, 16, 16)).astype(np.float32)
    bundle = edgeship.compress(small_cnn, input_spec=SMALL_SPEC, targets=[target], precision="int8",
                               calibration=calib, output=tmp_path / "int8.edgeship", show_progress=False)
    with bundle.load(target, "int8") as rt:
        assert rt.precision == "int8"
        assert rt.inputs == [TensorInfo("input", (None, 3, 16, 16), "float32")]
        got = rt.run(inputs)["output"]
    expected = torch_forward(small_cnn, inputs)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 0.1 * np.abs(expected).max() + 1e-3


@pytest.mark.parametrize("name", ["tensorrt", "openvino", "OPENVINO-CPU", ""])
def test_unknown_target_lists_known_ones(name, small_cnn, tmp_path):
    with pytest.raises(UnknownTargetError) as info:
        edgeship.get_target(name)
    message = str(info.value)
    assert f"unknown target '{name}'" in message
    for known in ALL_TARGETS:
        assert known in message
    with pytest.raises(UnknownTargetError, match=re.escape(str(ALL_TARGETS))):
        edgeship.compress(small_cnn, input_spec=SMALL_SPEC, targets=[name], precision="fp32",
                          output=tmp_path / "x.edgeship", show_progress=False)
    assert list(tmp_path.iterdir()) == []


def test_unknown_target_on_load_lists_the_bundle_variants(compiled):
    with pytest.raises(UnknownTargetError, match=r"no artifact for target='tensorrt-gpu'.*it has \["):
        compiled.load("tensorrt-gpu")
    with pytest.raises(UnknownTargetError, match=r"precision='int8'"):
        compiled.load(compiled.variants[0][0], "int8")


def test_missing_backend_is_an_error_naming_the_extra(digits_bundle, tmp_path):
    """With onnxruntime uninstalled (made unimportable in a fresh interpreter), its target says which extra to
    install, and the bundle still loads on the other backend."""
    result = run_python(f"""
        import sys, json
        sys.modules["onnxruntime"] = None  # what an uninstalled package looks like to import and find_spec
        import edgeship
        out = {{"targets": edgeship.list_targets(), "available": list(edgeship.list_targets(available_only=True))}}
        for what, call in [
            ("get_target", lambda: edgeship.get_target("onnxruntime-cpu")),
            ("load", lambda: edgeship.load({str(digits_bundle.path)!r}, target="onnxruntime-cpu")),
            ("compress", lambda: edgeship.compress("m.onnx", input_spec=edgeship.InputSpec(shape=(None, 3, 8, 8)),
                                                   output={str(tmp_path / "x.edgeship")!r},
                                                   targets=["onnxruntime-cpu"], precision="fp32")),
        ]:
            try:
                call()
                out[what] = None
            except edgeship.MissingDependencyError as exc:
                out[what] = str(exc)
        with edgeship.load({str(digits_bundle.path)!r}) as rt:
            out["fallback"] = rt.target
        print(json.dumps(out))
    """)
    assert result["targets"]["onnxruntime-cpu"].startswith("unavailable: ")
    assert "onnxruntime-cpu" not in result["available"] and "openvino-cpu" in result["available"]
    for what in ("get_target", "load", "compress"):
        assert result[what] is not None, f"{what} did not raise MissingDependencyError"
        assert "onnxruntime-cpu" in result[what] and "edgeship[onnxruntime]" in result[what], result[what]
    assert result["fallback"] == "openvino-cpu"
    assert not (tmp_path / "x.edgeship").exists()


def test_openvino_inference_precision_can_be_overridden_at_load(digits_bundle, digits_data):
    """The artifact pins f32; a load option measures another hint (bf16 where the CPU has it) on demand."""
    pytest.importorskip("openvino")
    x = demo.DIGITS_SPEC.apply_preprocess(digits_data[2][:64])
    with digits_bundle.load("openvino-cpu", "fp32") as f32, \
            digits_bundle.load("openvino-cpu", "fp32", inference_precision="bf16") as bf16:
        a, b = f32.run(x)["output"], bf16.run(x)["output"]
        assert f32._config["INFERENCE_PRECISION_HINT"] == "f32" and bf16._config["INFERENCE_PRECISION_HINT"] == "bf16"
    assert np.mean(a.argmax(1) == b.argmax(1)) >= 0.9
    with pytest.raises(edgeship.ConfigError, match="inference_precision"):
        digits_bundle.load("openvino-cpu", "fp32", inference_precision="int4")


def test_openvino_streams_and_hint_reach_the_compiled_model(digits_bundle, digits_data):
    """What the load options ask for is what OpenVINO compiled with (read back from the compiled model)."""
    pytest.importorskip("openvino")
    x = demo.DIGITS_SPEC.apply_preprocess(digits_data[2][:4])
    with digits_bundle.load("openvino-cpu", "int8", performance_hint="THROUGHPUT", num_streams=2) as rt:
        rt.run(x)
        assert int(rt._compiled.get_property("NUM_STREAMS")) == 2
        assert str(rt._compiled.get_property("PERFORMANCE_HINT")) == "THROUGHPUT"
    with pytest.raises(edgeship.ConfigError, match="num_streams"):
        digits_bundle.load("openvino-cpu", "int8", num_streams=0)
