"""Two operator replicas on the real control plane: one leads (the Lease), both answer HTTP-01
challenges and admission reviews, and a leader SIGKILLed in a burst is replaced within 15 s
with nothing done twice.

pebble validates through a round-robin balancer in front of both replicas' challenge
responders (what the challenge Service does in a cluster), so about half of the challenges the
leader published are answered by the follower, and the self-check goes the same way.
"""

from __future__ import annotations

import base64
import json
import ssl
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.harness import kube
from tests.harness.balancer import Balancer
from tests.harness.clusters import Cluster
from tests.harness.operator import OperatorProcess
from tests.harness.pebble import Pebble
from tests.harness.processes import free_port
from tests.integration.conftest import OperatorFactory
from vhost_operator.admission.tls import make_serving_material
from vhost_operator.resources.models import FINALIZER
from vhost_operator.resources.naming import next_key_secret_name
from vhost_operator.wiring import LOST_LEADERSHIP_EXIT

pytestmark = pytest.mark.cluster

HOLDS = "now holds Lease"
"""What a replica logs when it takes the Lease."""


def lease(cluster: Cluster, name: str) -> dict[str, Any]:
    found = cluster.kubectl(
        "get", "lease", name, "-n", kube.NAMESPACE, "-o", "json", "--ignore-not-found"
    ).stdout
    return json.loads(found) if found.strip() else {}


def holder(cluster: Cluster, name: str) -> str:
    return str((lease(cluster, name).get("spec") or {}).get("holderIdentity") or "")


def replicas(
    start_operator: OperatorFactory, balancer_port: int, lease_name: str, count: int = 2
) -> list[tuple[OperatorProcess, int]]:
    """``count`` operators with leader election on, each with its own challenge port."""
    started = []
    for _ in range(count):
        port = free_port()
        process = start_operator(
            leader_election_enabled="true",
            lease_name=lease_name,
            challenge_listen_port=str(port),
            self_check_address=f"http://127.0.0.1:{balancer_port}",
        )
        started.append((process, port))
    return started


def wait_for_leader(processes: list[OperatorProcess], timeout: float = 30) -> OperatorProcess:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        leaders = [process for process in processes if HOLDS in process.log()]
        if leaders:
            assert len(leaders) == 1, "two replicas took the Lease"
            return leaders[0]
        time.sleep(0.2)
    raise AssertionError("no replica took the Lease")


def phases(cluster: Cluster, prefix: str) -> dict[str, dict[str, Any]]:
    listed = json.loads(cluster.kubectl("get", "vh", "-o", "json").stdout)["items"]
    return {
        vh["metadata"]["name"]: vh.get("status") or {}
        for vh in listed
        if vh["metadata"]["name"].startswith(prefix)
    }


def test_killed_leader_is_replaced_within_15s_and_every_host_gets_one_certificate(
    cluster: Cluster,
    start_operator: OperatorFactory,
    pebble: Pebble,
    responder_port: int,
    tmp_path: Path,
) -> None:
    """40 hosts at once; the leader is SIGKILLed once a few are Ready. The follower takes the
    Lease within 15 s, resumes the hosts in flight (the stored orders, not new ones) and every
    host ends Ready with exactly one certificate issued for it."""
    count, lease_name = 40, "leader-kill"
    issued_before = len(pebble.issued_serials())
    started = replicas(start_operator, responder_port, lease_name)
    targets = [("127.0.0.1", port) for _, port in started]
    with Balancer(responder_port, targets) as balancer:
        processes = [process for process, _ in started]
        leader = wait_for_leader(processes)
        follower = next(process for process in processes if process is not leader)
        old_holder = holder(cluster, lease_name)
        hosts = [kube.virtualhost(f"ha-{i}", f"ha-{i}.example.com") for i in range(count)]
        kube.apply_manifests(cluster, hosts, tmp_path)

        deadline = time.monotonic() + 120
        while sum(s.get("phase") == "Ready" for s in phases(cluster, "ha-").values()) < 5:
            assert time.monotonic() < deadline, "no host Ready before the kill"
            time.sleep(0.2)
        assert "chain ended" not in follower.log(), "the follower provisioned"
        assert all(balancer.answered[target] for target in targets), balancer.answered
        in_flight = sum(s.get("phase") != "Ready" for s in phases(cluster, "ha-").values())
        leader.kill()
        killed = time.monotonic()
        while holder(cluster, lease_name) in ("", old_holder):
            assert time.monotonic() - killed < 30, "nobody took the Lease over"
            time.sleep(0.1)
        takeover = time.monotonic() - killed
        assert HOLDS in follower.log()

        deadline = time.monotonic() + 240
        while True:
            statuses = phases(cluster, "ha-")
            if len(statuses) == count and all(s.get("phase") == "Ready" for s in statuses.values()):
                break
            failed = {n: s.get("error") for n, s in statuses.items() if s.get("phase") == "Failed"}
            assert not failed, failed
            assert time.monotonic() < deadline, f"not all Ready: {statuses}"
            time.sleep(0.5)
        all_ready = time.monotonic() - killed

    serials = [int(s["certificate"]["serial"], 16) for s in statuses.values()]
    issued = pebble.issued_serials()[issued_before:]
    assert len(set(serials)) == count and sorted(serials) == sorted(issued), (
        f"{len(issued)} certificates issued for {count} hosts"
    )
    assert all("acmeChallenge" not in s for s in statuses.values()), "challenges left published"
    for name in statuses:
        assert kube.secret_data(cluster, next_key_secret_name(name)) is None
    assert takeover < 15, f"takeover took {takeover:.1f}s"
    print(
        f"\nleader SIGKILLed with {in_flight}/{count} hosts in flight: Lease taken over after "
        f"{takeover:.1f}s, all Ready {all_ready:.1f}s after the kill; certificates issued "
        f"{len(issued)} for {count} hosts (one each); challenge requests answered per replica "
        f"{sorted(balancer.answered.values())}"
    )


def test_a_leader_that_cannot_renew_exits_and_the_other_takes_over(
    cluster: Cluster,
    start_operator: OperatorFactory,
    pebble: Pebble,
    responder_port: int,
) -> None:
    """A leader frozen past its renew deadline (SIGSTOP: no renewal, no provisioning) loses
    the Lease to the other replica; thawed, it ends itself at once instead of provisioning
    beside the new leader."""
    lease_name = "leader-freeze"
    started = replicas(start_operator, responder_port, lease_name)
    processes = [process for process, _ in started]
    leader = wait_for_leader(processes)
    old_holder = holder(cluster, lease_name)
    leader.freeze()
    try:
        frozen = time.monotonic()
        while holder(cluster, lease_name) == old_holder:
            assert time.monotonic() - frozen < 30, "nobody took the Lease over"
            time.sleep(0.1)
    finally:
        leader.thaw()
    assert leader.wait_exit(10) == LOST_LEADERSHIP_EXIT, leader.log()[-2000:]
    assert "exiting, to start again as a follower" in leader.log()


def test_a_leader_stopped_gracefully_hands_over_at_once(
    cluster: Cluster,
    start_operator: OperatorFactory,
    pebble: Pebble,
    responder_port: int,
) -> None:
    """SIGTERM (a rollout, a drain): once its handlers and calls ended, the leader releases
    the Lease, and the other replica takes over at its next look, not after the Lease's
    duration."""
    lease_name = "leader-release"
    started = replicas(start_operator, responder_port, lease_name)
    processes = [process for process, _ in started]
    leader = wait_for_leader(processes)
    follower = next(process for process in processes if process is not leader)
    old_holder = holder(cluster, lease_name)
    stopping = time.monotonic()
    leader.stop()
    while holder(cluster, lease_name) in ("", old_holder):
        assert time.monotonic() - stopping < 30, "nobody took the Lease over"
        time.sleep(0.1)
    handover = time.monotonic() - stopping
    assert "released the Lease" in leader.log()
    assert HOLDS in follower.log()
    assert handover < 8, f"handover took {handover:.1f}s: the Lease was not released"
    print(f"\ngraceful stop of the leader: the other replica leads {handover:.1f}s later")


def admission_review(name: str, hostname: str) -> dict[str, Any]:
    """What the API server sends for ``kubectl create`` of a VirtualHost."""
    group = {"group": "vhost-operator.io", "version": "v1alpha1"}
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": f"review-{name}",
            "kind": {**group, "kind": "VirtualHost"},
            "resource": {**group, "resource": "virtualhosts"},
            "operation": "CREATE",
            "name": name,
            "object": kube.virtualhost(name, hostname),
            "oldObject": None,
            "userInfo": {"username": "test"},
            "dryRun": False,
        },
    }


def review(url: str, ca_pem: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    context = ssl.create_default_context(cadata=ca_pem)
    with urllib.request.urlopen(request, context=context, timeout=10) as answer:
        response: dict[str, Any] = json.loads(answer.read())["response"]
        return response


def test_every_replica_serves_the_webhook(
    cluster: Cluster,
    start_operator: OperatorFactory,
    pebble: Pebble,
    responder_port: int,
    tmp_path: Path,
) -> None:
    """The follower answers admission reviews as the leader does: with the certificate of the
    CA the webhook configuration (written by the leader) carries, with the rules applied
    against its own catalog (a hostname in use is refused), and with kopf's finalizer for a
    new host."""
    configuration = "leader-webhook.vhost-operator.io"
    material = make_serving_material(["127.0.0.1"], tmp_path / "webhook-tls")
    (tmp_path / "webhook-tls" / "ca.crt").write_bytes(material.ca_pem)
    ports = [free_port(), free_port()]
    processes = []
    try:
        for port in ports:
            process = start_operator(
                leader_election_enabled="true",
                lease_name="leader-webhook",
                challenge_listen_port=str(free_port()),
                webhook_enabled="true",
                webhook_host="127.0.0.1",
                webhook_port=str(port),
                webhook_cert_dir=str(tmp_path / "webhook-tls"),
                webhook_configuration_name=configuration,
            )
            processes.append(process)
        leader = wait_for_leader(processes)
        follower_port = ports[1 - processes.index(leader)]
        registered = wait_until_webhooks(cluster, configuration)
        [hook] = [w for w in registered["webhooks"] if w["name"].startswith("virtualhosts")]
        url = urlsplit(hook["clientConfig"]["url"])
        assert url.port != follower_port, "the leader registers its own address"
        ca_pem = base64.b64decode(hook["clientConfig"]["caBundle"]).decode()
        kube.apply_manifests(cluster, [kube.virtualhost("wh-a", "wh.example.com")], tmp_path)

        at_follower = url._replace(netloc=f"127.0.0.1:{follower_port}").geturl()
        deadline = time.monotonic() + 30
        while True:  # until the follower's catalog has the first host
            answer = review(at_follower, ca_pem, admission_review("wh-b", "wh.example.com"))
            if not answer["allowed"] or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert answer["allowed"] is False, answer
        assert answer["status"]["code"] == 409
        assert "already used by VirtualHost wh-a" in answer["status"]["message"]
        fresh = review(at_follower, ca_pem, admission_review("wh-c", "wh-c.example.com"))
        assert fresh["allowed"] is True, fresh
        # The mutating webhook too: kopf's finalizer, as a JSON patch.
        finalizing = urlsplit(at_follower)._replace(path="/finalizer").geturl()
        mutated = review(finalizing, ca_pem, admission_review("wh-d", "wh-d.example.com"))
        assert mutated["allowed"] is True and mutated["patchType"] == "JSONPatch", mutated
        assert json.loads(base64.b64decode(mutated["patch"])) == [
            {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]}
        ]
    finally:
        cluster.kubectl(
            "delete", "validatingwebhookconfiguration,mutatingwebhookconfiguration",
            configuration, "--ignore-not-found",
        )  # fmt: skip


def wait_until_webhooks(cluster: Cluster, name: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = cluster.kubectl(
            "get", "validatingwebhookconfiguration", name, "-o", "json", "--ignore-not-found"
        ).stdout
        if found.strip() and json.loads(found).get("webhooks"):
            configuration: dict[str, Any] = json.loads(found)
            return configuration
        time.sleep(0.2)
    raise AssertionError(f"no webhooks in {name}")
