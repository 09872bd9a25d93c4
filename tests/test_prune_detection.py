"""Pruning detectors: real torch-pruning on random-init torchvision detectors, heads kept whole, real OpenVINO.

The backbone (and the neck's inner channels) lose channels; the heads and every feature-map channel they
read stay, so the heads' weights and the anchors are those of the unpruned model.
"""

from __future__ import annotations

import edgeship
import numpy as np
import pytest
from edgeship import ConfigError, InputSpec, Prune, Recipe
from edgeship.build.prune import distill, model_fingerprint, prune_model
from edgeship.bundle.detector import Detector
from edgeship.tasks.detection import box_parity, postprocess, prepare_detector

torch = pytest.importorskip("torch")
D = pytest.importorskip("torchvision.models.detection")
from test_detection import SSD_SPEC, _blocky_images, _detector  # noqa: E402

EXAMPLE = torch.zeros(1, 3, 320, 320)


def _live_detector(name: str, **kwargs):
    """A random-init detector with batch-norm statistics from images (seed 7): its features vary with the input
    (random init alone leaves them ~1e-14, so every image gets the same head outputs)."""
    model = _detector(name, **kwargs)
    x = np.concatenate([SSD_SPEC.apply_preprocess(img) for img in _blocky_images(8, 320, 320, seed=7)])
    backbone_and_head = prepare_detector(model, (320, 320))[0]
    torch.optim.swa_utils.update_bn(torch.from_numpy(x).split(256), backbone_and_head)
    return model.eval()


def _same_state(a, b) -> bool:
    """Same parameter and buffer names and values: a module that pruning (or training) left as it was."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def ssd():
    """(unpruned SSDlite, its 30%-pruned copy, the unpruned one's fingerprint) — what Prune(ratio=0.3) does in compress."""
    model = _live_detector("ssdlite320_mobilenet_v3_large", num_classes=5)
    model.detections_per_img = 20
    fingerprint = model_fingerprint(model)
    return model, prune_model(model, EXAMPLE, Prune(ratio=0.3), 0.3), fingerprint


def test_ssdlite_backbone_is_pruned_and_heads_and_anchors_are_untouched(ssd):
    model, result, fingerprint = ssd
    pruned = result.model
    assert model_fingerprint(model) == fingerprint  # the original is left as it was
    assert type(pruned) is type(model) and not pruned.training
    # MobileNetV3 channels -30% -> ~0.7^2 of their MACs; the kept feature maps and heads hold the rest up
    assert result.macs_after / result.macs_before < 0.65, result.summary()
    assert result.params_after < 0.7 * result.params_before
    assert _same_state(model.head, pruned.head)
    assert result.protected[0] == "head" and "backbone.features.0.13.0" in result.protected  # the C4 map's expand conv
    assert all(not name.startswith("head.") for name in result.protected)
    _, head = prepare_detector(model, (320, 320))
    _, pruned_head = prepare_detector(pruned, (320, 320))
    assert pruned_head.level_sizes == head.level_sizes
    np.testing.assert_array_equal(pruned_head.anchors, head.anchors)
    expand = lambda m: m.backbone.features[1][1].block[0][0].out_channels  # noqa: E731  (a later block's expand conv)
    assert expand(pruned) < expand(model)


def test_pruned_ssdlite_compiles_to_openvino_int8_and_detects_in_image_coordinates(ssd, tmp_path):
    model, result, _ = ssd
    calib = np.concatenate([SSD_SPEC.apply_preprocess(img) for img in _blocky_images(8, 480, 640, seed=1)])
    bundle = edgeship.compress(model, input_spec=SSD_SPEC, calibration=calib, targets=["openvino-cpu"],
                               precision=["fp32", "int8"], recipe=Recipe(prune=Prune(ratio=0.3)),
                               output=tmp_path / "pruned.edgeship", show_progress=False)
    pruning = bundle.manifest["pruning"]
    assert pruning["ratio"] == 0.3 and pruning["recovery"] == "none"
    assert pruning["macs_ratio"] == pytest.approx(result.macs_after / result.macs_before)
    assert pruning["protected"] == result.protected and pruning["scope"].startswith("backbone + head")
    assert bundle.manifest["complexity"]["macs"] == result.macs_after  # the exported dense model is what was counted
    assert bundle.artifact("openvino-cpu", "int8")["options"]["fp_layers"]  # heads stay in FP, as unpruned

    images = _blocky_images(2, 480, 640, seed=2)
    with Detector(bundle, "openvino-cpu", "fp32") as fp32, Detector(bundle, "openvino-cpu", "int8") as int8:
        got, got8 = fp32(images), int8(images)
    x = torch.from_numpy(np.concatenate([SSD_SPEC.apply_preprocess(img) for img in images]))
    dense, head = prepare_detector(result.model, (320, 320))
    with torch.no_grad():
        ref = postprocess([o.numpy() for o in dense(x)], head)
    for r, g, g8 in zip(ref, got, got8):
        for d in (g, g8):
            assert set(d) == {"boxes", "scores", "labels"} and d["boxes"].dtype == np.float32
            assert d["boxes"].shape == (len(d["scores"]), 4) and 0 < len(d["boxes"]) <= 20
            assert d["boxes"][:, 2].max() <= 640 and d["boxes"][:, 3].max() <= 480
        scaled = dict(r, boxes=r["boxes"] * np.array([2, 1.5, 2, 1.5], np.float32))  # 320 -> 640 x 480
        same = box_parity(scaled, g, iou=0.95)
        assert same["recall"] >= 0.95 and same["precision"] >= 0.95, same


@pytest.mark.slow
def test_distillation_pulls_the_pruned_ssdlite_towards_the_original(ssd):
    model, result, _ = ssd
    pruned = prune_model(model, EXAMPLE, Prune(ratio=0.3), 0.3).model  # a private copy to train
    x = torch.from_numpy(np.concatenate([SSD_SPEC.apply_preprocess(img) for img in _blocky_images(4, 320, 320, seed=7)]))
    teacher, _ = prepare_detector(model, (320, 320))
    with torch.no_grad():
        box_t, cls_t = teacher(x)

    def gap() -> tuple[float, float]:
        """(box regression MSE, class probability MSE) against the original's dense outputs."""
        with torch.no_grad():
            box, cls = prepare_detector(pruned, (320, 320))[0](x)
        mse = torch.nn.functional.mse_loss
        return float(mse(box, box_t)), float(mse(cls.softmax(-1), cls_t.softmax(-1)))

    before = gap()
    out = distill(pruned, model, x.numpy(), Prune(ratio=0.3, recover="distill", distill_epochs=16), show_progress=False)
    after = gap()
    assert out is pruned and not pruned.training and not pruned.backbone.training
    assert after[0] < 0.75 * before[0] and after[1] < 0.75 * before[1], (before, after)
    assert _same_state(model.head, result.model.head)  # the teacher and the other pruned copy are not trained


def test_two_stage_detector_prunes_its_backbone_with_rpn_and_roi_heads_untouched():
    torch.manual_seed(0)
    model = D.fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None, num_classes=5).eval()
    result = prune_model(model, EXAMPLE, Prune(ratio=0.3), 0.3)
    pruned = result.model
    assert result.macs_after / result.macs_before < 0.75 and "ROI heads" in result.scope
    assert result.protected[0] == "rpn" and "backbone.fpn.layer_blocks.0.0" in result.protected
    assert _same_state(model.rpn, pruned.rpn) and _same_state(model.roi_heads, pruned.roi_heads)
    with torch.no_grad():
        out = pruned([torch.rand(3, 320, 320)])[0]
    assert out["boxes"].shape[1] == 4 and len(out["boxes"]) == len(out["scores"])


def test_detector_pruning_errors_come_before_any_work(tmp_path):
    model = _detector("ssdlite320_mobilenet_v3_large", num_classes=3)
    with pytest.raises(ConfigError, match="fixed NCHW input size"):
        edgeship.compress(model, input_spec=InputSpec(shape=(1, 3, None, None)), precision="fp32",
                          recipe=Recipe(prune=Prune(ratio=0.3)), output=tmp_path / "x.edgeship", show_progress=False)
    with pytest.raises(ConfigError, match="not modules of the model"):
        prune_model(model, EXAMPLE, Prune(ratio=0.3, protect=("backbone.no_such_layer",)), 0.3)
    assert not (tmp_path / "x.edgeship").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["retinanet_resnet50_fpn", "fcos_resnet50_fpn"])
def test_fpn_detectors_prune_the_body_and_inner_fpn_and_keep_the_fpn_outputs(name):
    model = _detector(name, num_classes=5)
    result = prune_model(model, EXAMPLE, Prune(ratio=0.3), 0.3)
    pruned = result.model
    # the heads are most of the MACs at 320 x 320 and stay; the ResNet body and the FPN's lateral convs shrink
    assert result.macs_after / result.macs_before < 0.85, result.summary()
    assert _same_state(model.head, pruned.head)
    fpn = pruned.backbone.fpn
    assert all(block[0].out_channels == 256 for block in fpn.layer_blocks)
    assert all(block[0].out_channels < 256 for block in fpn.inner_blocks)
    assert pruned.backbone.body.layer4[0].conv1.out_channels < 512
    with torch.no_grad():
        a, b = model.backbone(EXAMPLE), pruned.backbone(EXAMPLE)
    assert [t.shape for t in a.values()] == [t.shape for t in b.values()]


@pytest.mark.slow
def test_latency_search_measures_pruned_detectors_on_the_target(tmp_path):
    model = _detector("ssdlite320_mobilenet_v3_large", num_classes=3)
    calib = np.concatenate([SSD_SPEC.apply_preprocess(img) for img in _blocky_images(4, 320, 320, seed=4)])
    with pytest.raises(edgeship.LatencyBudgetError, match="best reached") as info:
        edgeship.compress(model, input_spec=SSD_SPEC, calibration=calib, targets=["openvino-cpu"], precision="int8",
                          recipe=Recipe(calibration_size=4, prune=Prune(latency_ms=1e-6, max_ratio=0.5, search_grid=2)),
                          output=tmp_path / "never.edgeship", show_progress=False)
    steps = info.value.steps
    assert [s["ratio"] for s in steps] == [0.0, 0.5] and steps[1]["macs"] < steps[0]["macs"]


@pytest.mark.slow
def test_pruned_two_stage_detector_is_exported_whole_and_matches_the_pruned_torch_model(tmp_path):
    torch.manual_seed(0)
    model = D.fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None, num_classes=5).eval()
    spec = InputSpec(shape=(1, 3, 320, 320), preprocess=edgeship.Preprocess(
        scale=1 / 255, mean=tuple(model.transform.image_mean), std=tuple(model.transform.image_std), resize="stretch"))
    bundle = edgeship.compress(model, input_spec=spec, precision="fp32", targets=["onnxruntime-cpu"],
                               recipe=Recipe(prune=Prune(ratio=0.3)), output=tmp_path / "frcnn.edgeship",
                               show_progress=False)
    pruning = bundle.manifest["pruning"]
    assert pruning["macs_ratio"] < 0.75 and pruning["protected"][0] == "rpn"
    assert bundle.manifest["detection"]["postprocessing"] == "in graph"
    pruned = prune_model(model, EXAMPLE, Prune(ratio=0.3), 0.3).model
    image = _blocky_images(1, 320, 320, seed=3)[0]
    with torch.no_grad():
        ref = {k: v.numpy() for k, v in pruned([torch.from_numpy(image).permute(2, 0, 1).float() / 255])[0].items()}
    with Detector(bundle, "onnxruntime-cpu") as detector:
        got = detector([image])[0]
    parity = box_parity(ref, got)
    assert len(ref["boxes"]) > 10 and parity["recall"] >= 0.95 and parity["precision"] >= 0.95, parity
