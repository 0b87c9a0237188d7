"""The nginx agent as a real process (``python -m vhost_operator nginx-agent``), next to a real
nginx, as it runs as a sidecar in a cluster."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

from tests.harness.nginx import NginxServer
from tests.harness.processes import ComponentProcess, free_port


class AgentProcess(ComponentProcess):
    """Starts the agent for ``nginx`` against a kubeconfig, watching ``namespace``."""

    command = "nginx-agent"

    def __init__(
        self,
        kubeconfig: Path,
        workdir: Path,
        nginx: NginxServer,
        namespace: str,
        settings: dict[str, str] | None = None,
        *,
        verbose: bool = True,
    ) -> None:
        super().__init__(kubeconfig, workdir / "nginx-agent.log", verbose=verbose)
        self.workdir = workdir
        self.nginx = nginx
        self.health_port = free_port()
        self.settings = {
            "VHOST_AGENT_NAMESPACE": namespace,
            "VHOST_AGENT_ROOT_DIR": str(nginx.root),
            "VHOST_AGENT_NGINX_BINARY": nginx.binary,
            "VHOST_AGENT_NGINX_CONF": str(nginx.conf),
            "VHOST_AGENT_NGINX_PID_FILE": str(nginx.pid_file),
            "VHOST_AGENT_HEALTH_PORT": str(self.health_port),
            **(settings or {}),
        }

    def start(self) -> AgentProcess:
        # Ready: both watches listed and nginx confirmed a reload of what the agent wrote.
        url = f"http://127.0.0.1:{self.health_port}/readyz"
        self._launch(self.settings, url, what="readiness", prefix=self.nginx.enter())
        return self

    def metrics(self) -> dict[str, float]:
        """The agent's ``/metrics``, name → value."""
        url = f"http://127.0.0.1:{self.health_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                values[name] = float(value)
        return values

    def readiness(self) -> tuple[int, str]:
        """``/readyz``: (status, body)."""
        url = f"http://127.0.0.1:{self.health_port}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def reloads(self) -> int:
        return int(self.metrics()["vhost_agent_reloads_total"])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
