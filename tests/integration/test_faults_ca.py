"""Fault injection at the CA: pebble's own hostile settings, a CA that asks for pauses
(``429 rateLimited`` / ``503`` with ``Retry-After``), and the operator SIGKILLed around and
inside the certificate step.

Every case runs on real servers: pebble (built from its pinned module) behind
:class:`AcmeFaultProxy`, the local control plane and the operator as a real process. Each
asserts the end state (every host Ready, or Failed with the right cause) and that nothing was
done twice: the proxy counts, per hostname, the orders pebble created and the certificates it
issued (successful finalizations).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.harness import kube
from tests.harness.acme_proxy import AcmeFaultProxy, Fault, Recorded, Trigger
from tests.harness.agent import AgentProcess
from tests.harness.clusters import Cluster
from tests.harness.nginx import NginxServer, served_certificate
from tests.harness.operator import OperatorProcess
from tests.harness.pebble import Pebble
from tests.harness.processes import free_port
from tests.harness.waiting import get_object, phase_of, wait_for
from tests.integration.conftest import operator_settings
from vhost_operator.acme.challenges import ChallengeResponder, ChallengeStore
from vhost_operator.acme.client import AcmeClient
from vhost_operator.acme.config import AcmeConfig
from vhost_operator.acme.errors import AcmeRetryLater
from vhost_operator.certs import certificate_matches_key, new_private_key_pem
from vhost_operator.resources.naming import next_key_secret_name, tls_secret_name

pytestmark = pytest.mark.faults

LOCALHOST = "127.0.0.1"

HOSTILE = {
    # What the other tests turn off, and worse: reject 30 % of good nonces (pebble's default is
    # 5 %), reuse valid authorizations half of the time and validate after a random pause (0-4 s
    # in pebble 2.4), both pebble's defaults.
    "PEBBLE_WFE_NONCEREJECT": "30",
    "PEBBLE_AUTHZREUSE": "50",
    "PEBBLE_VA_NOSLEEP": "0",
}


# -- the ACME client alone against pebble behind the proxy -------------------------------------


@pytest.fixture(scope="module")
def client_responder_port() -> int:
    return free_port()


@contextlib.asynccontextmanager
async def serving(store: ChallengeStore, port: int) -> AsyncIterator[None]:
    responder = ChallengeResponder(store)
    await responder.start(LOCALHOST, port)
    try:
        yield
    finally:
        await responder.stop()


def client_for(proxy: AcmeFaultProxy) -> AcmeClient:
    return AcmeClient(
        AcmeConfig(
            directory_url=proxy.directory_url,
            ca_bundle_path=proxy.ca_bundle_path,
            order_timeout=60.0,
        )
    )


async def issue(client: AcmeClient, store: ChallengeStore, hostname: str) -> bytes:
    key = new_private_key_pem()
    issued = await client.issue(hostname, key, publish=store.publish, unpublish=store.unpublish)
    assert certificate_matches_key(issued.chain_pem, key)
    return issued.chain_pem


@pytest.fixture
def hostile_proxy(client_responder_port: int, tmp_path: Path) -> Iterator[AcmeFaultProxy]:
    with (
        Pebble(client_responder_port, workdir=tmp_path / "pebble", environment=HOSTILE) as ca,
        AcmeFaultProxy(ca, tmp_path / "proxy") as proxy,
    ):
        yield proxy


@pytest.fixture
def proxy(client_responder_port: int, tmp_path: Path) -> Iterator[AcmeFaultProxy]:
    with (
        Pebble(client_responder_port, workdir=tmp_path / "pebble") as ca,
        AcmeFaultProxy(ca, tmp_path / "proxy") as proxy,
    ):
        yield proxy


def test_client_issues_through_rejected_nonces(
    hostile_proxy: AcmeFaultProxy, client_responder_port: int
) -> None:
    """30 % of nonces rejected: the acme library alone (one retry) fails about one request in
    eleven; the client's bounded retry gets every certificate."""
    hostnames = [f"nonce-{i}.example.com" for i in range(6)]

    async def scenario() -> None:
        client = client_for(hostile_proxy)
        store = ChallengeStore()
        await client.register(None)
        async with serving(store, client_responder_port):
            await asyncio.gather(*(issue(client, store, h) for h in hostnames))

    asyncio.run(scenario())
    assert dict(hostile_proxy.certificates_issued) == dict.fromkeys(hostnames, 1)
    rejected = sum(1 for r in hostile_proxy.records() if r.status == 400)
    print(f"\n{len(hostnames)} certificates, {rejected} requests answered 400 (badNonce)")
    assert rejected > 0, "pebble rejected no nonce: the hostile setting is not in effect"


@pytest.mark.parametrize("http_date", [False, True], ids=["seconds", "http-date"])
def test_client_pauses_every_new_issuance_until_retry_after(
    proxy: AcmeFaultProxy, client_responder_port: int, http_date: bool
) -> None:
    proxy.add_fault(Fault("new-order", status=429, retry_after=3, http_date=http_date))

    async def scenario() -> None:
        client = client_for(proxy)
        store = ChallengeStore()
        await client.register(None)
        async with serving(store, client_responder_port):
            with pytest.raises(AcmeRetryLater) as limited:
                await issue(client, store, "limited.example.com")
            assert "rateLimited" in str(limited.value)
            injected = next(r for r in proxy.records() if r.injected)
            assert injected.until is not None
            assert limited.value.until.timestamp() >= injected.until
            assert limited.value.until.timestamp() - injected.until < 1.5
            # Another host, at once: refused without asking the CA.
            asked = len(proxy.records())
            with pytest.raises(AcmeRetryLater) as paused:
                await issue(client, store, "other.example.com")
            assert paused.value.until == limited.value.until
            assert "rateLimited" in str(paused.value)
            assert len(proxy.records()) == asked, "the CA was called during the pause"
            await asyncio.sleep((limited.value.until - datetime.now(UTC)).total_seconds())
            await asyncio.gather(
                issue(client, store, "limited.example.com"),
                issue(client, store, "other.example.com"),
            )

    asyncio.run(scenario())
    injected = next(r for r in proxy.records() if r.injected)
    assert injected.until is not None
    later = [r for r in proxy.records() if r.at > injected.at]
    assert later and min(r.at for r in later) >= injected.until
    assert dict(proxy.certificates_issued) == {"limited.example.com": 1, "other.example.com": 1}


def test_client_503_with_retry_after_mid_order_keeps_the_order(
    proxy: AcmeFaultProxy, client_responder_port: int
) -> None:
    """A pause asked for at finalization ends the attempt; resuming the stored order after it
    finalizes that same order: one order, one certificate."""
    proxy.add_fault(Fault("finalize", status=503, retry_after=2, http_date=True))
    hostname = "busy.example.com"
    key = new_private_key_pem()
    orders: list[str] = []

    async def remember(url: str) -> None:
        orders.append(url)

    async def scenario() -> None:
        client = client_for(proxy)
        store = ChallengeStore()
        await client.register(None)
        async with serving(store, client_responder_port):
            with pytest.raises(AcmeRetryLater) as busy:
                await client.issue(
                    hostname,
                    key,
                    publish=store.publish,
                    unpublish=store.unpublish,
                    on_order_created=remember,
                )
            assert "serverInternal" in str(busy.value) and len(orders) == 1
            await asyncio.sleep((busy.value.until - datetime.now(UTC)).total_seconds())
            issued = await client.issue(
                hostname, key, publish=store.publish, unpublish=store.unpublish, order_url=orders[0]
            )
            assert issued.order_url == orders[0]

    started = time.monotonic()
    asyncio.run(scenario())
    assert time.monotonic() - started >= 1
    assert proxy.orders_created[hostname] == 1
    assert proxy.certificates_issued[hostname] == 1


# -- the operator on the control plane ----------------------------------------------------------

StartOperator = Callable[..., OperatorProcess]


@pytest.fixture
def operators(cluster: Cluster, tmp_path: Path) -> Iterator[StartOperator]:
    """Start operators (one at a time) against a proxy; at the end every VirtualHost is deleted
    (by the operator still running) and every operator stopped."""
    kube.ensure_namespace(cluster)
    started: list[OperatorProcess] = []

    def start(
        ca: Pebble, proxy: AcmeFaultProxy, responder: int | None = None, **overrides: str
    ) -> OperatorProcess:
        """``responder``: where the challenge responder listens; pebble's HTTP port (it
        validates there) unless nginx sits in between."""
        workdir = tmp_path / f"operator-{len(started)}"
        workdir.mkdir()
        settings = operator_settings(
            ca,
            responder or ca.http_port,
            acme_directory_url=proxy.directory_url,
            acme_ca_bundle=str(proxy.ca_bundle_path),
            **overrides,
        )
        process = OperatorProcess(cluster.kubeconfig, workdir, settings)
        started.append(process)  # before it starts: one that never gets ready is stopped too
        return process.start()

    yield start
    kube.delete_all_virtualhosts(cluster)
    for process in started:
        process.stop()


def phases(cluster: Cluster, prefix: str) -> dict[str, str]:
    listed = cluster.kubectl(
        "get", "vh", "-o", 'jsonpath={range .items[*]}{.metadata.name}={.status.phase}{"\\n"}{end}'
    ).stdout
    return dict(line.split("=", 1) for line in listed.splitlines() if line.startswith(prefix))


def wait_settled(cluster: Cluster, names: list[str], prefix: str, timeout: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    seen: dict[str, str] = {}
    while time.monotonic() < deadline:
        seen = phases(cluster, prefix)
        if set(seen) == set(names) and all(p in ("Ready", "Failed") for p in seen.values()):
            return seen
        time.sleep(0.5)
    raise AssertionError(f"not settled within {timeout}s: {seen}")


def certificate_step(obj: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = next(e for e in obj["status"]["chain"] if e["step"] == "certificate")
    return entry


def waiting_until(obj: dict[str, Any]) -> datetime | None:
    """The time the certificate step says it waits for, if it waits for the CA."""
    status = obj.get("status") or {}
    if status.get("phase") != "Pending" or not status.get("chain"):
        return None
    entry = certificate_step(obj)
    message = entry.get("message") or ""
    if entry["state"] != "Pending" or not message.startswith("waiting for the CA until "):
        return None
    return datetime.fromisoformat(message.removeprefix("waiting for the CA until ").split(": ")[0])


@pytest.mark.cluster
def test_hostile_pebble_every_host_ready_once(
    cluster: Cluster, operators: StartOperator, tmp_path: Path
) -> None:
    """pebble's own faults on: 30 % of nonces rejected, valid authorizations reused half of the
    time, validation after a random pause. Every host ends Ready, none Failed, one certificate
    per VirtualHost. Half of the hostnames are then ordered again by new VirtualHosts (the old
    ones deleted), so that pebble has valid authorizations to hand out again."""
    port = free_port()
    names = [f"hostile-{i}" for i in range(12)]
    again = {f"again-{i}": f"hostile-{i}.example.com" for i in range(6)}
    with (
        Pebble(port, workdir=tmp_path / "pebble", environment=HOSTILE) as ca,
        AcmeFaultProxy(ca, tmp_path / "proxy") as proxy,
    ):
        operators(ca, proxy, nginx_enabled="false", acme_order_timeout="90")
        started = time.monotonic()
        hosts = [kube.virtualhost(n, f"{n}.example.com") for n in names]
        kube.apply_manifests(cluster, hosts, tmp_path)
        settled = wait_settled(cluster, names, "hostile-", timeout=240)
        elapsed = time.monotonic() - started
        assert set(settled.values()) == {"Ready"}, settled
        first_round = dict(proxy.certificates_issued)
        assert first_round == {f"{n}.example.com": 1 for n in names}, first_round

        cluster.kubectl("delete", "vh", *names[:6], "--wait=true", "--timeout=60s")
        second = time.time()
        kube.apply_manifests(cluster, [kube.virtualhost(n, h) for n, h in again.items()], tmp_path)
        resettled = wait_settled(cluster, list(again), "again-", timeout=240)
        assert set(resettled.values()) == {"Ready"}, resettled
        issued = dict(proxy.certificates_issued)
        records = proxy.records()
    assert issued == {h: 2 if h in again.values() else 1 for h in first_round}, issued
    rejected = sum(1 for r in records if r.status == 400)
    assert rejected > 0, "no nonce was rejected: the hostile setting is not in effect"
    validated = {r.hostname for r in records if r.kind == "challenge" and r.at > second}
    reused = len(set(again.values()) - validated)
    print(
        f"\nhostile pebble: {len(names)} hosts Ready in {elapsed:.1f}s, then {len(again)} "
        f"hostnames again ({reused} on a reused authorization); {rejected} nonces rejected; "
        "certificates per VirtualHost: 1"
    )


def wait_waiting(
    cluster: Cluster, name: str, timeout: float = 60
) -> tuple[dict[str, Any], datetime]:
    obj = wait_for(
        cluster, "vh", name, lambda o: waiting_until(o) is not None, what="waiting", timeout=timeout
    )
    until = waiting_until(obj)
    assert until is not None
    return obj, until


def calls_between(proxy: AcmeFaultProxy, start: float, end: float) -> list[Recorded]:
    return [r for r in proxy.records() if start < r.at < end]


@pytest.mark.cluster
def test_ca_pauses_are_waited_for_visibly_and_nothing_is_ordered_twice(
    cluster: Cluster, operators: StartOperator, tmp_path: Path
) -> None:
    port = free_port()
    with (
        Pebble(port, workdir=tmp_path / "pebble") as ca,
        AcmeFaultProxy(ca, tmp_path / "proxy") as proxy,
    ):
        operator = operators(ca, proxy, nginx_enabled="false")
        # 1. The first new order is answered 429 rateLimited, Retry-After 8 s.
        proxy.add_fault(Fault("new-order", status=429, retry_after=15))
        kube.apply_manifests(cluster, [kube.virtualhost("wait-0", "wait-0.example.com")], tmp_path)
        first, until = wait_waiting(cluster, "wait-0")
        limited = next(r for r in proxy.records() if r.injected)
        assert limited.until is not None and until.timestamp() >= limited.until
        message = certificate_step(first)["message"]
        assert "rateLimited" in message and "creating the order" in message, message
        # 2. Hosts arriving during the pause wait for the same time without calling the CA;
        #    one of them will meet a 503 with an HTTP-date at finalization.
        proxy.add_fault(
            Fault(
                "finalize", status=503, retry_after=4, http_date=True, hostname="wait-2.example.com"
            )
        )
        later = [f"wait-{i}" for i in range(1, 4)]
        kube.apply_manifests(
            cluster, [kube.virtualhost(n, f"{n}.example.com") for n in later], tmp_path
        )
        for name in later:
            obj, their_until = wait_waiting(cluster, name)
            assert their_until == until, certificate_step(obj)
            assert "asked to wait: rateLimited" in certificate_step(obj)["message"]
        assert time.time() < limited.until, "the pause ended before the check: too slow a machine"
        settled = wait_settled(cluster, ["wait-0", *later], "wait-", timeout=90)
        assert set(settled.values()) == {"Ready"}, settled
        records = proxy.records()

        # Nothing reached the CA during the account's pause ...
        assert calls_between(proxy, limited.at, limited.until) == []
        # ... nor for wait-2 during its own, while its order was kept (one order per host).
        busy = next(r for r in records if r.injected and r.kind == "finalize")
        assert busy.until is not None
        assert [
            r for r in calls_between(proxy, busy.at, busy.until) if r.hostname == busy.hostname
        ] == []
        assert [r for r in calls_between(proxy, busy.at, busy.until) if r.kind == "new-order"] == []
        hostnames = [f"{n}.example.com" for n in ["wait-0", *later]]
        assert dict(proxy.orders_created) == dict.fromkeys(hostnames, 1)
        assert dict(proxy.certificates_issued) == dict.fromkeys(hostnames, 1)
        print(
            f"\n429 for {limited.until - limited.at:.0f}s and 503 for "
            f"{busy.until - busy.at:.1f}s honoured; orders and certificates per host: 1"
        )

        # 3. A pause far in the future is waited for too (visibly), never Failed, also across
        #    an operator restart: the time is stored with the host's key.
        proxy.add_fault(Fault("new-order", status=429, retry_after=3600))
        kube.apply_manifests(
            cluster, [kube.virtualhost("patient", "patient.example.com")], tmp_path
        )
        _, far = wait_waiting(cluster, "patient")
        assert far.timestamp() > time.time() + 3500
        asked = len(proxy.records())
        operator.kill()
        restarted = operators(ca, proxy, nginx_enabled="false")
        deadline = time.monotonic() + 30
        while "VirtualHost patient: chain ended Pending" not in restarted.log():
            assert time.monotonic() < deadline, "the restarted operator did not resume the host"
            time.sleep(0.2)
        obj, still = wait_waiting(cluster, "patient")
        assert still == far and obj["status"]["phase"] == "Pending"
        assert "rateLimited" in certificate_step(obj)["message"], "it still says why"
        assert len(proxy.records()) == asked, "the restarted operator called the CA"
        assert proxy.orders_created["patient.example.com"] == 0


BUDGET_PREFIX = "waiting for the order budget (3 new orders per 21 seconds): the order will be "


def budget_slot(obj: dict[str, Any]) -> datetime | None:
    """The time the host's order will be placed, if it waits for the order budget."""
    status = obj.get("status") or {}
    if status.get("phase") != "Pending" or not status.get("chain"):
        return None
    message = certificate_step(obj).get("message") or ""
    if not message.startswith(BUDGET_PREFIX):
        return None
    return datetime.fromisoformat(message.removeprefix(BUDGET_PREFIX + "placed at "))


def within_bucket(times: list[float], orders: int, interval: float, slack: float) -> bool:
    """Whether requests at ``times`` fit a token bucket of ``orders`` refilled one per
    ``interval`` seconds (the CA's rule), with ``slack`` seconds for the way to the proxy."""
    times = sorted(times)
    return all(
        j - i + 1 <= orders + (times[j] - times[i] + slack) / interval
        for i in range(len(times))
        for j in range(i, len(times))
    )


@pytest.mark.cluster
def test_orders_beyond_the_budget_wait_for_their_slots_also_across_a_restart(
    cluster: Cluster, operators: StartOperator, tmp_path: Path
) -> None:
    """A budget of 3 orders per 21 s (one more every 7 s) and 6 new hosts: 3 order at once, 3
    wait, Pending, each told when its order will be placed, at different times. The operator is
    SIGKILLed while they wait; the restarted one still counts the first 3 (the bucket is kept
    on the account Secret). Every host ends Ready with one order, and the orders pebble saw
    never exceed the budget. Then the CA itself asks for a pause (429, Retry-After) at a
    waiting host's slot: honoured on top of the budget, and the host still ends Ready."""
    port = free_port()
    budget = {"acme_order_limit": "3", "acme_order_window": "21", "nginx_enabled": "false"}
    names = [f"budget-{i}" for i in range(6)]
    with (
        Pebble(port, workdir=tmp_path / "pebble") as ca,
        AcmeFaultProxy(ca, tmp_path / "proxy") as proxy,
    ):
        operator = operators(ca, proxy, **budget)
        kube.apply_manifests(
            cluster, [kube.virtualhost(n, f"{n}.example.com") for n in names], tmp_path
        )
        deadline = time.monotonic() + 60
        slots: dict[str, datetime] = {}
        while len(slots) < 3:
            assert time.monotonic() < deadline, f"3 hosts should wait for the budget: {slots}"
            for name in names:
                slot = budget_slot(get_object(cluster, "vh", name) or {})
                if slot is not None:
                    slots[name] = slot
            time.sleep(0.2)
        assert len(set(slots.values())) == 3, f"one slot per waiting host: {slots}"
        waiting = get_object(cluster, "vh", next(iter(slots)))
        assert waiting is not None
        ready = next(c for c in waiting["status"]["conditions"] if c["type"] == "Ready")
        assert ready["reason"] == "WaitingForOrderBudget", ready
        assert ready["message"].startswith(BUDGET_PREFIX), ready

        operator.kill()
        operators(ca, proxy, **budget)
        settled = wait_settled(cluster, names, "budget-", timeout=120)
        assert set(settled.values()) == {"Ready"}, settled
        new_orders = [r.at for r in proxy.records() if r.kind == "new-order" and r.status == 201]
        assert dict(proxy.orders_created) == {f"{n}.example.com": 1 for n in names}
        assert within_bucket(new_orders, orders=3, interval=7, slack=1), new_orders
        spread = max(new_orders) - min(new_orders)
        assert spread >= 2 * 7 - 1, f"the last 3 orders waited for the refill: {new_orders}"

        # The CA's own pause at a waiting host's slot: the host waits for the CA too.
        # Two: both wait for the budget, so the second's slot comes while it is Pending.
        late = [f"late-{i}" for i in range(2)]
        kube.apply_manifests(
            cluster, [kube.virtualhost(n, f"{n}.example.com") for n in late], tmp_path
        )
        proxy.add_fault(
            Fault("new-order", status=429, retry_after=6, hostname="late-1.example.com")
        )
        settled = wait_settled(cluster, late, "late-", timeout=120)
        assert set(settled.values()) == {"Ready"}, settled
        limited = next(r for r in proxy.records() if r.injected)
        placed = [
            r.at
            for r in proxy.records()
            if r.kind == "new-order" and r.hostname == "late-1.example.com" and r.status == 201
        ]
        assert limited.until is not None and placed and min(placed) >= limited.until
        all_orders = [r.at for r in proxy.records() if r.kind == "new-order" and r.status == 201]
        assert within_bucket(all_orders, orders=3, interval=7, slack=1), all_orders
    print(
        f"\norder budget 3/21 s: {len(names)} hosts Ready over {spread:.1f}s of orders, one "
        "order each, across a SIGKILL; a 429 at a slot honoured"
    )


def renewal_condition(obj: dict[str, Any]) -> dict[str, Any] | None:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == "CertificateRenewal"), None)


@pytest.mark.cluster
def test_a_renewal_the_ca_pauses_waits_keeps_serving_and_renews_once(
    cluster: Cluster, operators: StartOperator, tmp_path: Path
) -> None:
    port = free_port()
    hostname = "renew-wait.example.com"
    with (
        Pebble(port, workdir=tmp_path / "pebble") as ca,
        AcmeFaultProxy(ca, tmp_path / "proxy") as proxy,
    ):
        operators(ca, proxy, nginx_enabled="false")
        kube.apply_manifests(cluster, [kube.virtualhost("renew-wait", hostname)], tmp_path)
        ready = wait_for(cluster, "vh", "renew-wait", is_ready, what="Ready", timeout=60)
        first_serial = ready["status"]["certificate"]["serial"]
        proxy.add_fault(Fault("new-order", status=429, retry_after=6))
        cluster.kubectl(
            "annotate", "vh", "renew-wait", "vhost-operator.io/renew=manual-1", "--overwrite"
        )

        def waiting(obj: dict[str, Any]) -> bool:
            condition = renewal_condition(obj)
            return condition is not None and condition["reason"] == "WaitingForCA"

        held = wait_for(cluster, "vh", "renew-wait", waiting, what="renewal waiting", timeout=60)
        assert phase_of(held) == "Ready", "the current certificate keeps serving"
        condition = renewal_condition(held)
        assert condition is not None and "rateLimited" in condition["message"]
        limited = next(r for r in proxy.records() if r.injected)
        assert limited.until is not None

        def renewed(obj: dict[str, Any]) -> bool:
            return bool(obj["status"]["certificate"]["serial"] != first_serial)

        done = wait_for(cluster, "vh", "renew-wait", renewed, what="renewed", timeout=60)
        assert phase_of(done) == "Ready"
        assert done["status"]["failedAttempts"] == 0
        assert calls_between(proxy, limited.at, limited.until) == []
        assert proxy.orders_created[hostname] == 2, "the first order and the renewal's"
        assert proxy.certificates_issued[hostname] == 2
        print(f"\nrenewal paused {limited.until - limited.at:.0f}s by a 429, then renewed once")


# -- SIGKILL at every step boundary and inside the certificate step ------------------------------
#
# The whole serving stack, so that the bootstrap and final steps are real: nginx with the agent,
# pebble validating through nginx. The kills inside the certificate step come from the proxy's
# triggers; the boundary after the certificate step is held by freezing the agent (SIGSTOP), so
# the final step is known to be waiting when the operator dies.


@pytest.fixture(scope="module")
def served_ca(
    nginx: NginxServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Pebble, AcmeFaultProxy]]:
    workdir = tmp_path_factory.mktemp("served-ca")
    with (
        Pebble(nginx.http_port, workdir=workdir / "pebble") as ca,
        AcmeFaultProxy(ca, workdir / "proxy") as proxy,
    ):
        yield ca, proxy


@contextlib.contextmanager
def frozen(process: AgentProcess) -> Iterator[Callable[[], None]]:
    """A function that freezes ``process`` (SIGSTOP); it is thawed when the block ends."""
    try:
        yield lambda: os.kill(process.pid, signal.SIGSTOP)
    finally:
        os.kill(process.pid, signal.SIGCONT)


def is_ready(obj: dict[str, Any]) -> bool:
    return phase_of(obj) == "Ready"


def chain_of(obj: dict[str, Any]) -> list[tuple[str, str]]:
    return [(e["step"], e["state"]) for e in (obj.get("status") or {}).get("chain", [])]


KILL_POINTS = {
    # id: (kind, before or after pebble answered) of the request whose arrival kills
    "after-bootstrap-before-order": ("new-order", "before"),
    "order-created-answer-lost": ("new-order", "after"),
    "after-order-stored": ("challenge", "before"),
    "after-finalize": ("finalize", "after"),
    "after-download-before-secret": ("certificate", "after"),
}


@pytest.mark.cluster
@pytest.mark.parametrize(
    "point", [*KILL_POINTS, "after-certificate", "after-final"], ids=lambda p: str(p)
)
def test_sigkill_then_restart_ends_ready_with_one_certificate(
    cluster: Cluster,
    operators: StartOperator,
    served_ca: tuple[Pebble, AcmeFaultProxy],
    nginx: NginxServer,
    agent: AgentProcess,
    upstream: int,
    responder_port: int,
    tmp_path: Path,
    point: str,
) -> None:
    ca, proxy = served_ca
    name = f"kill-{point}"
    hostname = f"{name}.example.com"
    serving = {
        "nginx_http_port": str(nginx.http_port),
        "nginx_https_port": str(nginx.https_port),
        "nginx_certificate_dir": str(nginx.root / "certs"),
        "self_check_address": f"http://127.0.0.1:{nginx.http_port}",
        "upstream": f"http://127.0.0.1:{upstream}",
        "nginx_wait_for_agent": "true",
        "nginx_probe_address": f"127.0.0.1:{nginx.https_port}",
    }
    operator = operators(ca, proxy, responder_port, **serving)
    killed = threading.Event()

    def kill() -> None:
        operator.kill()
        killed.set()

    with frozen(agent) as freeze:
        if point in KILL_POINTS:
            kind, when = KILL_POINTS[point]
            proxy.add_trigger(Trigger(kind, when, kill, hostname=hostname))  # type: ignore[arg-type]
        elif point == "after-certificate":
            proxy.add_trigger(Trigger("certificate", "after", freeze, hostname, drop=False))
        kube.apply_manifests(cluster, [kube.virtualhost(name, hostname)], tmp_path)
        if point == "after-certificate":
            held = wait_for(
                cluster,
                "vh",
                name,
                lambda o: ("final", "Running") in chain_of(o),
                what="final step waiting for the frozen agent",
                timeout=60,
            )
            assert ("certificate", "Succeeded") in chain_of(held)
            kill()
        elif point == "after-final":
            before = wait_for(cluster, "vh", name, is_ready, what="Ready", timeout=60)
            kill()
        assert killed.wait(60), f"the operator was never killed at {point}"
    interrupted = get_object(cluster, "vh", name)
    assert interrupted is not None
    print(f"\n{point}: killed with chain {chain_of(interrupted)}")
    if point == "after-bootstrap-before-order":
        assert chain_of(interrupted)[:2] == [("bootstrap", "Succeeded"), ("certificate", "Running")]

    restarted = operators(ca, proxy, responder_port, **serving)
    ready = wait_for(cluster, "vh", name, is_ready, what="Ready", timeout=90)
    if point == "after-final":
        # The only host: once kopf says its resuming is processed, the restart had its say.
        deadline = time.monotonic() + 30
        while "Resuming is processed" not in restarted.log():
            assert time.monotonic() < deadline, "the restarted operator did not resume the host"
            time.sleep(0.2)
        ready = get_object(cluster, "vh", name) or {}
        assert ready["status"]["certificate"] == before["status"]["certificate"]
    serial = ready["status"]["certificate"]["serial"]
    leaf = served_certificate(nginx.https_port, hostname)
    assert leaf is not None and format(leaf.serial_number, "x") == serial, "nginx serves it"
    tls = kube.secret_data(cluster, tls_secret_name(name))
    assert tls is not None and certificate_matches_key(tls["tls.crt"], tls["tls.key"])
    assert kube.secret_data(cluster, next_key_secret_name(name)) is None
    orders = proxy.orders_created[hostname]
    assert orders == (2 if point == "order-created-answer-lost" else 1), orders
    assert proxy.certificates_issued[hostname] == 1, proxy.certificates_issued
    print(f"{point}: Ready, orders {orders}, certificates issued 1")
