"""Hostile installs: what ``edgeship install`` refuses, and failures that must leave the old version current.

- a validly signed OLDER release of the same model over a newer one: refused (``--allow-downgrade`` forces it;
  rollback stays the way back)
- a release number that is not an integer: refused at ``set_release``
- disk full while writing history.json: the install fails, ``current`` has not moved, the new version's folder
  and every temporary file are gone
"""

from __future__ import annotations

import errno
import os
import shutil

import edgeship
import pytest
from edgeship import BundleIntegrityError, ConfigError
from edgeship.bundle.archive import pack
from edgeship.cli import main
from edgeship.device import deploy
from edgeship.device.deploy import history, install, set_release


@pytest.fixture(scope="module")
def numbered(digits_bundle, signing_keys, tmp_path_factory):
    """Signed archives of the digits model as releases 1, 2 and 3."""
    folder = tmp_path_factory.mktemp("numbered")
    out = {}
    for number in (1, 2, 3):
        src = folder / f"r{number}.edgeship"
        shutil.copytree(digits_bundle.path, src)
        set_release(src, number, name="line3-digits")
        out[number] = pack(src, folder / f"line3-r{number}.edgeship.tar.gz", sign_key=signing_keys["private"])
    return out


def _release_current(root):
    return edgeship.open_bundle(root).manifest["release"]["number"]


def test_an_older_signed_release_does_not_replace_a_newer_one(numbered, signing_keys, tmp_path):
    root = tmp_path / "line3"
    install(numbered[1], root, public_key=signing_keys["public"])
    install(numbered[3], root, public_key=signing_keys["public"])
    with pytest.raises(BundleIntegrityError, match="release 2 is older than release 3"):
        install(numbered[2], root, public_key=signing_keys["public"])
    assert _release_current(root) == 3 and len(history(root)) == 2
    assert not [p for p in (root / "versions").iterdir() if p.name.startswith(".")]  # nothing left over
    install(numbered[2], root, public_key=signing_keys["public"], allow_downgrade=True)
    assert _release_current(root) == 2


def test_the_cli_refuses_a_downgrade_with_exit_2(numbered, signing_keys, tmp_path, capsys):
    root = tmp_path / "line3"
    assert main(["install", str(numbered[3]), "--into", str(root), "--verify", str(signing_keys["public"])]) == 0
    assert main(["install", str(numbered[1]), "--into", str(root), "--verify", str(signing_keys["public"])]) == 2
    assert "refusing a downgrade" in capsys.readouterr().err
    assert main(["install", str(numbered[1]), "--into", str(root), "--verify", str(signing_keys["public"]),
                 "--allow-downgrade"]) == 0


@pytest.mark.parametrize("bad", [-1, 1.5, "2", True])
def test_a_release_number_must_be_an_integer(bundle_copy, bad):
    with pytest.raises(ConfigError, match="integer >= 0"):
        set_release(bundle_copy, bad)


def test_disk_full_while_writing_history_leaves_the_old_version_current(numbered, tmp_path, monkeypatch):
    root = tmp_path / "line3"
    first = install(numbered[1], root)
    real = deploy.write_atomic

    def full_disk(path, data):
        if path.name == deploy.HISTORY:
            (path.parent / f".{path.name}.tmp-full").write_bytes(data[:10])  # what a full disk leaves behind
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(deploy, "write_atomic", full_disk)
    with pytest.raises(OSError, match="No space left"):
        install(numbered[2], root)
    monkeypatch.setattr(deploy, "write_atomic", real)
    assert os.readlink(root / "current") == f"versions/{first.version}"
    assert history(root) == [first.version]
    assert sorted(p.name for p in (root / "versions").iterdir()) == [first.version]
    assert not list(root.glob(".history.json.tmp-*"))


def test_the_cli_reports_a_full_disk_without_a_traceback(numbered, tmp_path, monkeypatch, capsys):
    def full_disk(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(deploy, "write_atomic", full_disk)
    assert main(["install", str(numbered[1]), "--into", str(tmp_path / "line3")]) == 2
    err = capsys.readouterr().err
    assert "edgeship install: error:" in err and "No space left on device" in err and "Traceback" not in err
    assert not (tmp_path / "line3" / "current").exists()
