"""Real images for the calibration tests: scikit-image's bundled photos, crops of them, written with Pillow.

Not a conftest.py: a second conftest module would shadow ``tests/conftest.py`` for the tests that
``from conftest import ...``. Test modules import the ``photo_folder`` fixture from here (it is built
once per module that uses it, and is read-only).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def photos() -> dict[str, np.ndarray]:
    """scikit-image's bundled photos (no download): three RGB uint8 images and one gray."""
    data = pytest.importorskip("skimage.data", reason="scikit-image provides the test photos (the `test` extra)")
    return {"astronaut": data.astronaut(), "coffee": data.coffee(), "chelsea": data.chelsea(),
            "camera": data.camera()}


def crops(image: np.ndarray, count: int, seed: int, side: tuple[int, int] = (96, 200)) -> list[np.ndarray]:
    """Random square crops of ``image`` with sides in ``side`` (seeded)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        s = int(rng.integers(*side))
        y, x = int(rng.integers(0, image.shape[0] - s)), int(rng.integers(0, image.shape[1] - s))
        out.append(np.ascontiguousarray(image[y : y + s, x : x + s]))
    return out


def save(image: np.ndarray, path: Path) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, **({"quality": 95} if path.suffix in (".jpg", ".jpeg") else {}))
    return path


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory) -> Path:
    """16 images in nested folders, every format, differing sizes, 2 of them gray, plus a text file.

    a/: the 3 RGB photos whole (png, jpg, bmp) and 6 crops (.jpeg, .png, .tif); b/nested/: the gray
    camera photo (.tif) and a gray crop (.png), 5 more crops (.PNG, .JPG upper-case); notes.txt.
    """
    p = photos()
    root = tmp_path_factory.mktemp("photos")
    save(p["astronaut"], root / "a" / "astronaut.png")
    save(p["coffee"], root / "a" / "coffee.jpg")
    save(p["chelsea"], root / "a" / "chelsea.bmp")
    for i, img in enumerate(crops(p["astronaut"], 2, 1) + crops(p["coffee"], 2, 2) + crops(p["chelsea"], 2, 3)):
        save(img, root / "a" / f"crop{i}{('.jpeg', '.png', '.tif')[i % 3]}")
    save(p["camera"], root / "b" / "nested" / "camera.tif")
    save(crops(p["camera"], 1, 4)[0], root / "b" / "nested" / "camera_crop.png")
    for i, img in enumerate(crops(p["coffee"], 3, 5) + crops(p["astronaut"], 2, 6)):
        save(img, root / "b" / f"more{i}{('.PNG', '.JPG')[i % 2]}")
    (root / "notes.txt").write_text("not an image\n")
    return root


PHOTO_COUNT = 16
GRAY_FILES = ("b/nested/camera.tif", "b/nested/camera_crop.png")


VIDEO_FRAMES, VIDEO_FPS, VIDEO_SIZE = 60, 10.0, (96, 128)  # frames, frame rate, (height, width)


def pan_frames(count: int = VIDEO_FRAMES) -> list[np.ndarray]:
    """RGB frames of a camera panning across the astronaut photo, 4 pixels a frame."""
    image = photos()["astronaut"]
    h, w = VIDEO_SIZE
    return [np.ascontiguousarray(image[100 : 100 + h, 4 * i : 4 * i + w]) for i in range(count)]


@pytest.fixture(scope="module")
def video_file(tmp_path_factory) -> Path:
    """A 6-second 10 fps MJPG .avi written by OpenCV from ``pan_frames`` (RGB -> OpenCV's BGR)."""
    cv2 = pytest.importorskip("cv2", reason="OpenCV reads video (the `video` extra)")
    path = tmp_path_factory.mktemp("video") / "pan.avi"
    h, w = VIDEO_SIZE
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), VIDEO_FPS, (w, h))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write MJPG video")
    for frame in pan_frames():
        writer.write(frame[..., ::-1].copy())
    writer.release()
    return path
