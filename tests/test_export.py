"""Step 'export': torch models and ONNX files -> a checked FP32 ONNX graph."""

from __future__ import annotations

from pathlib import Path

import edgeship
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import SMALL_SPEC, build_small_cnn, torch_forward
from edgeship import CompileError, ConfigError, EdgeshipError, InputSpec
from edgeship.build.export import OPSET, export_onnx
from torch import nn


def dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def ort_forward(path: Path, x: np.ndarray, name: str = "input") -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {name: x})


def test_small_cnn_export(small_cnn, tmp_path):
    path = tmp_path / "small.onnx"
    spec = export_onnx(small_cnn, SMALL_SPEC, path)
    assert spec == SMALL_SPEC
    onnx.checker.check_model(str(path), full_check=True)
    model = onnx.load(str(path))
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["output"]
    assert dims(model.graph.input[0]) == ["batch", 3, 16, 16]
    assert dims(model.graph.output[0]) == ["batch", 5]
    assert {o.domain or "ai.onnx": o.version for o in model.opset_import}["ai.onnx"] == OPSET
    x = np.random.default_rng(0).standard_normal((3, 3, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(ort_forward(path, x)[0], torch_forward(small_cnn, x), rtol=1e-4, atol=1e-5)


def test_resnet18_random_init_export(tmp_path):
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()  # random init: no weights are downloaded
    spec = InputSpec(shape=(None, 3, 64, 64), preprocess=edgeship.Preprocess.imagenet())
    path = tmp_path / "resnet18.onnx"
    export_onnx(model, spec, path)  # compares ONNX Runtime with torch on the way
    onnx.checker.check_model(str(path), full_check=True)
    graph = onnx.load(str(path)).graph
    assert dims(graph.input[0]) == ["batch", 3, 64, 64]
    assert dims(graph.output[0]) == ["batch", 10]
    assert sum(node.op_type == "Conv" for node in graph.node) == 20
    x = np.random.default_rng(1).standard_normal((2, 3, 64, 64)).astype(np.float32)
    expected = torch_forward(model, x)
    np.testing.assert_allclose(ort_forward(path, x)[0], expected, rtol=1e-3, atol=1e-4 * np.abs(expected).max())


def test_fixed_batch_export_has_no_dynamic_dim(small_cnn, tmp_path):
    path = tmp_path / "fixed.onnx"
    export_onnx(small_cnn, InputSpec(shape=(2, 3, 16, 16), preprocess=None), path)
    graph = onnx.load(str(path)).graph
    assert dims(graph.input[0]) == [2, 3, 16, 16]
    assert dims(graph.output[0]) == [2, 5]


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        y = self.body(x)
        return y.mean(dim=(2, 3)), {"map": y.amax(dim=1)}


def test_multi_output_model_names_every_output_with_dynamic_batch(tmp_path):
    torch.manual_seed(0)
    model = TwoHeads().eval()
    path = tmp_path / "two.onnx"
    export_onnx(model, SMALL_SPEC, path)
    graph = onnx.load(str(path)).graph
    assert [o.name for o in graph.output] == ["output_0", "output_1"]
    assert dims(graph.output[0])[0] == "batch" and dims(graph.output[1])[0] == "batch"
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    got = ort_forward(path, x)
    assert got[0].shape == (2, 4) and got[1].shape == (2, 16, 16)


def test_training_mode_model_refused(tmp_path):
    model = build_small_cnn().train()
    with pytest.raises(ConfigError, match=r"training mode.*model.eval\(\)"):
        export_onnx(model, SMALL_SPEC, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
    out = tmp_path / "out" / "m.edgeship"
    with pytest.raises(ConfigError, match="training mode"):
        edgeship.compress(model, input_spec=SMALL_SPEC, output=out, precision="fp32", show_progress=False)
    assert not (tmp_path / "out").exists()  # no bundle, no temporary folder, not even the parent it created


@pytest.mark.parametrize("model", [object(), "model.pt", Path("weights.pth"), 3], ids=["object", "pt", "pth", "int"])
def test_not_a_model_refused(model, tmp_path):
    with pytest.raises(ConfigError, match="torch.nn.Module or a path to an .onnx file"):
        export_onnx(model, SMALL_SPEC, tmp_path / "m.onnx")


def test_dynamic_spatial_dims_refused_for_torch_export(small_cnn, tmp_path):
    with pytest.raises(ConfigError, match="dynamic non-batch dims"):
        export_onnx(small_cnn, InputSpec(shape=(None, 3, None, None)), tmp_path / "m.onnx")


def test_model_that_rejects_the_spec_shape_is_an_edgeship_error(small_cnn, tmp_path):
    with pytest.raises(EdgeshipError, match=r"1, 1, 16, 16"):
        export_onnx(small_cnn, InputSpec(shape=(None, 1, 16, 16)), tmp_path / "m.onnx")


# -- an ONNX file as the model --------------------------------------------------------------------
def test_onnx_path_accepted_directly(small_onnx, small_cnn, tmp_path):
    bundle = edgeship.compress(small_onnx, input_spec=SMALL_SPEC, targets=["onnxruntime-cpu"], precision="fp32",
                               output=tmp_path / "from-onnx.edgeship", show_progress=False)
    assert bundle.source_onnx.read_bytes() == small_onnx.read_bytes()  # copied as is
    x = np.random.default_rng(2).standard_normal((4, 3, 16, 16)).astype(np.float32)
    with bundle.load("onnxruntime-cpu") as rt:
        np.testing.assert_allclose(rt.run(x)["output"], torch_forward(small_cnn, x), rtol=1e-4, atol=1e-5)
    assert export_onnx(str(small_onnx), SMALL_SPEC, tmp_path / "copy.onnx") == SMALL_SPEC  # a str works too


def _renamed_copy(src: Path, dst: Path, name: str) -> Path:
    model = onnx.load(str(src))
    old = model.graph.input[0].name
    model.graph.input[0].name = name
    for node in model.graph.node:
        node.input[:] = [name if i == old else i for i in node.input]
    onnx.save(model, str(dst))
    return dst


def test_onnx_input_name_is_adopted_when_spec_uses_the_default(small_onnx, tmp_path):
    path = _renamed_copy(small_onnx, tmp_path / "images.onnx", "images")
    spec = export_onnx(path, SMALL_SPEC, tmp_path / "copy.onnx")
    assert spec.name == "images" and spec.shape == SMALL_SPEC.shape and spec.preprocess == SMALL_SPEC.preprocess
    bundle = edgeship.compress(path, input_spec=SMALL_SPEC, targets=["onnxruntime-cpu"], precision="fp32",
                               output=tmp_path / "b.edgeship", show_progress=False)
    assert bundle.spec.name == "images"
    with bundle.load("onnxruntime-cpu") as rt:
        assert rt.inputs[0].name == "images"
        assert rt.run(np.zeros((1, 3, 16, 16), np.float32))["output"].shape == (1, 5)


def test_onnx_input_name_mismatch_refused(small_onnx, tmp_path):
    with pytest.raises(ConfigError, match=r"'pixels' is not an input of small.onnx; its inputs are \['input'\]"):
        export_onnx(small_onnx, InputSpec(shape=(None, 3, 16, 16), name="pixels"), tmp_path / "copy.onnx")


def test_missing_and_invalid_onnx_files(tmp_path):
    with pytest.raises(ConfigError, match="ONNX file not found"):
        export_onnx(tmp_path / "absent.onnx", SMALL_SPEC, tmp_path / "copy.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"this is not protobuf \x00\xff" * 10)
    with pytest.raises(CompileError, match="not a valid ONNX model"):
        export_onnx(garbage, SMALL_SPEC, tmp_path / "copy.onnx")
    assert not (tmp_path / "copy.onnx").exists()
