"""The agent's file layer: undoing a batch on a disk that filled up."""

from __future__ import annotations

import errno
import stat
from pathlib import Path

import pytest

from vhost_operator.agent import files


def test_an_undo_with_no_room_for_a_temporary_copy_overwrites_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "tls.crt"
    path.write_bytes(b"the new certificate, a little longer")

    def disk_full(path: Path, content: bytes, mode: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files, "write_file", disk_full)
    files._restore(path, files._File(b"the old certificate", 0o600))
    assert path.read_bytes() == b"the old certificate"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_other_write_errors_are_not_papered_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "site.conf"
    path.write_bytes(b"new")

    def denied(path: Path, content: bytes, mode: int) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(files, "write_file", denied)
    with pytest.raises(PermissionError):
        files._restore(path, files._File(b"old", 0o644))
    assert path.read_bytes() == b"new"
