"""Several nginx replicas, each with its agent reporting under its replica's name, and the
operator waiting for every ready replica: on the local control plane with real nginx, agents,
operator and pebble.

There is no kubelet here, so the test plays its part for the two nginx pods: they exist as
unscheduled Pods whose Ready condition the test sets, as a kubelet would from the agents'
readiness probes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness import kube
from tests.harness.agent import AgentProcess
from tests.harness.clusters import Cluster
from tests.harness.nginx import NginxServer, served_certificate
from tests.harness.pebble import Pebble
from tests.harness.processes import free_port
from tests.harness.waiting import get_object, phase_of, wait_for
from tests.integration.conftest import OperatorFactory
from vhost_operator.resources import labels
from vhost_operator.resources.naming import site_configmap_name

pytestmark = pytest.mark.cluster

POD_LABEL = "test.vhost-operator.io/nginx"
REPLICAS = ("nginx-a", "nginx-b")
APPLY_TIMEOUT = 15
"""How long a step waits for the replicas (the operator's nginx_apply_timeout): the broken
replica's host fails after it. Replica b's agent, started 3 s after a reported, reports about
6 s after the host's creation here, well within it."""


@pytest.fixture(scope="module")
def nginx_b(nginx: NginxServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NginxServer]:
    """Replica b: the site configs name replica a's ports and certificate paths, so it runs
    where its directory is seen at a's and its ports are its own."""
    workdir = tmp_path_factory.mktemp("nginx-b")
    with NginxServer(workdir, free_port(), free_port(), seen_at=nginx.workdir) as server:
        yield server


@pytest.fixture(scope="module")
def pebble(nginx: NginxServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pebble]:
    """Overrides conftest's: this CA validates through replica a's HTTP port."""
    with Pebble(http_port=nginx.http_port, workdir=tmp_path_factory.mktemp("pebble")) as ca:
        yield ca


@pytest.fixture
def pods(cluster: Cluster, tmp_path: Path) -> Iterator[None]:
    """The two nginx pods, both Ready."""
    kube.ensure_namespace(cluster)
    # Never scheduled (no scheduler, no node): only its status matters here.
    spec = {"containers": [{"name": "nginx", "image": "nginx"}]}
    for name in REPLICAS:
        kube.stand_in_pod(cluster, kube.NAMESPACE, name, {POD_LABEL: "yes"}, spec, tmp_path)
    yield
    cluster.kubectl("delete", "pods", "-n", kube.NAMESPACE, "-l", POD_LABEL, "--wait=false")


def set_ready(cluster: Cluster, pod: str, ready: bool) -> None:
    kube.set_pod_ready(cluster, kube.NAMESPACE, pod, ready)


AgentFactory = Callable[[NginxServer, str], AgentProcess]


@pytest.fixture
def start_agent(
    cluster: Cluster, nginx: NginxServer, responder_port: int, tmp_path: Path
) -> Iterator[AgentFactory]:
    """Starts an agent for an nginx replica; all stop when the test ends. A test requests it
    before ``start_operator``: the agents then outlive the hosts' deletion at the end. Every
    agent defines the default server of the sites' HTTPS port, and the TLS sites' plain HTTP
    server, on replica a's ports."""
    started: list[AgentProcess] = []
    https_port, http_port = str(nginx.https_port), str(nginx.http_port)

    def start(nginx: NginxServer, replica: str) -> AgentProcess:
        workdir = tmp_path / f"agent-{replica}"
        workdir.mkdir()
        settings = {
            "VHOST_AGENT_REPLICA": replica,
            "VHOST_AGENT_HTTPS_PORT": https_port,
            "VHOST_AGENT_HTTP_PORT": http_port,
        }
        upstream = f"127.0.0.1:{responder_port}"  # operator_settings' responder
        agent = AgentProcess(
            cluster.kubeconfig,
            workdir,
            nginx,
            kube.NAMESPACE,
            settings,
            challenge_upstream=upstream,
        )
        started.append(agent.start())
        return agent

    yield start
    for agent in started:
        agent.stop()


def reports(cluster: Cluster, host: str) -> dict[str, tuple[str | None, str | None]]:
    """Replica -> (applied config hash, serial) on the host's site ConfigMap, and "published"
    -> (the ConfigMap's config hash, None)."""
    name = site_configmap_name(host)
    found = cluster.kubectl(
        "get", "configmap", name, "-n", kube.NAMESPACE, "-o", "json", "--ignore-not-found"
    )
    if not found.stdout.strip():
        return {}
    annotations = json.loads(found.stdout)["metadata"].get("annotations") or {}
    result: dict[str, tuple[str | None, str | None]] = {
        "published": (annotations.get(labels.CONFIG_HASH), None)
    }
    for replica in REPLICAS:
        keys = labels.report_keys(replica)
        result[replica] = (annotations.get(keys.config_hash), annotations.get(keys.serial))
    return result


def eventually(probe: object, what: str, timeout: float = 60) -> None:
    assert callable(probe)
    deadline = time.monotonic() + timeout
    while not probe():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def settled(obj: dict[str, object]) -> bool:
    return phase_of(obj) in ("Ready", "Failed")


def test_ready_only_once_every_ready_replica_serves_and_a_broken_one_is_named(
    cluster: Cluster,
    pods: None,
    start_agent: AgentFactory,
    start_operator: OperatorFactory,
    nginx: NginxServer,
    nginx_b: NginxServer,
    upstream: int,
    tmp_path: Path,
) -> None:
    start_agent(nginx, "nginx-a")
    start_operator(
        nginx_http_port=str(nginx.http_port),
        nginx_https_port=str(nginx.https_port),
        nginx_certificate_dir=str(nginx.root / "certs"),
        self_check_address=f"http://127.0.0.1:{nginx.http_port}",
        upstream=f"http://127.0.0.1:{upstream}",
        nginx_wait_for_agent="true",
        nginx_replica_selector=f"{POD_LABEL}=yes",
        nginx_apply_timeout=str(APPLY_TIMEOUT),
    )

    # 1. Replica b's agent is not running: a's report alone does not make the host Ready.
    kube.apply_manifests(cluster, [kube.virtualhost("one", "one.example.com")], tmp_path)

    def a_applied_bootstrap() -> bool:
        found = reports(cluster, "one")
        return bool(found) and found["nginx-a"][0] == found["published"][0]

    eventually(a_applied_bootstrap, "replica a's report of the bootstrap config")
    time.sleep(2)
    host = get_object(cluster, "vh", "one")
    assert host is not None and phase_of(host) != "Ready", "replica b has not applied it"
    assert reports(cluster, "one")["nginx-b"] == (None, None)

    agent_b = start_agent(nginx_b, "nginx-b")
    host = wait_for(cluster, "vh", "one", settled, what="Ready", timeout=90)
    assert phase_of(host) == "Ready", host["status"]
    serial = host["status"]["certificate"]["serial"]
    found = reports(cluster, "one")
    published = found["published"][0]
    assert found["nginx-a"] == found["nginx-b"] == (published, serial)
    port = nginx.https_port  # the operator's, in each nginx's network
    for server in (nginx, nginx_b):
        leaf = server.inside(lambda: served_certificate(port, "one.example.com"))
        assert leaf is not None and format(leaf.serial_number, "x") == serial

    # 2. nginx b goes down: its agent cannot reload, fails its readiness and the operator,
    # which still sees pod b Ready (no kubelet here), names replica b as the one lagging.
    nginx_b.stop()
    kube.apply_manifests(cluster, [kube.virtualhost("two", "two.example.com")], tmp_path)
    host = wait_for(cluster, "vh", "two", settled, what="Failed", timeout=APPLY_TIMEOUT + 60)
    assert phase_of(host) == "Failed", host["status"]
    message = json.dumps(host["status"])
    assert "nginx replica(s) nginx-b did not apply the config" in message, message
    assert "1 of 2 ready replicas did" in message, message
    readiness = agent_b.readiness()
    assert readiness[0] == 503 and "applying failed" in readiness[1], readiness
    assert agent_b.metrics()["vhost_agent_failing"] == 1

    # 3. The kubelet takes pod b out of readiness: it no longer holds any host back.
    kube.apply_manifests(cluster, [kube.virtualhost("three", "three.example.com")], tmp_path)

    def a_reported_three() -> bool:
        found = reports(cluster, "three")
        return bool(found) and found["nginx-a"][0] == found["published"][0]

    eventually(a_reported_three, "replica a's report of host three")
    set_ready(cluster, "nginx-b", False)
    host = wait_for(cluster, "vh", "three", settled, what="Ready", timeout=APPLY_TIMEOUT + 60)
    assert phase_of(host) == "Ready", host["status"]
    assert reports(cluster, "three")["nginx-b"] == (None, None)
