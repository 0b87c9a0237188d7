"""The API requests the operator makes to provision one new host, from the API server's audit log.

With a thousand hosts at once the API server's CPU is about proportional to the writes, so the
requests per host are a budget: this test fails when one is added (or when one the code claims
to save comes back). It runs on its own control plane, whose audit log records the operator's
identity only (a client certificate in a group of its own), so the test's kubectl calls do not
count. The bench's attribution round counts the same requests at scale (``bench/README.md``).

One host is provisioned first, so that the ACME account is registered before counting; then the
requests of a second host, from its creation until it is Ready and kopf has recorded it (in the
same status write: ``status.lastHandledConfiguration``). No
nginx agent runs here: the ``ready`` step reads the site ConfigMap and the TLS Secret, which the
agent's reports otherwise vouch for. The webhook runs, as in the chart: its mutating half adds
kopf's finalizer at creation, which spares kopf a patch (and a cycle) of its own.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Iterator

import pytest

from tests.harness import kube
from tests.harness.audit import AuditedControlPlane, AuditedRequest, parse_audit_log
from tests.harness.clusters import install_crds
from tests.harness.operator import OperatorProcess
from tests.harness.pebble import Pebble
from tests.harness.processes import free_port
from tests.harness.waiting import phase_of, wait_for
from tests.integration.conftest import operator_settings
from vhost_operator.kube.objects import FIELD_MANAGER
from vhost_operator.resources.naming import (
    next_key_secret_name,
    site_configmap_name,
    tls_secret_name,
)

pytestmark = pytest.mark.cluster

OPERATOR_GROUP = "vhost-operator-tests:operator"
"""The group of the operator's client certificate: the only requests the audit log records."""

LAST_HANDLED = "lastHandledConfiguration"
"""kopf's record of the handled spec, in the status."""

NEW_HOST = collections.Counter(
    {
        # No patch of the VirtualHost itself: kopf's finalizer came with the create (the
        # mutating webhook), so kopf's first cycle runs the chain instead of patching it in, and
        # kopf's record of the handled spec goes with the last status write.
        # bootstrap starts; bootstrap done + certificate starts; certificate done + final
        # starts; final and ready done, Ready, with kopf's record of the handled spec (one patch
        # by kopf after the handler returned)
        "patch virtualhosts/status": 4,
        "create events": 4,  # StepSucceeded for bootstrap, certificate and final; Ready
        "create configmaps": 1,  # the bootstrap config
        "patch configmaps": 1,  # the final config
        "get configmaps": 1,  # the ready step (no agent here)
        # The TLS Secret created with the key before the order, then the order URL, then the
        # certificate: no read first, no next-key Secret to create and delete.
        "create secrets": 1,
        "patch secrets": 2,
        "get secrets": 1,  # the ready step (no agent here)
    }
)


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuditedControlPlane]:
    plane = AuditedControlPlane(tmp_path_factory.mktemp("audited"), [OPERATOR_GROUP])
    plane.start()
    try:
        install_crds(plane)
        kube.ensure_namespace(plane)
        yield plane
    finally:
        plane.stop()


def provisioned(plane: AuditedControlPlane, name: str) -> bool:
    host = wait_for(
        plane,
        "vh",
        name,
        lambda obj: (
            phase_of(obj) in ("Ready", "Failed") and LAST_HANDLED in (obj.get("status") or {})
        ),
        what="Ready and recorded by kopf",
        timeout=90,
    )
    return phase_of(host) == "Ready"


@pytest.fixture(scope="module")
def counted_requests(
    audited: AuditedControlPlane,
    pebble: Pebble,
    responder_port: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> list[AuditedRequest]:
    """The operator's requests while it provisions the host ``counted`` (after ``warm``)."""
    tmp_path = tmp_path_factory.mktemp("counted")
    kubeconfig = audited.client_kubeconfig(
        tmp_path / "operator.kubeconfig", "vhost-operator", ("system:masters", OPERATOR_GROUP)
    )
    (tmp_path / "operator").mkdir()
    settings = operator_settings(
        pebble,
        responder_port,
        webhook_enabled="true",
        webhook_host="127.0.0.1",
        webhook_port=str(free_port()),
    )
    operator = OperatorProcess(kubeconfig, tmp_path / "operator", settings).start()
    try:
        # Its webhooks registered (the mutating one last) before any host is created.
        wait_for(
            audited,
            "mutatingwebhookconfiguration",
            "vhost-operator.io",
            lambda o: bool(o.get("webhooks")),
            what="webhooks",
        )
        kube.apply_manifests(audited, [kube.virtualhost("warm", "warm.example.com")], tmp_path)
        assert provisioned(audited, "warm")
        mark = audited.audit_log.stat().st_size

        counted_host = kube.virtualhost("counted", "counted.example.com")
        kube.apply_manifests(audited, [counted_host], tmp_path)
        assert provisioned(audited, "counted")

        with audited.audit_log.open() as log:
            log.seek(mark)
            return list(parse_audit_log(log.read()))
    finally:
        operator.stop()  # the control plane, the hosts with it, goes at the module's end


def test_a_new_host_costs_the_operator_these_api_requests_and_no_more(
    counted_requests: list[AuditedRequest],
) -> None:
    names = {
        "virtualhosts": "counted",
        "virtualhosts/status": "counted",
        "configmaps": site_configmap_name("counted"),
        "secrets": tls_secret_name("counted"),
    }
    counted = collections.Counter(
        f"{r.verb} {r.resource}"
        for r in counted_requests
        if r.resource == "events"
        or (r.resource in names and r.name in (names[r.resource], next_key_secret_name("counted")))
    )
    assert counted == NEW_HOST, f"{sum(counted.values())} requests: {dict(counted)}"


def _writers(plane: AuditedControlPlane, *resource: str) -> set[tuple[str, str]]:
    """(field manager, subresource) of each entry of the object's ``managedFields``."""
    found = json.loads(
        plane.kubectl("get", *resource, "-o", "json", "--show-managed-fields").stdout
    )
    return {
        (entry["manager"], entry.get("subresource", ""))
        for entry in found["metadata"]["managedFields"]
    }


def test_the_operator_writes_as_one_field_manager(
    audited: AuditedControlPlane, counted_requests: list[AuditedRequest]
) -> None:
    """Every object the operator wrote names it as the writer, never the Python client's
    default (``OpenAPI-Generator``, which every program on that client shares): the status of
    the VirtualHost, the site ConfigMap, the TLS Secret and the host's Events. kopf writes the
    chain's last status with its record as ``kopf``; kubectl created the host, with kopf's
    finalizer (the webhook's)."""
    assert counted_requests  # provisioned by the operator
    namespace = ("-n", kube.NAMESPACE)
    assert _writers(audited, "vh", "counted") == {
        ("kubectl-client-side-apply", ""),
        ("kopf", "status"),
        (FIELD_MANAGER, "status"),
    }
    configmap = _writers(audited, "configmap", site_configmap_name("counted"), *namespace)
    assert {manager for manager, _ in configmap} == {FIELD_MANAGER}
    secret = _writers(audited, "secret", tls_secret_name("counted"), *namespace)
    assert {manager for manager, _ in secret} == {FIELD_MANAGER}
    events = kube.events_about(audited, "VirtualHost", "counted")
    assert len(events) == NEW_HOST["create events"]
    assert {entry["manager"] for e in events for entry in e["metadata"]["managedFields"]} == {
        FIELD_MANAGER
    }
