"""Talking to nginx: ``nginx -t`` and a reload that is confirmed, not assumed. Process I/O.

A reload is SIGHUP to the master process named in the pid file. nginx answers a SIGHUP
asynchronously: it parses the configuration again and, only if that works, starts new worker
processes and asks the old ones to stop accepting; if it fails (a port it cannot bind, a file gone
since the test) it logs the error and keeps running the old configuration. So the agent does not
trust the signal: it waits until the master has a child it did not have before (the new
configuration runs) and every old worker has exited or retitled itself "shutting down" (it no
longer accepts, so no client can still get the old configuration), and reports a failed reload
otherwise. This needs the master's process
to be visible (same PID namespace: ``shareProcessNamespace: true`` in a pod) and
``master_process on`` (nginx's default).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import time
from pathlib import Path

from vhost_operator.agent.plan import Credentials
from vhost_operator.sidecar import CommandFailed, run_command

TEST_TIMEOUT_SECONDS = 120.0
"""An ``nginx -t`` that takes longer is stuck (thousands of hosts test in a few seconds)."""

_POLL_SECONDS = 0.02
_LOG_PREFIX = re.compile(r"^(?:\d{4}/\d\d/\d\d \d\d:\d\d:\d\d |nginx: )?\[(\w+)\] (?:\d+#\d+: )?")
_SERIOUS = ("emerg", "alert", "crit", "error")


class NginxError(Exception):
    """nginx did not do what the agent asked; the message says what nginx said."""


class ConfigRejected(NginxError):
    """``nginx -t`` refused the configuration on disk."""


class ReloadFailed(NginxError):
    """nginx could not be told to reload, or did not start running the new configuration."""


class NginxControl:
    """``nginx -t`` and confirmed reloads of one nginx master."""

    def __init__(
        self, binary: str, conf: Path, pid_file: Path, *, reload_timeout: float = 30.0
    ) -> None:
        self.binary = binary
        self.conf = conf
        self.pid_file = pid_file
        self.reload_timeout = reload_timeout
        self.unconfirmed_seconds = 0.0
        """Seconds spent, in all, waiting for reloads that nginx never confirmed. Not nginx's
        work: it refuses a configuration it cannot load as soon as it has parsed it, and then
        keeps serving the old one while the agent waits out ``reload_timeout``."""

    async def test(self, conf: Path | None = None) -> None:
        """Run ``nginx -t`` on the main config, or on ``conf``; raise :class:`ConfigRejected`
        with nginx's complaint if it fails.

        ``-e stderr`` (nginx >= 1.19.5) keeps nginx from opening its compiled-in error log while
        it parses (it may not be writable for the agent) and puts its verdict where we read it.
        """
        argv = [self.binary, "-t", "-q", "-c", str(conf or self.conf), "-e", "stderr"]
        try:
            finished = await run_command(argv, timeout=TEST_TIMEOUT_SECONDS, what="nginx -t")
        except CommandFailed as error:
            raise NginxError(str(error)) from error
        if finished.returncode != 0:
            raise ConfigRejected(nginx_complaint(finished.stderr or finished.stdout))

    async def reload(self) -> None:
        """SIGHUP the master, then wait until it runs a new generation of workers."""
        pid = self._master_pid()
        before = children(pid)
        try:
            os.kill(pid, signal.SIGHUP)
        except ProcessLookupError:
            raise ReloadFailed(
                f"nginx is not running (no process {pid} from {self.pid_file})"
            ) from None
        except PermissionError as error:
            raise ReloadFailed(f"not allowed to signal nginx (pid {pid}): {error}") from error
        signalled = time.monotonic()
        try:
            await self._confirm_reload(pid, before, deadline=signalled + self.reload_timeout)
        except ReloadFailed:
            self.unconfirmed_seconds += time.monotonic() - signalled
            raise

    async def _confirm_reload(self, pid: int, before: set[int], *, deadline: float) -> None:
        while time.monotonic() < deadline:
            await asyncio.sleep(_POLL_SECONDS)
            if not Path(f"/proc/{pid}").exists():
                raise ReloadFailed(f"nginx (pid {pid}) exited during the reload")
            if children(pid) - before and all(_retired(child) for child in before):
                return
        raise ReloadFailed(
            f"nginx (pid {pid}) started no new workers within {self.reload_timeout:g}s of the "
            "reload signal, so it still runs the old configuration; its error log says why"
        )

    def worker_credentials(self) -> list[Credentials]:
        """The user and groups of nginx's current worker processes (from /proc)."""
        found = []
        for pid in children(self._master_pid()):
            with contextlib.suppress(OSError, ValueError, IndexError, KeyError):
                if _retired(pid):
                    continue
                fields = dict(
                    line.split(":", 1)
                    for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                    if ":" in line
                )
                uid = int(fields["Uid"].split()[1])  # effective
                groups = {int(fields["Gid"].split()[1]), *map(int, fields["Groups"].split())}
                found.append(Credentials(uid, frozenset(groups)))
        return found

    def _master_pid(self) -> int:
        try:
            text = self.pid_file.read_text().strip()
        except OSError as error:
            raise ReloadFailed(
                f"cannot read nginx's pid file {self.pid_file} ({error.strerror or error}): "
                "is nginx running?"
            ) from error
        if not text.isdigit():
            raise ReloadFailed(f"nginx's pid file {self.pid_file} holds no pid: {text[:40]!r}")
        return int(text)


def nginx_complaint(output: str) -> str:
    """nginx's error lines without timestamps and pids: the same failure reads the same each time
    (the text ends up in an annotation; changing text would look like news)."""
    lines = []
    for line in output.splitlines():
        match = _LOG_PREFIX.match(line)
        if match and match[1] in _SERIOUS:
            lines.append(f"[{match[1]}] {line[match.end() :].strip()}")
    if lines:
        return "; ".join(lines)
    return " ".join(output.split()) or "nginx -t failed without a message"


def _retired(pid: int) -> bool:
    """Whether an old child no longer accepts connections: it exited, or it is a worker that
    set its title to "shutting down" (nginx does so right before closing its listening sockets),
    or it is no worker at all (cache manager and loader never accept connections)."""
    try:
        title = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # gone (or not ours to look at: nothing better to wait for)
    return b"worker process" not in title or b"shutting down" in title


def children(pid: int) -> set[int]:
    """Child process ids of ``pid``, from /proc."""
    listing = Path(f"/proc/{pid}/task/{pid}/children")
    with contextlib.suppress(OSError):
        return {int(child) for child in listing.read_text().split()}
    # Kernels without CONFIG_PROC_CHILDREN: scan every process's parent.
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                # The command name in parentheses may contain spaces: parse after its last ")".
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    found.add(int(entry.name))
    return found
