"""The Helm chart's templates, with the real Helm (built from its Go module) and no cluster.

``helm lint`` and ``helm template`` of default and non-default values, parsed and checked: the
pinned Helm, a clean lint, a values schema that refuses typos, hardened pods, no cluster-wide
Secret access, webhook rights narrowed to the chart's own configuration, and settings that exist
in the settings classes (a renamed setting breaks these tests, not a cluster); the rendered
nginx.conf and a site pass ``nginx -t``. The install is in ``test_chart_install.py``, the RBAC
proof in ``test_chart_rbac.py``.
"""

from __future__ import annotations

import base64
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pydantic_settings import BaseSettings

from tests.harness.helm import CHART, Helm, Manifest, container, env_names, find, literal_env, one
from tests.harness.nginx import nginx_binary, self_signed_certificate
from tests.harness.processes import free_port
from vhost_operator.agent import files
from vhost_operator.agent.settings import AgentSettings
from vhost_operator.nginx import (
    SERVER_NAMES_HASH_BUCKET_SIZE,
    SERVER_NAMES_HASH_MAX_SIZE,
    SiteConfig,
    render_final,
)
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
    "mailTls": {"enabled": True, "namespace": "mail"},
}

SETTINGS_NOT_IN_CHART: dict[str, str] = {
    # setting name -> why the chart has no value for it (operator.extraEnv can still set it).
}

# -- helm itself ---------------------------------------------------------------------------------


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
        {"operator": {"replicas": 0}},
        {"operator": {"podAntiAffinity": "sometimes"}},
        {"operator": {"leaderElection": {"retryPeriod": 0}}},
        {"operator": {"topologySpreadConstraints": [{"maxSkew": 1}]}},
        {"operator": {"podDisruptionBudget": {"minAvailable": "half"}}},
    ):
        refused = helm.run(
            "template", "x", str(CHART), "--values", str(helm.values_file(bad)), check=False
        )
        assert refused.returncode != 0, bad
        assert "values don't meet the specifications of the schema" in refused.stderr, bad


def test_lease_timings_out_of_order_are_refused(helm: Helm) -> None:
    values = {"operator": {"leaderElection": {"renewDeadline": 12}}}
    refused = helm.run(
        "template", "x", str(CHART), "--values", str(helm.values_file(values)), check=False
    )
    assert refused.returncode != 0
    assert "retryPeriod < renewDeadline < leaseDuration" in refused.stderr


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
        "PodDisruptionBudget",  # the operator's two replicas
        "Role",  # deleting a host's nginx objects
        "Role",  # Events
        "Role",  # the leader election's Lease
        "RoleBinding",
        "RoleBinding",
        "RoleBinding",
        "Secret",  # the webhook's certificate, shared by the replicas
        "Service",  # metrics
        "Service",  # webhook
        "ServiceAccount",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ]
    deployment = one(default_manifests, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    # Nothing to write with ACME and nginx off; only leftovers of earlier settings to delete.
    nginx_role = one(default_manifests, "Role", "vhost-operator")
    assert [(r["resources"], r["verbs"]) for r in rules_of(nginx_role)] == [
        (["configmaps"], ["get", "delete"]),
        (["secrets"], ["get", "delete"]),
    ]
    # Leader election makes a rollout safe: the new pod is up before an old one stops.
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }


def operator_pod(manifests: list[Manifest]) -> Manifest:
    spec: Manifest = one(manifests, "Deployment", "vhost-operator")["spec"]["template"]["spec"]
    return spec


OPERATOR_SELECTOR = {
    "app.kubernetes.io/name": "vhost-operator",
    "app.kubernetes.io/instance": "vhost-operator",
    "app.kubernetes.io/component": "operator",
}


def test_replicas_are_spread_and_kept_through_disruptions(
    helm: Helm, default_manifests: list[Manifest]
) -> None:
    budget = one(default_manifests, "PodDisruptionBudget")
    assert budget["spec"] == {"minAvailable": 1, "selector": {"matchLabels": OPERATOR_SELECTOR}}
    [preferred] = operator_pod(default_manifests)["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert preferred["podAffinityTerm"] == {
        "topologyKey": "kubernetes.io/hostname",
        "labelSelector": {"matchLabels": OPERATOR_SELECTOR},
    }

    zone = {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"}
    hard = helm.template(
        {
            "operator": {
                "replicas": 3,
                "podAntiAffinity": "hard",
                "topologySpreadConstraints": [zone],
            }
        }
    )
    pod = operator_pod(hard)
    [required] = pod["affinity"]["podAntiAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    assert required["labelSelector"] == {"matchLabels": OPERATOR_SELECTOR}
    assert pod["topologySpreadConstraints"] == [
        {**zone, "labelSelector": {"matchLabels": OPERATOR_SELECTOR}}
    ]
    own = {"nodeAffinity": {"x": 1}}
    assert operator_pod(helm.template({"operator": {"affinity": own}}))["affinity"] == own

    single = helm.template({"operator": {"replicas": 1}})
    assert find(single, "PodDisruptionBudget") == []
    assert "affinity" not in operator_pod(single)
    assert one(single, "Deployment", "vhost-operator")["spec"]["replicas"] == 1


def test_replicas_elect_a_leader_over_their_own_lease_only(
    default_manifests: list[Manifest],
) -> None:
    env = literal_env(container(one(default_manifests, "Deployment", "vhost-operator"), "operator"))
    assert env["VHOST_OPERATOR_LEADER_ELECTION_ENABLED"] == "true"
    lease = env["VHOST_OPERATOR_LEASE_NAME"]
    assert lease == "vhost-operator-leader"
    role = one(default_manifests, "Role", "vhost-operator-leader-election")
    assert role["metadata"]["namespace"] == "vhost-operator"
    assert rules_of(role) == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": [lease],
            "verbs": ["get", "update"],
        },
    ]


def test_every_replica_serves_the_webhook_with_one_certificate(
    helm: Helm, default_manifests: list[Manifest]
) -> None:
    """The webhook configuration carries one CA bundle: every replica serves a certificate of
    that CA, for the name the API server checks (the chart's Secret, or the user's)."""
    secret = one(default_manifests, "Secret", "vhost-operator-webhook-tls")
    assert secret["type"] == "kubernetes.io/tls"
    data = {key: base64.b64decode(value) for key, value in secret["data"].items()}
    leaf = x509.load_pem_x509_certificate(data["tls.crt"])
    ca = x509.load_pem_x509_certificate(data["ca.crt"])
    leaf.verify_directly_issued_by(ca)
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["vhost-operator-webhook.vhost-operator.svc"]
    key = serialization.load_pem_private_key(data["tls.key"], None)
    assert key.public_key().public_numbers() == leaf.public_key().public_numbers()  # type: ignore[union-attr]
    pod = operator_pod(default_manifests)
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["webhook-tls"]["secret"]["secretName"] == "vhost-operator-webhook-tls"
    env = literal_env(container(one(default_manifests, "Deployment", "vhost-operator"), "operator"))
    assert env["VHOST_OPERATOR_WEBHOOK_CERT_DIR"] == "/etc/vhost-operator/webhook-tls"

    ip = one(helm.template({"webhook": {"host": "127.0.0.1"}}), "Secret")
    leaf = x509.load_pem_x509_certificate(base64.b64decode(ip["data"]["tls.crt"]))
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert find(helm.template({"webhook": {"certSecretName": "mine"}}), "Secret") == []


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
        ("web", "vhost-operator-mail-tls"): {
            "apiGroups": [""],
            "resources": ["secrets"],
            "verbs": ["list", "watch"],
        },
    }


def test_the_mail_tls_agent_reaches_its_report_and_nothing_else(
    full_manifests: list[Manifest],
) -> None:
    role = one(full_manifests, "Role", "vhost-operator-mail-tls")
    assert role["metadata"]["namespace"] == "web"  # where the TLS Secrets are
    assert rules_of(role)[1] == {
        "apiGroups": [""],
        "resources": ["configmaps"],
        "resourceNames": ["vhost-mail-tls"],
        "verbs": ["get", "patch"],
    }
    binding = one(full_manifests, "RoleBinding", "vhost-operator-mail-tls")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "vhost-operator-mail-tls", "namespace": "mail"}
    ]
    account = one(full_manifests, "ServiceAccount", "vhost-operator-mail-tls")
    assert account["metadata"]["namespace"] == "mail"
    report = one(full_manifests, "ConfigMap", "vhost-mail-tls")
    assert report["metadata"]["labels"]["vhost-operator.io/component"] == "mail-tls-report"


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
    optional = {"acme_ca_bundle", "acme_profile", "self_check_address", "webhook_cert_dir"}
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
                "selfCheckTimeout": 4.5,
                "profile": "shortlived",
            },
            "webhook": {"certSecretName": "webhook-tls"},
        }
    )
    deployment = one(manifests, "Deployment", "vhost-operator")
    env = literal_env(container(deployment, "operator"))
    assert env["VHOST_OPERATOR_ACME_CA_BUNDLE"] == "/etc/vhost-operator/acme-ca/ca.crt"
    assert env["VHOST_OPERATOR_SELF_CHECK_ADDRESS"] == "http://nginx.web.svc:80"
    assert env["VHOST_OPERATOR_SELF_CHECK_TIMEOUT"] == "4.5"
    assert env["VHOST_OPERATOR_ACME_PROFILE"] == "shortlived"
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
    # The agent writes the default server of the port the operator's sites listen on.
    assert agent["VHOST_AGENT_HTTPS_PORT"] == operator["VHOST_OPERATOR_NGINX_HTTPS_PORT"]
    nginx = container(deployment, "nginx")
    assert nginx["command"] == ["nginx"]
    conf_arg = nginx["args"][nginx["args"].index("-c") + 1]
    assert conf_arg == agent["VHOST_AGENT_NGINX_CONF"]
    conf = one(full_manifests, "ConfigMap", "vhost-operator-nginx")["data"]["nginx.conf"]
    assert f"pid {agent['VHOST_AGENT_NGINX_PID_FILE']};" in conf
    assert f"include {agent['VHOST_AGENT_ROOT_DIR']}/sites-enabled/*.conf;" in conf
    assert f"server_names_hash_bucket_size {SERVER_NAMES_HASH_BUCKET_SIZE};" in conf
    assert f"server_names_hash_max_size {SERVER_NAMES_HASH_MAX_SIZE};" in conf
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
    # The agent's layout, with the definitions the site configs use: the HTTPS port's default
    # server is the agent's, so the chart's nginx.conf must not have one (duplicate).
    files.prepare(root, https_port, http_port=http_port, challenge_upstream="127.0.0.1:8089")
    (root / "sites-enabled" / f"{hostname}.conf").write_text(render_final(site))
    checked = subprocess.run(
        [nginx_binary(), "-t", "-c", str(conf), "-e", "stderr"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr


# -- several replicas: rollouts, disruptions, placement ---------------------------------------


def test_several_replicas_get_disruption_budgets_and_spread(helm: Helm) -> None:
    one_each = helm.template({"nginx": {"enabled": True}, "gate": {"enabled": True}})
    budgets = {budget["metadata"]["name"] for budget in find(one_each, "PodDisruptionBudget")}
    assert budgets == {"vhost-operator"}, "nginx and gate have one replica: it would block drains"

    values = {
        "nginx": {
            "enabled": True,
            "replicas": 3,
            "podAntiAffinity": "hard",
            "topologySpreadConstraints": [
                {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway"}
            ],
        },
        "gate": {"enabled": True, "replicas": 2},
    }
    manifests = helm.template(values)
    for component in ("nginx", "gate"):
        name = f"vhost-operator-{component}"
        deployment = one(manifests, "Deployment", name)
        selector = deployment["spec"]["selector"]["matchLabels"]
        budget = one(manifests, "PodDisruptionBudget", name)
        assert budget["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": selector}}
        assert budget["metadata"]["namespace"] == deployment["metadata"]["namespace"]
        assert deployment["spec"]["strategy"]["rollingUpdate"] == {
            "maxSurge": 1,
            "maxUnavailable": 0,
        }, "a new pod is ready before an old one goes"
        anti = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
        terms = (
            anti["requiredDuringSchedulingIgnoredDuringExecution"]
            if component == "nginx"
            else [
                t["podAffinityTerm"]
                for t in anti["preferredDuringSchedulingIgnoredDuringExecution"]
            ]
        )
        assert terms == [
            {"labelSelector": {"matchLabels": selector}, "topologyKey": "kubernetes.io/hostname"}
        ]
    nginx = one(manifests, "Deployment", "vhost-operator-nginx")["spec"]["template"]["spec"]
    assert nginx["topologySpreadConstraints"] == [
        {
            "labelSelector": {
                "matchLabels": one(manifests, "PodDisruptionBudget", "vhost-operator-nginx")[
                    "spec"
                ]["selector"]["matchLabels"]
            },
            "maxSkew": 1,
            "topologyKey": "zone",
            "whenUnsatisfiable": "ScheduleAnyway",
        }
    ]

    explicit: dict[str, Any] = {
        "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {}}
    }
    manifests = helm.template({"gate": {"enabled": True, "affinity": explicit}})
    gate = one(manifests, "Deployment", "vhost-operator-gate")["spec"]["template"]["spec"]
    assert gate["affinity"] == explicit, "an explicit affinity replaces the preset"
    manifests = helm.template({"gate": {"enabled": True, "podAntiAffinity": ""}})
    assert (
        "affinity"
        not in one(manifests, "Deployment", "vhost-operator-gate")["spec"]["template"]["spec"]
    )


def test_each_agent_reports_as_its_pod_and_the_operator_watches_those_pods(
    full_manifests: list[Manifest],
) -> None:
    nginx = one(full_manifests, "Deployment", "vhost-operator-nginx")
    agent = container(nginx, "agent")
    [replica] = [e for e in agent["env"] if e["name"] == "VHOST_AGENT_REPLICA"]
    assert replica["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    operator = container(one(full_manifests, "Deployment", "vhost-operator"), "operator")
    selector = literal_env(operator)["VHOST_OPERATOR_NGINX_REPLICA_SELECTOR"]
    labels = nginx["spec"]["selector"]["matchLabels"]
    assert dict(pair.split("=") for pair in selector.split(",")) == labels
    role = one(full_manifests, "Role", "vhost-operator")
    assert role["metadata"]["namespace"] == "web"
    assert {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]} in rules_of(role)


def test_a_stopping_nginx_drains_then_quits_gracefully(full_manifests: list[Manifest]) -> None:
    nginx = one(full_manifests, "Deployment", "vhost-operator-nginx")
    spec = nginx["spec"]["template"]["spec"]
    command = container(nginx, "nginx")["lifecycle"]["preStop"]["exec"]["command"]
    assert command[:2] == ["sh", "-c"]
    script = command[2]
    assert script.startswith("sleep 5;"), "endpoints are removed before nginx stops"
    assert 'kill -QUIT "$(cat /run/nginx/nginx.pid)"' in script, "the requests in flight finish"
    assert "while [ -e /run/nginx/nginx.pid ]" in script, "SIGTERM only once nginx has exited"
    assert spec["terminationGracePeriodSeconds"] == 30
    # The agent's readiness gates the pod: ready only after its first full apply and report.
    assert container(nginx, "agent")["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_network_policies_allow_only_the_architectures_flows(helm: Helm) -> None:
    assert find(helm.template(NON_DEFAULT_VALUES), "NetworkPolicy") == [], "off by default"
    refused = helm.run(
        "template", "x", str(CHART), "--values",
        str(helm.values_file({**NON_DEFAULT_VALUES, "networkPolicy": {"enabled": True}})),
        check=False,
    )  # fmt: skip
    assert "networkPolicy.enabled needs networkPolicy.apiServerCidrs" in refused.stderr

    webmail = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "mail"}}}]
    prometheus = [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]
    policy = {
        "enabled": True,
        "apiServerCidrs": ["10.0.0.1/32"],
        "webmail": webmail,
        "metricsFrom": prometheus,
    }
    manifests = helm.template({**NON_DEFAULT_VALUES, "networkPolicy": policy})
    dns = {
        "to": [{"namespaceSelector": {}}],
        "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
    }
    api = {
        "to": [{"ipBlock": {"cidr": "10.0.0.1/32"}}],
        "ports": [{"port": 6443, "protocol": "TCP"}],
    }

    nginx = one(manifests, "NetworkPolicy", "vhost-operator-nginx")
    deployment = one(manifests, "Deployment", "vhost-operator-nginx")
    assert nginx["metadata"]["namespace"] == "web"
    assert nginx["spec"]["podSelector"] == deployment["spec"]["selector"]
    assert nginx["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert nginx["spec"]["ingress"] == [
        {"ports": [{"port": 80, "protocol": "TCP"}, {"port": 443, "protocol": "TCP"}]},
        {"from": prometheus, "ports": [{"port": 8081, "protocol": "TCP"}]},
    ]
    operator = one(manifests, "Deployment", "vhost-operator")
    responder = {
        "to": [
            {
                "namespaceSelector": {
                    "matchLabels": {
                        "kubernetes.io/metadata.name": operator["metadata"]["namespace"]
                    }
                },
                "podSelector": operator["spec"]["selector"],
            }
        ],
        "ports": [{"port": 8089, "protocol": "TCP"}],
    }
    assert literal_env(container(operator, "operator"))["VHOST_OPERATOR_CHALLENGE_LISTEN_PORT"] == (
        "8089"
    )
    assert nginx["spec"]["egress"] == [dns, api, responder, {"to": webmail}]

    gate = one(manifests, "NetworkPolicy", "vhost-operator-gate")
    gate_deployment = one(manifests, "Deployment", "vhost-operator-gate")
    assert gate["spec"]["podSelector"] == gate_deployment["spec"]["selector"]
    assert gate["spec"]["ingress"] == [
        {"from": webmail, "ports": [{"port": 8090, "protocol": "TCP"}]},
        {"from": prometheus, "ports": [{"port": 8090, "protocol": "TCP"}]},
    ]
    assert gate["spec"]["egress"] == [dns, api]


def test_network_policy_admits_only_the_operators_flows(
    helm: Helm, default_manifests: list[Manifest]
) -> None:
    """Off by default; on, the operator pods take the webhook, probes and /metrics from anyone
    (the API server and the kubelet are no pods), challenges only from the chart's nginx pods,
    and connect out only to DNS, the API server and CA ports, and nginx's."""
    assert find(default_manifests, "NetworkPolicy") == []
    scraper = {"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}
    manifests = helm.template(
        {
            **NON_DEFAULT_VALUES,
            "operator": {"networkPolicy": {"enabled": True, "metricsFrom": [scraper]}},
        }
    )
    policy = one(manifests, "NetworkPolicy")["spec"]
    assert policy["podSelector"] == {"matchLabels": OPERATOR_SELECTOR}
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    ingress = {rule["ports"][0]["port"]: rule.get("from") for rule in policy["ingress"]}
    nginx_pods = {**OPERATOR_SELECTOR, "app.kubernetes.io/component": "nginx"}
    assert ingress == {
        "liveness": None,
        "webhook": None,
        "challenges": [
            {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "web"}},
                "podSelector": {"matchLabels": nginx_pods},
            }
        ],
        "metrics": [scraper],
    }
    egress = [(p["port"], p["protocol"]) for rule in policy["egress"] for p in rule["ports"]]
    assert all("to" not in rule for rule in policy["egress"])
    assert sorted(egress) == sorted(
        [(53, "UDP"), (53, "TCP"), (6443, "TCP"), (443, "TCP"), (80, "TCP"), (443, "TCP")]
    )
    deployment = one(manifests, "Deployment", "vhost-operator")
    named = {p["name"] for p in container(deployment, "operator")["ports"]}
    assert set(ingress) <= named, "every admitted port is one the operator container names"
