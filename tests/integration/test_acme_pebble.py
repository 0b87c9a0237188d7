"""The ACME client against a real CA: pebble, validating HTTP-01 against our own responder.

Pebble and its DNS are started once for the module; every name resolves to 127.0.0.1 and pebble
validates on ``RESPONDER_PORT``, where each test runs (or on purpose does not run) a
:class:`ChallengeResponder`. Each test uses its own hostname, so no authorization carries over.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store

from tests.harness.pebble import Pebble, available
from tests.harness.processes import free_port
from vhost_operator.acme.challenges import (
    CHALLENGE_PATH,
    ChallengeResponder,
    ChallengeStore,
    SelfChecker,
    SelfCheckFailed,
    SelfCheckReason,
    self_check,
)
from vhost_operator.acme.client import AcmeClient
from vhost_operator.acme.config import AcmeConfig
from vhost_operator.acme.errors import (
    AcmeError,
    AcmeRefused,
    AcmeUnavailable,
    ChallengeFailed,
    stable_text,
)
from vhost_operator.acme.orders import OrderOptions
from vhost_operator.certs import (
    certificate_id,
    certificate_matches_key,
    inspect_certificate,
    new_private_key_pem,
)

LOCALHOST = "127.0.0.1"
RESPONDER_PORT = free_port()
EAB_KID = "kid-1"
EAB_HMAC_KEY = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"


# -- fixtures and helpers -------------------------------------------------------------------


def _start(pebble: Pebble) -> Pebble:
    if not available():
        pytest.fail("pebble and pebble-challtestsrv are required: bash hack/build-pebble.sh")
    pebble.start()
    return pebble


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pebble]:
    pebble = _start(Pebble(RESPONDER_PORT, workdir=tmp_path_factory.mktemp("pebble")))
    yield pebble
    pebble.stop()


@pytest.fixture(autouse=True)
def _pebble_logs_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    """Print pebble's log tail in teardown: pytest shows it only for a failing test."""
    yield
    if "ca" in request.fixturenames:
        print(request.getfixturevalue("ca").logs())


def config_for(pebble: Pebble, **overrides: object) -> AcmeConfig:
    settings: dict[str, object] = {
        "directory_url": pebble.directory_url,
        "ca_bundle_path": pebble.ca_bundle_path,
        "contact_email": "hostmaster@example.com",
        "order_timeout": 20.0,
    }
    return AcmeConfig.model_validate({**settings, **overrides})


async def registered(pebble: Pebble, account_key_pem: bytes | None = None) -> AcmeClient:
    client = AcmeClient(config_for(pebble))
    await client.register(account_key_pem)
    return client


@contextlib.asynccontextmanager
async def serving(store: ChallengeStore) -> AsyncIterator[ChallengeResponder]:
    """The challenge responder on the port pebble validates against."""
    responder = ChallengeResponder(store)
    await responder.start(LOCALHOST, RESPONDER_PORT)
    try:
        yield responder
    finally:
        await responder.stop()


class OrderLog:
    """An ``on_order_created`` hook that remembers every order the client created."""

    def __init__(self) -> None:
        self.urls: list[str] = []

    async def __call__(self, order_url: str) -> None:
        self.urls.append(order_url)


def verify_chain(chain_pem: bytes, root_pem: bytes, hostname: str) -> None:
    """Path validation as a TLS client does it; raises if the chain does not lead to the root."""
    leaf, *intermediates = x509.load_pem_x509_certificates(chain_pem)
    verifier = (
        PolicyBuilder()
        .store(Store(x509.load_pem_x509_certificates(root_pem)))
        .time(datetime.now(UTC))
        .build_server_verifier(x509.DNSName(hostname))
    )
    verifier.verify(leaf, intermediates)


# -- issuance -------------------------------------------------------------------------------


def test_issues_a_certificate_that_chains_to_the_ca_root_and_matches_the_key(ca: Pebble) -> None:
    hostname = "issue.example.com"
    key_pem = new_private_key_pem()
    store = ChallengeStore()
    orders = OrderLog()

    async def scenario() -> bytes:
        client = await registered(ca)
        async with serving(store):
            issued = await client.issue(
                hostname,
                key_pem,
                publish=store.publish,
                unpublish=store.unpublish,
                self_check=SelfChecker(
                    f"http://{LOCALHOST}:{RESPONDER_PORT}", keep_connections=False
                ),
                on_order_created=orders,
            )
        assert orders.urls == [issued.order_url]
        return issued.chain_pem

    chain_pem = asyncio.run(scenario())

    verify_chain(chain_pem, ca.root_pem(), hostname)
    assert certificate_matches_key(chain_pem, key_pem)
    assert len(store) == 0, "the challenge must be unpublished after issuance"


def test_account_key_is_reused_and_finds_the_same_account(ca: Pebble) -> None:
    async def scenario() -> None:
        first = AcmeClient(config_for(ca))
        account_key = await first.register(None)
        second = AcmeClient(config_for(ca))
        assert await second.register(account_key) == account_key
        assert second.account_url == first.account_url is not None
        # The returned key is usable for orders, not just for the lookup.
        store = ChallengeStore()
        async with serving(store):
            await second.issue(
                "reuse.example.com",
                new_private_key_pem(),
                publish=store.publish,
                unpublish=store.unpublish,
            )

    asyncio.run(scenario())


# -- self-check and resuming ----------------------------------------------------------------


def test_failed_self_check_stops_before_the_ca_and_resuming_reuses_the_order(ca: Pebble) -> None:
    hostname = "resume.example.com"
    key_pem = new_private_key_pem()
    orders = OrderLog()
    nowhere = free_port()  # nothing listens here: the self-check cannot connect

    async def scenario() -> None:
        client = await registered(ca)
        unserved = ChallengeStore()  # if the CA validated now it would get a 404 and fail
        with pytest.raises(SelfCheckFailed) as failed:
            await client.issue(
                hostname,
                key_pem,
                publish=unserved.publish,
                unpublish=unserved.unpublish,
                self_check=SelfChecker(
                    f"http://{LOCALHOST}:{nowhere}", timeout=5, keep_connections=False
                ),
                on_order_created=orders,
            )
        assert failed.value.reason is SelfCheckReason.UNREACHABLE
        assert hostname in str(failed.value) and str(nowhere) not in str(failed.value)
        assert len(orders.urls) == 1 and len(unserved) == 0

        # The restart: same key, the stored order URL. A challenge the CA had already tried
        # would have failed (nothing served it), so success proves it was never answered.
        store = ChallengeStore()
        async with serving(store):
            issued = await client.issue(
                hostname,
                key_pem,
                publish=store.publish,
                unpublish=store.unpublish,
                self_check=SelfChecker(
                    f"http://{LOCALHOST}:{RESPONDER_PORT}", keep_connections=False
                ),
                order_url=orders.urls[0],
                on_order_created=orders,
            )
        assert issued.order_url == orders.urls[0]
        assert len(orders.urls) == 1, "resuming must not create a second order"

        # Resuming a valid order downloads its certificate again instead of ordering anew.
        again = await client.issue(
            hostname,
            key_pem,
            publish=store.publish,
            unpublish=store.unpublish,
            order_url=issued.order_url,
            on_order_created=orders,
        )
        assert again.order_url == issued.order_url and len(orders.urls) == 1
        assert certificate_matches_key(again.chain_pem, key_pem)

    asyncio.run(scenario())


@pytest.mark.parametrize("responder_running", [True, False], ids=["404", "refused"])
def test_unvalidatable_challenge_fails_with_the_cas_stable_detail(
    ca: Pebble, responder_running: bool
) -> None:
    hostname = f"unreachable-{int(responder_running)}.example.com"
    orders = OrderLog()

    async def fail_once(client: AcmeClient) -> ChallengeFailed:
        unserved = ChallengeStore()
        with pytest.raises(ChallengeFailed) as failed:
            await client.issue(
                hostname,
                new_private_key_pem(),
                publish=unserved.publish,
                unpublish=unserved.unpublish,
                on_order_created=orders,
            )
        return failed.value

    async def scenario() -> None:
        client = await registered(ca)
        async with contextlib.AsyncExitStack() as stack:
            if responder_running:
                await stack.enter_async_context(serving(ChallengeStore()))
            first, second = await fail_once(client), await fail_once(client)
        assert str(first) == str(second), "identical failures must produce identical text"
        assert first.problem_type is not None
        assert first.problem_type.startswith("urn:ietf:params:acme:error:")
        assert hostname in str(first)

        # The failed order is invalid: resuming it orders anew, which now succeeds.
        key_pem = new_private_key_pem()
        store = ChallengeStore()
        async with serving(store):
            issued = await client.issue(
                hostname,
                key_pem,
                publish=store.publish,
                unpublish=store.unpublish,
                order_url=orders.urls[-1],
                on_order_created=orders,
            )
        assert issued.order_url not in orders.urls[:-1] and len(orders.urls) == 3

    asyncio.run(scenario())


def test_resuming_an_order_the_ca_does_not_know_orders_anew(ca: Pebble) -> None:
    hostname = "forgotten.example.com"
    orders = OrderLog()
    unknown = ca.directory_url.replace("/dir", "/my-order/forgotten")

    async def scenario() -> None:
        client = await registered(ca)
        store = ChallengeStore()
        async with serving(store):
            issued = await client.issue(
                hostname,
                new_private_key_pem(),
                publish=store.publish,
                unpublish=store.unpublish,
                order_url=unknown,
                on_order_created=orders,
            )
        assert orders.urls == [issued.order_url] and issued.order_url != unknown

    asyncio.run(scenario())


def test_self_check_names_the_cause(tmp_path: Path) -> None:
    store = ChallengeStore()
    hostname = "check.example.com"

    async def scenario() -> None:
        responder = ChallengeResponder(store)
        await responder.start(LOCALHOST, 0)
        base = f"http://{LOCALHOST}:{responder.port}"
        try:
            await store.publish("tok3n", "tok3n.thumbprint")
            await self_check(base, hostname, "tok3n", "tok3n.thumbprint", 5)
            with pytest.raises(SelfCheckFailed) as wrong:
                await self_check(base, hostname, "tok3n", "tok3n.other", 5)
            assert wrong.value.reason is SelfCheckReason.WRONG_ANSWER
            with pytest.raises(SelfCheckFailed) as missing:
                await self_check(base, hostname, "unknown", "unknown.thumbprint", 5)
            assert missing.value.reason is SelfCheckReason.WRONG_STATUS
            assert "HTTP 404" in str(missing.value) and "DNS" in str(missing.value)
        finally:
            await responder.stop()
        with pytest.raises(SelfCheckFailed) as refused:
            await self_check(base, hostname, "tok3n", "tok3n.thumbprint", 5)
        assert refused.value.reason is SelfCheckReason.UNREACHABLE
        assert "port 80" in str(refused.value)
        with pytest.raises(SelfCheckFailed) as unresolvable:  # .invalid never resolves (RFC 6761)
            await self_check(None, "mail.example.invalid", "tok3n", "tok3n.thumbprint", 15)
        assert unresolvable.value.reason is SelfCheckReason.DNS
        assert "DNS record" in str(unresolvable.value)

    asyncio.run(scenario())


@contextlib.asynccontextmanager
async def counting_connections(port: int, answer: str) -> AsyncIterator[set[int]]:
    """A challenge server on ``port`` answering every token with ``answer``; yields the client
    ports of the connections its requests came on (one per TCP connection)."""
    clients: set[int] = set()

    async def respond(request: web.Request) -> web.Response:
        clients.add(request.transport.get_extra_info("peername")[1])  # type: ignore[union-attr]
        return web.Response(text=answer)

    app = web.Application()
    app.router.add_get(CHALLENGE_PATH + "{token}", respond)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, LOCALHOST, port).start()
        yield clients
    finally:
        await runner.cleanup()


def test_the_operators_self_check_keeps_its_connection_to_a_configured_address() -> None:
    """``SelfChecker`` (the operator's) sends its checks over one kept connection; a connection
    the server closed meanwhile (nginx reloaded, or restarted) is replaced, not a failed check;
    and its failures keep their reasons."""
    port, hostname = free_port(), "kept.example.com"
    base = f"http://{LOCALHOST}:{port}"

    async def scenario() -> None:
        checker = SelfChecker(base, timeout=5)
        try:
            async with counting_connections(port, "tok3n.thumbprint") as clients:
                for _ in range(3):
                    await checker(hostname, "tok3n", "tok3n.thumbprint")
                assert len(clients) == 1
                with pytest.raises(SelfCheckFailed) as wrong:
                    await checker(hostname, "tok3n", "tok3n.other")
                assert wrong.value.reason is SelfCheckReason.WRONG_ANSWER
                assert len(clients) == 1
                # The function on its own still connects anew each time.
                for _ in range(2):
                    await self_check(base, hostname, "tok3n", "tok3n.thumbprint", 5)
                assert len(clients) == 3
            async with counting_connections(port, "tok3n.thumbprint") as clients:
                await checker(hostname, "tok3n", "tok3n.thumbprint")  # the kept one is gone
                assert len(clients) == 1
            with pytest.raises(SelfCheckFailed) as refused:
                await checker(hostname, "tok3n", "tok3n.thumbprint")
            assert refused.value.reason is SelfCheckReason.UNREACHABLE
        finally:
            await checker.close()

    asyncio.run(scenario())


# -- the CA unreachable or refusing ---------------------------------------------------------


def test_unreachable_directory_is_unavailable_with_a_stable_message() -> None:
    config = AcmeConfig(directory_url=f"https://{LOCALHOST}:{free_port()}/dir", timeout=5)

    async def attempt() -> str:
        with pytest.raises(AcmeUnavailable) as failed:
            await AcmeClient(config).register(None)
        return str(failed.value)

    first, second = asyncio.run(attempt()), asyncio.run(attempt())
    assert first == second
    assert first == (
        f"cannot reach the ACME server {config.ca_origin} while fetching the directory: "
        "connection failed"
    )


def test_untrusted_ca_certificate_is_reported(ca: Pebble) -> None:
    config = config_for(ca, ca_bundle_path=None)
    with pytest.raises(AcmeUnavailable, match="TLS verification failed"):
        asyncio.run(AcmeClient(config).register(None))


def test_issue_before_register_is_refused(ca: Pebble) -> None:
    store = ChallengeStore()
    client = AcmeClient(config_for(ca))
    with pytest.raises(AcmeError, match="not registered"):
        asyncio.run(
            client.issue(
                "early.example.com",
                new_private_key_pem(),
                publish=store.publish,
                unpublish=store.unpublish,
            )
        )


def test_external_account_binding(tmp_path: Path) -> None:
    with Pebble(free_port(), eab_keys={EAB_KID: EAB_HMAC_KEY}, workdir=tmp_path) as pebble:

        async def scenario() -> None:
            with pytest.raises(AcmeRefused, match="requires External Account Binding"):
                await AcmeClient(config_for(pebble)).register(None)
            wrong = config_for(pebble, eab_kid=EAB_KID, eab_hmac_key="d3JvbmcgbWFjIGtleQ")
            with pytest.raises(AcmeRefused) as refused:
                await AcmeClient(wrong).register(None)
            assert refused.value.problem_type is not None
            bound = config_for(pebble, eab_kid=EAB_KID, eab_hmac_key=EAB_HMAC_KEY)
            first = AcmeClient(bound)
            account_key = await first.register(None)
            again = AcmeClient(bound)
            await again.register(account_key)
            assert again.account_url == first.account_url

        asyncio.run(scenario())


# -- configuration and message hygiene (no CA needed) ---------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {"directory_url": "ftp://ca.example/dir"},
        {"eab_kid": "kid-1"},
        {"eab_hmac_key": "abc"},
        {"eab_kid": "kid-1", "eab_hmac_key": "not base64url!"},
        {"contact_email": "a@example.com,b@example.com"},
        {"timeout": 0},
    ],
)
def test_config_rejects_inconsistent_settings(overrides: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        AcmeConfig.model_validate({"directory_url": "https://ca.example/dir", **overrides})


def test_config_keeps_the_mac_key_out_of_its_repr() -> None:
    config = AcmeConfig(
        directory_url="https://ca.example/dir", eab_kid="k", eab_hmac_key="c2VjcmV0"
    )
    assert "c2VjcmV0" not in repr(config)


def test_stable_text_removes_ids_and_times_but_keeps_the_hostname() -> None:
    detail = (
        "Fetching http://mail-server2024production.example.com:5002/.well-known/acme-challenge/"
        "bqVCzP42P0MMRIlvX9W9PqixqoCp6ZbUVcJ9-Ci5T0o at 2026-11-25T15:03:20.123Z: 404"
    )
    assert stable_text(detail, keep="mail-server2024production.example.com") == (
        "Fetching http://mail-server2024production.example.com:5002/.well-known/acme-challenge/"
        "<id> at <time>: 404"
    )
    assert len(stable_text("x" * 1000)) == 300


# -- renewal information and replacement orders (RFC 9773) ----------------------------------


def test_renewal_information_and_a_replacement_order(ca: Pebble) -> None:
    hostname = "replace.example.com"
    store = ChallengeStore()

    async def issue(client: AcmeClient, replaces: str | None) -> bytes:
        issued = await client.issue(
            hostname,
            new_private_key_pem(),
            publish=store.publish,
            unpublish=store.unpublish,
            options=OrderOptions(replaces=replaces),
        )
        return issued.chain_pem

    async def scenario() -> None:
        client = await registered(ca)
        assert client.renewal_info_supported
        async with serving(store):
            first = await issue(client, None)
            ident = certificate_id(first)
            asked_at = datetime.now(UTC)
            info = await client.renewal_info(ident)
            assert info is not None
            leaf = inspect_certificate(first)
            ideal = leaf.not_after - (leaf.not_after - leaf.not_before) / 3
            assert abs(info.start - (ideal - timedelta(days=1))) < timedelta(seconds=2)
            assert abs(info.end - (ideal + timedelta(days=1))) < timedelta(seconds=2)
            assert info.retry_after is not None  # pebble: six hours
            assert abs(info.retry_after - asked_at - timedelta(hours=6)) < timedelta(seconds=5)
            assert await client.renewal_info(f"{ident.split('.')[0]}.AQID") is None  # unknown

            replaced_before = ca.log_count("is a replacement of")
            await issue(client, ident)
            assert ca.log_count("is a replacement of") == replaced_before + 1
            # Replaced already: the CA answers alreadyReplaced, and the client orders without.
            third = await issue(client, ident)
            assert ca.log_count("is a replacement of") == replaced_before + 1
            assert certificate_id(third) not in ("", ident)

    asyncio.run(scenario())


def test_profiles_the_directory_lists_and_one_it_does_not(ca: Pebble) -> None:
    async def scenario() -> None:
        client = await registered(ca)
        assert set(client.profiles) == set(ca.profiles)
        with pytest.raises(AcmeRefused) as refused:
            await client.issue(
                "profile.example.com",
                new_private_key_pem(),
                publish=ChallengeStore().publish,
                unpublish=ChallengeStore().unpublish,
                options=OrderOptions(profile="tlsserver"),
            )
        assert str(refused.value) == (
            f"the CA at {client_origin(ca)} offers no ACME profile 'tlsserver'; it offers: default"
        )

    orders_before = ca.log_count("Added order")
    asyncio.run(scenario())
    assert ca.log_count("Added order") == orders_before


def client_origin(pebble: Pebble) -> str:
    return pebble.directory_url.rsplit("/", 1)[0]
