"""The operator as a real process (``python -m vhost_operator run``), as it runs in a cluster."""

from __future__ import annotations

import sys
import urllib.request
from pathlib import Path

from tests.harness.processes import ManagedProcess, free_port, http_ok


class OperatorProcess:
    """Starts the operator against a kubeconfig with ``VHOST_OPERATOR_*`` settings."""

    def __init__(
        self,
        kubeconfig: Path,
        workdir: Path,
        settings: dict[str, str],
        *,
        verbose: bool = True,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.workdir = workdir
        self.settings = settings
        self.verbose = verbose
        """Debug logging (the tests read it); the benchmark runs without, as in production."""
        self.liveness_port = free_port()
        self.metrics_port = free_port()
        self._process: ManagedProcess | None = None
        self.log_path = workdir / "operator.log"

    def start(self) -> OperatorProcess:
        env = {
            "KUBECONFIG": str(self.kubeconfig),
            "VHOST_OPERATOR_LIVENESS_PORT": str(self.liveness_port),
            "VHOST_OPERATOR_METRICS_PORT": str(self.metrics_port),
            **self.settings,
        }
        argv = [sys.executable, "-m", "vhost_operator", "run"]
        if self.verbose:
            argv.append("--verbose")
        self._process = ManagedProcess("vhost-operator", argv, self.log_path, env)
        self._process.wait_until(
            lambda: http_ok(f"http://127.0.0.1:{self.liveness_port}/healthz"),
            timeout=60,
            what="liveness endpoint",
        )
        return self

    def metrics(self) -> str:
        """The operator's ``/metrics`` page, as Prometheus would scrape it."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text: str = response.read().decode()
            return text

    @property
    def pid(self) -> int:
        assert self._process is not None, "not started"
        return self._process.process.pid

    def kill(self) -> None:
        assert self._process is not None
        self._process.kill()

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()
            self._process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
