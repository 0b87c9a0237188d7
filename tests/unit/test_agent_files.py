"""The agent's file layer: undoing a batch on a disk that filled up; who may read the keys; the
definitions the site configs use."""

from __future__ import annotations

import errno
import grp
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pytest

from tests.harness.nginx import UNUSED_CHALLENGE_UPSTREAM as CHALLENGE
from tests.harness.nginx import agent_definitions
from vhost_operator.agent import files
from vhost_operator.agent.plan import DEFINITIONS_FILE, WriteFile


def test_an_undo_with_no_room_for_a_temporary_copy_overwrites_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "tls.crt"
    path.write_bytes(b"the new certificate, a little longer")

    def disk_full(path: Path, content: bytes, mode: int, *, group: int | None = None) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files, "write_file", disk_full)
    files._restore(path, files._File(b"the old certificate", 0o600, os.getgid()))
    assert path.read_bytes() == b"the old certificate"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_other_write_errors_are_not_papered_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "site.conf"
    path.write_bytes(b"new")

    def denied(path: Path, content: bytes, mode: int, *, group: int | None = None) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(files, "write_file", denied)
    with pytest.raises(PermissionError):
        files._restore(path, files._File(b"old", 0o644, os.getgid()))
    assert path.read_bytes() == b"new"


KEY = PurePosixPath("certs/a.example.com/tls.key")


def test_keys_are_the_agents_alone_without_a_key_group(tmp_path: Path) -> None:
    files.apply_operations(tmp_path, [WriteFile(KEY, b"key", private=True)])
    info = (tmp_path / KEY).stat()
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert info.st_gid == os.getegid()


@pytest.fixture
def reachable_dir() -> Iterator[Path]:
    """A directory other users can reach (pytest's own are 0700), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="vhost-agent-keys-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path)


def read_as(user: str, group: str, path: Path) -> subprocess.CompletedProcess[bytes]:
    argv = ["setpriv", f"--reuid={user}", f"--regid={group}", "--clear-groups", "cat", str(path)]
    return subprocess.run(argv, capture_output=True, check=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file another group needs root")
def test_a_key_group_can_read_keys_and_nobody_else(reachable_dir: Path) -> None:
    """nginx's workers load keys per handshake: with a key group (the workers', here
    ``nobody:nogroup`` as Debian's nginx drops a root master's workers to), keys are 0640 in
    that group, readable by the workers and no other user; an undo puts back the old key with
    its group and mode."""
    workers = grp.getgrnam("nogroup").gr_gid
    root = reachable_dir
    files.apply_operations(root, [WriteFile(KEY, b"old", private=True)], key_group=workers)
    info = (root / KEY).stat()
    assert (stat.S_IMODE(info.st_mode), info.st_gid) == (0o640, workers)
    assert read_as("nobody", "nogroup", root / KEY).stdout == b"old"
    assert read_as("nobody", "daemon", root / KEY).returncode, "another group: not readable"

    undo = files.apply_operations(root, [WriteFile(KEY, b"new", private=True)])
    assert (stat.S_IMODE((root / KEY).stat().st_mode), (root / KEY).stat().st_gid) == (
        0o600,
        os.getegid(),
    )
    assert read_as("nobody", "nogroup", root / KEY).returncode, "0600 without a key group"
    undo.restore()
    info = (root / KEY).stat()
    assert (root / KEY).read_bytes() == b"old"
    assert (stat.S_IMODE(info.st_mode), info.st_gid) == (0o640, workers)


def test_the_key_group_setting_takes_a_name_or_a_gid() -> None:
    assert files.group_id("0") == 0
    assert files.group_id(grp.getgrgid(0).gr_name) == 0
    with pytest.raises(KeyError):
        files.group_id("no-such-group-here")


def test_prepare_writes_the_definitions_which_are_no_site(tmp_path: Path) -> None:
    files.prepare(tmp_path, 8443, http_port=8080, challenge_upstream=CHALLENGE)
    definitions = agent_definitions(tmp_path, 8443, 8080, CHALLENGE)
    assert (tmp_path / DEFINITIONS_FILE).read_text() == definitions
    assert "listen 8443 ssl default_server;" in definitions
    assert files.read_disk(tmp_path).hostnames == set(), "never planned away as a host"
    (tmp_path / DEFINITIONS_FILE).write_text("stale")
    files.prepare(tmp_path, 8443, http_port=8080, challenge_upstream=CHALLENGE)
    assert (tmp_path / DEFINITIONS_FILE).read_text() == definitions
