"""Install and rollback on a device: versions side by side, an atomic ``current`` switch, failures that
leave the serving version alone, and the command line over it all."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import edgeship
import numpy as np
import pytest
from archive_support import read_tar, write_tar
from conftest import BLOCK_COMPRESS_EXTRAS, DIGIT_LABELS, run_python
from edgeship import BundleIntegrityError, ConfigError
from edgeship.bundle.archive import pack
from edgeship.bundle.signing import PUBLIC_KEY_ENV
from edgeship.cli import main
from edgeship.device.deploy import current, history, install, rollback, set_postprocess
from edgeship.tasks.postprocess import Postprocess


@pytest.fixture(scope="module")
def releases(digits_bundle, signing_keys, tmp_path_factory) -> dict[str, Path]:
    """Three signed releases of the digits model that differ in their labels (so in their manifests),
    and an unsigned copy of v2."""
    folder = tmp_path_factory.mktemp("releases")
    out = {}
    for version in ("v1", "v2", "v3"):
        src = folder / f"{version}.edgeship"
        shutil.copytree(digits_bundle.path, src)
        set_postprocess(src, labels=[f"{version}-{label}" for label in DIGIT_LABELS], postprocess=Postprocess(top_k=2))
        out[version] = pack(src, folder / f"line3-{version}.edgeship.tar.gz", sign_key=signing_keys["private"])
    out["v2-unsigned"] = pack(folder / "v2.edgeship", folder / "line3-v2.edgeship.tar")
    return out


def labels_of(root: Path) -> list[str]:
    return edgeship.open_bundle(root).manifest["labels"]


def link_of(root: Path) -> str:
    return os.readlink(root / "current")


def test_install_switch_and_rollback(releases, signing_keys, digits_data, tmp_path):
    root = tmp_path / "line3"
    key = signing_keys["public"]
    first = install(releases["v1"], root, public_key=key)
    assert first.version.startswith("line3-v1-") and len(first.version) == len("line3-v1-") + 12
    assert link_of(root) == f"versions/{first.version}"  # relative: the root can move
    assert first.signed_by is not None
    assert labels_of(root)[0] == "v1-zero"

    second = install(releases["v2"], root, public_key=key)
    assert link_of(root) == f"versions/{second.version}"
    assert labels_of(root)[0] == "v2-zero"
    assert history(root) == [first.version, second.version]
    assert sorted(p.name for p in (root / "versions").iterdir()) == sorted([first.version, second.version])

    # edgeship.load on the install root runs the current version, and verifies it when asked
    raw = digits_data[2][:4]
    with edgeship.load(root, "onnxruntime-cpu", "fp32", public_key=key) as rt:
        assert rt.run(raw, preprocess=True)["output"].shape == (4, 10)

    back = rollback(root)
    assert back.version == first.version and link_of(root) == f"versions/{first.version}"
    assert labels_of(root)[0] == "v1-zero"
    assert current(root).version == first.version
    assert history(root) == [first.version]
    with pytest.raises(ConfigError, match=r"keeps no version before line3-v1-\w+; nothing to roll back to"):
        rollback(root)
    assert current(root).version == first.version


def test_keep_prunes_old_versions(releases, tmp_path):
    root = tmp_path / "line3"
    done = [install(releases[v], root, keep=1) for v in ("v1", "v2", "v3")]
    assert sorted(p.name for p in (root / "versions").iterdir()) == sorted([done[1].version, done[2].version])
    assert history(root) == [done[1].version, done[2].version]
    assert rollback(root).version == done[1].version
    # reinstalling a version already there keeps one copy and moves it to the top
    again = install(releases["v1"], root, keep=5)
    assert again.version == done[0].version
    assert history(root) == [done[1].version, done[0].version]
    assert not [p for p in root.iterdir() if p.name.startswith(".current")]  # no temporary link left


@pytest.mark.parametrize("case, match", [
    ("unsigned", r"is not signed \(no manifest.sig\)"),
    ("wrong-key", r"not by the configured key"),
    ("tampered-manifest", r"does not match its manifest"),
    ("tampered-file", r"openvino-cpu/int8/model.bin in bundle .* was modified"),
    ("truncated", r"is not a readable edgeship archive"),
    ("symlink", r"is a symbolic link"),
])
def test_failed_install_leaves_current_serving(releases, signing_keys, tmp_path, case, match):
    root = tmp_path / "line3"
    before = install(releases["v1"], root, public_key=signing_keys["public"])
    key = signing_keys["other_public"] if case == "wrong-key" else signing_keys["public"]
    archive = releases["v2-unsigned" if case == "unsigned" else "v2"]
    members = read_tar(archive)
    if case == "tampered-manifest":
        manifest = json.loads(dict(members)["manifest.json"])
        manifest["labels"] = DIGIT_LABELS
        members = [(n, json.dumps(manifest).encode() if n == "manifest.json" else d) for n, d in members]
        archive = write_tar(tmp_path / "line3-v2.tar", members)
    elif case == "tampered-file":
        members = [(n, d[:-1] + b"\x00" if n == "openvino-cpu/int8/model.bin" else d) for n, d in members]
        archive = write_tar(tmp_path / "line3-v2.tar", members)
    elif case == "truncated":
        data = archive.read_bytes()
        archive = tmp_path / "line3-v2.tar.gz"
        archive.write_bytes(data[: len(data) * 2 // 3])
    elif case == "symlink":
        import tarfile

        from archive_support import special

        archive = write_tar(tmp_path / "line3-v2.tar", [special("model.onnx", tarfile.SYMTYPE, "/etc/shadow"),
                                                         *[m for m in members if m[0] != "model.onnx"]])
    with pytest.raises(BundleIntegrityError, match=match):
        install(archive, root, public_key=key)
    assert current(root) == before
    assert history(root) == [before.version]
    assert sorted(p.name for p in (root / "versions").iterdir()) == [before.version]  # nothing half-extracted
    with edgeship.load(root, "onnxruntime-cpu", "int8", public_key=signing_keys["public"]) as rt:
        assert rt.precision == "int8"
    assert labels_of(root)[0] == "v1-zero"


def test_killed_install_leaves_current_serving(releases, tmp_path):
    """Kill the installer half-way through reading the archive (fed through a FIFO): the old version stays."""
    root = tmp_path / "line3"
    before = install(releases["v1"], root)
    data = releases["v2-unsigned"].read_bytes()
    fifo = tmp_path / "line3-v2.edgeship.tar"
    os.mkfifo(fifo)
    proc = subprocess.Popen([sys.executable, "-m", "edgeship", "install", str(fifo), "--into", str(root)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        with open(fifo, "wb", buffering=0) as fh:  # blocks until the installer opens the FIFO
            fh.write(data[: len(data) // 2])  # returns once the installer has read all but a pipe buffer of it
            deadline = time.monotonic() + 60
            while not any((root / "versions").glob(".incoming-*/*")) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert any((root / "versions").glob(".incoming-*/*")), "the installer never started extracting"
            proc.kill()
            proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -9
    assert current(root) == before
    assert labels_of(root)[0] == "v1-zero"
    with edgeship.load(root, "openvino-cpu", "fp32") as rt:
        assert rt.target == "openvino-cpu"
    # the next install clears what the killed one left
    after = install(releases["v2"], root)
    assert sorted(p.name for p in (root / "versions").iterdir()) == sorted([before.version, after.version])


def test_install_refuses_odd_roots(releases, labelled_bundle, tmp_path):
    with pytest.raises(ConfigError, match="is a bundle folder; install into a separate folder"):
        install(releases["v1"], labelled_bundle)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="exists and is not a folder"):
        install(releases["v1"], tmp_path / "file")
    with pytest.raises(ConfigError, match="has no 'current' version; nothing to roll back"):
        rollback(tmp_path / "empty")
    with pytest.raises(ConfigError, match="keep must be >= 0"):
        install(releases["v1"], tmp_path / "r", keep=-1)


def test_cli_keygen_pack_install_rollback(labelled_bundle, tmp_path, capsys, monkeypatch):
    key = tmp_path / "keys" / "release.pem"
    assert main(["keygen", "-o", str(key)]) == 0
    assert "release.pub.pem" in capsys.readouterr().out
    archive = tmp_path / "line3-v1.4.edgeship.tar.gz"
    assert main(["pack", str(labelled_bundle), "-o", str(archive), "--sign", str(key)]) == 0
    assert "signed" in capsys.readouterr().out
    root = tmp_path / "opt" / "line3"
    assert main(["install", str(archive), "--into", str(root), "--verify", str(tmp_path / "keys" / "release.pub.pem")]) == 0
    out = capsys.readouterr().out
    assert "installed line3-v1.4-" in out and "signed by key" in out

    # the environment's key applies when --verify is not given: an unsigned archive is refused, exit 2
    plain = pack(labelled_bundle, tmp_path / "line3-v1.5.edgeship.tar")
    monkeypatch.setenv(PUBLIC_KEY_ENV, str(tmp_path / "keys" / "release.pub.pem"))
    assert main(["install", str(plain), "--into", str(root)]) == 2
    assert "edgeship install: error:" in capsys.readouterr().err and current(root).version.startswith("line3-v1.4-")
    monkeypatch.delenv(PUBLIC_KEY_ENV)
    assert main(["install", str(plain), "--into", str(root)]) == 0
    assert "signature not checked" in capsys.readouterr().out
    assert main(["rollback", "--into", str(root)]) == 0
    assert "current -> line3-v1.4-" in capsys.readouterr().out
    assert main(["unpack", str(archive), "-o", str(tmp_path / "unpacked"), "--max-size-mb", "0.001"]) == 2
    assert "unpacks to more than 1048 bytes" in capsys.readouterr().err


def test_device_without_torch_unpacks_installs_loads_and_runs(releases, signing_keys, digits_bundle, digits_data,
                                                              tmp_path):
    """On a device with no torch, onnx or NNCF: verify, install, load through `current`, run every target."""
    raw = digits_data[2][:6]
    np.save(tmp_path / "raw.npy", raw)
    expected = {}
    for target in ("openvino-cpu", "onnxruntime-cpu"):
        with digits_bundle.load(target, "int8") as rt:
            expected[target] = rt.run(raw, preprocess=True)["output"]
    result = run_python(BLOCK_COMPRESS_EXTRAS + f"""
import json, sys
import numpy as np
import edgeship
from edgeship.bundle.archive import unpack
from edgeship.device.deploy import install
key = {str(signing_keys["public"])!r}
bundle = unpack({str(releases["v1"])!r}, {str(tmp_path / "unpacked")!r}, public_key=key)
done = install({str(releases["v2"])!r}, {str(tmp_path / "root")!r}, public_key=key)
raw = np.load({str(tmp_path / "raw.npy")!r})
out = {{}}
for target in ("openvino-cpu", "onnxruntime-cpu"):
    with edgeship.load({str(tmp_path / "root")!r}, target=target, precision="int8", public_key=key) as rt:
        out[target] = rt.run(raw, preprocess=True)["output"].tolist()
try:
    import torch
    blocked = False
except ImportError:
    blocked = True
print(json.dumps({{"blocked": blocked, "signed": bundle.signed_by is not None, "version": done.version, "out": out,
                   "loaded": sorted(m for m in ("torch", "onnx", "nncf", "sklearn", "torchvision") if m in sys.modules)}}))
""")
    assert result["blocked"] and result["signed"] and result["version"].startswith("line3-v2-")
    assert result["loaded"] == []
    for target, want in expected.items():
        np.testing.assert_allclose(np.asarray(result["out"][target], dtype=np.float32), want, rtol=1e-5, atol=1e-5)


def test_cli_label_records_labels_and_postprocessing(bundle_copy, signing_keys, tmp_path, capsys):
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(DIGIT_LABELS) + "\n")
    (bundle_copy / "manifest.sig").write_text("stale")  # a signature over the old manifest must not survive
    assert main(["label", str(bundle_copy), "--labels", str(labels), "--top-k", "2"]) == 0
    manifest = edgeship.open_bundle(bundle_copy).manifest
    assert manifest["labels"] == DIGIT_LABELS
    assert manifest["postprocess"] == {"task": "classification", "softmax": True, "top_k": 2, "output": None}
    assert not (bundle_copy / "manifest.sig").exists()
    assert main(["label", str(bundle_copy), "--top-k", "3", "--sign", str(signing_keys["private"])]) == 0
    bundle = edgeship.open_bundle(bundle_copy, public_key=signing_keys["public"])
    assert bundle.manifest["postprocess"]["top_k"] == 3 and bundle.manifest["labels"] == DIGIT_LABELS
    assert main(["label", str(bundle_copy), "--top-k", "0"]) == 2
    assert "top_k must be a positive integer, got 0" in capsys.readouterr().err
