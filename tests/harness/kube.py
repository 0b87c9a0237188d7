"""Small cluster chores shared by the tests: namespaces, objects, cleanup."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import yaml

from tests.harness.clusters import Cluster
from vhost_operator.resources import labels

NAMESPACE = "vhost-operator"
"""Where the tests' operator keeps site ConfigMaps, TLS Secrets and its ACME account."""


def ensure_namespace(cluster: Cluster, name: str = NAMESPACE) -> None:
    manifest = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    apply_manifests(cluster, [manifest], Path("/tmp"))


def events_about(cluster: Cluster, kind: str, name: str) -> list[dict[str, Any]]:
    """The Events about the object ``kind``/``name`` in any namespace, with their managed
    fields (who wrote them)."""
    listed = cluster.kubectl(
        "get",
        "events",
        "-A",
        "--field-selector",
        f"involvedObject.kind={kind},involvedObject.name={name}",
        "--show-managed-fields",
        "-o",
        "json",
    )
    events: list[dict[str, Any]] = json.loads(listed.stdout)["items"]
    return events


def apply_manifests(cluster: Cluster, manifests: list[dict[str, Any]], tmp_path: Path) -> None:
    path = tmp_path / f"manifests-{id(manifests)}.yaml"
    path.write_text(yaml.safe_dump_all(manifests))
    cluster.kubectl("apply", "-f", str(path))
    path.unlink()


def virtualhost(name: str, hostname: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "vhost-operator.io/v1alpha1",
        "kind": "VirtualHost",
        "metadata": {"name": name},
        "spec": {"hostname": hostname, **spec},
    }


def tls_secret(name: str, chain: bytes, key: bytes, namespace: str = NAMESPACE) -> dict[str, Any]:
    """A TLS Secret as the operator writes it (its label is what the agents select)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels.component_labels(labels.TLS_COMPONENT),
        },
        "stringData": {"tls.crt": chain.decode(), "tls.key": key.decode()},
    }


def delete_all_virtualhosts(cluster: Cluster, *, timeout: float = 60) -> None:
    """Delete every VirtualHost and wait until they are gone (the operator, if one runs, has
    removed what each one made and then its finalizer).

    Waited for by listing them, not by kubectl's ``--wait``: that reads the objects back one by
    one at kubectl's client-side limit of 5 requests a second, 20 s for a hundred."""
    cluster.kubectl("delete", "vh", "--all", "--wait=false")
    deadline = time.monotonic() + timeout
    while left := cluster.kubectl("get", "vh", "-o", "name").stdout:
        if time.monotonic() > deadline:
            raise TimeoutError(f"still there {timeout:.0f}s after their deletion: {left.split()}")
        time.sleep(0.2)


def secret_data(cluster: Cluster, name: str, namespace: str = NAMESPACE) -> dict[str, bytes] | None:
    found = cluster.kubectl(
        "get", "secret", name, "-n", namespace, "-o", "json", "--ignore-not-found"
    )
    if not found.stdout.strip():
        return None
    body = json.loads(found.stdout)
    return {k: base64.b64decode(v) for k, v in (body.get("data") or {}).items()}


UNSCHEDULED = "vhost-operator-tests-no-scheduler"
"""A scheduler nobody runs: pods naming it are never bound to a node."""


def stand_in_pod(
    cluster: Cluster,
    namespace: str,
    name: str,
    labels: dict[str, str],
    spec: dict[str, Any],
    tmp_path: Path,
) -> None:
    """A Pod that no kubelet runs, Ready because the test says so: it stands for a pod whose
    processes the test runs itself (an nginx replica for the operator's watch of them). Delete
    it with the namespace or kubectl.

    It names a scheduler that does not exist, so it stays unscheduled even while the session's
    real node is up (its kubelet would otherwise run it and overwrite the Ready condition)."""
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {**spec, "schedulerName": UNSCHEDULED},
    }
    apply_manifests(cluster, [manifest], tmp_path)
    set_pod_ready(cluster, namespace, name, True)


def set_pod_ready(cluster: Cluster, namespace: str, name: str, ready: bool) -> None:
    """Set a Pod's Ready condition, as the kubelet does from its readiness probes."""
    status = {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    cluster.kubectl(
        "patch", "pod", name, "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": status}),
    )  # fmt: skip


WEBHOOK_CALLS = "apiserver_admission_webhook_admission_duration_seconds_count{"


def webhook_calls(cluster: Cluster) -> dict[tuple[str, str], int]:
    """How many times the API server has called each admission webhook so far, by webhook
    name and operation (its own metrics: a webhook skipped by a match condition is not
    called)."""
    metrics = cluster.kubectl("get", "--raw", "/metrics").stdout
    calls: dict[tuple[str, str], int] = {}
    for line in metrics.splitlines():
        if not line.startswith(WEBHOOK_CALLS):
            continue
        series, _, value = line.rpartition(" ")
        found = dict(label.split("=", 1) for label in series[len(WEBHOOK_CALLS) : -1].split(","))
        key = (found["name"].strip('"'), found["operation"].strip('"'))
        calls[key] = calls.get(key, 0) + int(float(value))
    return calls
