"""The sidecar agents as real processes, as they run in a cluster: the nginx agent
(``python -m vhost_operator nginx-agent``) next to a real nginx, the mail TLS agent
(``mail-tls-agent``) next to a real Postfix and Dovecot."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

from tests.harness.mail import MailServers
from tests.harness.nginx import UNUSED_CHALLENGE_UPSTREAM, NginxServer
from tests.harness.processes import ComponentProcess, free_port, scrape


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
        challenge_upstream: str = UNUSED_CHALLENGE_UPSTREAM,
        verbose: bool = True,
    ) -> None:
        """``challenge_upstream``: the operator's responder, where the TLS sites' challenges on
        nginx's plain HTTP port go (no test without an operator fetches them)."""
        super().__init__(kubeconfig, workdir / "nginx-agent.log", verbose=verbose)
        self.workdir = workdir
        self.nginx = nginx
        self.health_port = free_port()
        self.settings = {
            "VHOST_AGENT_NAMESPACE": namespace,
            "VHOST_AGENT_ROOT_DIR": str(nginx.root),
            "VHOST_AGENT_HTTPS_PORT": str(nginx.https_port),
            "VHOST_AGENT_HTTP_PORT": str(nginx.http_port),
            "VHOST_AGENT_CHALLENGE_UPSTREAM": challenge_upstream,
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
        return scrape(self.health_port)

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


class MailTlsAgentProcess(ComponentProcess):
    """Starts the mail TLS agent for ``servers`` (both Postfix and Dovecot), watching
    ``namespace`` and reporting into ConfigMap ``report``."""

    command = "mail-tls-agent"

    def __init__(
        self,
        kubeconfig: Path,
        servers: MailServers,
        namespace: str,
        report: str,
        settings: dict[str, str] | None = None,
    ) -> None:
        super().__init__(kubeconfig, servers.workdir / "mail-tls-agent.log", verbose=True)
        self.health_port = free_port()
        self.settings = {
            "VHOST_MAILTLS_NAMESPACE": namespace,
            "VHOST_MAILTLS_ROOT_DIR": str(servers.agent_root),
            "VHOST_MAILTLS_REPORT_CONFIGMAP": report,
            "VHOST_MAILTLS_POSTFIX_CONFIG_DIR": str(servers.postfix_conf),
            "VHOST_MAILTLS_DOVECOT_CONFIG": str(servers.dovecot_conf),
            "VHOST_MAILTLS_HEALTH_PORT": str(self.health_port),
            **(settings or {}),
        }

    def start(self) -> MailTlsAgentProcess:
        # Ready: the Secrets listed, and Postfix and Dovecot reloaded with a generation.
        self._launch(self.settings, f"http://127.0.0.1:{self.health_port}/readyz", what="readiness")
        return self

    def metrics(self) -> dict[str, float]:
        return scrape(self.health_port)

    def reloads(self) -> dict[str, int]:
        """Reloads so far, by service."""
        metrics = self.metrics()
        return {
            service: int(metrics[f"vhost_mail_tls_{service}_reloads_total"])
            for service in ("postfix", "dovecot")
        }
