"""The Predictor: one owner of what a bundle's outputs mean and of the one resize, for serve and stream alike.

A 40x40 image into the 32x32 digits spec (whose preprocessing does not resize): the Predictor resizes it with
the preprocessing's own resizer (edgeship.preprocess.resize_bilinear), and serve's HTTP answer for that PNG and
stream's line for that frame are the Predictor's. Real bundle, real runtimes, a real server and a real video.
"""

from __future__ import annotations

import io
import json

import edgeship
import numpy as np
import pytest
from conftest import DIGIT_LABELS, video_frames
from edgeship.bundle.predictor import Predictor, fit_image
from edgeship.preprocess import resize_bilinear
from edgeship.tasks.postprocess import Postprocess
from test_serve import npy, request, running

TARGET, PRECISION = "onnxruntime-cpu", "fp32"


@pytest.fixture(scope="module")
def off_size(digits_data):
    """Three test digits at 40x40 (grey, HWC uint8): not the spec's 32x32."""
    images = resize_bilinear(digits_data[2][:3], 40, 40)
    return np.clip(np.round(images), 0, 255).astype(np.uint8)


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image[..., 0]).save(buf, format="PNG")
    return buf.getvalue()


def test_fit_image_resizes_only_what_the_preprocessing_does_not(off_size):
    spec, image = edgeship.demo.DIGITS_SPEC, off_size[0]
    fitted = fit_image(image, spec)
    assert fitted.shape == (32, 32, 1)
    np.testing.assert_array_equal(fitted, resize_bilinear(image, 32, 32))
    same = off_size[0][:32, :32]
    assert fit_image(same, spec) is same  # already the spec's size: as it is
    resizing = edgeship.InputSpec(shape=(None, 1, 32, 32), preprocess=edgeship.Preprocess(resize="stretch"))
    assert fit_image(image, resizing) is image  # the spec's preprocessing resizes itself


def test_predictor_runs_the_calibration_resize(labelled_bundle, digits_bundle, off_size):
    bundle = edgeship.open_bundle(labelled_bundle)
    with bundle.load(TARGET, PRECISION) as rt:
        predictor = Predictor(bundle, rt)
        got = predictor.predict(list(off_size))
        want = rt.run(resize_bilinear(off_size, 32, 32), preprocess=True)
    assert got == {"results": Postprocess(top_k=3).apply(want, DIGIT_LABELS)}

    with digits_bundle.load(TARGET, PRECISION) as rt:  # no postprocessing in the manifest: the raw outputs
        got = Predictor(digits_bundle, rt).predict(off_size)
        want = rt.run(resize_bilinear(off_size, 32, 32), preprocess=True)
    assert got == {"outputs": {name: value.tolist() for name, value in want.items()}}


def test_serve_answers_an_off_size_png_as_the_predictor(labelled_bundle, off_size):
    bundle = edgeship.open_bundle(labelled_bundle)
    with bundle.load(TARGET, PRECISION) as rt:
        want = [Predictor(bundle, rt).predict([image])["results"] for image in off_size]
    with running(labelled_bundle, target=TARGET, precision=PRECISION) as (_, url):
        for image, expected in zip(off_size, want):
            status, _, reply = request(f"{url}/v1/predict", _png(image), "image/png")
            assert status == 200, reply
            assert reply["results"] == expected
        # arrays are model-shaped: an off-size uint8 .npy is refused, not resized
        status, _, reply = request(f"{url}/v1/predict", npy(off_size), "application/x-npy")
        assert status == 400 and "must have shape" in reply["error"]


def test_stream_and_serve_resize_an_off_size_frame_alike(labelled_bundle, off_size, tmp_path):
    cv2 = pytest.importorskip("cv2", reason="OpenCV is not installed (pip install 'edgeship[video]')")
    from edgeship.device.stream import run_stream

    path = tmp_path / "digits40.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (40, 40))
    assert writer.isOpened()
    for image in off_size:
        writer.write(cv2.cvtColor(image[..., 0], cv2.COLOR_GRAY2BGR))
    writer.release()
    frames = [f[..., None] for f in video_frames(path, cv2.COLOR_BGR2GRAY)]  # what the stream decodes, at 40x40
    assert len(frames) == len(off_size) and frames[0].shape == (40, 40, 1)

    sink = io.StringIO()
    run_stream(labelled_bundle, str(path), sink, target=TARGET, precision=PRECISION)
    lines = [json.loads(line) for line in sink.getvalue().splitlines()]
    bundle = edgeship.open_bundle(labelled_bundle)
    with bundle.load(TARGET, PRECISION) as rt:
        calibration = [Postprocess(top_k=3).apply(rt.run(resize_bilinear(f, 32, 32)[None], preprocess=True),
                                                  DIGIT_LABELS) for f in frames]
    assert [line["results"] for line in lines] == calibration
    with running(labelled_bundle, target=TARGET, precision=PRECISION) as (_, url):
        served = [request(f"{url}/v1/predict", _png(f), "image/png")[2]["results"] for f in frames]
    assert served == [line["results"] for line in lines]
