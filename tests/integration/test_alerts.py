"""The chart's monitoring objects: metrics Services, ServiceMonitor and PrometheusRule.

The rules are rendered by the real Helm, checked by ``promtool check rules`` and unit-tested by
``promtool test rules`` against ``alerts_test.yaml`` (input series, expected alerts); promtool
is built from its Go module (``hack/build-promtool.sh``). Every metric a rule names must be one
the code exports. The ServiceMonitor and the PrometheusRule are validated by the real API server
against the Prometheus Operator's CRDs (its Go module, pinned in ``hack/prometheus-operator/``).
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

from tests.harness import kube
from tests.harness.clusters import Cluster
from tests.harness.controlplane import REPO
from tests.harness.helm import CHART, Helm, Manifest, container, find, one
from tests.harness.promtool import promtool, promtool_binary
from vhost_operator.agent.metrics import AgentStats
from vhost_operator.metrics import HostCollector
from vhost_operator.tenancy.directory import HostDirectory
from vhost_operator.tenancy.metrics import GateMetrics

HERE = Path(__file__).parent
CRDS_SCRIPT = REPO / "hack" / "prometheus-operator-crds.sh"
MONITORING_CRDS = ("servicemonitors", "prometheusrules")
UNIT_TESTS = HERE / "alerts_test.yaml"
RULE_DEFAULTS: dict[str, Any] = {"monitoring": {"prometheusRule": {"enabled": True}}}
"""The rule with its default thresholds: the ones alerts_test.yaml expects."""
EVERYTHING: dict[str, Any] = {
    "nginx": {"enabled": True, "namespace": "web"},
    "gate": {"enabled": True},
    "monitoring": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
}


@pytest.fixture(scope="module")
def promtool_path() -> Path:
    return promtool_binary()


def test_promtool_is_the_pinned_version(promtool_path: Path, tmp_path: Path) -> None:
    go_mod = (CHART.parents[1] / "hack" / "promtool" / "go.mod").read_text()
    assert not re.search(r"^replace\b", go_mod, re.MULTILINE)
    pinned = re.search(
        r"^require github.com/prometheus/prometheus v0\.3(\d\d)\.(\d+)$", go_mod, re.M
    )
    assert pinned is not None
    version = promtool(promtool_path, "--version", cwd=tmp_path)
    release = f"3.{int(pinned[1])}.{pinned[2]}"
    assert f"promtool, version {release}" in version.stdout + version.stderr


def test_helm_lint_with_monitoring_on(helm: Helm) -> None:
    linted = helm.run("lint", str(CHART), "--strict", "--values", str(helm.values_file(EVERYTHING)))
    findings = [
        line
        for line in linted.stdout.splitlines()
        if line.startswith("[") and not line.startswith("[INFO] Chart.yaml: icon")
    ]
    assert findings == [], linted.stdout


def rule_groups(manifests: list[Manifest]) -> dict[str, Any]:
    """The PrometheusRule's groups as a Prometheus rule file."""
    rule = one(manifests, "PrometheusRule")
    return {"groups": rule["spec"]["groups"]}


def test_monitoring_is_off_by_default_but_the_metrics_service(helm: Helm) -> None:
    manifests = helm.template()
    assert find(manifests, "ServiceMonitor") == [] and find(manifests, "PrometheusRule") == []
    service = one(manifests, "Service", "vhost-operator-metrics")
    deployment = one(manifests, "Deployment", "vhost-operator")
    ports = {p["name"]: p["containerPort"] for p in container(deployment, "operator")["ports"]}
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": ports["metrics"], "targetPort": "metrics", "protocol": "TCP"}
    ]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    # metricsPort 0 switches /metrics off: no Service for it then.
    off = helm.template({"operator": {"metricsPort": 0}})
    assert find(off, "Service", "vhost-operator-metrics") == []


def test_the_service_monitor_scrapes_the_operator_the_agent_and_the_gate(helm: Helm) -> None:
    manifests = helm.template(EVERYTHING)
    monitor = one(manifests, "ServiceMonitor")
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["vhost-operator", "web"]}
    selected = [
        s
        for s in find(manifests, "Service")
        if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
    ]
    assert sorted(s["metadata"]["name"] for s in selected) == [
        "vhost-operator-gate-metrics",
        "vhost-operator-metrics",
        "vhost-operator-nginx-metrics",
    ]
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    for service in selected:
        assert [p["name"] for p in service["spec"]["ports"]] == ["metrics"]
    # The agent's Service reaches the port the agent serves /metrics on, in the nginx pods.
    agent_service = one(manifests, "Service", "vhost-operator-nginx-metrics")
    nginx = one(manifests, "Deployment", "vhost-operator-nginx")
    agent_ports = [p["containerPort"] for p in container(nginx, "agent")["ports"]]
    assert agent_service["metadata"]["namespace"] == "web"
    assert agent_service["spec"]["ports"][0]["targetPort"] in agent_ports
    assert agent_service["spec"]["selector"] == nginx["spec"]["selector"]["matchLabels"]
    # The gate's reaches its one port, where it serves /metrics next to its API.
    gate_service = one(manifests, "Service", "vhost-operator-gate-metrics")
    gate = one(manifests, "Deployment", "vhost-operator-gate")
    assert gate_service["spec"]["ports"][0]["targetPort"] in [
        p["name"] for p in container(gate, "gate")["ports"]
    ]
    assert gate_service["spec"]["selector"] == gate["spec"]["selector"]["matchLabels"]


def test_a_service_monitor_without_the_services_is_refused(helm: Helm) -> None:
    values = {"monitoring": {"metricsService": False, "serviceMonitor": {"enabled": True}}}
    refused = helm.run(
        "template", "x", str(CHART), "--values", str(helm.values_file(values)), check=False
    )
    assert refused.returncode != 0
    assert "monitoring.serviceMonitor.enabled needs monitoring.metricsService" in refused.stderr


def exported_metrics() -> set[str]:
    """Every metric name the operator, the agent and the gate expose."""
    names = {f"vhost_agent_{field.name}" for field in dataclasses.fields(AgentStats)}
    gate = GateMetrics(HostDirectory()).registry
    for family in [*REGISTRY.collect(), *gate.collect()]:
        # A labelled metric has no samples before its first use: take the family's name.
        names.add(f"{family.name}_total" if family.type == "counter" else family.name)
        names.update(sample.name for sample in family.samples)
    names.update(family.name for family in HostCollector(list).describe())
    return names


def test_every_metric_a_rule_names_is_exported(helm: Helm) -> None:
    groups = rule_groups(helm.template(RULE_DEFAULTS))["groups"]
    named = {
        name
        for group in groups
        for rule in group["rules"]
        for name in re.findall(r"\bvhost_(?:operator|agent|gate)_\w+", rule["expr"])
    }
    assert len(named) == 8
    assert named <= exported_metrics(), named - exported_metrics()


def test_promtool_checks_and_unit_tests_the_rules(
    helm: Helm, promtool_path: Path, tmp_path: Path
) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule_groups(helm.template(RULE_DEFAULTS))))
    shutil.copy(UNIT_TESTS, tmp_path / UNIT_TESTS.name)
    checked = promtool(promtool_path, "check", "rules", "rules.yaml", cwd=tmp_path)
    print(f"\n$ promtool check rules rules.yaml\n{checked.stdout}{checked.stderr}")
    assert checked.returncode == 0
    assert "SUCCESS: 8 rules found" in checked.stdout
    tested = promtool(promtool_path, "test", "rules", UNIT_TESTS.name, cwd=tmp_path)
    print(f"$ promtool test rules {UNIT_TESTS.name}\n{tested.stdout}{tested.stderr}")
    assert tested.returncode == 0
    assert "SUCCESS" in tested.stdout + tested.stderr


def test_a_broken_expectation_fails_promtool(
    helm: Helm, promtool_path: Path, tmp_path: Path
) -> None:
    """The unit tests can fail: with a threshold other than the one they expect, they do."""
    values = {"monitoring": {"prometheusRule": {"enabled": True, "certificateExpiryDays": 3}}}
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule_groups(helm.template(values))))
    shutil.copy(UNIT_TESTS, tmp_path / UNIT_TESTS.name)
    tested = promtool(promtool_path, "test", "rules", UNIT_TESTS.name, cwd=tmp_path)
    assert tested.returncode != 0
    assert "VhostCertificateExpiringSoon" in tested.stdout + tested.stderr


@pytest.fixture
def monitoring_crds(cluster: Cluster) -> Iterator[None]:
    """The Prometheus Operator's ServiceMonitor and PrometheusRule CRDs (the pinned module's),
    installed for the test and removed after it, unless the cluster had them already."""
    crds = Path(
        subprocess.run(
            ["bash", str(CRDS_SCRIPT)], check=True, stdout=subprocess.PIPE, text=True
        ).stdout.strip()
    )
    names = [f"{plural}.monitoring.coreos.com" for plural in MONITORING_CRDS]
    present = cluster.kubectl("get", "crd", *names, "--ignore-not-found", "-o", "name").stdout
    installed = []
    for plural, name in zip(MONITORING_CRDS, names, strict=True):
        if name not in present:
            path = crds / f"monitoring.coreos.com_{plural}.yaml"
            cluster.kubectl("apply", "--server-side", "-f", str(path))
            installed.append(name)
    try:
        if installed:
            cluster.kubectl(
                "wait", "--for=condition=Established", "--timeout=60s", "crd", *installed
            )
        yield
    finally:
        if installed:
            cluster.kubectl("delete", "crd", *installed, "--ignore-not-found", check=False)


@pytest.mark.cluster
def test_the_api_server_accepts_the_monitoring_objects(
    cluster: Cluster, helm: Helm, monitoring_crds: None, tmp_path: Path
) -> None:
    """Server-side dry run against the real CRDs' schemas: a misspelt field is refused."""
    kube.ensure_namespace(cluster)
    manifests = helm.template(EVERYTHING, namespace=kube.NAMESPACE)
    objects = [*find(manifests, "ServiceMonitor"), *find(manifests, "PrometheusRule")]
    assert len(objects) == 2
    path = tmp_path / "monitoring.yaml"
    path.write_text(yaml.safe_dump_all(objects))
    accepted = cluster.kubectl(
        "apply", "--dry-run=server", "--validate=strict", "-f", str(path), check=False
    )
    assert accepted.returncode == 0, accepted.stderr
    assert "servicemonitor.monitoring.coreos.com/vhost-operator created (server dry run)" in (
        accepted.stdout
    )
    # The same check refuses a broken object, so it is a real one.
    objects[0]["spec"]["endpoints"][0]["intervall"] = "30s"
    path.write_text(yaml.safe_dump_all(objects))
    refused = cluster.kubectl(
        "apply", "--dry-run=server", "--validate=strict", "-f", str(path), check=False
    )
    assert refused.returncode != 0
    assert "intervall" in refused.stderr
