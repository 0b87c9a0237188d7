"""The Helm chart installed by the real Helm into a real API server.

``helm install`` of the values a user would set (ACME with EAB, nginx with its agent, the gate)
into the local control plane, in namespaces with Pod Security's strictest profile: no warning at
all, the release is deployed, and the API server accepts every object (no kubelet runs there,
so no pod starts; that is expected). The templates are checked in ``test_chart_templates.py``,
the RBAC proof on the same kind of install in ``test_chart_rbac.py``.
"""

from __future__ import annotations

import json

import pytest

from tests.harness.chart_install import OPERATOR_NS, RELEASE, WEB_NS, Installed


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
