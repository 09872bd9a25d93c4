"""Shared fixtures: the digits CNN trained once, one digits bundle compressed once, a small random CNN.

Everything is real: real torch models, real ONNX files, real OpenVINO and ONNX Runtime sessions.
Fixtures that hand out something on disk which a test may modify hand out a private copy.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import edgeship
import numpy as np
import pytest
from edgeship import InputSpec, Preprocess, demo
from edgeship.targets import get_target_class

ALL_TARGETS = sorted(edgeship.list_targets())
CPU_TARGETS = ["openvino-cpu", "onnxruntime-cpu"]


def target_param(name: str):
    """A pytest param for ``name`` that is skipped, with the backend's reason, where it cannot run here."""
    ok, reason = get_target_class(name).availability()
    return pytest.param(name, id=name, marks=() if ok else pytest.mark.skip(reason=f"{name}: {reason}"))


# -- the digits demo: trained once, compressed once -------------------------------------------------
@pytest.fixture(scope="session")
def digits_data():
    """(train images, train labels, test images, test labels); images are raw uint8 NHWC."""
    return demo.digits_data()


@pytest.fixture(scope="session")
def digits_model(tmp_path_factory):
    import torch

    torch.set_num_threads(2)
    model = demo.train_digits_cnn(cache_dir=tmp_path_factory.mktemp("digits-cache"), show_progress=False)
    assert not model.training
    return model


@pytest.fixture(scope="session")
def digits_bundle(tmp_path_factory, digits_model, digits_data):
    """The digits CNN as FP32 + INT8 for both CPU targets. Read-only: tamper with ``bundle_copy`` instead."""
    x_train = digits_data[0]
    out = tmp_path_factory.mktemp("digits-bundle") / "digits.edgeship"
    return edgeship.compress(
        digits_model,
        input_spec=demo.DIGITS_SPEC,
        output=out,
        calibration=x_train,
        targets=CPU_TARGETS,
        precision=["fp32", "int8"],
        preprocess_calibration=True,
        show_progress=False,
    )


@pytest.fixture
def bundle_copy(digits_bundle, tmp_path) -> Path:
    """A private copy of the digits bundle that a test may tamper with."""
    dst = tmp_path / "copy.edgeship"
    shutil.copytree(digits_bundle.path, dst)
    return dst


# -- a small random-init CNN, for export and target conformance --------------------------------------
SMALL_SPEC = InputSpec(
    shape=(None, 3, 16, 16),
    preprocess=Preprocess(
        scale=1 / 255.0, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), reverse_channels=True
    ),
)


def build_small_cnn(seed: int = 0, classes: int = 5):
    """conv-bn-relu x2, global pooling, linear; random init with non-trivial batch-norm statistics."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, classes),
    )
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.fixture(scope="session")
def small_cnn():
    return build_small_cnn()


@pytest.fixture(scope="session")
def small_onnx(tmp_path_factory, small_cnn) -> Path:
    """The small CNN exported once to ONNX (dynamic batch), for tests that start from a file."""
    from edgeship.build.export import export_onnx

    path = tmp_path_factory.mktemp("small-onnx") / "small.onnx"
    export_onnx(small_cnn, SMALL_SPEC, path)
    return path


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def torch_forward(model, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return model(torch.from_numpy(np.ascontiguousarray(x))).numpy()


def interrupt_cli(args: list[str], trials_dir: Path, after: int) -> tuple[int, str, int]:
    """Run ``edgeship ARGS`` in its own process and send it a real SIGINT once ``after`` trial records are in
    ``trials_dir``: (exit status, its output, trial records on disk afterwards). A SIGINT to the pytest process
    itself segfaults once earlier tests have left backend threads behind, hence the subprocess."""
    import signal

    # SIGINT back to its default in the child: a suite started in the background (nohup, `cmd &` without job
    # control) inherits SIGINT ignored, and Python then never turns the signal into KeyboardInterrupt
    proc = subprocess.Popen([sys.executable, "-m", "edgeship", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline and len(list(trials_dir.glob("*.json"))) < after:
            time.sleep(0.02)
        assert proc.poll() is None, proc.stdout.read()  # still running: the sweep takes longer than that
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, output, len(list(trials_dir.glob("*.json")))


def run_python(code: str, timeout: float = 180) -> dict:
    """Run ``code`` in a fresh interpreter (nothing imported yet); it prints one JSON object as its last line."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"subprocess failed:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


# Installed below every meta path finder, this makes the compress-time libraries look uninstalled: what a
# device with only `edgeship[openvino]` or `edgeship[onnxruntime]` has. Prepend it to code for run_python.
BLOCK_COMPRESS_EXTRAS = """
import sys
BLOCKED = {"torch", "torchvision", "onnx", "onnxscript", "nncf", "torch_pruning", "sklearn"}
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked in this test")
        return None
sys.meta_path.insert(0, _Block())
"""


# -- deploy: keys and a labelled bundle for archives, install, serving and streams ---------------------
DIGIT_LABELS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.fixture(scope="session")
def signing_keys(tmp_path_factory) -> dict[str, Path]:
    """Two Ed25519 key pairs as PEM files: 'private'/'public' and another pair 'other_private'/'other_public'."""
    from edgeship.bundle.signing import generate_keypair

    folder = tmp_path_factory.mktemp("keys")
    private, public = generate_keypair(folder / "key.pem")
    other_private, other_public = generate_keypair(folder / "other.pem")
    return {"private": private, "public": public, "other_private": other_private, "other_public": other_public}


@pytest.fixture(scope="session")
def labelled_bundle(digits_bundle, tmp_path_factory) -> Path:
    """The digits bundle with labels and softmax/top-3 postprocessing in its manifest. Read-only."""
    from edgeship.device.deploy import set_postprocess
    from edgeship.tasks.postprocess import Postprocess

    dst = tmp_path_factory.mktemp("labelled") / "digits.edgeship"
    shutil.copytree(digits_bundle.path, dst)
    set_postprocess(dst, labels=DIGIT_LABELS, postprocess=Postprocess(top_k=3))
    return dst


def video_frames(path: Path, convert: int) -> list[np.ndarray]:
    """Every frame of the video at ``path`` as OpenCV decodes it, passed through ``cv2.cvtColor(frame, convert)``
    (e.g. ``cv2.COLOR_BGR2GRAY``): what the stream sees, for tests that predict the frames themselves."""
    import cv2

    capture, frames = cv2.VideoCapture(str(path)), []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, convert))
    capture.release()
    return frames
