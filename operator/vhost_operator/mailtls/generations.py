"""A mail service's generations on disk: each one a directory written whole, made current by
replacing one symlink. Filesystem I/O, blocking (the agent calls these in a thread).

The service's config names ``<dir>/current/...``: it sees the old generation or the new one,
never a mix, and switching back after a refusal is the same one rename. The current generation
and the one before it are kept; older ones are removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from vhost_operator.mailtls.render import SERVED_FILE, GenerationFile

CURRENT = "current"
GENERATIONS = "generations"
PUBLIC_FILE_MODE = 0o644
PRIVATE_FILE_MODE = 0o600
DIRECTORY_MODE = 0o755
_TEMP_LINK = ".current-next"


class Generations:
    """The generations of one service under ``directory`` (``<root_dir>/<service>``)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._generations = directory / GENERATIONS

    def prepare(self) -> None:
        self._generations.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
        self.directory.chmod(DIRECTORY_MODE)
        (self.directory / _TEMP_LINK).unlink(missing_ok=True)

    def current(self) -> Path | None:
        link = self.directory / CURRENT
        return link.resolve() if link.is_symlink() and link.resolve().is_dir() else None

    def served(self) -> dict[str, list[str]]:
        """What the current generation serves (``render.served``), ``{}`` without one."""
        current = self.current()
        if current is None:
            return {}
        try:
            value: dict[str, list[str]] = json.loads((current / SERVED_FILE).read_text())
        except (OSError, ValueError):
            return {}  # a damaged generation: the next batch writes a new one
        return value

    def write(self, render: Callable[[str], Sequence[GenerationFile]]) -> Path:
        """A new generation with the files ``render(its directory)`` returns (not yet synced:
        :meth:`sync` once the service has built its derived files too)."""
        numbers = [int(entry.name) for entry in self._generations.iterdir() if entry.name.isdigit()]
        directory = self._generations / str(max(numbers, default=0) + 1)
        directory.mkdir(mode=DIRECTORY_MODE)
        try:
            previous = self.current()
            for file in render(str(directory)):
                _place(directory, file, previous)
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        return directory

    def sync(self, generation: Path) -> None:
        """Every file and directory of ``generation`` on disk for good, before anything points
        at it (a crash must not leave ``current`` naming files that never reached the disk).
        A file with more than one link is one a synced generation passed on: skipped (with
        1,000 hosts, fsyncing them all took a second per batch)."""
        for directory, _, names in os.walk(generation):
            for name in [*names, "."]:
                path = Path(directory) / name
                if name != "." and path.stat().st_nlink > 1:
                    continue
                descriptor = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(descriptor)
                finally:
                    os.close(descriptor)

    def switch(self, generation: Path | None) -> None:
        """Make ``generation`` current (``None``: no generation)."""
        link = self.directory / CURRENT
        if generation is None:
            link.unlink(missing_ok=True)
            return
        temporary = self.directory / _TEMP_LINK
        temporary.unlink(missing_ok=True)
        os.symlink(os.path.relpath(generation, self.directory), temporary)
        os.replace(temporary, link)
        descriptor = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(descriptor)  # the rename itself, durable
        finally:
            os.close(descriptor)

    def discard(self, generation: Path) -> None:
        shutil.rmtree(generation, ignore_errors=True)

    def prune(self, keep: Path | None) -> None:
        """Remove every generation but the current one and ``keep``."""
        kept = {self.current(), keep}
        for entry in self._generations.iterdir():
            if entry.resolve() not in kept:
                with contextlib.suppress(FileNotFoundError):
                    shutil.rmtree(entry)


def _place(directory: Path, file: GenerationFile, previous: Path | None) -> None:
    path = directory / file.path
    path.parent.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
    if file.named_by_content and previous is not None:
        with contextlib.suppress(FileNotFoundError):
            os.link(previous / file.path, path)
            return
    mode = PRIVATE_FILE_MODE if file.private else PUBLIC_FILE_MODE
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    os.fchmod(descriptor, mode)  # the umask may have narrowed it
    with os.fdopen(descriptor, "wb") as stream:
        stream.write(file.content)
