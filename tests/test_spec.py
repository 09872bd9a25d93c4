"""InputSpec and Preprocess: validation, the saved form, and the preprocessing numerics."""

from __future__ import annotations

import json

import numpy as np
import pytest
from edgeship import ConfigError, InputSpec, InputValidationError, Preprocess, Recipe
from edgeship.errors import UnknownTargetError
from edgeship.spec import shape_matches
from edgeship.targets import Target, get_target_class


# -- validation -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"shape": ()}, "non-empty"),
        ({"shape": (1, 0, 4, 4)}, "positive"),
        ({"shape": ("a", 3, 4, 4)}, "sequence of ints"),
        ({"shape": 4}, "sequence of ints"),
        ({"shape": (1, 3, 4, 4), "dtype": "float64"}, "dtype must be one of"),
        ({"shape": (1, 3, 4, 4), "layout": "CHW"}, "layout"),
        ({"shape": (1, 3, 4, 4), "name": ""}, "name"),
        ({"shape": (1, 16)}, "4-D image input"),  # the default preprocessing needs an image
    ],
)
def test_input_spec_rejects(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        InputSpec(**kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"scale": 0.0}, "scale"),
        ({"scale": float("inf")}, "scale"),
        ({"scale": float("nan")}, "scale"),
        ({"std": (1.0, 0.0, 1.0)}, "std must not contain 0"),
        ({"mean": (0.5, 0.5), "std": (1.0, 1.0, 1.0)}, "mean has 2 values but std has 3"),
        ({"raw_layout": "HWC"}, "raw_layout"),
    ],
)
def test_preprocess_rejects(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        Preprocess(**kwargs)


def test_input_spec_normalises_shape():
    spec = InputSpec(shape=[-1, 3, 8.0, 8], preprocess=None)
    assert spec.shape == (None, 3, 8, 8)
    assert spec.channels == 3
    assert spec.example_shape(4) == (4, 3, 8, 8)
    assert InputSpec(shape=(None, 8, 8, 3), layout="NHWC").channels == 3
    assert InputSpec(shape=(None, 16), preprocess=None).channels is None


def test_example_shape_refuses_dynamic_spatial_dims():
    with pytest.raises(ConfigError, match="dynamic non-batch dims"):
        InputSpec(shape=(None, 3, None, None)).example_shape()


def test_shape_matches():
    assert shape_matches((2, 3, 4, 4), (None, 3, 4, 4))
    assert not shape_matches((2, 3, 4, 5), (None, 3, 4, 4))
    assert not shape_matches((3, 4, 4), (None, 3, 4, 4))


# -- saved form -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "spec",
    [
        InputSpec(shape=(None, 3, 224, 224), preprocess=Preprocess.imagenet()),
        InputSpec(shape=(2, 1, 32, 32), name="pixels", dtype="float16",
                  preprocess=Preprocess(scale=1.0, mean=(0.5,), std=(0.25,), reverse_channels=True, raw_layout="NCHW")),
        InputSpec(shape=(None, 32, 32, 3), layout="NHWC"),
        InputSpec(shape=(None, 128), dtype="int64", name="tokens", preprocess=None),
    ],
    ids=["imagenet", "fixed-batch", "nhwc", "no-preprocess"],
)
def test_to_dict_from_dict_round_trip_through_json(spec):
    data = json.loads(json.dumps(spec.to_dict()))  # what a manifest holds
    assert InputSpec.from_dict(data) == spec
    assert data["shape"][0] is None or isinstance(data["shape"][0], int)


def test_from_dict_refuses_unknown_keys():
    data = InputSpec(shape=(None, 3, 8, 8)).to_dict()
    with pytest.raises(ConfigError, match=r"unknown InputSpec keys \['colour'\]"):
        InputSpec.from_dict({**data, "colour": "rgb"})
    data["preprocess"]["gamma"] = 2.2
    with pytest.raises(ConfigError, match="invalid preprocess entry"):
        InputSpec.from_dict(data)


@pytest.mark.parametrize("data, match", [
    ([1, 3, 8, 8], "must be a mapping"),
    ({"name": "x"}, "no 'shape'"),
    ({"shape": [None, 3, 8, 8], "preprocess": "imagenet"}, "invalid preprocess entry"),
    ({"shape": [None, 3, 8, 8], "preprocess": {"std": [0.0]}}, "std must not contain 0"),
])
def test_from_dict_refuses_bad_data(data, match):
    with pytest.raises(ConfigError, match=match):
        InputSpec.from_dict(data)


def test_recipe_round_trip_and_checks():
    recipe = Recipe(calibration_size=64, seed=3)
    assert Recipe.from_dict(recipe.to_dict()) == recipe
    with pytest.raises(ConfigError, match="calibration_size"):
        Recipe(calibration_size=0)
    with pytest.raises(ConfigError, match="seed"):
        Recipe(seed="0")
    with pytest.raises(ConfigError, match="(?i)unknown recipe keys"):
        Recipe.from_dict({"calibration_size": 8, "preset": "mixed"})


# -- compile options: Target.compile_options, Recipe.target_options --------------------------------
class _Jetsonish(Target):  # never registered: only its compile-option table is used
    name = "jetsonish"
    compile_options = {"batch": int, "dynamic_batch": (False, True), "dla_core": (0, 1), "max_gpu_fallback": float}

    @classmethod
    def availability(cls):
        return False, "a test class"

    def compile(self, request, out_dir):
        raise NotImplementedError

    def load(self, root, artifact, spec, **options):
        raise NotImplementedError


def test_check_compile_options_accepts_allowed_values():
    ok = {"batch": 8, "dynamic_batch": True, "dla_core": 1, "max_gpu_fallback": 0.2}
    assert _Jetsonish.check_compile_options(ok) == ok
    assert _Jetsonish.check_compile_options({"max_gpu_fallback": 1}) == {"max_gpu_fallback": 1}
    assert _Jetsonish.check_compile_options({}) == {}


@pytest.mark.parametrize("options, match", [
    ({"dla": 1}, "jetsonish has no compile option 'dla'; it accepts: batch \\(int >= 1\\), dynamic_batch "
                 "\\(False/True\\), dla_core \\(0/1\\), max_gpu_fallback \\(float in \\[0, 1\\]\\)"),
    ({"batch": 0}, "jetsonish compile option batch=0 is not allowed"),
    ({"batch": True}, "batch=True is not allowed"),
    ({"dla_core": 2}, "dla_core=2 is not allowed; it accepts: .*dla_core \\(0/1\\)"),
    ({"dla_core": True}, "dla_core=True is not allowed"),  # True == 1, but it is no core number
    ({"dla_core": 1.0}, "dla_core=1.0 is not allowed"),
    ({"dynamic_batch": 1}, "dynamic_batch=1 is not allowed"),
    ({"max_gpu_fallback": 1.5}, "max_gpu_fallback=1.5 is not allowed"),
    ({"max_gpu_fallback": float("nan")}, "max_gpu_fallback=nan is not allowed"),
    ({"max_gpu_fallback": "0.2"}, "max_gpu_fallback='0.2' is not allowed"),
    ([("batch", 2)], "jetsonish compile options must be a mapping"),
])
def test_check_compile_options_refuses(options, match):
    with pytest.raises(ConfigError, match=match):
        _Jetsonish.check_compile_options(options)


def test_a_target_without_compile_options_refuses_any():
    cls = get_target_class("onnxruntime-cpu")
    assert cls.compile_options == {} and cls.check_compile_options({}) == {}
    with pytest.raises(ConfigError, match="onnxruntime-cpu has no compile options; got 'batch'"):
        cls.check_compile_options({"batch": 2})
    # the runtime options keep their own check and messages
    with pytest.raises(ConfigError, match="onnxruntime-cpu has no runtime option 'batch'; it accepts: threads"):
        cls.check_options({"batch": 2})


def test_recipe_target_options_are_checked():
    with pytest.raises(UnknownTargetError, match="Recipe.target_options: unknown target 'tpu'; registered targets"):
        Recipe(target_options={"tpu": {"batch": 2}})
    with pytest.raises(ConfigError, match="Recipe.target_options\\['onnxruntime-cpu'\\]: onnxruntime-cpu has no "
                                          "compile options"):
        Recipe(target_options={"onnxruntime-cpu": {"dla_core": 1}})
    with pytest.raises(ConfigError, match="Recipe.target_options must map a target name"):
        Recipe(target_options=[("onnxruntime-cpu", {})])
    with pytest.raises(ConfigError, match="compile options must be a mapping"):
        Recipe(target_options={"onnxruntime-cpu": 3})


def test_recipe_target_options_round_trip_frozen_and_hashable(monkeypatch):
    monkeypatch.setattr(get_target_class("tensorrt-jetson"), "compile_options",
                        {"dla_core": (0, 1), "max_gpu_fallback": float})
    recipe = Recipe(target_options={"tensorrt-jetson": {"max_gpu_fallback": 0.2, "dla_core": 1}})
    assert recipe.target_options["tensorrt-jetson"] == {"dla_core": 1, "max_gpu_fallback": 0.2}
    assert recipe.to_dict()["target_options"] == {"tensorrt-jetson": {"dla_core": 1, "max_gpu_fallback": 0.2}}
    assert json.loads(json.dumps(recipe.to_dict())) == recipe.to_dict()
    back = Recipe.from_dict(recipe.to_dict())
    assert back == recipe and hash(back) == hash(recipe)
    assert hash(recipe) != hash(Recipe())
    with pytest.raises(TypeError):
        recipe.target_options["tensorrt-jetson"]["dla_core"] = 0  # type: ignore[index]
    assert Recipe().target_options == {} and Recipe().to_dict()["target_options"] == {}


def test_compress_refuses_options_for_a_target_it_does_not_build(digits_model, tmp_path):
    import edgeship
    from edgeship.demo import DIGITS_SPEC

    recipe = Recipe(target_options={"openvino-cpu": {}})
    with pytest.raises(ConfigError, match="Recipe.target_options sets compile options for \\['openvino-cpu'\\], "
                                          "which compress does not build"):
        edgeship.compress(digits_model, input_spec=DIGITS_SPEC, output=tmp_path / "x.edgeship",
                          targets=["onnxruntime-cpu"], precision="fp32", recipe=recipe, show_progress=False)
    assert not (tmp_path / "x.edgeship").exists()


# -- preprocessing numerics ------------------------------------------------------------------------
def test_apply_preprocess_nhwc_uint8_to_normalised_nchw(rng):
    raw = rng.integers(0, 256, size=(2, 4, 5, 3), dtype=np.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    spec = InputSpec(shape=(None, 3, 4, 5), preprocess=Preprocess(scale=1 / 255.0, mean=mean, std=std))
    out = spec.apply_preprocess(raw)

    assert out.shape == (2, 3, 4, 5) and out.dtype == np.float32 and out.flags.c_contiguous
    for n in range(2):
        for c in range(3):
            for h in range(4):
                for w in range(5):
                    expected = (raw[n, h, w, c] / 255.0 - mean[c]) / std[c]
                    assert out[n, c, h, w] == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_apply_preprocess_reverse_channels_happens_before_mean_std(rng):
    """BGR raw -> RGB: the mean/std belong to the model's channel order, after the swap."""
    raw = rng.integers(0, 256, size=(1, 2, 2, 3), dtype=np.uint8)
    mean, std = (10.0, 20.0, 30.0), (1.0, 2.0, 4.0)
    spec = InputSpec(shape=(None, 3, 2, 2), preprocess=Preprocess(scale=1.0, mean=mean, std=std, reverse_channels=True))
    out = spec.apply_preprocess(raw)
    rgb = raw[..., ::-1].astype(np.float64)
    for c in range(3):
        np.testing.assert_allclose(out[0, c], (rgb[0, :, :, c] - mean[c]) / std[c], rtol=1e-6)
    # and the channel that was last in the raw image is first in the model input
    np.testing.assert_allclose(out[0, 0], (raw[0, :, :, 2] - 10.0) / 1.0)


def test_apply_preprocess_single_image_nchw_raw_and_nhwc_output(rng):
    raw_chw = rng.integers(0, 256, size=(3, 4, 4), dtype=np.uint8)  # one image, channels first
    spec = InputSpec(shape=(None, 4, 4, 3), layout="NHWC",
                     preprocess=Preprocess(scale=2.0, mean=(1.0,), std=(2.0,), raw_layout="NCHW"))
    out = spec.apply_preprocess(raw_chw)
    assert out.shape == (1, 4, 4, 3)
    np.testing.assert_allclose(out[0], (raw_chw.transpose(1, 2, 0) * 2.0 - 1.0) / 2.0, rtol=1e-6)


def test_apply_preprocess_casts_to_spec_dtype(rng):
    raw = rng.integers(0, 256, size=(1, 2, 2, 1), dtype=np.uint8)
    spec = InputSpec(shape=(None, 1, 2, 2), dtype="float16", preprocess=Preprocess(scale=1 / 255.0))
    out = spec.apply_preprocess(raw)
    assert out.dtype == np.float16
    np.testing.assert_allclose(out[0, 0], (raw[0, :, :, 0] / 255.0).astype(np.float16), rtol=1e-3)


def test_apply_preprocess_errors():
    spec = InputSpec(shape=(None, 3, 4, 4), preprocess=Preprocess(mean=(0.5, 0.5, 0.5), std=(1.0, 1.0, 1.0)))
    with pytest.raises(InputValidationError, match=r"4-D .* got shape \(4, 4\)"):
        spec.apply_preprocess(np.zeros((4, 4), np.uint8))
    with pytest.raises(InputValidationError, match="3 values but the images have 1 channels"):
        spec.apply_preprocess(np.zeros((1, 4, 4, 1), np.uint8))
    with pytest.raises(InputValidationError, match="numeric"):
        spec.apply_preprocess(np.zeros((1, 4, 4, 3), dtype=bool))
    with pytest.raises(ConfigError, match="declares no preprocessing"):
        InputSpec(shape=(None, 3, 4, 4), preprocess=None).apply_preprocess(np.zeros((1, 4, 4, 3), np.uint8))


# -- resize presets --------------------------------------------------------------------------------
def _photos():
    data = pytest.importorskip("skimage.data", reason="scikit-image provides the test photos (the `test` extra)")
    return [data.astronaut(), data.coffee(), data.chelsea()]  # 512x512, 400x600, 300x451 RGB


def test_presets():
    imagenet = Preprocess.imagenet()
    assert imagenet.resize == "imagenet" and imagenet.crop_fraction == 0.875
    assert imagenet.mean == (0.485, 0.456, 0.406) and imagenet.scale == pytest.approx(1 / 255)
    assert Preprocess.imagenet(crop_fraction=0.95).crop_fraction == 0.95
    letterbox = Preprocess.letterbox()
    assert (letterbox.resize, letterbox.pad_value, letterbox.mean, letterbox.std) == ("letterbox", 114.0, None, None)
    raw = Preprocess.raw()
    assert (raw.resize, raw.scale, raw.mean, raw.std) == ("none", 1.0, None, None)
    assert Preprocess().resize == "none"  # the default does not resize, as before


@pytest.mark.parametrize("kwargs, match", [
    ({"resize": "crop"}, "resize must be one of"),
    ({"crop_fraction": 0.0}, "crop_fraction"),
    ({"crop_fraction": 1.5}, "crop_fraction"),
    ({"pad_value": float("nan")}, "pad_value"),
])
def test_preprocess_rejects_bad_resize_fields(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        Preprocess(**kwargs)


def test_resize_needs_fixed_height_and_width():
    with pytest.raises(ConfigError, match="resize='imagenet' needs a fixed height and width"):
        InputSpec(shape=(None, 3, None, None), preprocess=Preprocess.imagenet())
    InputSpec(shape=(None, 3, None, None), preprocess=Preprocess())  # no resize: any size is fine


@pytest.mark.parametrize("pre", [Preprocess.imagenet(), Preprocess.letterbox(pad_value=0),
                                 Preprocess(resize="stretch", crop_fraction=1.0)],
                         ids=["imagenet", "letterbox", "stretch"])
def test_resize_fields_round_trip(pre):
    spec = InputSpec(shape=(None, 3, 32, 48), preprocess=pre)
    assert InputSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_manifest_without_resize_fields_still_loads():
    """A spec saved before the resize fields existed loads with the old behaviour (no resize)."""
    old = {"shape": [None, 3, 224, 224], "name": "input", "dtype": "float32", "layout": "NCHW",
           "preprocess": {"scale": 1 / 255, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                          "reverse_channels": False, "raw_layout": "NHWC"}}
    spec = InputSpec.from_dict(old)
    assert spec.preprocess.resize == "none" and spec.preprocess.pad_value == 114.0


def test_bilinear_resize_matches_pillow_within_one_level():
    """Antialiased when shrinking, plain bilinear when enlarging: Pillow's BILINEAR within its 8-bit rounding."""
    from edgeship.calibration import resize_bilinear
    from PIL import Image

    for image in _photos():
        for h, w in [(224, 224), (100, 333), (37, 41), (700, 900), (image.shape[0], image.shape[1] + 50)]:
            ours = resize_bilinear(image, h, w)
            pillow = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR), dtype=np.float32)
            assert ours.shape == (h, w, 3) and ours.dtype == np.float32
            diff = np.abs(ours - pillow)
            assert diff.max() <= 1.01, (image.shape, h, w)  # Pillow rounds to uint8 between its two passes
            assert diff.mean() < 0.35, (image.shape, h, w)


def test_bilinear_resize_is_exact_on_identity_and_constant_images(rng):
    from edgeship.calibration import resize_bilinear

    image = rng.integers(0, 256, size=(2, 13, 17, 3), dtype=np.uint8)
    np.testing.assert_array_equal(resize_bilinear(image, 13, 17), image.astype(np.float32))
    flat = np.full((1, 50, 70, 1), 77, np.uint8)
    for h, w in [(5, 7), (120, 9), (50, 200)]:
        np.testing.assert_allclose(resize_bilinear(flat, h, w), 77.0, rtol=1e-6)  # weights sum to 1 everywhere


def test_imagenet_preset_matches_torchvision_resize_and_center_crop():
    """Preprocess.imagenet() = torchvision Resize(256) + CenterCrop(224) + ToTensor + Normalize, within one level."""
    from PIL import Image
    from torchvision import transforms as T

    spec = InputSpec(shape=(None, 3, 224, 224), preprocess=Preprocess.imagenet())
    reference = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                           T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    photos = _photos()
    for image in photos + [photos[1][:, :350], photos[1][40:360, :200]]:  # landscape, portrait, near-square
        ours = spec.apply_preprocess(image)
        theirs = reference(Image.fromarray(image)).numpy()
        assert ours.shape == (1, 3, 224, 224)
        one_level = 1 / 255 / 0.224  # one uint8 step after normalisation (the widest channel)
        assert np.abs(ours[0] - theirs).max() < 1.05 * one_level, image.shape
        assert np.abs(ours[0] - theirs).mean() < 0.4 * one_level


def test_center_crop_geometry():
    from edgeship.preprocess import center_crop_geometry

    assert center_crop_geometry(480, 640, 224, 224, 0.875) == (256, 341, 16, 58)  # torchvision: 341 wide, left 58
    assert center_crop_geometry(640, 480, 224, 224, 0.875) == (341, 256, 58, 16)
    assert center_crop_geometry(100, 100, 50, 80, 1.0) == (80, 80, 15, 0)  # the wider side limits


def test_letterbox_geometry_and_padding():
    from edgeship.calibration import letterbox_geometry

    g = letterbox_geometry(400, 600, 320, 320)
    assert (g.height, g.width) == (213, 320) and g.scale == pytest.approx(320 / 600)
    assert (g.top, g.bottom, g.left, g.right) == (53, 54, 0, 0)
    np.testing.assert_allclose(g.to_source([[0, 53], [320, 53 + 213]]), [[0, 0], [600, 399.375]])
    tall = letterbox_geometry(300, 100, 64, 64)
    assert (tall.height, tall.width, tall.left, tall.right, tall.top) == (64, 21, 21, 22, 0)

    coffee = _photos()[1]
    spec = InputSpec(shape=(None, 320, 320, 3), layout="NHWC", preprocess=Preprocess.letterbox())
    out = spec.apply_preprocess(coffee)[0]
    np.testing.assert_allclose(out[:53], 114 / 255, rtol=1e-6)  # grey bands above and below
    np.testing.assert_allclose(out[53 + 213:], 114 / 255, rtol=1e-6)
    from edgeship.calibration import resize_bilinear

    np.testing.assert_allclose(out[53 : 53 + 213], resize_bilinear(coffee, 213, 320) / 255, rtol=1e-5, atol=1e-6)


def test_stretch_and_none(rng):
    image = rng.integers(0, 256, size=(30, 50, 3), dtype=np.uint8)
    stretch = InputSpec(shape=(None, 3, 20, 20), preprocess=Preprocess(scale=1.0, resize="stretch"))
    from edgeship.calibration import resize_bilinear

    np.testing.assert_allclose(stretch.apply_preprocess(image)[0], resize_bilinear(image, 20, 20).transpose(2, 0, 1),
                               rtol=1e-6)
    none = InputSpec(shape=(None, 3, 20, 20), preprocess=Preprocess(scale=1.0))
    assert none.apply_preprocess(image).shape == (1, 3, 30, 50)  # not resized; the runtime rejects the size


def test_resize_then_bgr_and_nchw_raw(rng):
    """Resize happens on raw pixels before the channel swap; raw NCHW input is resized the same way."""
    image = rng.integers(0, 256, size=(40, 60, 3), dtype=np.uint8)
    pre = Preprocess(scale=1.0, reverse_channels=True, resize="imagenet", crop_fraction=1.0)
    out = InputSpec(shape=(None, 3, 16, 16), preprocess=pre).apply_preprocess(image)
    chw = InputSpec(shape=(None, 3, 16, 16), preprocess=Preprocess(**{**pre.__dict__, "raw_layout": "NCHW"}))
    np.testing.assert_array_equal(chw.apply_preprocess(image.transpose(2, 0, 1)), out)
    plain = InputSpec(shape=(None, 3, 16, 16), preprocess=Preprocess(scale=1.0, resize="imagenet", crop_fraction=1.0))
    np.testing.assert_allclose(out[0], plain.apply_preprocess(image)[0, ::-1], rtol=1e-6)
