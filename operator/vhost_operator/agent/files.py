"""The layout on disk: read it, change it atomically, undo a change. Filesystem I/O, blocking
(the agent calls these in a thread).

Every file is written to a temporary name in its directory, flushed to disk, then renamed over the
old one: nginx (or a crash) sees the old file or the new one, never half a file. Symlinks are
replaced the same way. Private keys get mode 0600 from the moment they exist, or 0640 with a
``key_group`` (nginx's workers load them per handshake: they must be able to read them, nobody
else); everything else 0644, directories 0755, whatever the process umask says.

A file of entries (``plan.Entry``: many hosts' lines, each host's after a comment naming it) is
rewritten whole by a change of any of its entries, once per change of many hosts, after their
own files; undoing the change puts the whole file back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import grp
import os
import secrets
import shutil
import stat
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path, PurePosixPath

from vhost_operator.agent.plan import (
    AVAILABLE_DIR,
    CERTS_DIR,
    DEFINITIONS_FILE,
    ENABLED_DIR,
    HTTP_NAMES_FILE,
    HTTPS_MAP_FILE,
    HTTPS_NAMES_DIR,
    LAYOUT_DIRS,
    LEGACY_HTTP_NAMES_DIR,
    SHARED_SERVER_PREFIX,
    DiskState,
    Entry,
    Operation,
    Remove,
    Symlink,
    WriteFile,
    disk_state,
    format_entries,
    https_names_path,
    parse_entries,
    shared_server_path,
)
from vhost_operator.nginx import http_definitions

TEMP_PREFIX = ".tmp-"
"""Temporary names: a short prefix and a random suffix, never derived from the target name (a
248-character hostname plus a suffix would exceed the 255-byte file name limit)."""

WRITERS = 16
"""Hosts written (or restored) in parallel."""

PUBLIC_FILE_MODE = 0o644
PRIVATE_FILE_MODE = 0o600
GROUP_PRIVATE_FILE_MODE = 0o640
DIRECTORY_MODE = 0o755
_CONF_SUFFIX = ".conf"


def prepare(root: Path, https_port: int, *, http_port: int, challenge_upstream: str) -> None:
    """Create the layout directories, drop temporary files a crash left behind, and write the
    http-level definitions the site configs use (before any of them is tested): among them the
    default server of ``https_port``, which loads certificates from ``<root>/certs``, and the
    plain HTTP server of ``http_port`` for the TLS sites listed in ``<root>/http-names``, which
    sends their challenges to ``challenge_upstream``."""
    for name in LAYOUT_DIRS:
        _make_directory(root / name)
    directories = (
        root,
        *(root / name for name in (AVAILABLE_DIR, ENABLED_DIR, HTTPS_NAMES_DIR)),
        *_subdirectories(root / CERTS_DIR),
    )
    for directory in directories:
        for entry in directory.iterdir():
            if entry.name.startswith(TEMP_PREFIX):
                _remove(entry)
    definitions = root / DEFINITIONS_FILE
    content = http_definitions(
        str(root / CERTS_DIR),
        https_port,
        http_port=http_port,
        challenge_upstream=challenge_upstream,
        names_file=str(root / HTTP_NAMES_FILE),
        https_map_file=str(root / HTTPS_MAP_FILE),
    ).encode()
    for entries in (HTTP_NAMES_FILE, HTTPS_MAP_FILE):
        if not (root / entries).is_file():
            write_file(root / entries, b"", PUBLIC_FILE_MODE)  # nginx includes them by name
    # An earlier release's file per site there: the first batch lists them again, as entries,
    # and nginx reads neither before the reload that ends it.
    _remove(root / LEGACY_HTTP_NAMES_DIR)
    if not definitions.is_file() or definitions.is_symlink() or definitions.read_bytes() != content:
        write_file(definitions, content, PUBLIC_FILE_MODE)
        _sync_directories([definitions.parent])


def group_id(group: str) -> int:
    """The GID of a group name (or of a GID written as digits); ``KeyError`` if unknown."""
    return int(group) if group.isdigit() else grp.getgrnam(group).gr_gid


def read_disk(root: Path) -> DiskState:
    """What the layout holds. Names that are no ``<hostname>.conf`` are ignored (nginx's include
    pattern ignores them too)."""
    hostnames = {
        entry.name.removesuffix(_CONF_SUFFIX)
        for directory in (root / AVAILABLE_DIR, root / ENABLED_DIR)
        for entry in _conf_entries(directory)
    }
    for entries in _entry_files(root).values():
        hostnames.update(entries)
    hostnames.update(directory.name for directory in _subdirectories(root / CERTS_DIR))
    return read_hosts(root, hostnames)


def read_hosts(root: Path, hostnames: Iterable[str]) -> DiskState:
    """What the layout holds for ``hostnames`` (a host with no files has no entries): after a
    batch, the hosts it touched, instead of every host again."""
    hostnames = sorted(hostnames)
    configs = (
        (hostname, path.read_bytes())
        for hostname in hostnames
        if (path := root / AVAILABLE_DIR / f"{hostname}{_CONF_SUFFIX}").is_file()
        and not path.is_symlink()
    )
    links = (
        (hostname, os.readlink(path) if path.is_symlink() else None)
        for hostname in hostnames
        if os.path.lexists(path := root / ENABLED_DIR / f"{hostname}{_CONF_SUFFIX}")
    )
    certificates = (
        (
            hostname,
            {
                entry.name: entry.read_bytes()
                for entry in directory.iterdir()
                if entry.is_file() and not entry.name.startswith(TEMP_PREFIX)
            },
        )
        for hostname in hostnames
        if (directory := root / CERTS_DIR / hostname).is_dir() and not directory.is_symlink()
    )
    entry_files = _entry_files(root)
    plain = entry_files.pop(HTTP_NAMES_FILE, {})
    maps = entry_files.pop(HTTPS_MAP_FILE, {})
    http_names = ((hostname, plain[hostname]) for hostname in hostnames if hostname in plain)
    https_names = (
        (hostname, path.stem, names[hostname])
        for path, names in entry_files.items()
        for hostname in hostnames
        if hostname in names
    )
    https_maps = ((hostname, maps[hostname]) for hostname in hostnames if hostname in maps)
    return disk_state(configs, links, certificates, http_names, https_names, https_maps)


def _entry_files(root: Path) -> dict[PurePosixPath, dict[str, str]]:
    """The files of entries (``plan.Entry``) in the layout: their entries by path."""
    paths = [HTTP_NAMES_FILE, HTTPS_MAP_FILE]
    paths.extend(
        PurePosixPath(HTTPS_NAMES_DIR, entry.name)
        for entry in _conf_entries(root / HTTPS_NAMES_DIR)
    )
    return {path: _entries(root / path) for path in paths}


def _entries(path: Path) -> dict[str, str]:
    """The entries of a file of entries (not to be changed: a copy of the remembered ones)."""
    try:
        status = path.lstat()
    except FileNotFoundError:
        return {}
    if not stat.S_ISREG(status.st_mode):
        return {}
    stamp = _stamp(status)
    with _PARSED_LOCK:
        known = _PARSED.get(path)
    if known is not None and known[0] == stamp:
        return known[1]
    entries = parse_entries(path.read_text())
    _remember(path, stamp, entries)
    return entries


_PARSED: dict[Path, tuple[tuple[int, int, int], dict[str, str]]] = {}
"""The entries of each file of entries as last read or written, by the file's identity (inode,
change time, size): the agent reads back after every batch the files it has just written, and
parsing them took 10 ms each at 10,000 sites, most of its own work in a batch then."""
_PARSED_LOCK = threading.Lock()


def _stamp(status: os.stat_result) -> tuple[int, int, int]:
    # Every write renames a new file over the old one (a new inode), but an undo after a full
    # disk may overwrite in place: the change time moves then.
    return status.st_ino, status.st_ctime_ns, status.st_size


def _remember(path: Path, stamp: tuple[int, int, int], entries: dict[str, str]) -> None:
    with _PARSED_LOCK:
        _PARSED[path] = (stamp, entries)


def read_listings(root: Path, disk: DiskState) -> dict[str, tuple[str, str]]:
    """The map and names entries of the hosts listed in shared HTTPS servers on ``disk``."""
    entry_files = _entry_files(root)
    maps = entry_files[HTTPS_MAP_FILE]
    listings = {}
    for hostname, listed in disk.https_names.items():
        names = entry_files.get(https_names_path(listed.server), {})
        if hostname in maps and hostname in names:
            listings[hostname] = (maps[hostname], names[hostname])
    return listings


# -- shared HTTPS servers ----------------------------------------------------------------------


def read_shared_servers(root: Path) -> dict[str, bytes]:
    """The shared HTTPS servers on disk, by key: their files' contents."""
    servers = {}
    for entry in (root / ENABLED_DIR).glob(f"{SHARED_SERVER_PREFIX}*{_CONF_SUFFIX}"):
        if entry.is_file() and not entry.is_symlink():
            key = entry.name.removeprefix(SHARED_SERVER_PREFIX).removesuffix(_CONF_SUFFIX)
            servers[key] = entry.read_bytes()
    return servers


def write_shared_server(root: Path, key: str, content: bytes) -> None:
    """Put a shared HTTPS server in place, with the file of its names (empty if new: nginx
    includes it by name); on failure (a full disk), neither."""
    names = root / https_names_path(key)
    new_names = not names.is_file()
    path = root / shared_server_path(key)
    try:
        if new_names:
            write_file(names, b"", PUBLIC_FILE_MODE)
        write_file(path, content, PUBLIC_FILE_MODE)
    except BaseException:
        if new_names:
            names.unlink(missing_ok=True)
        raise
    _sync_directories([path.parent, names.parent])


def remove_shared_server(root: Path, key: str) -> None:
    """Remove a shared HTTPS server, and the file of its names if it lists no host."""
    path = root / shared_server_path(key)
    path.unlink(missing_ok=True)
    names = root / https_names_path(key)
    if not _entries(names):
        names.unlink(missing_ok=True)
    _sync_directories([path.parent, names.parent])


# -- undo --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _File:
    content: bytes
    mode: int
    group: int


@dataclasses.dataclass(frozen=True)
class _Link:
    target: str


@dataclasses.dataclass(frozen=True)
class _Tree:
    files: dict[str, _File]


@dataclasses.dataclass(frozen=True)
class _Absent:
    pass


@dataclasses.dataclass(frozen=True)
class _CreatedDirectory:
    """A directory the change created; undo removes it again if it is empty."""


_Snapshot = _File | _Link | _Tree | _Absent | _CreatedDirectory


class Undo:
    """Puts back what a call of :func:`apply_changes` changed."""

    def __init__(self, groups: list[list[tuple[Path, _Snapshot]]]) -> None:
        self._groups = groups

    def restore(self) -> None:
        touched: set[Path] = set()
        with ThreadPoolExecutor(max_workers=WRITERS) as pool:
            for restored in pool.map(_restore_group, self._groups):
                touched |= restored
        _sync_directories(touched)


def apply_changes(
    root: Path, groups: Sequence[Sequence[Operation]], *, key_group: int | None = None
) -> Undo:
    """Carry out each group of operations (one host's) under ``root``; the returned
    :class:`Undo` reverses them all. On failure, nothing stays changed. Private keys belong to
    group ``key_group`` (a GID) with mode 0640, or keep the process's group with mode 0600.

    Groups run in parallel: each is one host's files, disjoint from the others', and the time
    goes into fsync, which waits on the disk (and lets a journaling file system commit
    concurrent fsyncs together) rather than on Python. The hosts' entries in files of entries
    (``plan.Entry``) come after, each such file written once.
    """
    files = [[op for op in group if not isinstance(op, Entry)] for group in groups]
    entries = [op for group in groups for op in group if isinstance(op, Entry)]
    with ThreadPoolExecutor(max_workers=WRITERS) as pool:
        futures = [pool.submit(_apply_group, root, group, key_group) for group in files]
        wait(futures)
    failures = [error for future in futures if (error := future.exception()) is not None]
    done = [future.result() for future in futures if future.exception() is None]
    if entries and not failures:
        try:
            done.append(_apply_entries(root, entries))
        except Exception as error:
            failures.append(error)
    undo = Undo([snapshots for snapshots, _ in done])
    if failures:
        undo.restore()  # disk full, permissions: leave the last good state, not half a batch
        raise failures[0]
    _sync_directories(set().union(*(touched for _, touched in done)))
    return undo


def apply_operations(
    root: Path, operations: Sequence[Operation], *, key_group: int | None = None
) -> Undo:
    """Carry out ``operations`` in order, as one group."""
    return apply_changes(root, [operations], key_group=key_group)


def _apply_group(
    root: Path, operations: Sequence[Operation], key_group: int | None
) -> tuple[list[tuple[Path, _Snapshot]], set[Path]]:
    snapshots: list[tuple[Path, _Snapshot]] = []
    touched: set[Path] = set()
    try:
        for operation in operations:
            path = root / operation.path
            if not path.parent.exists():
                snapshots.append((path.parent, _CreatedDirectory()))
                _make_directory(path.parent)
            snapshots.append((path, _snapshot(path)))
            _carry_out(operation, path, key_group)
            touched.add(path.parent)
    except BaseException:
        _restore_group(snapshots)
        raise
    return snapshots, touched


def _apply_entries(
    root: Path, entries: Sequence[Entry]
) -> tuple[list[tuple[Path, _Snapshot]], set[Path]]:
    by_path: dict[PurePosixPath, list[Entry]] = {}
    for entry in entries:
        by_path.setdefault(entry.path, []).append(entry)
    snapshots: list[tuple[Path, _Snapshot]] = []
    try:
        for relative, changes in by_path.items():
            path = root / relative
            current = dict(_entries(path))
            snapshot = _snapshot(path)
            for change in changes:
                if change.text is None:
                    current.pop(change.hostname, None)
                else:
                    current[change.hostname] = change.text
            snapshots.append((path, snapshot))
            write_file(path, format_entries(current).encode(), PUBLIC_FILE_MODE)
            _remember(path, _stamp(path.lstat()), current)
    except BaseException:
        _restore_group(snapshots)
        raise
    return snapshots, {path.parent for path, _ in snapshots}


def _restore_group(snapshots: list[tuple[Path, _Snapshot]]) -> set[Path]:
    # Reversed: a path touched twice ends up as it was before the first touch.
    touched = set()
    for path, snapshot in reversed(snapshots):
        with _PARSED_LOCK:
            _PARSED.pop(path, None)  # overwritten in place, a file may keep its stamp
        _restore(path, snapshot)
        touched.add(path.parent)
    return touched


def _carry_out(operation: Operation, path: Path, key_group: int | None) -> None:
    if isinstance(operation, WriteFile):
        if not operation.private:
            write_file(path, operation.content, PUBLIC_FILE_MODE)
        elif key_group is None:
            write_file(path, operation.content, PRIVATE_FILE_MODE)
        else:
            write_file(path, operation.content, GROUP_PRIVATE_FILE_MODE, group=key_group)
    elif isinstance(operation, Symlink):
        replace_symlink(path, operation.target)
    elif isinstance(operation, Remove):
        _remove(path)
    else:
        raise TypeError("entries are written per file of entries, not per host")


# -- primitives ------------------------------------------------------------------------------


def write_file(path: Path, content: bytes, mode: int, *, group: int | None = None) -> None:
    """Atomically replace ``path`` with ``content``: temp file, fsync, rename. ``group``: the
    file's group (a GID), else the process's."""
    temporary = path.parent / f"{TEMP_PREFIX}{secrets.token_hex(6)}"
    # O_EXCL: never follow or reuse something already at the temporary name. Created 0600 and
    # given its group before its mode: a key is never readable by a group it is not meant for.
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode & 0o600)
    try:
        if group is not None and os.fstat(descriptor).st_gid != group:
            os.fchown(descriptor, -1, group)
        os.fchmod(descriptor, mode)  # the umask may have narrowed (or the key widened) the mode
        with os.fdopen(descriptor, "wb", closefd=False) as stream:
            stream.write(content)
            stream.flush()
        os.fsync(descriptor)
    except BaseException:
        os.close(descriptor)
        temporary.unlink(missing_ok=True)
        raise
    os.close(descriptor)
    _replace(temporary, path)


def replace_symlink(path: Path, target: str) -> None:
    """Atomically point ``path`` at ``target``: a new symlink renamed over the old entry."""
    temporary = path.parent / f"{TEMP_PREFIX}{secrets.token_hex(6)}"
    os.symlink(target, temporary)
    _replace(temporary, path)


def _replace(temporary: Path, path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        # rename() cannot replace a directory with a file; a stray directory is not ours to keep.
        shutil.rmtree(path)
    try:
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _make_directory(path: Path) -> None:
    path.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
    path.chmod(DIRECTORY_MODE)  # mkdir's mode is filtered by the umask


def _snapshot(path: Path) -> _Snapshot:
    try:
        status = path.lstat()
    except FileNotFoundError:
        return _Absent()
    if stat.S_ISLNK(status.st_mode):
        return _Link(os.readlink(path))
    if stat.S_ISDIR(status.st_mode):
        return _Tree(
            {
                entry.name: _file(entry, entry.stat())
                for entry in path.iterdir()
                if entry.is_file() and not entry.is_symlink()
            }
        )
    return _file(path, status)


def _file(path: Path, status: os.stat_result) -> _File:
    return _File(path.read_bytes(), stat.S_IMODE(status.st_mode), status.st_gid)


def _restore(path: Path, snapshot: _Snapshot) -> None:
    if isinstance(snapshot, _CreatedDirectory):
        with contextlib.suppress(FileNotFoundError, OSError):
            path.rmdir()  # only if empty: something else may live there by now
        return
    if isinstance(snapshot, _File):
        _restore_file(path, snapshot)
    elif isinstance(snapshot, _Link):
        replace_symlink(path, snapshot.target)
    elif isinstance(snapshot, _Tree):
        _remove(path)
        _make_directory(path)
        for name, file in snapshot.files.items():
            write_file(path / name, file.content, file.mode, group=file.group)
    else:
        _remove(path)


def _restore_file(path: Path, file: _File) -> None:
    try:
        write_file(path, file.content, file.mode, group=file.group)
    except OSError as error:
        if error.errno != errno.ENOSPC or not path.is_file() or path.is_symlink():
            raise
        # The undo of a batch that filled the disk has no room for a temporary copy: overwrite
        # the file in place instead, which reuses the blocks it holds (the old and new versions
        # of a certificate, key or config are about the same size). Not atomic, but nginx reads
        # these files only when the agent reloads it, and it does not while undoing.
        _overwrite(path, file.content, file.mode)


def _overwrite(path: Path, content: bytes, mode: int) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
    try:
        os.fchmod(descriptor, mode)
        written = 0
        while written < len(content):  # write, not truncate first: keep the blocks it holds
            written += os.pwrite(descriptor, content[written:], written)
        os.ftruncate(descriptor, len(content))
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _sync_directories(directories: Iterable[Path]) -> None:
    """fsync each directory once, making its renames durable: once per batch, not per file."""
    for directory in directories:
        with contextlib.suppress(FileNotFoundError):
            descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)


def _conf_entries(directory: Path) -> Iterator[Path]:
    for entry in directory.iterdir():
        if (
            entry.name.endswith(_CONF_SUFFIX)
            # Not a site: temporary files, the agent's own definitions and shared servers.
            and not entry.name.startswith((".", "_"))
        ):
            yield entry


def _subdirectories(directory: Path) -> Iterator[Path]:
    for entry in directory.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            yield entry
