"""Calibration from files: image folders (every format, gray and RGB, corrupt files), video, .npy/.npz."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from calib_helpers import (  # noqa: F401
    GRAY_FILES,
    PHOTO_COUNT,
    VIDEO_FPS,
    VIDEO_FRAMES,
    crops,
    pan_frames,
    photo_folder,
    photos,
    save,
    video_file,
)
from edgeship import ConfigError, InputSpec, Preprocess
from edgeship.calibration import CalibrationWarning, from_arrays, from_folder, from_video
from PIL import Image

SPEC = InputSpec(shape=(None, 3, 64, 64), preprocess=Preprocess.imagenet())
GRAY_SPEC = InputSpec(shape=(None, 1, 48, 48), preprocess=Preprocess(scale=1 / 255.0, mean=(0.5,), std=(0.5,),
                                                                      resize="stretch"))


def unnormalise(sample: np.ndarray, pre: Preprocess) -> np.ndarray:
    """Model input (1, C, H, W) -> raw-scale (C, H, W) pixel values."""
    mean = np.asarray(pre.mean or (0.0,), np.float32)[:, None, None]
    std = np.asarray(pre.std or (1.0,), np.float32)[:, None, None]
    return (sample[0] * std + mean) / pre.scale


# -- folders --------------------------------------------------------------------------------------
def test_folder_reads_every_format_recursively(photo_folder):
    calib = from_folder(photo_folder, SPEC, size=100)
    assert len(calib) == PHOTO_COUNT  # notes.txt is not an image; upper-case extensions count
    assert all(s.shape == (1, 3, 64, 64) and s.dtype == np.float32 for s in calib)
    assert set(calib.origins) == {p.relative_to(photo_folder).as_posix() for p in photo_folder.rglob("*")
                                  if p.suffix.lower() != ".txt" and p.is_file()}
    assert set(GRAY_FILES) <= set(calib.origins)
    assert calib.preprocessed and calib.selection == "random" and calib.labels is None
    # no build-machine absolute path in what the manifest keeps: relative to the working directory, else
    # the last two parts
    assert calib.source == f"folder {'/'.join(photo_folder.resolve().parts[-2:])} ({PHOTO_COUNT} images)"
    assert str(photo_folder.resolve()) not in calib.source
    summary = calib.summary()
    assert summary["preprocessing"]["resize"] == "imagenet" and summary["count"] == PHOTO_COUNT


def test_folder_sample_equals_the_spec_preprocessing_of_the_decoded_file(photo_folder):
    calib = from_folder(photo_folder, SPEC, size=100)
    index = calib.origins.index("a/astronaut.png")  # lossless: the decoded pixels are the photo's
    np.testing.assert_array_equal(calib.samples[index], SPEC.apply_preprocess(photos()["astronaut"]))


def test_gray_files_become_rgb_and_rgb_files_become_gray(photo_folder):
    calib = from_folder(photo_folder, SPEC, size=100)
    for name in GRAY_FILES:
        pixels = unnormalise(calib.samples[calib.origins.index(name)], SPEC.preprocess)
        np.testing.assert_allclose(pixels[0], pixels[1], atol=1e-3)  # R = G = B
        np.testing.assert_allclose(pixels[1], pixels[2], atol=1e-3)
    gray = from_folder(photo_folder, GRAY_SPEC, size=100)
    assert len(gray) == PHOTO_COUNT and gray.samples[0].shape == (1, 1, 48, 48)
    index = gray.origins.index("a/astronaut.png")
    expected = np.asarray(Image.fromarray(photos()["astronaut"]).convert("L"))[..., None]  # ITU-R 601-2 luma
    np.testing.assert_array_equal(gray.samples[index], GRAY_SPEC.apply_preprocess(expected))


def test_folder_draw_is_seeded(photo_folder):
    first = from_folder(photo_folder, SPEC, size=6, seed=3)
    again = from_folder(photo_folder, SPEC, size=6, seed=3)
    other = from_folder(photo_folder, SPEC, size=6, seed=4)
    assert len(first) == 6 and first.origins == again.origins and first.sha256 == again.sha256
    assert first.origins != other.origins
    assert list(first.origins) == sorted(first.origins)  # in source order, whatever the draw


def test_folder_diverse_selection(photo_folder):
    calib = from_folder(photo_folder, SPEC, size=5, select="diverse", seed=0)
    assert len(calib) == 5 and calib.selection == "diverse"
    assert calib.origins == from_folder(photo_folder, SPEC, size=5, select="diverse", seed=0).origins


@pytest.fixture
def dirty_folder(tmp_path):
    """11 good images, 1 file of random bytes, 1 truncated PNG."""
    images = crops(photos()["coffee"], 11, seed=7)
    for i, image in enumerate(images):
        save(image, tmp_path / f"img{i:02d}.png")
    (tmp_path / "broken.jpg").write_bytes(np.random.default_rng(0).bytes(2000))
    whole = save(images[0], tmp_path / "whole.png").read_bytes()
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "truncated.png").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "whole.png").unlink()
    return tmp_path


def test_undecodable_files_are_skipped_with_a_warning_naming_them(dirty_folder):
    with pytest.warns(CalibrationWarning) as caught:
        calib = from_folder(dirty_folder, SPEC, size=100, max_bad_fraction=0.2)
    message = str(caught[0].message)
    assert "skipped 2 undecodable of 13" in message
    assert "broken.jpg" in message and "sub/truncated.png" in message
    assert len(calib) == 11 and "broken.jpg" not in calib.origins


def test_too_many_undecodable_files_is_an_error(dirty_folder):
    with pytest.raises(ConfigError, match=r"2 of 13 candidates .* could not be decoded \(15%, more than "
                                          r"max_bad_fraction=10%\): broken.jpg \(.*\); sub/truncated.png"):
        from_folder(dirty_folder, SPEC, size=100)


def test_random_draw_tops_up_past_undecodable_files(dirty_folder):
    """Asking for 11 of 13 files with 2 bad gives the 11 good ones, whichever the draw hit first."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        calib = from_folder(dirty_folder, SPEC, size=11, max_bad_fraction=0.5)
    assert len(calib) == 11 and all(o.startswith("img") for o in calib.origins)


@pytest.mark.parametrize("make, match", [
    (lambda p: p / "missing", "calibration folder not found"),
    (lambda p: (p / "file.png").write_bytes(b"x") and p / "file.png", "expected a directory"),
    (lambda p: (p / "a.txt").write_text("x") and p, r"no images \(.jpg.*under .*; found 1 other files"),
])
def test_folder_errors(tmp_path, make, match):
    with pytest.raises(ConfigError, match=match):
        from_folder(make(tmp_path), SPEC)


def test_folder_needs_resize_for_images_of_another_size(photo_folder):
    spec = InputSpec(shape=(None, 3, 64, 64), preprocess=Preprocess(mean=(0.5,), std=(0.5,)))
    with pytest.raises(ConfigError, match=r"is \d+x\d+ but the spec takes 64x64 and Preprocess.resize is 'none'; "
                                          r"set resize="):
        from_folder(photo_folder, spec)
    with pytest.raises(ConfigError, match="needs a 4-D image shape and preprocessing"):
        from_folder(photo_folder, InputSpec(shape=(None, 3, 64, 64), preprocess=None))
    with pytest.raises(ConfigError, match="max_bad_fraction must be in"):
        from_folder(photo_folder, SPEC, max_bad_fraction=2)


# -- video ----------------------------------------------------------------------------------------
def test_video_every_n_frames(video_file):
    calib = from_video(video_file, SPEC, every=10)
    assert len(calib) == VIDEO_FRAMES // 10
    assert calib.origins[:2] == ("pan.avi frame 0 (0.00 s)", "pan.avi frame 10 (1.00 s)")
    assert f"{VIDEO_FRAMES} frames, {VIDEO_FPS:g} fps, 6 candidates every 10 frames" in calib.source


def test_video_per_second_and_size(video_file):
    calib = from_video(video_file, SPEC, per_second=2, size=100)
    frames = [int(o.split()[2]) for o in calib.origins]
    assert frames == list(range(0, VIDEO_FRAMES, 5))  # 10 fps, 2 per second
    some = from_video(video_file, SPEC, per_second=2, size=4, seed=1)
    assert len(some) == 4 and set(some.origins) <= set(calib.origins)
    assert some.sha256 == from_video(video_file, SPEC, per_second=2, size=4, seed=1).sha256


def test_video_frames_are_rgb_like_the_folders(video_file):
    """OpenCV decodes BGR; from_video converts, so a frame matches the RGB image it was written from."""
    calib = from_video(video_file, SPEC, every=20)
    frames = pan_frames()
    for sample, origin in zip(calib.samples, calib.origins):
        expected = SPEC.apply_preprocess(frames[int(origin.split()[2])])
        swapped = SPEC.apply_preprocess(frames[int(origin.split()[2])][..., ::-1].copy())
        error = np.abs(sample - expected).mean()
        assert error < 0.1  # MJPG compression
        assert error < 0.5 * np.abs(sample - swapped).mean()


def test_video_diverse(video_file):
    calib = from_video(video_file, SPEC, size=5, select="diverse")
    assert len(calib) == 5 and calib.selection == "diverse"


def test_video_errors(video_file, tmp_path):
    with pytest.raises(ConfigError, match="either every=N frames or per_second=N, not both"):
        from_video(video_file, SPEC, every=2, per_second=1)
    with pytest.raises(ConfigError, match="every must be a positive integer"):
        from_video(video_file, SPEC, every=0)
    with pytest.raises(ConfigError, match="calibration video not found"):
        from_video(tmp_path / "missing.mp4", SPEC)
    (tmp_path / "fake.avi").write_bytes(b"not a video at all")
    with pytest.raises(ConfigError, match="cannot open video|no frames could be read"):
        from_video(tmp_path / "fake.avi", SPEC)


# -- .npy / .npz ----------------------------------------------------------------------------------
def test_npy_and_npz_files(tmp_path, rng):
    raw = rng.integers(0, 256, size=(20, 64, 64, 3), dtype=np.uint8)
    labels = np.repeat([0, 1], [15, 5])
    np.save(tmp_path / "raw.npy", raw)
    np.savez(tmp_path / "raw.npz", x=raw, y=labels)
    from_npy = from_arrays(tmp_path / "raw.npy", SPEC, size=8, preprocess=True)
    assert from_npy.source == "raw.npy: array (20, 64, 64, 3) uint8" and from_npy.selection == "random"
    from_npz = from_arrays(str(tmp_path / "raw.npz"), SPEC, size=8, preprocess=True)
    assert from_npz.selection == "stratified"  # the file's 'y' are labels
    assert from_npz.labels.tolist() == [0] * 6 + [1] * 2
    np.savez(tmp_path / "no_x.npz", images=raw)
    with pytest.raises(ConfigError, match=r"must hold an array named 'x'.*\['images'\]"):
        from_arrays(tmp_path / "no_x.npz", SPEC)
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ConfigError, match="object arrays are refused"):
        from_arrays(tmp_path / "objects.npy", SPEC)
    with pytest.raises(ConfigError, match="calibration file not found"):
        from_arrays(tmp_path / "missing.npy", SPEC)
