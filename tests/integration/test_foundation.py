"""The CRDs and the first reconcile, on a real API server (``--cluster``, local by default).

With ACME and nginx disabled a VirtualHost is Ready at once, as in the original product.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.harness.clusters import Cluster
from tests.harness.controlplane import REPO
from tests.harness.operator import OperatorProcess
from tests.harness.waiting import get_object, phase_of, wait_for

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def operator(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    process = OperatorProcess(
        cluster.kubeconfig,
        tmp_path_factory.mktemp("operator"),
        {"VHOST_OPERATOR_ACME_ENABLED": "false", "VHOST_OPERATOR_NGINX_ENABLED": "false"},
    ).start()
    yield process
    process.stop()


def apply(
    cluster: Cluster, manifest: dict[str, object], tmp_path: Path, *, check: bool = True
) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump(manifest))
    return cluster.kubectl("apply", "-f", str(path), check=check)


def virtualhost(name: str, hostname: object, **spec: object) -> dict[str, object]:
    return {
        "apiVersion": "vhost-operator.io/v1alpha1",
        "kind": "VirtualHost",
        "metadata": {"name": name},
        "spec": {"hostname": hostname, **spec},
    }


# -- the schema refuses bad input, even with no operator running -----------------------------


def test_mixed_case_hostname_is_refused_with_explicit_message(
    cluster: Cluster, tmp_path: Path
) -> None:
    refused = apply(cluster, virtualhost("mixed", "Mail.Example.com"), tmp_path, check=False)
    assert refused.returncode != 0
    assert "hostname Mail.Example.com must be lowercase (use mail.example.com)" in refused.stderr
    assert get_object(cluster, "vh", "mixed") is None


def test_missing_hostname_is_refused(cluster: Cluster, tmp_path: Path) -> None:
    manifest = virtualhost("nohost", "x.example.com")
    manifest["spec"] = {"domains": ["example.com"]}
    refused = apply(cluster, manifest, tmp_path, check=False)
    assert refused.returncode != 0
    assert "spec.hostname: Required value" in refused.stderr


@pytest.mark.parametrize(
    ("spec", "complaint"),
    [
        ({"hostname": "a.example.com", "enabled": "yes"}, "spec.enabled: Invalid value"),
        ({"hostname": "a.example.com", "domains": "example.com"}, "spec.domains: Invalid value"),
        ({"hostname": "not a hostname"}, "spec.hostname: Invalid value"),
        ({"hostname": "-bad.example.com"}, "spec.hostname: Invalid value"),
        ({"hostname": "a." * 127 + "com"}, "spec.hostname: Too long"),
        (
            {"hostname": "a.example.com", "theme": {"colors": {"primary": "red;}"}}},
            "spec.theme.colors.primary",
        ),
        (
            {"hostname": "a.example.com", "theme": {"logos": {"login": "javascript:alert(1)"}}},
            "spec.theme.logos.login",
        ),
    ],
)
def test_schema_refuses_wrong_values(
    cluster: Cluster, tmp_path: Path, spec: dict[str, object], complaint: str
) -> None:
    manifest = virtualhost("wrong", "a.example.com")
    manifest["spec"] = spec
    refused = apply(cluster, manifest, tmp_path, check=False)
    assert refused.returncode != 0
    assert complaint in refused.stderr
    assert get_object(cluster, "vh", "wrong") is None


def test_hostname_is_immutable(cluster: Cluster, tmp_path: Path) -> None:
    apply(cluster, virtualhost("immutable", "immutable.example.com"), tmp_path)
    try:
        refused = apply(
            cluster, virtualhost("immutable", "other.example.com"), tmp_path, check=False
        )
        assert refused.returncode != 0
        assert "hostname is immutable" in refused.stderr
        current = get_object(cluster, "vh", "immutable")
        assert current is not None and current["spec"]["hostname"] == "immutable.example.com"
    finally:
        cluster.kubectl("delete", "vh", "immutable", "--wait=false")


# -- the operator: straight to Ready when there is nothing to provision ----------------------


def test_examples_become_ready_and_show_columns(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    started = time.monotonic()
    cluster.kubectl("apply", "-f", str(REPO / "examples"))
    names = [
        yaml.safe_load(p.read_text())["metadata"]["name"]
        for p in sorted((REPO / "examples").glob("virtualhost*.yaml"))
    ]
    for name in names:
        # The MailDomain example adds its domain to a host (a new generation) possibly after
        # that host was Ready: wait until the operator has caught up with it too.
        ready = wait_for(
            cluster,
            "vh",
            name,
            lambda o: (
                phase_of(o) == "Ready"
                and o["status"].get("observedGeneration") == o["metadata"]["generation"]
            ),
            what="Ready at its current generation",
            timeout=20,
        )
        status = ready["status"]
        assert status["observedGeneration"] == ready["metadata"]["generation"]
        conditions = {c["type"]: c for c in status["conditions"]}
        assert conditions["Ready"]["status"] == "True"
        assert conditions["Provisioned"]["status"] == "True"
        assert status["chain"] == [] and "error" not in status
        assert "kopf" not in status, "kopf's bookkeeping must stay out of .status"
    elapsed = time.monotonic() - started
    table = cluster.kubectl("get", "vh").stdout.splitlines()
    assert table[0].split() == [
        "NAME",
        "HOSTNAME",
        "DOMAINS",
        "CERT-EXPIRES",
        "STATUS",
        "ENABLED",
        "AGE",
    ]
    row = next(line for line in table if line.startswith("mail-example-com"))
    assert row.split()[:3] == [
        "mail-example-com",
        "mail.example.com",
        '["example.com","example.org"]',
    ]
    assert "Ready" in row.split() and "true" in row.split()
    print(f"examples Ready in {elapsed:.2f}s")
    cluster.kubectl("delete", "-f", str(REPO / "examples"))


def test_spec_update_keeps_status(
    cluster: Cluster, operator: OperatorProcess, tmp_path: Path
) -> None:
    apply(cluster, virtualhost("keeps-status", "keep.example.com"), tmp_path)
    try:
        ready = wait_for(
            cluster, "vh", "keeps-status", lambda o: phase_of(o) == "Ready", what="Ready"
        )
        transition = ready["status"]["conditions"][0]["lastTransitionTime"]
        apply(
            cluster,
            virtualhost("keeps-status", "keep.example.com", domains=["example.com"]),
            tmp_path,
        )
        updated = wait_for(
            cluster,
            "vh",
            "keeps-status",
            lambda o: o["status"].get("observedGeneration") == o["metadata"]["generation"] == 2,
            what="observedGeneration 2",
        )
        assert updated["spec"]["domains"] == ["example.com"]
        assert phase_of(updated) == "Ready"
        assert updated["status"]["conditions"][0]["lastTransitionTime"] == transition
    finally:
        cluster.kubectl("delete", "vh", "keeps-status")
