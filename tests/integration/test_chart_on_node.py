"""The chart installed by Helm on a real node, used as a user uses it (the README's quick start):
one scenario, walked in order on one release (``tests/harness/chart_release.py`` says what stands
in for the CA, the web app and the load balancer).

install (two operator replicas) → every pod Ready → ``kubectl apply -f examples/`` → every
VirtualHost Ready and served by the nginx pod with a certificate that verifies against pebble's
root → ``helm test`` → ``helm upgrade`` rolls the pods while the hosts stay Ready and served →
the leading operator pod deleted in the middle of an order: the other replica finishes that
order → the nginx pod deleted: its replacement serves every site from the moment it is Ready →
the leading operator pod deleted, then SIGKILLed, each during a burst of 100 new hosts: the other
replica takes the Lease over within 15 s and every host turns Ready with one certificate →
``helm uninstall`` leaves no pods, and the VirtualHosts and CRDs stay.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from tests.harness import kube
from tests.harness.chart_release import (
    EXAMPLES,
    NAMESPACE,
    RELEASE,
    ChartOnNode,
    chart_on_node,
    strip_finalizers_and_delete,
)
from tests.harness.node import LocalNode
from tests.harness.waiting import phase_of
from vhost_operator.resources.models import FINALIZER
from vhost_operator.resources.naming import tls_secret_name

pytestmark = [pytest.mark.cluster, pytest.mark.node]

EXAMPLE_HOSTS = {
    "mail-example-com": "mail.example.com",
    "webmail-example-net": "webmail.example.net",
}
CRASH_HOST = ("crash-example-com", "crash.example.com")
COMPONENT = "app.kubernetes.io/component"
OPERATOR = f"{COMPONENT}=operator"
NGINX = f"{COMPONENT}=nginx"
ORDER_URL_PATH = "{.metadata.annotations.vhost-operator\\.io/order-url}"

figures: dict[str, float] = {}
"""What the scenario measured, printed at its end."""


# -- helpers ----------------------------------------------------------------------------------


def pod_ready(pod: dict[str, Any]) -> bool:
    conditions = pod["status"].get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def workload_pods(release: ChartOnNode) -> list[dict[str, Any]]:
    """The release's pods but the finished ``helm test`` pod."""
    return [p for p in release.pods() if p["metadata"]["labels"].get(COMPONENT) != "test"]


def virtualhosts(release: ChartOnNode) -> dict[str, dict[str, Any]]:
    listed = json.loads(release.kubectl("get", "vh", "-o", "json").stdout)["items"]
    return {vh["metadata"]["name"]: vh for vh in listed}


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until ``condition()`` held; fails after ``timeout``."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, f"no {what} within {timeout}s"
        time.sleep(0.2)
    return time.monotonic() - started


def all_ready(release: ChartOnNode, names: set[str]) -> bool:
    hosts = virtualhosts(release)
    failed = {n: h["status"] for n, h in hosts.items() if phase_of(h) == "Failed"}
    assert not failed, f"hosts failed: {failed}"
    return names <= hosts.keys() and all(phase_of(hosts[n]) == "Ready" for n in names)


def secret_leaf(release: ChartOnNode, vh_name: str) -> x509.Certificate:
    found = release.kubectl(
        "get",
        "secret",
        tls_secret_name(vh_name),
        "-n",
        release.nginx_namespace,
        "-o",
        "jsonpath={.data.tls\\.crt}",
    )
    return x509.load_pem_x509_certificates(base64.b64decode(found.stdout))[0]


def assert_served(release: ChartOnNode, hosts: dict[str, str], address: str | None = None) -> None:
    """Every host answers over HTTPS with SNI, with the certificate in its Secret, verified
    against pebble's root, and proxies to the web app."""
    for vh_name, hostname in hosts.items():
        if address is None:
            status, body, leaf = release.https_get(hostname)
        else:
            status, body, leaf = release.https_get(hostname, address, 443)
        assert (status, body.strip()) == (200, f"webmail {hostname}")
        assert leaf == secret_leaf(release, vh_name), f"{hostname}: not the stored certificate"


# -- the scenario -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def release(node: LocalNode, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChartOnNode]:
    workdir = tmp_path_factory.mktemp("chart-on-node")
    # A fresh cluster, as a user's: hosts other modules of the session left behind would be
    # provisioned too and blur the order counts (their operators are gone: no finalizers).
    for kind in ("maildomains", "virtualhosts"):
        strip_finalizers_and_delete(node, kind)
    with chart_on_node(node, workdir) as installed:
        yield installed
        figures.update(installed.timings)
        print("\nchart on node:", ", ".join(f"{k} {v:.1f}" for k, v in figures.items()))


def test_install_brings_every_pod_to_ready(release: ChartOnNode) -> None:
    figures["helm install -> pods Ready s"] = release.install()
    pods = release.pods()
    components = sorted(p["metadata"]["labels"][COMPONENT] for p in pods)
    assert components == ["nginx", "operator", "operator"]
    assert all(pod_ready(p) for p in pods), [p["status"] for p in pods]


def test_examples_become_ready_and_are_served_by_the_nginx_pod(release: ChartOnNode) -> None:
    orders_before = release.pebble.log_count("Added order")
    release.kubectl("apply", "-f", str(EXAMPLES))
    figures["examples -> Ready s"] = wait_until(
        lambda: all_ready(release, set(EXAMPLE_HOSTS)), 180, "Ready examples"
    )
    assert release.pebble.log_count("Added order") - orders_before == len(EXAMPLE_HOSTS)
    assert_served(release, EXAMPLE_HOSTS)


def test_the_webhook_answers_through_its_service(release: ChartOnNode, tmp_path: Path) -> None:
    """The API server calls the webhook in the operator pod: a second VirtualHost for a hostname
    in use is refused by our rule (the CRD schema could not know), and a new one gets kopf's
    finalizer from the mutating webhook (a server-side dry run: admitted, not stored)."""
    duplicate = {
        "apiVersion": "vhost-operator.io/v1alpha1",
        "kind": "VirtualHost",
        "metadata": {"name": "duplicate"},
        "spec": {"hostname": "mail.example.com"},
    }
    path = tmp_path / "duplicate.json"
    path.write_text(json.dumps(duplicate))
    refused = release.kubectl("apply", "-f", str(path), check=False)
    assert refused.returncode != 0
    assert "already used by VirtualHost mail-example-com" in refused.stderr, refused.stderr
    path.write_text(json.dumps(kube.virtualhost("fresh", "fresh.example.com")))
    admitted = release.kubectl("create", "-f", str(path), "--dry-run=server", "-o", "json")
    assert json.loads(admitted.stdout)["metadata"]["finalizers"] == [FINALIZER]


def test_helm_test_passes(release: ChartOnNode) -> None:
    # No --logs: the chart deletes a passed test pod (so that uninstall leaves no pod), before
    # Helm would read its logs; a failed one stays for `kubectl logs`.
    tested = release.helm.run(
        "test", RELEASE, "--namespace", NAMESPACE, "--timeout=3m", timeout=200, check=False
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "Phase:          Succeeded" in tested.stdout, tested.stdout


def test_upgrade_rolls_the_pods_and_the_hosts_stay_ready_and_served(release: ChartOnNode) -> None:
    before = {p["metadata"]["uid"] for p in workload_pods(release)}
    failures: list[str] = []
    checks = 0
    rolling = True

    def watch() -> None:
        nonlocal checks
        while rolling:
            checks += 1
            try:
                assert_served(release, EXAMPLE_HOSTS)
            except (OSError, AssertionError) as error:
                failures.append(repr(error))
            time.sleep(0.2)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        # A changed operator setting and a changed nginx main config: both Deployments roll.
        figures["helm upgrade roll s"] = release.upgrade(
            {"operator": {"logFormat": "json"}, "nginx": {"workerConnections": 2048}}
        )
    finally:
        rolling = False
        watcher.join()
    # helm's --wait ends when the new pods are Ready; the old ones may still be terminating.
    figures["old pods gone after helm upgrade s"] = wait_until(
        lambda: not before & {p["metadata"]["uid"] for p in workload_pods(release)},
        60,
        "every pod replaced",
    )
    pods = workload_pods(release)
    assert sorted(p["metadata"]["labels"][COMPONENT] for p in pods) == [
        "nginx",
        "operator",
        "operator",
    ]
    assert all(pod_ready(p) for p in pods)
    assert all_ready(release, set(EXAMPLE_HOSTS))
    assert_served(release, EXAMPLE_HOSTS)
    figures["served checks during the roll"] = checks
    assert not failures, f"{len(failures)} of {checks} checks failed during the roll: {failures}"


def lease_holder(release: ChartOnNode) -> str:
    """The pod holding the operators' Lease (its identity is ``<pod name>_<process id>``)."""
    found = release.kubectl(
        "get", "lease", f"{RELEASE}-leader", "-n", NAMESPACE, "--ignore-not-found",
        "-o", "jsonpath={.spec.holderIdentity}",
    )  # fmt: skip
    return found.stdout.strip()


def leader_pod(release: ChartOnNode) -> dict[str, Any]:
    wait_until(lambda: bool(lease_holder(release)), 60, "a leader")
    pod_name = lease_holder(release).rsplit("_", 1)[0]
    (pod,) = [p for p in release.pods(OPERATOR) if p["metadata"]["name"] == pod_name]
    return pod


def test_leading_operator_pod_deleted_mid_order_the_other_finishes_that_order(
    release: ChartOnNode, tmp_path: Path
) -> None:
    vh_name, hostname = CRASH_HOST
    hairpin = release.hairpin
    orders_before = release.pebble.log_count("Added order")
    hairpin.holding.add(hostname)
    old_pod = leader_pod(release)
    manifest = {
        "apiVersion": "vhost-operator.io/v1alpha1",
        "kind": "VirtualHost",
        "metadata": {"name": vh_name},
        "spec": {"hostname": hostname},
    }
    path = tmp_path / "crash.json"
    path.write_text(json.dumps(manifest))
    release.kubectl("apply", "-f", str(path))

    def order_url() -> str:
        found = release.kubectl(
            "get", "secret", tls_secret_name(vh_name), "-n", release.nginx_namespace,
            "--ignore-not-found", "-o", f"jsonpath={ORDER_URL_PATH}",
        )  # fmt: skip
        return found.stdout

    wait_until(lambda: bool(order_url()) and hairpin.held > 0, 60, "an order held in self-check")
    placed = order_url()
    # Deleted as a user (or a node drain) deletes it: SIGTERM, then the ReplicaSet's new pod.
    deleted = time.monotonic()
    release.kubectl("delete", "pod", old_pod["metadata"]["name"], "-n", NAMESPACE)
    figures["operator pod deletion s"] = time.monotonic() - deleted
    hairpin.holding.clear()
    hairpin.released.set()
    stored = release.kubectl(
        "get",
        "secret",
        tls_secret_name(vh_name),
        "-n",
        release.nginx_namespace,
        "-o",
        "jsonpath={.data.tls\\.crt}",  # the key waits in it, beside no certificate
    )
    assert not stored.stdout.strip(), "the deleted pod must not have finished the order"
    wait_until(lambda: all_ready(release, {vh_name}), 180, "Ready after the leader was deleted")
    figures["leader pod deleted -> host Ready s"] = time.monotonic() - deleted
    ready = virtualhosts(release)[vh_name]
    certificate = next(e for e in ready["status"]["chain"] if e["step"] == "certificate")
    assert certificate["message"].endswith(f"issued by order {placed}"), certificate
    figures["orders for the interrupted host"] = release.pebble.log_count("Added order") - (
        orders_before
    )
    assert figures["orders for the interrupted host"] == 1, "no second order"
    assert_served(release, {vh_name: hostname})


def test_nginx_pod_deleted_its_replacement_serves_every_site_once_ready(
    release: ChartOnNode,
) -> None:
    hosts = {**EXAMPLE_HOSTS, CRASH_HOST[0]: CRASH_HOST[1]}
    (old_pod,) = release.pods(NGINX)
    release.kubectl(
        "delete", "pod", old_pod["metadata"]["name"], "-n", release.nginx_namespace, "--wait=false"
    )
    started = time.monotonic()
    new_pod: dict[str, Any] | None = None
    while new_pod is None:
        assert time.monotonic() - started < 120, "no new Ready nginx pod"
        fresh = [
            p for p in release.pods(NGINX) if p["metadata"]["uid"] != old_pod["metadata"]["uid"]
        ]
        new_pod = next((p for p in fresh if pod_ready(p)), None)
        time.sleep(0.1)
    figures["nginx pod replaced -> Ready s"] = time.monotonic() - started
    # Straight at the new pod the moment it is Ready (the Service may still be catching up):
    # Ready must mean every site restored from its ConfigMap and Secret.
    assert_served(release, hosts, address=new_pod["status"]["podIP"])
    wait_until(lambda: _served(release, hosts), 30, "sites served through the Service again")


def _served(release: ChartOnNode, hosts: dict[str, str]) -> bool:
    try:
        assert_served(release, hosts)
    except OSError:
        return False
    return True


BURST = 100
"""New hosts applied at once for each takeover under load (measured here: see the prints)."""


def burst_with_takeover(
    release: ChartOnNode, tmp_path: Path, prefix: str, interrupt: Callable[[dict[str, Any]], None]
) -> None:
    """``BURST`` hosts at once; once a few are Ready, ``interrupt`` the leading operator pod.
    The other replica takes the Lease over within 15 s, and every host turns Ready, served,
    with exactly one certificate issued for it."""
    issued_before = len(release.pebble.issued_serials())
    names = {f"{prefix}-{i}": f"{prefix}-{i}.example.com" for i in range(BURST)}
    path = tmp_path / f"{prefix}.json"
    items = [
        {
            "apiVersion": "vhost-operator.io/v1alpha1",
            "kind": "VirtualHost",
            "metadata": {"name": name},
            "spec": {"hostname": hostname},
        }
        for name, hostname in names.items()
    ]
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    old_pod = leader_pod(release)
    old_holder = lease_holder(release)
    applied = time.monotonic()
    release.kubectl("apply", "-f", str(path))

    def ready_count() -> int:
        hosts = virtualhosts(release)
        return sum(phase_of(hosts[n]) == "Ready" for n in names if n in hosts)

    wait_until(lambda: ready_count() >= 5, 300, f"the first {prefix} hosts Ready")
    in_flight = BURST - ready_count()
    interrupted = time.monotonic()
    interrupt(old_pod)
    takeover = wait_until(
        lambda: lease_holder(release) not in ("", old_holder), 60, "a new Lease holder"
    )
    figures[f"{prefix}: Lease taken over s"] = takeover
    figures[f"{prefix}: hosts in flight"] = in_flight
    wait_until(lambda: all_ready(release, set(names)), 900, f"every {prefix} host Ready")
    figures[f"{prefix}: -> all Ready s"] = time.monotonic() - interrupted
    figures[f"{prefix}: apply -> all Ready s"] = time.monotonic() - applied
    hosts = virtualhosts(release)
    serials = [int(hosts[n]["status"]["certificate"]["serial"], 16) for n in names]
    issued = release.pebble.issued_serials()[issued_before:]
    figures[f"{prefix}: certificates issued"] = len(issued)
    assert len(set(serials)) == BURST and sorted(serials) == sorted(issued), (
        f"{len(issued)} certificates issued for {BURST} hosts"
    )
    assert takeover < 15, f"takeover took {takeover:.1f}s"
    assert_served(release, dict(list(names.items())[:: BURST // 10]))


def test_leading_operator_pod_deleted_in_a_100_host_burst_every_host_ready_once(
    release: ChartOnNode, tmp_path: Path
) -> None:
    """Deleted as a drain does (SIGTERM): it releases the Lease once its calls ended."""

    def delete(pod: dict[str, Any]) -> None:
        release.kubectl(
            "delete", "pod", pod["metadata"]["name"], "-n", NAMESPACE, "--wait=false"
        )  # fmt: skip

    burst_with_takeover(release, tmp_path, "deleted", delete)


def test_leading_operator_killed_in_a_100_host_burst_every_host_ready_once(
    release: ChartOnNode, tmp_path: Path
) -> None:
    """SIGKILLed (a crash, the OOM killer): the Lease expires, the other replica takes it."""

    def kill(pod: dict[str, Any]) -> None:
        [status] = pod["status"]["containerStatuses"]
        release.node.kill_container(status["containerID"])

    burst_with_takeover(release, tmp_path, "killed", kill)


def test_uninstall_leaves_no_pods_and_keeps_virtualhosts_and_crds(release: ChartOnNode) -> None:
    release.uninstall()
    try:
        wait_until(lambda: not release.pods(), 120, "no pods left")
    except AssertionError:
        left = {p["metadata"]["name"]: p["status"]["phase"] for p in release.pods()}
        raise AssertionError(f"pods left after helm uninstall: {left}") from None
    assert set(EXAMPLE_HOSTS) | {CRASH_HOST[0]} <= virtualhosts(release).keys()
    crds = release.kubectl("get", "crd", "-o", "name").stdout.split()
    assert "customresourcedefinition.apiextensions.k8s.io/virtualhosts.vhost-operator.io" in crds
    assert "customresourcedefinition.apiextensions.k8s.io/maildomains.vhost-operator.io" in crds
