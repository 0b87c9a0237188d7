"""Starting, probing and stopping the local server processes the tests run against."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path


class StartupError(RuntimeError):
    """A server did not come up; the message carries the tail of its log."""


HARNESS_PORTS = range(20_000, 30_000)
"""Where the harness picks listening ports: below Linux's ephemeral range (32768-60999 by
default) and Kubernetes' NodePort range (30000-32767; the node tests' kube-proxy rules). A port
the kernel handed out by ``bind(0)`` is free only until the next outbound connection of any
process takes it as its source port, which happened between the pick and the server's own bind
(a full run failed with "Address already in use"); outbound connections never use ports below
the ephemeral range."""

_handed_out: set[int] = set()


class CommandFailed(subprocess.CalledProcessError):
    """A command the harness ran exited non-zero; unlike ``CalledProcessError`` its text says
    what the command printed on stderr, so that a failing test's report shows why."""

    def __str__(self) -> str:
        stderr = (self.stderr or "").strip()
        return f"{super().__str__()}\nstderr: {stderr[-2000:] or '(empty)'}"


def checked(
    completed: subprocess.CompletedProcess[str], *, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``completed``, or :class:`CommandFailed` if ``check`` and it exited non-zero."""
    if check and completed.returncode != 0:
        raise CommandFailed(
            completed.returncode, completed.args, completed.stdout, completed.stderr
        )
    return completed


def free_port() -> int:
    """A loopback TCP port nothing listens on, not handed out before in this process."""
    for _ in range(1000):
        port = random.choice(HARNESS_PORTS)
        if port in _handed_out:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port in {HARNESS_PORTS}")


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


class ManagedProcess:
    """A child process with its output in a log file, stopped gently, then firmly."""

    def __init__(
        self, name: str, argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            list(argv),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )

    def wait_until(self, ready: Callable[[], bool], *, timeout: float, what: str) -> None:
        """Wait for ``ready``; a process that does not get there is stopped before the error is
        raised: whoever started it holds no handle to stop it with yet."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stop()
                raise StartupError(
                    f"{self.name} exited with {self.process.returncode} before {what}:\n"
                    + log_tail(self.log_path)
                )
            if ready():
                return
            time.sleep(0.1)
        self.stop()
        raise StartupError(f"{self.name}: no {what} after {timeout}s:\n" + log_tail(self.log_path))

    def kill(self) -> None:
        """SIGKILL: the crash a test wants to survive."""
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        self.process.wait()

    def stop(self, timeout: float = 10) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


def unverified_tls() -> ssl.SSLContext:
    """For probing a local component's self-signed serving certificate (its health only)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def scrape(port: int) -> dict[str, float]:
    """A component's ``/metrics`` on ``port``, name → value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return parse_metrics(response.read().decode())


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus' text format, series (name with its labels, as written) → value."""
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def series_value(metrics: dict[str, float], name: str, **labels: str) -> float:
    """The value of the series ``name`` with exactly ``labels`` (in any order), 0 if absent
    (a labelled counter has no series before its first increment)."""
    wanted = {f'{key}="{value}"' for key, value in labels.items()}
    for series, value in metrics.items():
        series_name, _, written = series.partition("{")
        if series_name == name and set(filter(None, written.rstrip("}").split(","))) == wanted:
            return value
    return 0.0


class ComponentProcess:
    """One of our own commands (``python -m vhost_operator <command>``) as a real process
    against a kubeconfig, as it runs in a cluster: started, waited for until ``ready_url``
    answers 200, killed or stopped. Subclasses say which command, settings and URL."""

    command: str
    """The CLI subcommand (``run``, ``nginx-agent``, ``tenancy-gate``)."""

    def __init__(self, kubeconfig: Path, log_path: Path, *, verbose: bool = False) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.verbose = verbose
        """Debug logging (the tests read it); the benchmark runs without, as in production."""
        self._process: ManagedProcess | None = None

    def _launch(
        self, env: dict[str, str], ready_url: str, *, what: str, prefix: Sequence[str] = ()
    ) -> None:
        """``prefix``: a command that runs ours (``nsenter ...``)."""
        argv = [*prefix, sys.executable, "-m", "vhost_operator", self.command]
        if self.verbose:
            argv.append("--verbose")
        self._process = ManagedProcess(
            f"vhost-operator {self.command}",
            argv,
            self.log_path,
            {"KUBECONFIG": str(self.kubeconfig), **env},
        )
        self._process.wait_until(lambda: http_ok(ready_url), timeout=60, what=what)

    @property
    def pid(self) -> int:
        assert self._process is not None, "not started"
        return self._process.process.pid

    def kill(self) -> None:
        assert self._process is not None, "not started"
        self._process.kill()

    def freeze(self) -> None:
        """SIGSTOP: the process holds everything and does nothing (a stalled node)."""
        os.kill(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def wait_exit(self, timeout: float) -> int:
        """The exit status, once the process ended by itself within ``timeout`` seconds."""
        assert self._process is not None, "not started"
        return self._process.process.wait(timeout)

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()
            self._process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
