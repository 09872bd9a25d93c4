"""Hostile calibration images: a file whose header declares more pixels than edgeship decodes is skipped
with its reason (never decoded: a 10000x10000 PNG of a few KB would be 300 MB of RGB), and a folder of
nothing but such files is a ConfigError."""

from __future__ import annotations

import warnings

import edgeship
import numpy as np
import pytest
from edgeship.calibration import from_folder
from edgeship.errors import ConfigError
from edgeship.preprocess import MAX_IMAGE_PIXELS

SPEC = edgeship.InputSpec(shape=(None, 3, 32, 32), preprocess=edgeship.Preprocess.imagenet())


def _huge_png(path):
    from PIL import Image

    Image.new("1", (10_000, 10_000)).save(path)  # bilevel: 12 MB in memory here, a few KB on disk


def test_an_image_past_the_pixel_cap_is_skipped_not_decoded(tmp_path):
    from PIL import Image

    assert 10_000 * 10_000 > MAX_IMAGE_PIXELS
    _huge_png(tmp_path / "huge.png")
    assert (tmp_path / "huge.png").stat().st_size < 1 << 20
    rng = np.random.default_rng(0)
    for i in range(9):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(tmp_path / f"ok{i}.png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        calib = from_folder(tmp_path, SPEC, size=20)
    assert len(calib) == 9
    assert any("huge.png" in str(w.message) and "pixels" in str(w.message) for w in caught)


def test_a_folder_of_only_oversized_images_is_refused(tmp_path):
    _huge_png(tmp_path / "huge.png")
    with pytest.raises(ConfigError):
        from_folder(tmp_path, SPEC, size=4)
