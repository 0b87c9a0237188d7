"""Admission, retry, enable/disable and deletion, through the real ``kubectl`` as a user types it.

The operator runs with its validating webhook (the API server calls it over TLS on 127.0.0.1),
ACME against a real pebble and the nginx steps on.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness import kube
from tests.harness.clusters import Cluster
from tests.harness.operator import OperatorProcess
from tests.harness.pebble import Pebble
from tests.harness.processes import free_port
from tests.harness.waiting import get_object, phase_of, wait_for
from tests.integration.conftest import OperatorFactory
from vhost_operator.kube.objects import FIELD_MANAGER
from vhost_operator.resources.models import FINALIZER
from vhost_operator.resources.naming import site_configmap_name

pytestmark = pytest.mark.cluster


LAST_HANDLED = "lastHandledConfiguration"


def settled(obj: dict[str, object]) -> bool:
    return phase_of(obj) in ("Ready", "Failed")


def start_with_webhook(
    start_operator: OperatorFactory, cluster: Cluster, **overrides: str
) -> OperatorProcess:
    operator = start_operator(
        webhook_enabled="true", webhook_host="127.0.0.1", webhook_port=str(free_port()), **overrides
    )
    # The operator registers its webhooks at start-up, validating first; wait for the mutating.
    wait_for(
        cluster,
        "mutatingwebhookconfiguration",
        "vhost-operator.io",
        lambda o: bool(o.get("webhooks")),
        what="webhooks",
    )
    return operator


def maildomain(name: str, domain: str) -> dict[str, Any]:
    """A MailDomain linked to no host: kopf handles it at once (nothing to provision)."""
    return {
        "apiVersion": "vhost-operator.io/v1alpha1",
        "kind": "MailDomain",
        "metadata": {"name": name},
        "spec": {"name": domain},
    }


def handled_maildomain(cluster: Cluster, name: str) -> dict[str, Any]:
    """The MailDomain once kopf has handled it (its record in the status), with the field
    managers that wrote it (``managedFields``, which ``get_object`` leaves out)."""
    wait_for(
        cluster,
        "md",
        name,
        lambda o: LAST_HANDLED in (o.get("status") or {}),
        what="handled by kopf",
    )
    found = cluster.kubectl("get", "md", name, "-o", "json", "--show-managed-fields")
    handled: dict[str, Any] = json.loads(found.stdout)
    return handled


def finalizer_writers(obj: dict[str, Any]) -> set[str]:
    """The field managers the API server recorded as having set ``metadata.finalizers``: kopf
    when kopf patched its finalizer in; none (Kubernetes 1.34), or the creator, when the
    mutating webhook added it to the create."""
    return {
        entry["manager"]
        for entry in obj["metadata"].get("managedFields") or []
        if "f:finalizers" in (entry.get("fieldsV1") or {}).get("f:metadata", {})
    }


def created(cluster: Cluster, manifest: dict[str, object], tmp_path: Path) -> dict[str, Any]:
    """The object as the API server stored it on ``kubectl create``, from its answer: after
    admission, before anyone else could change it."""
    path = tmp_path / "created.json"
    path.write_text(json.dumps(manifest))
    answer = cluster.kubectl("create", "-f", str(path), "-o", "json")
    stored: dict[str, Any] = json.loads(answer.stdout)
    return stored


def test_mixed_case_hostname_is_refused(
    cluster: Cluster, start_operator: OperatorFactory, tmp_path: Path
) -> None:
    start_with_webhook(start_operator, cluster)
    manifest = tmp_path / "mixed.yaml"
    manifest.write_text(
        "apiVersion: vhost-operator.io/v1alpha1\nkind: VirtualHost\n"
        "metadata: {name: mixed-case}\nspec: {hostname: Mail.Example.COM}\n"
    )
    refused = cluster.kubectl("apply", "-f", str(manifest), check=False)
    print(f"\n$ kubectl apply -f mixed.yaml\n{refused.stderr.strip()}")
    assert refused.returncode != 0
    assert "hostname Mail.Example.COM must be lowercase (use mail.example.com)" in refused.stderr


def test_duplicate_hostname_is_refused(
    cluster: Cluster, start_operator: OperatorFactory, tmp_path: Path
) -> None:
    start_with_webhook(start_operator, cluster)
    kube.apply_manifests(cluster, [kube.virtualhost("first", "shared.example.com")], tmp_path)
    wait_for(cluster, "vh", "first", settled, what="a settled phase", timeout=60)
    path = tmp_path / "second.yaml"
    path.write_text(
        "apiVersion: vhost-operator.io/v1alpha1\nkind: VirtualHost\n"
        "metadata: {name: second}\nspec: {hostname: shared.example.com}\n"
    )
    refused = cluster.kubectl("apply", "-f", str(path), check=False)
    print(f"\n$ kubectl apply -f second.yaml\n{refused.stderr.strip()}")
    assert refused.returncode != 0
    assert "hostname shared.example.com is already used by VirtualHost first" in refused.stderr
    assert get_object(cluster, "vh", "second") is None


def test_a_name_another_host_serves_is_refused(
    cluster: Cluster, start_operator: OperatorFactory, tmp_path: Path
) -> None:
    """Hostnames and additional names share one namespace: the webhook refuses a name that
    another VirtualHost serves, either way round, and an edit that adds one."""
    start_with_webhook(start_operator, cluster)
    owner = kube.virtualhost(
        "names-a", "mail.a.example.com", additionalNames=["imap.a.example.com"]
    )
    kube.apply_manifests(cluster, [owner], tmp_path)
    wait_for(cluster, "vh", "names-a", settled, what="a settled phase", timeout=60)
    cases = [
        (
            kube.virtualhost(
                "names-b", "mail.b.example.com", additionalNames=["imap.a.example.com"]
            ),
            "additional name imap.a.example.com is already used by VirtualHost names-a",
        ),
        (
            kube.virtualhost("names-b", "imap.a.example.com"),
            "hostname imap.a.example.com is already used by VirtualHost names-a",
        ),
        (
            kube.virtualhost(
                "names-b", "mail.b.example.com", additionalNames=["mail.a.example.com"]
            ),
            "additional name mail.a.example.com is already used by VirtualHost names-a",
        ),
    ]
    for manifest, message in cases:
        path = tmp_path / "names-b.yaml"
        path.write_text(yaml.safe_dump(manifest))
        refused = cluster.kubectl("apply", "-f", str(path), check=False)
        print(f"\n$ kubectl apply -f names-b.yaml\n{refused.stderr.strip()}")
        assert refused.returncode != 0 and message in refused.stderr, refused.stderr
        assert get_object(cluster, "vh", "names-b") is None
    kube.apply_manifests(cluster, [kube.virtualhost("names-b", "mail.b.example.com")], tmp_path)
    patch = '{"spec":{"additionalNames":["imap.a.example.com"]}}'
    refused = cluster.kubectl("patch", "vh", "names-b", "--type=merge", "-p", patch, check=False)
    assert refused.returncode != 0 and "(Conflict)" in refused.stderr, refused.stderr
    # A MailDomain links to a hostname: linking to another host's additional name would
    # create a VirtualHost for a name that host serves.
    linked = {
        "apiVersion": "vhost-operator.io/v1alpha1",
        "kind": "MailDomain",
        "metadata": {"name": "a-example-com"},
        "spec": {"name": "a.example.com", "virtualHost": "imap.a.example.com"},
    }
    path = tmp_path / "maildomain.yaml"
    path.write_text(yaml.safe_dump(linked))
    refused = cluster.kubectl("apply", "-f", str(path), check=False)
    print(f"\n$ kubectl apply -f maildomain.yaml\n{refused.stderr.strip()}")
    assert refused.returncode != 0, refused.stdout
    assert (
        "virtualHost imap.a.example.com is a name VirtualHost names-a serves besides its "
        "hostname; link the domain to mail.a.example.com instead"
    ) in refused.stderr


def test_retry_on_a_ready_host_is_a_conflict(
    cluster: Cluster, start_operator: OperatorFactory, tmp_path: Path
) -> None:
    start_with_webhook(start_operator, cluster)
    kube.apply_manifests(cluster, [kube.virtualhost("healthy", "healthy.example.com")], tmp_path)
    ready = wait_for(cluster, "vh", "healthy", settled, what="Ready", timeout=60)
    assert phase_of(ready) == "Ready", ready["status"]
    refused = cluster.kubectl(
        "annotate", "vh", "healthy", "vhost-operator.io/retry=1", "--overwrite", check=False
    )
    command = "kubectl annotate vh healthy vhost-operator.io/retry=1 --overwrite"
    print(f"\n$ {command}\n{refused.stderr.strip()}")
    assert refused.returncode != 0
    assert "(Conflict)" in refused.stderr
    assert "VirtualHost healthy is Ready" in refused.stderr


def test_only_changes_the_rules_read_reach_the_webhook(
    cluster: Cluster, start_operator: OperatorFactory, tmp_path: Path
) -> None:
    """The API server calls the validating webhook for a create, a spec change and a retry
    annotation, and skips (its match condition) updates that change neither: kopf's own
    bookkeeping (its progress annotations; its record of the handled spec is in the status,
    which no webhook sees) and other labels or annotations; for MailDomains too. The mutating
    webhook (kopf's finalizer) is called for the create only."""
    start_with_webhook(start_operator, cluster)
    vh, md = "virtualhosts.vhost-operator.io", "maildomains.vhost-operator.io"
    finalizing = ("finalizer.vhost-operator.io", "CREATE")
    before = kube.webhook_calls(cluster)

    def called() -> dict[tuple[str, str], int]:
        now = kube.webhook_calls(cluster)
        return {key: n - before.get(key, 0) for key, n in now.items() if n > before.get(key, 0)}

    kube.apply_manifests(cluster, [kube.virtualhost("calls", "calls.example.com")], tmp_path)
    ready = wait_for(cluster, "vh", "calls", settled, what="Ready", timeout=60)
    assert phase_of(ready) == "Ready", ready["status"]
    assert LAST_HANDLED in ready["status"], "kopf recorded the host (in its status)"
    cluster.kubectl("annotate", "vh", "calls", "example.com/note=1")
    cluster.kubectl("label", "vh", "calls", "example.com/team=a")
    assert called() == {finalizing: 1, (vh, "CREATE"): 1}
    cluster.kubectl("patch", "vh", "calls", "--type=merge", "-p", '{"spec":{"enabled":false}}')
    assert called() == {finalizing: 1, (vh, "CREATE"): 1, (vh, "UPDATE"): 1}
    refused = cluster.kubectl("annotate", "vh", "calls", "vhost-operator.io/retry=1", check=False)
    assert refused.returncode != 0 and "(Conflict)" in refused.stderr, refused.stderr
    assert called() == {finalizing: 1, (vh, "CREATE"): 1, (vh, "UPDATE"): 2}
    maildomain = {
        "apiVersion": "vhost-operator.io/v1alpha1",
        "kind": "MailDomain",
        "metadata": {"name": "calls-example-com"},
        "spec": {"name": "calls.example.com"},
    }
    try:
        kube.apply_manifests(cluster, [maildomain], tmp_path)
        cluster.kubectl("annotate", "md", "calls-example-com", "example.com/note=1")
        assert called()[(md, "CREATE")] == 1 and (md, "UPDATE") not in called()
        assert called()[finalizing] == 2, "the MailDomain's create, not its annotation"
    finally:
        cluster.kubectl("delete", "md", "calls-example-com", "--ignore-not-found")


def test_a_new_host_has_kopfs_finalizer_as_it_is_created(
    cluster: Cluster, start_operator: OperatorFactory, tmp_path: Path
) -> None:
    """The mutating webhook adds kopf's finalizer in the create itself (the object in the API
    server's answer has it), after finalizers of others, so kopf's first cycle runs the chain
    instead of patching it in. A host created with it (a restore) is not sent to the webhook
    (its match condition) and keeps it once."""
    start_with_webhook(start_operator, cluster)
    restored = kube.virtualhost("restored", "restored.example.com")
    restored["metadata"] = {"name": "restored", "finalizers": [FINALIZER]}
    path = tmp_path / "restored.json"
    path.write_text(json.dumps(restored))
    calls = kube.webhook_calls(cluster)
    admitted = cluster.kubectl("create", "-f", str(path), "--dry-run=server", "-o", "json")
    assert json.loads(admitted.stdout)["metadata"]["finalizers"] == [FINALIZER]
    finalizing = ("finalizer.vhost-operator.io", "CREATE")
    assert kube.webhook_calls(cluster).get(finalizing, 0) == calls.get(finalizing, 0)
    plain = created(cluster, kube.virtualhost("finalized", "finalized.example.com"), tmp_path)
    assert plain["metadata"]["finalizers"] == [FINALIZER]
    other = kube.virtualhost("kept", "kept.example.com")
    other["metadata"] = {"name": "kept", "finalizers": ["example.com/keep"]}
    try:
        assert created(cluster, other, tmp_path)["metadata"]["finalizers"] == [
            "example.com/keep",
            FINALIZER,
        ]
        for name, finalizers in (
            ("finalized", [FINALIZER]),
            ("kept", ["example.com/keep", FINALIZER]),
        ):
            ready = wait_for(cluster, "vh", name, settled, what="Ready", timeout=60)
            assert phase_of(ready) == "Ready", ready["status"]
            assert ready["metadata"]["finalizers"] == finalizers, "kopf added none of its own"
    finally:
        cluster.kubectl(
            "patch", "vh", "kept", "--type=json",
            "-p", '[{"op": "remove", "path": "/metadata/finalizers/0"}]', check=False,
        )  # fmt: skip


def test_a_new_maildomain_has_kopfs_finalizer_as_it_is_created(
    cluster: Cluster, start_operator: OperatorFactory, tmp_path: Path
) -> None:
    """MailDomains carry kopf's finalizer too (the same one): the mutating webhook adds it in
    the create, so kopf never patches it in (no finalizer written by kopf, only by the
    creator's request the webhook changed)."""
    start_with_webhook(start_operator, cluster)
    try:
        domain = created(cluster, maildomain("finalized-md", "finalized-md.example.com"), tmp_path)
        assert domain["metadata"]["finalizers"] == [FINALIZER]
        handled = handled_maildomain(cluster, "finalized-md")
        assert handled["metadata"]["finalizers"] == [FINALIZER]
        assert finalizer_writers(handled) <= {"kubectl-create"}, "kopf patched its finalizer in"
        # The operator's status write names it, not the Python client's default
        # ("OpenAPI-Generator"); kopf writes its record as itself.
        status_writers = {
            entry["manager"]
            for entry in handled["metadata"]["managedFields"]
            if entry.get("subresource") == "status"
        }
        assert status_writers == {FIELD_MANAGER, "kopf"}
    finally:
        cluster.kubectl("delete", "md", "finalized-md", "--ignore-not-found", "--timeout=30s")


def test_with_the_operator_down_a_create_goes_through_and_kopf_adds_the_finalizer_later(
    cluster: Cluster, start_operator: OperatorFactory, tmp_path: Path
) -> None:
    """failurePolicy Ignore: a crashed operator leaves its webhooks registered, nobody answers
    them, and the create still succeeds, without the finalizer; the next operator's kopf
    patches it in (as it did before the webhook) and provisions the host; a MailDomain's
    likewise."""
    start_with_webhook(start_operator, cluster).kill()  # a crash: the webhooks stay registered
    assert cluster.kubectl("get", "mutatingwebhookconfiguration", "vhost-operator.io").stdout
    host = created(cluster, kube.virtualhost("unfinalized", "unfinalized.example.com"), tmp_path)
    assert FINALIZER not in (host["metadata"].get("finalizers") or [])
    try:
        domain = created(cluster, maildomain("unfinalized-md", "unfinalized.example.com"), tmp_path)
        assert FINALIZER not in (domain["metadata"].get("finalizers") or [])
        start_with_webhook(start_operator, cluster)
        ready = wait_for(cluster, "vh", "unfinalized", settled, what="Ready", timeout=60)
        assert phase_of(ready) == "Ready", ready["status"]
        assert ready["metadata"]["finalizers"] == [FINALIZER]
        handled = handled_maildomain(cluster, "unfinalized-md")
        assert handled["metadata"]["finalizers"] == [FINALIZER]
        assert finalizer_writers(handled) == {"kopf"}
    finally:
        cluster.kubectl("delete", "md", "unfinalized-md", "--ignore-not-found", "--timeout=30s")


def test_a_stopped_operator_leaves_no_webhook_to_call(
    cluster: Cluster, start_operator: OperatorFactory
) -> None:
    """The operator writes its webhooks when it starts and removes them when it stops (as
    kopf's managed mode did): the API server then calls no webhook that is gone."""
    operator = start_operator(
        webhook_enabled="true", webhook_host="127.0.0.1", webhook_port=str(free_port())
    )

    def webhooks(kind: str) -> list[dict[str, object]]:
        found = cluster.kubectl(
            "get", kind, "vhost-operator.io", "-o", "json", "--ignore-not-found"
        )  # fmt: skip
        return list(json.loads(found.stdout).get("webhooks") or []) if found.stdout else []

    validating, mutating = "validatingwebhookconfiguration", "mutatingwebhookconfiguration"
    deadline = time.monotonic() + 30
    while not (webhooks(validating) and webhooks(mutating)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert {w["name"] for w in webhooks(validating)} == {
        "virtualhosts.vhost-operator.io",
        "maildomains.vhost-operator.io",
    }
    assert {w["name"] for w in webhooks(mutating)} == {"finalizer.vhost-operator.io"}
    operator.stop()
    assert webhooks(validating) == []
    assert webhooks(mutating) == []


def test_retry_after_the_acme_directory_comes_back(
    cluster: Cluster, start_operator: OperatorFactory, responder_port: int, tmp_path: Path
) -> None:
    late_port = free_port()
    late = Pebble(http_port=responder_port, acme_port=late_port, workdir=tmp_path / "late-ca")
    late.ca_bundle_path.write_bytes(b"")  # pebble writes it on start; the setting must name a file
    start_with_webhook(
        start_operator,
        cluster,
        acme_directory_url=late.directory_url,
        acme_ca_bundle=str(late.ca_bundle_path),
    )
    kube.apply_manifests(cluster, [kube.virtualhost("late", "late.example.com")], tmp_path)
    failed = wait_for(cluster, "vh", "late", settled, what="Failed", timeout=60)
    assert phase_of(failed) == "Failed"
    assert failed["status"]["error"]["step"] == "certificate"
    with late:
        cluster.kubectl("annotate", "vh", "late", "vhost-operator.io/retry=1", "--overwrite")
        ready = wait_for(
            cluster, "vh", "late", lambda o: phase_of(o) == "Ready", what="Ready", timeout=60
        )
    assert "error" not in ready["status"]
    assert ready["status"]["failedAttempts"] == 0, "a success resets the count of failures"
    assert ready["status"]["lastFailureTime"] == failed["status"]["lastFailureTime"]
    assert ready["status"]["observedRetry"] == "1"


def test_disable_enable_and_deletion_leave_nothing_behind(
    cluster: Cluster, start_operator: OperatorFactory, tmp_path: Path
) -> None:
    start_with_webhook(start_operator, cluster)
    kube.apply_manifests(cluster, [kube.virtualhost("toggle", "toggle.example.com")], tmp_path)
    wait_for(cluster, "vh", "toggle", lambda o: phase_of(o) == "Ready", what="Ready", timeout=60)

    def enabled_flag() -> str:
        return cluster.kubectl(
            "get",
            "configmap",
            site_configmap_name("toggle"),
            "-n",
            kube.NAMESPACE,
            "-o",
            "jsonpath={.metadata.annotations.vhost-operator\\.io/enabled}",
        ).stdout

    assert enabled_flag() == "true"
    cluster.kubectl("patch", "vh", "toggle", "--type=merge", "-p", '{"spec":{"enabled":false}}')
    wait_for(
        cluster,
        "vh",
        "toggle",
        lambda o: o["status"]["observedGeneration"] == 2,
        what="generation 2",
    )
    assert enabled_flag() == "false"
    cluster.kubectl("patch", "vh", "toggle", "--type=merge", "-p", '{"spec":{"enabled":true}}')
    wait_for(
        cluster,
        "vh",
        "toggle",
        lambda o: o["status"]["observedGeneration"] == 3,
        what="generation 3",
    )
    assert enabled_flag() == "true"

    cluster.kubectl("delete", "vh", "toggle", "--timeout=30s")
    leftovers = cluster.kubectl(
        "get", "configmaps,secrets", "-n", kube.NAMESPACE, "-o", "name"
    ).stdout.split()
    assert not [name for name in leftovers if "toggle" in name], leftovers
