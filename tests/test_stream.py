"""Video streams: a video the test writes with OpenCV, decoded by OpenCV, run frame by frame."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2", reason="OpenCV is not installed (pip install 'edgeship[video]')")

import edgeship  # noqa: E402
from conftest import BLOCK_COMPRESS_EXTRAS, DIGIT_LABELS, run_python, video_frames  # noqa: E402
from edgeship import ConfigError  # noqa: E402
from edgeship.cli import main  # noqa: E402
from edgeship.device.stream import run_stream  # noqa: E402

FRAMES = 12


@pytest.fixture(scope="module")
def video(digits_data, tmp_path_factory):
    """12 digits, one per frame, upscaled to 64x64 BGR, as an MP4 (mp4v) at 10 fps."""
    path = tmp_path_factory.mktemp("video") / "digits.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (64, 64))
    assert writer.isOpened()
    for image in digits_data[2][:FRAMES]:
        big = cv2.resize(image[..., 0], (64, 64), interpolation=cv2.INTER_NEAREST)
        writer.write(cv2.cvtColor(big, cv2.COLOR_GRAY2BGR))
    writer.release()
    return path


def decoded_predictions(bundle_path, video_path, target, precision):
    """Top-1 per frame, decoding the video here exactly as the stream documents it (BGR -> grey, then the
    preprocessing's own resizer, as calibration: edgeship.preprocess.resize_bilinear)."""
    from edgeship.preprocess import resize_bilinear

    frames = [resize_bilinear(grey[..., None], 32, 32) for grey in video_frames(video_path, cv2.COLOR_BGR2GRAY)]
    with edgeship.load(bundle_path, target, precision) as rt:
        return rt.run(np.stack(frames), preprocess=True)["output"].argmax(axis=1).tolist()


def test_one_line_per_frame(labelled_bundle, video, tmp_path):
    out = tmp_path / "results.jsonl"
    stats = run_stream(labelled_bundle, str(video), out, target="onnxruntime-cpu", precision="fp32")
    assert stats.to_dict() == {"frames_read": FRAMES, "processed": FRAMES, "dropped": 0, "reconnects": 0,
                               "ended": "end of stream"}
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["frame"] for line in lines] == list(range(FRAMES))
    stamps = [line["timestamp"] for line in lines]
    assert stamps == sorted(stamps) and stamps[-1] == pytest.approx((FRAMES - 1) / 10.0, abs=0.01)
    want = decoded_predictions(labelled_bundle, video, "onnxruntime-cpu", "fp32")
    assert [line["results"][0]["top_k"][0]["index"] for line in lines] == want
    assert all(line["results"][0]["top_k"][0]["label"] == DIGIT_LABELS[i] for line, i in zip(lines, want))
    assert all(len(line["results"][0]["top_k"]) == 3 for line in lines)


def test_max_frames(labelled_bundle, video):
    sink = io.StringIO()
    seen = []
    stats = run_stream(labelled_bundle, str(video), sink, max_frames=5, on_result=seen.append)
    assert stats.processed == 5 and stats.ended == "max frames"
    assert [json.loads(line) for line in sink.getvalue().splitlines()] == seen
    assert stats.frames_read == stats.processed + stats.dropped


def test_live_source_keeps_the_newest_frame_and_reopens_at_its_end(labelled_bundle, video, tmp_path):
    """A file treated as live: frames the model could not take in time are dropped (and counted), and
    the end of the file is a lost source that is reopened, so 15 processed frames need a reconnect."""
    out = tmp_path / "live.jsonl"
    stats = run_stream(labelled_bundle, str(video), out, live=True, max_frames=FRAMES + 3, backoff=0.01)
    assert stats.ended == "max frames" and stats.processed == FRAMES + 3
    assert stats.reconnects >= 1
    assert stats.frames_read == stats.processed + stats.dropped
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == stats.processed
    indices = [line["frame"] for line in lines]
    assert indices == sorted(set(indices))  # in order, none twice; gaps are the dropped frames


def test_unreachable_network_source_gives_up_after_the_retries(labelled_bundle, tmp_path, capsys):
    """Nothing listens on loopback port 1: each attempt is refused, with backoff, until the retries run out."""
    out = tmp_path / "net.jsonl"
    stats = run_stream(labelled_bundle, "http://127.0.0.1:1/camera.mjpg", out, max_reconnects=2, backoff=0.01)
    assert stats.to_dict() == {"frames_read": 0, "processed": 0, "dropped": 0, "reconnects": 2,
                               "ended": "disconnected"}
    assert out.read_text() == ""
    assert main(["stream", str(labelled_bundle), "--source", "http://127.0.0.1:1/camera.mjpg", "--out", str(out),
                 "--max-reconnects", "1"]) == 1
    assert "the source was lost after 1 reconnect attempts" in capsys.readouterr().err


def test_bad_sources(labelled_bundle, tmp_path):
    with pytest.raises(ConfigError, match="is not a file, a camera index or an rtsp://"):
        run_stream(labelled_bundle, str(tmp_path / "absent.mp4"), tmp_path / "o.jsonl")
    (tmp_path / "notes.mp4").write_text("not a video")
    with pytest.raises(ConfigError, match="OpenCV cannot open video file"):
        run_stream(labelled_bundle, str(tmp_path / "notes.mp4"), tmp_path / "o.jsonl")
    assert not (tmp_path / "o.jsonl").exists()


def test_cli_stream(labelled_bundle, video, tmp_path, capsys):
    out = tmp_path / "results.jsonl"
    assert main(["stream", str(labelled_bundle), "--source", str(video), "--out", str(out), "--max-frames", "4"]) == 0
    assert len(out.read_text().splitlines()) == 4
    assert json.loads(capsys.readouterr().err.strip().splitlines()[-1])["processed"] == 4


def test_without_opencv_the_error_names_the_extra(labelled_bundle, video, tmp_path):
    result = run_python(BLOCK_COMPRESS_EXTRAS.replace('"sklearn"}', '"sklearn", "cv2"}') + f"""
import json
from edgeship.device.stream import run_stream
from edgeship import MissingDependencyError
try:
    run_stream({str(labelled_bundle)!r}, {str(video)!r}, {str(tmp_path / "o.jsonl")!r})
    error = None
except MissingDependencyError as exc:
    error = str(exc)
print(json.dumps({{"error": error}}))
""")
    assert result["error"] and "'cv2' is not installed (needed for video streams)" in result["error"]
    assert 'pip install "edgeship[video]"' in result["error"]
