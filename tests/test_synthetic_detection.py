"""Synthetic detection scenes and a detector genuinely trained on them: exact boxes, held-out mAP, INT8 vs FP32.

The scene tests check the ground truth the other tests trust. The slow tests train a small FCOS
briefly (a smaller configuration than the benchmark's; cached in a temporary folder), then measure it
on scenes whose digits training never saw: against an untrained detector, and its INT8 OpenVINO
bundle against the FP32 one.
"""

from __future__ import annotations

import time

import edgeship
import numpy as np
import pytest
from edgeship import ConfigError
from edgeship.benchmarks import box_agreement, detection_map
from edgeship.bundle.detector import Detector
from edgeship.demo.synthetic import (
    SceneConfig,
    TrainConfig,
    build_detector,
    detector_spec,
    digit_glyphs,
    make_scenes,
    train_detector,
    weights_path,
)

pytest.importorskip("sklearn")

SCENE = SceneConfig()
TRAIN = TrainConfig(width=16, scenes=1000, epochs=8)  # the benchmark trains 32 wide, 3000 scenes x 12 epochs


# -- the scenes ------------------------------------------------------------------------------------
def test_scenes_are_seeded_and_deterministic():
    images, truth = make_scenes(6, "val", seed=3)
    again, truth_again = make_scenes(6, "val", seed=3)
    assert images.shape == (6, 128, 128, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(images, again)
    for a, b in zip(truth, truth_again):
        np.testing.assert_array_equal(a["boxes"], b["boxes"])
        np.testing.assert_array_equal(a["labels"], b["labels"])
    np.testing.assert_array_equal(make_scenes(9, "val", seed=3)[0][:6], images)  # scene i does not depend on n
    assert not np.array_equal(images, make_scenes(6, "val", seed=4)[0])
    assert not np.array_equal(images, make_scenes(6, "train", seed=3)[0])


def test_validation_digits_never_appear_in_training():
    """The split is by digit sample (the 1,797 digits are pairwise distinct), with every class on both sides."""
    train, train_labels = digit_glyphs("train")
    val, val_labels = digit_glyphs("val")
    seen = {g.tobytes() for g in train}
    assert not any(g.tobytes() in seen for g in val)
    assert set(train_labels) == set(val_labels) == {1, 2, 3, 4, 5}
    assert 0.25 < len(val) / (len(val) + len(train)) < 0.35


@pytest.mark.parametrize("occlusion", [0.0, 1.0])
def test_boxes_are_the_tight_box_of_each_digits_visible_ink(occlusion):
    config = SceneConfig(occlusion=occlusion)
    images, truth = make_scenes(40, "train", seed=7, config=config, with_masks=True)
    contrasts = []
    for image, t in zip(images, truth):
        boxes, labels, masks = t["boxes"], t["labels"], t["masks"]
        assert boxes.dtype == np.float32 and labels.dtype == np.int64 and masks.shape == (len(boxes), 128, 128)
        assert 1 <= len(labels) <= config.objects[1] and set(labels) <= {1, 2, 3, 4, 5}
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 128).all() and (boxes[:, 3] <= 128).all()
        assert (boxes[:, 2:] > boxes[:, :2]).all()
        assert not (masks.sum(axis=0) > 1).any()  # one owner per pixel
        for box, mask in zip(boxes, masks):
            ys, xs = np.nonzero(mask)
            np.testing.assert_array_equal(box, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])  # holds all, tight
            x1, y1, x2, y2 = box.astype(int)
            inside = np.zeros_like(mask)
            inside[y1:y2, x1:x2] = True
            rest = inside & ~masks.any(axis=0)  # the box's pixels that no digit painted
            if rest.sum() >= 10:
                contrasts.append(np.abs(image[mask].mean(axis=0) - image[rest].mean(axis=0)).max())
    # the ink is really there: it stands out from the rest of its box (some digits are low-contrast on purpose)
    assert np.median(contrasts) > 40 and np.mean(np.array(contrasts) > 15) > 0.8


def test_scene_and_training_configs_are_checked():
    with pytest.raises(ConfigError, match="distinct"):
        SceneConfig(digits=(1, 1))
    with pytest.raises(ConfigError, match="scale"):
        SceneConfig(scale=(10, 90))
    with pytest.raises(ConfigError, match="multiple of 16"):
        TrainConfig(width=20)
    with pytest.raises(ConfigError, match="n >= 1"):
        make_scenes(0)
    with pytest.raises(ConfigError, match="split"):
        digit_glyphs("test")


# -- a detector trained on them ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(model, cache folder, seconds it took): trained here, into a fresh cache."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(2)
    cache = tmp_path_factory.mktemp("synthetic-cache")
    start = time.perf_counter()
    model = train_detector(SCENE, TRAIN, seed=0, cache_dir=cache, show_progress=False)
    return model, cache, time.perf_counter() - start


@pytest.fixture(scope="module")
def held_out():
    """150 validation scenes: digits the detector never saw, on backgrounds it never saw."""
    return make_scenes(150, "val", seed=0)


def _torch_detect(model, images: np.ndarray) -> list[dict[str, np.ndarray]]:
    import torch

    with torch.no_grad():
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255)
        return [{k: v.numpy() for k, v in d.items()} for d in model(list(x))]


@pytest.mark.slow
def test_training_is_cached_as_npz_and_reloads_identically(trained):
    model, cache, _ = trained
    path = weights_path(SCENE, TRAIN, 0, cache)
    assert path.is_file() and path.suffix == ".npz"
    start = time.perf_counter()
    again = train_detector(SCENE, TRAIN, seed=0, cache_dir=cache, show_progress=False)
    assert time.perf_counter() - start < 5 and not again.training
    assert again.train_seconds == model.train_seconds
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert np.array_equal(a.numpy(), b.numpy()), name
    assert weights_path(SCENE, TRAIN, 1, cache) != path  # another seed is another model


def test_an_unreadable_cache_is_rebuilt_with_a_warning(tmp_path):
    pytest.importorskip("torch")
    tiny = TrainConfig(width=16, head_convs=1, scenes=24, epochs=1, batch_size=8)
    model = train_detector(SCENE, tiny, seed=0, cache_dir=tmp_path, show_progress=False)
    path = weights_path(SCENE, tiny, 0, tmp_path)
    path.write_bytes(path.read_bytes()[:1000])  # truncated, as by a full disk or a killed copy
    with pytest.warns(RuntimeWarning, match="cached synthetic FCOS weights file is unreadable and is being rebuilt"):
        again = train_detector(SCENE, tiny, seed=0, cache_dir=tmp_path, show_progress=False)
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert np.array_equal(a.numpy(), b.numpy()), name  # trained again, seeded: the same weights
    reloaded = train_detector(SCENE, tiny, seed=0, cache_dir=tmp_path, show_progress=False)  # the rebuilt file reads
    assert reloaded.train_seconds == again.train_seconds


@pytest.mark.slow
def test_trained_detector_finds_unseen_digits_far_better_than_chance(trained, held_out):
    """Measured on 2 cores: mAP@.5 0.69 / 0.71 / 0.72 (seeds 0 / 1 / 2; 0.70 with 1 thread) on these held-out
    scenes, mAP@[.5:.95] 0.44-0.48, after ~25 s of training; the untrained detector scores 0.00."""
    import torch

    model, _, _ = trained
    images, truth = held_out
    trained_map = detection_map(_torch_detect(model, images), truth)
    torch.manual_seed(0)
    untrained_map = detection_map(_torch_detect(build_detector(SCENE, TRAIN).eval(), images), truth)
    assert untrained_map["map50"] < 0.02
    assert trained_map["map50"] > 0.5, trained_map


@pytest.mark.slow
def test_int8_openvino_bundle_keeps_the_fp32_map_and_boxes(trained, held_out, tmp_path):
    """Measured: FP32 mAP 0.4358 / mAP@.5 0.6866, INT8 0.4359 / 0.6838; 98.6 % of the boxes scoring >= 0.5 agree."""
    model, _, _ = trained
    images, truth = held_out
    calibration, _ = make_scenes(100, "train", seed=1)
    bundle = edgeship.compress(model, input_spec=detector_spec(SCENE), calibration=calibration,
                               preprocess_calibration=True, targets=["openvino-cpu"], precision=["fp32", "int8"],
                               output=tmp_path / "synthetic.edgeship", show_progress=False)
    fp_layers = bundle.artifact("openvino-cpu", "int8")["options"]["fp_layers"]
    assert {"cls_logits", "bbox_reg", "bbox_ctrness"} == {n.split("/")[3] for n in fp_layers}, fp_layers  # all three heads
    with Detector(bundle, "openvino-cpu", "fp32") as fp32, Detector(bundle, "openvino-cpu", "int8") as int8:
        dets32, dets8 = fp32(list(images)), int8(list(images))
    eager = detection_map(_torch_detect(model, images), truth)
    map32, map8 = detection_map(dets32, truth), detection_map(dets8, truth)
    assert map32["map"] == pytest.approx(eager["map"], abs=0.01)  # export + numpy postprocessing are faithful
    assert abs(map8["map"] - map32["map"]) < 0.03 and abs(map8["map50"] - map32["map50"]) < 0.03, (map32, map8)
    assert box_agreement(dets8, dets32, min_score=0.5) > 0.9
