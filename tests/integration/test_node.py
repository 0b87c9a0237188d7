"""The harness's real node: pods from locally built images run, Services and cluster DNS work
from the host and from pods, and stopping the node leaves nothing on the machine."""

from __future__ import annotations

import http.client
import ipaddress
import json
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.harness.controlplane import KUBERNETES_SERVICE_IP, LocalControlPlane
from tests.harness.node import GUARD_CHAIN, POD_RANGE, LocalNode, leftovers
from tests.harness.node_images import busybox_image
from tests.harness.processes import StartupError, free_port
from tests.harness.waiting import get_object

pytestmark = [pytest.mark.cluster, pytest.mark.node]

NAMESPACE = "node-test"


@dataclass(frozen=True)
class Web:
    """A web pod behind a NodePort Service, and a client pod to probe it from."""

    cluster_ip: str
    node_port: int
    host_port: int
    pod_ip: str


def _pod(name: str, image: str, script: str, **container: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": name}},
        "spec": {
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": name,
                    "image": image,
                    "imagePullPolicy": "Never",  # imported into containerd, never pulled
                    "command": ["sh", "-c", script],
                    **container,
                }
            ],
        },
    }


def _apply(node: LocalNode, objects: list[dict[str, Any]]) -> None:
    path = node.workdir / "test-objects.json"
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))
    node.plane.kubectl("apply", "-f", str(path))


def _wait_running(plane: LocalControlPlane, name: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    pod: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        found = plane.kubectl("get", "pod", name, "-n", NAMESPACE, "-o", "json", check=False)
        pod = json.loads(found.stdout) if found.returncode == 0 else None
        ready = pod is not None and any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in pod["status"].get("conditions", [])
        )
        if pod is not None and ready:
            running: dict[str, Any] = pod
            return running
        time.sleep(0.5)
    raise AssertionError(f"pod {name} not Ready in {timeout}s: {pod and pod.get('status')}")


@pytest.fixture(scope="module")
def web(node: LocalNode) -> Iterator[Web]:
    plane = node.plane
    image = busybox_image()
    node.import_image(image.path)
    host_port = free_port()
    plane.kubectl("create", "namespace", NAMESPACE)
    # The admission plugin wants the namespace's default ServiceAccount before the first pod.
    deadline = time.monotonic() + 60
    while plane.kubectl("get", "sa", "default", "-n", NAMESPACE, check=False).returncode:
        assert time.monotonic() < deadline, "no default ServiceAccount"
        time.sleep(0.5)
    serve = (
        "mkdir -p /tmp/www && echo web $(hostname) > /tmp/www/index.html"
        " && echo web serving on 8080 && exec httpd -f -v -p 8080 -h /tmp/www"
    )
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": NAMESPACE},
        "spec": {
            "type": "NodePort",
            "selector": {"app": "web"},
            "ports": [{"port": 80, "targetPort": 8080}],
        },
    }
    _apply(
        node,
        [
            _pod(
                "web",
                image.reference,
                serve,
                ports=[{"containerPort": 8080, "hostPort": host_port}],
                readinessProbe={"tcpSocket": {"port": 8080}, "periodSeconds": 1},
            ),
            _pod("client", image.reference, "exec sleep 100000"),
            service,
        ],
    )
    pod = _wait_running(plane, "web")
    _wait_running(plane, "client")
    created = json.loads(
        plane.kubectl("get", "service", "web", "-n", NAMESPACE, "-o", "json").stdout
    )
    yield Web(
        cluster_ip=created["spec"]["clusterIP"],
        node_port=created["spec"]["ports"][0]["nodePort"],
        host_port=host_port,
        pod_ip=pod["status"]["podIP"],
    )
    plane.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)


def _http_get(address: str, port: int, timeout: float = 30) -> str:
    """GET / straight to ``address`` (no proxy), retried while kube-proxy catches up."""
    deadline = time.monotonic() + timeout
    while True:
        connection = http.client.HTTPConnection(address, port, timeout=5)
        try:
            connection.request("GET", "/")
            return connection.getresponse().read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
        finally:
            connection.close()


def _exec(plane: LocalControlPlane, script: str, timeout: float = 30) -> str:
    """Run ``script`` in the client pod (through kubelet: exec works), retried until it
    succeeds or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        ran = plane.kubectl(
            "exec", "-n", NAMESPACE, "client", "--", "sh", "-c", script, check=False
        )
        if ran.returncode == 0 or time.monotonic() > deadline:
            assert ran.returncode == 0, f"{script}: {ran.stdout}{ran.stderr}"
            return ran.stdout
        time.sleep(0.5)


def test_node_registers_ready_at_its_address(node: LocalNode) -> None:
    found = get_object(node.plane, "node", node.name)
    assert found is not None
    conditions = {c["type"]: c["status"] for c in found["status"]["conditions"]}
    assert conditions["Ready"] == "True"
    addresses = {a["type"]: a["address"] for a in found["status"]["addresses"]}
    assert addresses["InternalIP"] == node.address
    print(f"node Ready {node.start_seconds:.1f} s after start")


def test_pod_from_a_local_image_runs_on_the_pod_range(web: Web) -> None:
    assert ipaddress.ip_address(web.pod_ip) in ipaddress.ip_network(POD_RANGE)


def test_host_and_api_server_reach_the_pod_through_its_service_and_ports(
    node: LocalNode, web: Web
) -> None:
    assert _http_get(web.cluster_ip, 80).startswith("web web")
    assert _http_get(node.address, web.node_port).startswith("web web")
    assert _http_get(node.address, web.host_port).startswith("web web")
    # The API server on the host reaches pods too (what webhooks and the services proxy need).
    path = f"/api/v1/namespaces/{NAMESPACE}/services/web:80/proxy/"
    proxied = node.plane.kubectl("get", "--raw", path, check=False)
    assert proxied.stdout.startswith("web web"), proxied.stderr


def test_pod_reaches_the_pod_through_its_cluster_ip(node: LocalNode, web: Web) -> None:
    request = f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {web.cluster_ip} 80"
    assert "web web" in _exec(node.plane, request)


def test_pod_resolves_service_names_through_cluster_dns(node: LocalNode, web: Web) -> None:
    answer = _exec(node.plane, f"nslookup web.{NAMESPACE}.svc.cluster.local")
    assert web.cluster_ip in answer
    # Short names through the search path kubelet writes into the pod's resolv.conf.
    resolv = _exec(node.plane, "cat /etc/resolv.conf")
    assert f"nameserver {node.dns_service_ip}" in resolv
    assert f"search {NAMESPACE}.svc.cluster.local" in resolv


def test_pods_and_host_reach_the_api_server_through_the_kubernetes_service(
    node: LocalNode, web: Web
) -> None:
    """In-cluster clients (the operator's pods) dial the ``kubernetes`` Service's ClusterIP and
    verify the API server's certificate for that address."""
    context = ssl.create_default_context(cadata=node.plane.ca_pem.decode())
    connection = http.client.HTTPSConnection(KUBERNETES_SERVICE_IP, 443, context=context)
    try:
        connection.request("GET", "/version")
        assert json.loads(connection.getresponse().read())["gitVersion"] == "v1.34.4"
    finally:
        connection.close()
    # From a pod (no TLS client in busybox): plain HTTP gets the API server's own refusal.
    request = f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {KUBERNETES_SERVICE_IP} 443"
    assert "HTTP request to an HTTPS server" in _exec(node.plane, request)


@pytest.fixture
def elsewhere() -> Iterator[str]:
    """A route off the machine, simulated: 203.0.113.0/24 (TEST-NET-3) through a veth pair of
    the test's own, so that a packet that escaped the guard is counted, not sent. Yields the
    veth end that would carry it."""
    outside, peer = "vhost-probe0", "vhost-probe1"
    subprocess.run(["ip", "link", "add", outside, "type", "veth", "peer", "name", peer], check=True)
    try:
        for end in (outside, peer):
            Path(f"/proc/sys/net/ipv6/conf/{end}/disable_ipv6").write_text("1")  # no chatter
            subprocess.run(["ip", "link", "set", end, "up"], check=True)
        subprocess.run(["ip", "route", "add", "203.0.113.0/24", "dev", outside], check=True)
        yield outside
    finally:
        subprocess.run(["ip", "link", "delete", outside], check=False)  # the route goes with it


def _sent_packets(link: str) -> int:
    return int(Path(f"/sys/class/net/{link}/statistics/tx_packets").read_text())


def _guard_drops() -> int:
    listed = subprocess.run(
        ["iptables", "-w", "-L", GUARD_CHAIN, "-v", "-x", "-n"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return sum(int(line.split()[0]) for line in listed.splitlines() if "DROP" in line)


def test_pods_cannot_send_anything_off_the_machine(
    node: LocalNode, web: Web, elsewhere: str
) -> None:
    sent, dropped = _sent_packets(elsewhere), _guard_drops()
    tried = node.plane.kubectl(
        "exec", "-n", NAMESPACE, "client", "--", "nc", "-w", "2", "203.0.113.1", "80",
        check=False,
    )  # fmt: skip
    assert tried.returncode != 0
    assert _guard_drops() > dropped
    assert _sent_packets(elsewhere) == sent


def test_kubectl_logs_reads_the_container_log_through_kubelet(node: LocalNode, web: Web) -> None:
    logs = node.plane.kubectl("logs", "-n", NAMESPACE, "web")
    assert "web serving on 8080" in logs.stdout


def test_stopping_leaves_nothing_behind_even_after_a_failed_start(
    node: LocalNode, web: Web
) -> None:
    """Last in this module: stops the session's node with pods running, checks the machine,
    then starts it again for whoever needs it next."""
    node.stop()
    print(f"node stopped in {node.stop_seconds:.1f} s with pods running")
    assert not any(leftovers(node.workdir).values()), leftovers(node.workdir)
    node.stop()  # a second teardown is harmless
    assert not any(leftovers(node.workdir).values()), leftovers(node.workdir)

    # A start that fails late (everything up, Ready not reached in time) cleans up too.
    with pytest.raises(StartupError):
        node.start(timeout=0.5)
    assert not any(leftovers(node.workdir).values()), leftovers(node.workdir)

    node.start()
    assert get_object(node.plane, "node", node.name) is not None
