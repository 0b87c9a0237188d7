"""The chart installed by Helm on a control plane without a kubelet, shared by
``tests/integration/test_chart_install.py`` and ``tests/integration/test_chart_rbac.py`` (their
fixtures are in ``tests/integration/conftest.py``): the release's names, the namespaces it goes
into, the values a user would set (pointed at the harness's pebble and nginx), and
:class:`Installed`: the release, its ServiceAccounts' kubeconfigs and the local processes
that run its workloads with them."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.harness.agent import AgentProcess, MailTlsAgentProcess
from tests.harness.audit import AuditedControlPlane
from tests.harness.clusters import Cluster
from tests.harness.gate import GateProcess
from tests.harness.helm import Helm, Manifest, container, literal_env, one
from tests.harness.mail import MailServers
from tests.harness.nginx import NginxServer
from tests.harness.operator import OperatorProcess
from tests.harness.pebble import Pebble
from tests.harness.processes import free_port

RELEASE = "chart-test"
OPERATOR_NS = "chart-operator"
WEB_NS = "chart-web"
OTHER_NS = "chart-other"
MAIL_NS = "chart-mail"
"""Where the mail server pod with the mail TLS agent would run (the chart makes its account)."""
WEBHOOK_CONFIGURATION = "chart-test.vhost-operator.io"
FULLNAME = "chart-test-vhost-operator"
EAB_KID = "chart-kid"
DEFAULTS_RELEASE = "defaults"
DEFAULTS_NS = "chart-defaults"


@dataclass
class Installed:
    cluster: Cluster
    audit: AuditedControlPlane | None
    helm: Helm
    manifests: list[Manifest]
    operator_kubeconfig: Path
    agent_kubeconfig: Path
    gate_kubeconfig: Path
    mail_kubeconfig: Path
    nginx: NginxServer
    mail: MailServers
    pebble: Pebble
    operator: OperatorProcess | None = None
    agent: AgentProcess | None = None
    gate: GateProcess | None = None
    mail_agent: MailTlsAgentProcess | None = None

    def deployment_env(self, name: str, container_name: str) -> dict[str, str]:
        deployment = one(self.manifests, "Deployment", name)
        spec = container(deployment, container_name)
        env = literal_env(spec)
        # What kubelet does for a pod: resolve Secret references.
        for entry in spec.get("env", []):
            reference = entry.get("valueFrom", {}).get("secretKeyRef")
            if reference:
                found = self.cluster.kubectl(
                    "get", "secret", reference["name"], "-n", OPERATOR_NS, "-o", "json"
                )
                data = json.loads(found.stdout)["data"][reference["key"]]
                env[entry["name"]] = base64.b64decode(data).decode()
        return env

    def webhook_tls_dir(self, directory: Path) -> Path:
        """What kubelet mounts at the webhook's certificate directory: the chart's Secret."""
        deployment = one(self.manifests, "Deployment", FULLNAME)
        return mounted_secret(self.cluster, deployment, "webhook-tls", directory)

    def processes(
        self,
    ) -> list[tuple[str, OperatorProcess | AgentProcess | GateProcess | MailTlsAgentProcess]]:
        candidates = (
            ("operator", self.operator),
            ("agent", self.agent),
            ("gate", self.gate),
            ("mail-tls-agent", self.mail_agent),
        )
        return [(name, process) for name, process in candidates if process is not None]

    def logs(self) -> str:
        return "\n".join(f"===== {name} =====\n{p.log()}" for name, p in self.processes())


RESTRICTED = {
    f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn", "audit")
}
"""Pod Security's strictest profile: the API server warns about any workload that breaks it."""


def namespace(name: str) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": RESTRICTED},
    }


def secret(name: str, namespace_name: str, data: dict[str, str]) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace_name},
        "stringData": data,
    }


def install_values(pebble: Pebble, nginx: NginxServer) -> dict[str, Any]:
    """Non-default values a user would set, plus the few that point at local processes: the
    webhook host (the API server calls the process on 127.0.0.1), the ports and nginx's
    directory of the harness's nginx."""
    return {
        "primaryHostnames": ["mail.example.net"],
        "acme": {
            "enabled": True,
            "directoryUrl": pebble.directory_url,
            "email": "hostmaster@example.com",
            "eab": {"keyId": EAB_KID, "hmacKeySecretName": "acme-eab"},
            "caBundleConfigMapName": "pebble-ca",
            "orderTimeout": 30,
            "challengePort": free_port(),
            "selfCheckAddress": f"http://127.0.0.1:{nginx.http_port}",
        },
        "webhook": {
            "configurationName": WEBHOOK_CONFIGURATION,
            "host": "127.0.0.1",
            "port": free_port(),
        },
        "nginx": {
            "enabled": True,
            "namespace": WEB_NS,
            "createNamespace": False,  # made by the test, with the Pod Security labels
            "upstream": f"http://127.0.0.1:{free_port()}",
            "httpPort": nginx.http_port,
            "httpsPort": nginx.https_port,
            "rootDir": str(nginx.root),
            "applyTimeout": 30,
        },
        "gate": {"enabled": True},
        "mailTls": {"enabled": True, "namespace": MAIL_NS},
    }


def mounted_secret(cluster: Cluster, deployment: Manifest, volume: str, directory: Path) -> Path:
    """The files kubelet would mount for the Secret volume ``volume`` of ``deployment``,
    written into ``directory``."""
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    name = volumes[volume]["secret"]["secretName"]
    namespace_name = deployment["metadata"]["namespace"]
    found = cluster.kubectl("get", "secret", name, "-n", namespace_name, "-o", "json")
    directory.mkdir(parents=True, exist_ok=True)
    for key, value in json.loads(found.stdout)["data"].items():
        (directory / key).write_bytes(base64.b64decode(value))
    return directory
