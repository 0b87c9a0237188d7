"""Fault injection at the CA: pebble's own hostile settings, a CA that asks for pauses
(``429 rateLimited`` / ``503`` with ``Retry-After``), and the operator SIGKILLed around and
inside the certificate step.

Every case runs on real servers: pebble (Debian's) behind :class:`AcmeFaultProxy`, the local
control plane and the operator as a real process. Each asserts the end state (every host Ready,
or Failed with the right cause) and that nothing was done twice: the proxy counts, per hostname,
the orders pebble created and the certificates it issued (successful finalizations).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.harness.acme_proxy import AcmeFaultProxy, Fault
from tests.harness.pebble import Pebble
from tests.harness.processes import free_port
from vhost_operator.acme import (
    AcmeClient,
    AcmeConfig,
    AcmeRetryLater,
    ChallengeResponder,
    ChallengeStore,
    certificate_matches_key,
    new_private_key_pem,
)

pytestmark = pytest.mark.faults

LOCALHOST = "127.0.0.1"

HOSTILE = {
    # pebble's defaults, which the other tests turn off: reject 30 % of good nonces, reuse
    # valid authorizations half of the time, and validate after a random pause of up to 15 s.
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
