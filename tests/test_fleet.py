"""Fleet-safe INT8: Recipe.cpus, the flavour each CPU target picks for it, and the proof on an emulated AVX2 CPU.

The emulated CPU is QEMU's user-mode emulator with ``-cpu EPYC`` (AMD Zen 1: AVX2 and FMA, no AVX-512,
no VNNI), the class of CPU on which full-range U8S8 lost 10 top-1 points of the digits demo. ONNX
Runtime and OpenVINO pick their kernels from CPUID, so under the emulator they run the saturating
16-bit ``vpmaddubsw`` path exactly as such a box does. CI installs ``qemu-user`` (``.ci/run``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import edgeship
import numpy as np
import pytest
from edgeship import demo
from edgeship._fleet import CPU_CLASSES, cpu_flags, fleet, int8_saturates_here
from edgeship.errors import ConfigError
from edgeship.targets.onnxruntime import FLEET_SAFE_FLAVOURS, INT8_FLAVOURS

QEMU = shutil.which("qemu-x86_64")


# -- Recipe.cpus ---------------------------------------------------------------------------------
def test_default_fleet_is_any_avx2_cpu_and_may_saturate():
    assert edgeship.Recipe().cpus == "x86-64-v3"
    assert fleet().saturating and fleet("x86-64-v3").saturating


@pytest.mark.parametrize("cpus", ["avx512-vnni", "amx", "arm64", ("avx512-vnni", "amx")])
def test_fleets_with_32_bit_int8_accumulation_do_not_saturate(cpus):
    assert not fleet(cpus).saturating


def test_a_fleet_with_one_avx2_class_saturates():
    assert fleet(("avx512-vnni", "x86-64-v3")).saturating


def test_native_is_decided_by_this_machines_flags():
    resolved = fleet("native")
    assert resolved.native_flags == tuple(cpu_flags())
    assert resolved.saturating == int8_saturates_here()


def test_int8_saturation_follows_the_vnni_flags():
    assert int8_saturates_here(["avx2", "fma"])
    assert int8_saturates_here(["avx2", "avx512f", "avx512bw"])  # AVX-512 without VNNI: vpmaddubsw too
    assert not int8_saturates_here(["avx2", "avx512f", "avx512_vnni"])
    assert not int8_saturates_here(["avx2", "avx_vnni"])


@pytest.mark.parametrize("bad", ["x86-64-v2", "", (), ("arm64", 3), "AVX2"])
def test_unknown_cpu_classes_are_refused_listing_the_known_ones(bad):
    with pytest.raises(ConfigError, match="x86-64-v3"):
        edgeship.Recipe(cpus=bad)


def test_recipe_cpus_round_trips_through_toml(tmp_path):
    path = tmp_path / "recipe.toml"
    path.write_text('cpus = ["avx512-vnni", "arm64"]\n')
    recipe = edgeship.Recipe.from_toml(path)
    assert recipe.cpus == ("avx512-vnni", "arm64")
    assert edgeship.Recipe.from_dict(recipe.to_dict()) == recipe


def test_every_cpu_class_is_described():
    for name, (description, _) in CPU_CLASSES.items():
        assert description, name


def test_a_flavour_is_worse_only_when_the_paired_difference_is_significant():
    from edgeship.measure.fidelity import significantly_worse as _significantly_worse

    best = np.ones(256, bool)
    two_off = best.copy()
    two_off[:2] = False
    assert not _significantly_worse(two_off, best)  # 2 of 256: noise (the MobileNet case of the fidelity run)
    ten_off = best.copy()
    ten_off[:10] = False
    assert _significantly_worse(ten_off, best) and not _significantly_worse(best, ten_off)


def test_flavour_table_marks_what_saturates():
    assert INT8_FLAVOURS["u8s8"].saturates_without_vnni
    assert set(FLEET_SAFE_FLAVOURS) == {"u8s8-reduce-range", "u8u8"}


# -- what the targets choose ---------------------------------------------------------------------
def _int8(bundle, target):
    return next(a for a in bundle.artifacts if a["target"] == target and a["precision"] == "int8")


def test_default_bundle_records_a_fleet_safe_flavour_and_why(digits_bundle):
    manifest = digits_bundle.manifest
    assert manifest["fleet"]["cpus"] == ["x86-64-v3"] and manifest["fleet"]["int8_may_saturate"]
    assert manifest["build_host"]["cpu_flags"] == cpu_flags()
    ort = _int8(digits_bundle, "onnxruntime-cpu")["options"]
    assert ort["int8_flavour"] in FLEET_SAFE_FLAVOURS
    choice = ort["flavour_choice"]
    assert choice["flavour"] == ort["int8_flavour"] and "VNNI" in choice["reason"]
    assert {m["flavour"] for m in choice["measured"]} == set(FLEET_SAFE_FLAVOURS)
    for m in choice["measured"]:
        assert 0.95 <= m["fake_quant_agreement"] <= 1.0 and m["p50_ms_here"] > 0
        assert m["fused_vs_fake_agreement_here"] >= 0.98  # a fleet-safe flavour is exact on this CPU too
    ov = _int8(digits_bundle, "openvino-cpu")["options"]
    assert ov["overflow_fix"] == "enable" and "VNNI" in ov["flavour_choice"]["reason"]


def test_a_fixed_batch_model_gets_its_flavour_measured_one_sample_at_a_time(digits_model, digits_data, tmp_path):
    """The flavour measurement runs the graph in its own batch size (it sent 64 rows to a batch-1 graph)."""
    spec = edgeship.InputSpec(shape=(1, 1, 32, 32), preprocess=demo.DIGITS_SPEC.preprocess)
    bundle = edgeship.compress(digits_model, input_spec=spec, calibration=digits_data[0][:70],
                               preprocess_calibration=True, precision="int8", targets=["onnxruntime-cpu"],
                               output=tmp_path / "b1.edgeship", show_progress=False)
    choice = _int8(bundle, "onnxruntime-cpu")["options"]["flavour_choice"]
    assert choice["samples"] == 70 and {m["flavour"] for m in choice["measured"]} == set(FLEET_SAFE_FLAVOURS)


@pytest.fixture(scope="module")
def vnni_bundle(tmp_path_factory, digits_model, digits_data):
    """The digits CNN at INT8 for a fleet that has VNNI everywhere: full-range U8S8, no overflow fix."""
    return edgeship.compress(digits_model, input_spec=demo.DIGITS_SPEC, calibration=digits_data[0],
                             preprocess_calibration=True, precision="int8",
                             output=tmp_path_factory.mktemp("vnni") / "digits.edgeship",
                             recipe=edgeship.Recipe(cpus="avx512-vnni"), show_progress=False)


def test_vnni_fleet_gets_full_range_int8(vnni_bundle):
    assert vnni_bundle.manifest["fleet"]["int8_may_saturate"] is False
    assert _int8(vnni_bundle, "onnxruntime-cpu")["options"]["int8_flavour"] == "u8s8"
    assert "measured" not in _int8(vnni_bundle, "onnxruntime-cpu")["options"]["flavour_choice"]
    assert _int8(vnni_bundle, "openvino-cpu")["options"]["overflow_fix"] == "disable"


# -- the proof on an emulated AVX2-only CPU -------------------------------------------------------
_EMULATED = textwrap.dedent("""
    import json, sys
    import numpy as np
    import edgeship
    x = np.load(sys.argv[1])
    out = {}
    for path, target in json.loads(sys.argv[2]):
        with edgeship.load(path, target=target, precision="int8") as rt:
            out[f"{path}|{target}"] = rt.run(x)["output"].argmax(1).tolist()
    print(json.dumps(out))
""")


def _int8_predictions_on_emulated_avx2(tmp_path, x, runs):
    np.save(tmp_path / "x.npy", x)
    proc = subprocess.run([QEMU, "-cpu", "EPYC", sys.executable, "-c", _EMULATED, str(tmp_path / "x.npy"),
                           json.dumps(runs)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {k: np.asarray(v) for k, v in json.loads(proc.stdout.strip().splitlines()[-1]).items()}


def _fake_quant_top1(bundle, x):
    """Top-1 of the bundle's onnxruntime-cpu INT8 graph with Q/DQ run as float arithmetic: the quantization's
    own numerics, the same on every CPU."""
    from edgeship.targets.onnxruntime import _predict, _session

    entry = _int8(bundle, "onnxruntime-cpu")
    path = bundle.path / next(iter(entry["files"]))
    return _predict(_session(path, fake_quant=True), bundle.spec.name, x).argmax(1)


@pytest.mark.slow
@pytest.mark.skipif(QEMU is None, reason="qemu-x86_64 is not installed (apt-get install qemu-user; .ci/run does)")
def test_default_int8_holds_on_an_emulated_avx2_cpu_where_full_range_u8s8_breaks(
        digits_bundle, vnni_bundle, digits_data, tmp_path):
    x = demo.DIGITS_SPEC.apply_preprocess(digits_data[2][:128])
    with digits_bundle.load("onnxruntime-cpu", "fp32") as rt:
        reference = rt.run(x)["output"].argmax(1)  # FP32 top-1 does not depend on the CPU's kernels
    default_ort, default_ov, vnni_ort = (f"{digits_bundle.path}|onnxruntime-cpu", f"{digits_bundle.path}|openvino-cpu",
                                         f"{vnni_bundle.path}|onnxruntime-cpu")
    runs = [[str(digits_bundle.path), "onnxruntime-cpu"], [str(digits_bundle.path), "openvino-cpu"],
            [str(vnni_bundle.path), "onnxruntime-cpu"]]
    emulated = _int8_predictions_on_emulated_avx2(tmp_path, x, runs)
    vs_fp32 = {k: float((v == reference).mean()) for k, v in emulated.items()}
    assert vs_fp32[default_ort] >= 0.95 and vs_fp32[default_ov] >= 0.95, vs_fp32
    # the fleet-safe graph runs on the AVX2 CPU as its quantization numerics say ...
    assert float((emulated[default_ort] == _fake_quant_top1(digits_bundle, x)).mean()) >= 0.99
    # ... the full-range U8S8 graph (made for a VNNI fleet) does not: its 16-bit pair sums saturate there,
    # which also shows that the emulator runs the non-VNNI kernels at all
    full_range = float((emulated[vnni_ort] == _fake_quant_top1(vnni_bundle, x)).mean())
    assert full_range <= 0.97, (full_range, vs_fp32)


# -- the calibration method -----------------------------------------------------------------------
def test_unknown_calibration_method_is_refused():
    with pytest.raises(ConfigError, match="percentile"):
        edgeship.Recipe(calibration_method="kl")


def test_explicit_calibration_method_is_used_and_recorded(digits_model, digits_data, tmp_path):
    bundle = edgeship.compress(digits_model, input_spec=demo.DIGITS_SPEC, calibration=digits_data[0],
                               preprocess_calibration=True, precision="int8", output=tmp_path / "p.edgeship",
                               recipe=edgeship.Recipe(calibration_method="percentile"), show_progress=False)
    for target in ("onnxruntime-cpu", "openvino-cpu"):
        options = _int8(bundle, target)["options"]
        assert options["calibration_method"] == "percentile"
        assert "methods_measured" not in options["flavour_choice"]


@pytest.mark.slow
def test_auto_calibration_method_is_chosen_on_the_validation_data(digits_model, digits_data, tmp_path):
    x_train, _, x_test, y_test = digits_data
    bundle = edgeship.compress(digits_model, input_spec=demo.DIGITS_SPEC, calibration=x_train,
                               preprocess_calibration=True, precision="int8", output=tmp_path / "a.edgeship",
                               validation=(x_test, y_test), recipe=edgeship.Recipe(max_drop=1.0), show_progress=False)
    ort = _int8(bundle, "onnxruntime-cpu")["options"]
    measured = ort["flavour_choice"]["methods_measured"]
    assert [m["calibration_method"] for m in measured] == ["minmax", "percentile", "entropy"]
    best = max(m["fake_quant_agreement"] for m in measured)
    chosen = next(m for m in measured if m["calibration_method"] == ort["calibration_method"])
    assert chosen["fake_quant_agreement"] >= best - 0.05  # not significantly worse on these samples
    ov = _int8(bundle, "openvino-cpu")["options"]
    measured = ov["flavour_choice"]["methods_measured"]
    assert [m["calibration_method"] for m in measured] == ["nncf-default", "minmax", "percentile", "entropy"]
    chosen = next(m for m in measured if m["calibration_method"] == ov["calibration_method"])
    assert chosen["agreement"] >= max(m["agreement"] for m in measured) - 0.05
    for target in ("onnxruntime-cpu", "openvino-cpu"):
        assert _int8(bundle, target)["options"]["accuracy"]["met"]
