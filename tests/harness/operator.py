"""The operator as a real process (``python -m vhost_operator run``), as it runs in a cluster."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from tests.harness.processes import ComponentProcess, free_port


class OperatorProcess(ComponentProcess):
    """Starts the operator against a kubeconfig with ``VHOST_OPERATOR_*`` settings."""

    command = "run"

    def __init__(
        self,
        kubeconfig: Path,
        workdir: Path,
        settings: dict[str, str],
        *,
        verbose: bool = True,
    ) -> None:
        super().__init__(kubeconfig, workdir / "operator.log", verbose=verbose)
        self.workdir = workdir
        self.settings = settings
        self.liveness_port = free_port()
        self.metrics_port = free_port()

    def start(self) -> OperatorProcess:
        env = {
            "VHOST_OPERATOR_LIVENESS_PORT": str(self.liveness_port),
            "VHOST_OPERATOR_METRICS_PORT": str(self.metrics_port),
            **self.settings,
        }
        self._launch(
            env, f"http://127.0.0.1:{self.liveness_port}/healthz", what="liveness endpoint"
        )
        return self

    def metrics(self) -> str:
        """The operator's ``/metrics`` page, as Prometheus would scrape it."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text: str = response.read().decode()
            return text
