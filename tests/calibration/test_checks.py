"""calibration.check on real data, and `edgeship calib check` on real folders and video."""

from __future__ import annotations

import json

import numpy as np
import pytest
from calib_helpers import crops, photo_folder, photos, save, video_file  # noqa: F401
from edgeship import ConfigError, InputSpec, Preprocess, demo
from edgeship.calibration import CheckResult, _checks, check, from_arrays, from_folder
from edgeship.cli import main

SPEC = demo.DIGITS_SPEC  # raw uint8 NHWC -> (N, 1, 32, 32) in [-1, 1]


@pytest.fixture(scope="module")
def digits():
    return demo.digits_data()


@pytest.fixture(scope="module")
def calib(digits):
    return from_arrays(digits[0], SPEC, labels=digits[1], size=300, preprocess=True)


def codes(result: CheckResult) -> dict[str, str]:
    return {f.code: f.level for f in result.findings}


@pytest.fixture(scope="module")
def gray_photo_crops():
    """180 gray 32x32 crops of the three RGB photos, as raw uint8 NHWC."""
    from edgeship.calibration import resize_bilinear
    from edgeship.preprocess import to_channels

    out = []
    for i, image in enumerate(photos()[k] for k in ("astronaut", "coffee", "chelsea")):
        for crop in crops(to_channels(image, 1), 60, seed=i, side=(48, 96)):
            out.append(resize_bilinear(crop, 32, 32).round().astype(np.uint8))
    return np.stack(out)


# -- a good set ----------------------------------------------------------------------------------
def test_a_good_set_against_held_out_data_passes(calib, digits):
    held_out = from_arrays(digits[2], SPEC, size=500, preprocess=True)
    result = check(calib, against=held_out)
    assert result.ok and result.findings == () and str(result).startswith("calibration check OK: 300 samples")
    drift = result.stats["drift"][0]
    assert drift["mean_shift"] < 0.05 and drift["js_divergence"] < 0.01 and 0.95 < drift["std_ratio"] < 1.05
    assert result.stats["duplicate_fraction"] < _checks.DUPLICATE_WARN
    assert result.stats["expected_range"] == [[-1.0, 1.0]]
    json.dumps(result.to_dict())  # the manifest can hold it


# -- size ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("n, expected", [(8, {"too-few-samples": "error"}), (50, {"few-samples": "warning"}),
                                         (100, {})])
def test_too_few_samples(digits, n, expected):
    result = check(from_arrays(digits[0], SPEC, size=n, preprocess=True))
    assert codes(result) == expected
    assert result.ok == ("error" not in expected.values())
    if expected:
        assert f"{n} calibration samples" in str(result) and "expected at least 100" in str(result)


# -- near-duplicates -----------------------------------------------------------------------------
def test_near_duplicates_of_real_photos(tmp_path):
    """Photos re-saved as JPEG or with sensor-like noise are near-identical to their originals; distinct crops are not."""
    rng = np.random.default_rng(0)
    originals = crops(photos()["astronaut"], 60, seed=1, side=(150, 250)) + crops(photos()["coffee"], 60, seed=2)
    for i, image in enumerate(originals):
        save(image, tmp_path / "originals" / f"{i:03d}.png")
    spec = InputSpec(shape=(None, 3, 64, 64), preprocess=Preprocess.imagenet())
    clean = check(from_folder(tmp_path / "originals", spec))
    assert "near-duplicates" not in codes(clean)

    for i, image in enumerate(originals[:30]):
        save(image, tmp_path / "originals" / f"{i:03d}_copy.jpg")
        noisy = np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)
        save(noisy, tmp_path / "originals" / f"{i:03d}_noisy.png")
    result = check(from_folder(tmp_path / "originals", spec))
    assert codes(result) == {"near-duplicates": "warning"}
    assert result.stats["duplicate_fraction"] == pytest.approx(90 / 180, abs=0.05)
    assert "have a near-identical neighbour" in str(result)
    assert "_copy.jpg" in str(result) or "_noisy.png" in str(result)  # names one pair


def test_the_same_image_over_and_over_is_an_error(digits):
    frozen = np.repeat(digits[0][:5], 40, axis=0)  # a stuck camera: 5 frames, 200 samples
    result = check(from_arrays(frozen, SPEC, preprocess=True))
    assert codes(result) == {"near-duplicates": "error"} and not result.ok
    assert "200 of 200 samples (100%)" in str(result)


# -- value range ---------------------------------------------------------------------------------
def test_unnormalised_pixels_given_as_model_ready_input(digits):
    """0..255 pixels in where the spec's normalisation implies [-1, 1]: an error that says so."""
    wrong = digits[0].transpose(0, 3, 1, 2).astype(np.float32)
    result = check(from_arrays(wrong, SPEC, size=300))
    assert codes(result) == {"range-contradicts-preprocessing": "error"}
    message = result.errors[0].message
    assert "spans 0..255" in message and "into -1..1" in message and "preprocess=True" in message


def test_images_scaled_twice(digits):
    already_scaled = digits[0].astype(np.float32) / 255  # 0..1 floats, then the spec scales by 1/255 again
    result = check(from_arrays(already_scaled, SPEC, size=300, preprocess=True))
    assert codes(result) == {"range-too-narrow": "warning"} and result.ok


def test_range_check_uses_the_spec_given(calib):
    raw_spec = InputSpec(shape=(None, 1, 32, 32), preprocess=Preprocess.raw())  # a model that takes 0..255
    assert "range-too-narrow" in codes(check(calib, spec=raw_spec))  # [-1, 1] is 1% of 0..255
    assert check(calib.as_batch(), spec=SPEC).findings == ()  # a plain array with the spec
    assert "expected_range" not in check(calib.as_batch()).stats  # no spec: no expectation to contradict


# -- drift ---------------------------------------------------------------------------------------
def test_drift_to_inverted_digits(calib, digits):
    inverted = from_arrays(255 - digits[2], SPEC, preprocess=True)
    result = check(calib, against=inverted)
    assert codes(result) == {"drift-mean": "error", "drift-histogram": "error"}
    assert "reference standard deviations" in str(result) and f"array {digits[2].shape} uint8" in str(result)


def test_drift_to_darker_images_is_a_warning_on_the_mean(calib, digits):
    darker = from_arrays((digits[2] * 0.7).astype(np.uint8), SPEC, preprocess=True)
    result = check(calib, against=darker)
    assert codes(result)["drift-mean"] == "warning"
    assert 0.25 < result.stats["drift"][0]["mean_shift"] < 1.0


def test_drift_to_photos(calib, gray_photo_crops):
    result = check(calib, against=from_arrays(gray_photo_crops, SPEC, preprocess=True))
    assert codes(result)["drift-histogram"] == "error" and not result.ok
    assert result.stats["drift"][0]["js_divergence"] > _checks.DRIFT_JS[1]


def test_drift_needs_matching_channels(calib):
    rgb = np.zeros((10, 3, 32, 32), np.float32)
    with pytest.raises(ConfigError, match="against has 3 channels but the calibration set has 1"):
        check(calib, against=rgb)
    with pytest.raises(ConfigError, match="must be a CalibrationSet or a non-empty numeric array"):
        check([1, 2, 3])


# -- the command line ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def inverted_folder(tmp_path_factory):
    """The photo folder's images with inverted colours: production data that drifted."""
    root = tmp_path_factory.mktemp("inverted")
    for i, image in enumerate(crops(photos()["coffee"], 20, seed=9) + crops(photos()["chelsea"], 20, seed=10)):
        save(255 - image, root / f"{i:02d}.png")
    return root


def test_cli_calib_check_passes_with_warnings(photo_folder, capsys):
    assert main(["calib", "check", str(photo_folder), "--shape", "?,3,64,64"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("calibration check OK: 16 samples from folder") and "[few-samples]" in out


def test_cli_calib_check_fails_on_drift(photo_folder, inverted_folder, capsys):
    code = main(["calib", "check", str(photo_folder), "--against", str(inverted_folder), "--shape", "?,3,64,64",
                 "--preset", "letterbox", "--size", "30"])
    out = capsys.readouterr().out
    assert code == 1
    assert "calibration check FAILED" in out and "[drift-mean]" in out and f"in folder {'/'.join(inverted_folder.resolve().parts[-2:])}" in out


def test_cli_calib_check_video_and_bad_input(video_file, tmp_path, capsys):
    assert main(["calib", "check", str(video_file), "--every", "10", "--shape", "?,3,32,32", "--preset", "raw",
                 "--resize", "stretch"]) == 1  # 6 frames: too few
    out = capsys.readouterr().out
    assert "FAILED: 6 samples from video pan.avi" in out and "error: 6 calibration samples" in out
    assert main(["calib", "check", str(tmp_path / "missing")]) == 2
    assert "expected a folder of images, a video file" in capsys.readouterr().err
    assert main(["calib", "check", str(tmp_path), "--shape", "?,3,8,8"]) == 2
    assert "no images" in capsys.readouterr().err


def test_cli_calib_check_reports_skipped_files(tmp_path, capsys):
    for i, image in enumerate(crops(photos()["astronaut"], 12, seed=11)):
        save(image, tmp_path / f"{i:02d}.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    assert main(["calib", "check", str(tmp_path), "--shape", "?,3,32,32"]) == 0  # 1 of 13 is under 10%
    captured = capsys.readouterr()
    assert "warning: skipped 1 undecodable of 13 candidates" in captured.err and "broken.jpg" in captured.err
    assert "12 samples from folder" in captured.out
