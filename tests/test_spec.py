"""InputSpec and Preprocess: validation, the saved form, and the preprocessing numerics."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgeship import ConfigError, InputSpec, InputValidationError, Preprocess, Recipe
from edgeship.spec import shape_matches


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
