"""One issuance: an order for a hostname and its additional names, validated over HTTP-01 (one
authorization per name), its chain checked.

:class:`OrderSession` resumes or creates the order, answers its challenges through the caller's
hooks, finalizes it and downloads the chain, each call in a worker thread (``transport``). The
hook and result types of ``AcmeClient.issue`` live here too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import requests
from acme import challenges as acme_challenges
from acme import errors as acme_errors
from acme import messages
from acme.client import ClientV2
from josepy import b64 as jose_b64
from josepy.json_util import field as jose_field
from josepy.jwa import JWASignature
from josepy.jwk import JWK

from vhost_operator import certs
from vhost_operator.acme.config import AcmeConfig
from vhost_operator.acme.errors import (
    AcmeError,
    AcmeRefused,
    AcmeUnavailable,
    ChallengeFailed,
    describe_problem,
)
from vhost_operator.acme.transport import Network, Pause, blocking

logger = logging.getLogger(__name__)

T = TypeVar("T")

ChallengeHook = Callable[[str, str], Awaitable[None]]
"""``(token, key_authorization)``: publish, unpublish or self-check one HTTP-01 challenge."""

SelfCheckHook = Callable[[str, str, str], Awaitable[None]]
"""``(name, token, key_authorization)``: check that ``name`` serves one HTTP-01 challenge."""

OrderHook = Callable[[str], Awaitable[None]]
"""``(order_url)``: called once a new order exists, before any validation starts."""


@dataclasses.dataclass(frozen=True)
class IssuedCertificate:
    """A freshly issued certificate chain (leaf first) and the order that produced it."""

    chain_pem: bytes
    order_url: str


@dataclasses.dataclass(frozen=True)
class RenewalInfo:
    """A certificate's renewal information (RFC 9773): the window the CA suggests, and when
    to ask again (its ``Retry-After``; ``None`` when it sent none)."""

    start: datetime
    end: datetime
    retry_after: datetime | None


@dataclasses.dataclass(frozen=True)
class OrderOptions:
    """What a new order asks beyond its identifier: both optional, both ignored on resume."""

    profile: str | None = None
    """The ACME profile (draft-ietf-acme-profiles) the CA's directory lists."""
    replaces: str | None = None
    """The ARI identifier of the certificate this order renews (RFC 9773 section 5): a
    renewal inside the CA's suggested window is then exempt from its rate limits."""


@dataclasses.dataclass(frozen=True)
class Account:
    """A registered account: what every later request is signed with."""

    jwk: JWK
    alg: JWASignature
    url: str
    directory: messages.Directory
    thumbprint: str = dataclasses.field(init=False)
    """The key's thumbprint as key authorizations carry it (base64url SHA-256, RFC 7638):
    computed once, where the library serializes and hashes the key for each challenge."""

    def __post_init__(self) -> None:
        digest = self.jwk.thumbprint(hash_function=acme_challenges.HTTP01.thumbprint_hash_function)
        object.__setattr__(self, "thumbprint", jose_b64.b64encode(digest).decode())

    def key_authorization(self, challenge: acme_challenges.HTTP01) -> str:
        """``challenge.validation(jwk)`` (RFC 8555 section 8.1), from the stored thumbprint."""
        return f"{challenge.encode('token')}.{self.thumbprint}"


class OrderSession:
    """One issuance: its own connection to the CA and everything known about the order."""

    def __init__(
        self,
        *,
        client: ClientV2,
        account: Account,
        config: AcmeConfig,
        pause: Pause,
        hostname: str,
        private_key_pem: bytes,
        additional_names: Sequence[str] = (),
    ) -> None:
        self._client = client
        self._account = account
        self._config = config
        self._pause = pause
        self._hostname = hostname
        self._names = frozenset((hostname, *additional_names))
        self._key_pem = private_key_pem
        self._csr_pem = certs.csr_pem(private_key_pem, hostname, additional_names)
        self._deadline = time.monotonic() + config.order_timeout

    def close(self) -> None:
        self._client.net.session.close()

    async def resume(self, order_url: str) -> messages.OrderResource | None:
        """The order at ``order_url`` if it can still produce our certificate, else ``None``."""
        try:
            body, _ = await self._call("resuming the order", _fetch_order, self._client, order_url)
        except AcmeRefused as error:  # gone, expired or someone else's: order anew
            logger.info("order %s cannot be resumed: %s", order_url, error)
            return None
        if not self._resumable(body):
            logger.info("order %s is %s, ordering anew", order_url, body.status)
            return None
        order = messages.OrderResource(body=body, uri=order_url, csr_pem=self._csr_pem)
        if body.status == messages.STATUS_VALID and not await self._issued_for_our_key(body):
            logger.info("order %s was issued for another key, ordering anew", order_url)
            return None
        return order

    def _resumable(self, body: messages.Order) -> bool:
        usable = (
            messages.STATUS_PENDING,
            messages.STATUS_READY,
            messages.STATUS_PROCESSING,
            messages.STATUS_VALID,
        )
        names = {identifier.value for identifier in body.identifiers}
        expired = body.expires is not None and body.expires <= datetime.now(UTC)
        return body.status in usable and names == self._names and not expired

    async def _issued_for_our_key(self, body: messages.Order) -> bool:
        if body.certificate is None:
            return False
        chain = await self._download(body.certificate)
        try:
            return certs.certificate_matches_key(chain, self._key_pem)
        except certs.KeyMaterialError:  # unreadable: as good as not ours
            return False

    async def create_order(self, options: OrderOptions) -> messages.OrderResource:
        order: messages.OrderResource = await self._call(
            "creating the order", _new_order, self._client, self._csr_pem, options
        )
        logger.info("created order %s for %s", order.uri, self._hostname)
        return order

    async def authorize(
        self,
        order: messages.OrderResource,
        publish: ChallengeHook,
        unpublish: ChallengeHook,
        self_check: SelfCheckHook | None,
    ) -> None:
        """Complete every pending authorization of ``order`` over HTTP-01 (one per name)."""
        published: list[tuple[str, str]] = []
        # A new order comes with its authorizations fetched (the acme library does that); only
        # a resumed one needs them fetched here.
        fetched = {authzr.uri: authzr.body for authzr in order.authorizations or ()}
        try:
            for authz_url in order.body.authorizations:
                known = fetched.get(authz_url)
                authz = known if known is not None else await self._fetch_authz(authz_url)
                if authz.status == messages.STATUS_VALID:
                    continue
                if authz.status != messages.STATUS_PENDING:
                    raise self._challenge_failed(authz)
                challenge, http01 = self._http01(authz)
                token = str(http01.encode("token"))
                key_authorization = self._account.key_authorization(http01)
                published.append((token, key_authorization))
                await publish(token, key_authorization)
                if self_check is not None:
                    await self_check(authz.identifier.value, token, key_authorization)
                if challenge.status == messages.STATUS_PENDING:
                    response = acme_challenges.HTTP01Response(key_authorization=key_authorization)
                    await self._call(
                        "answering the challenge",
                        self._client.answer_challenge,
                        challenge,
                        response,
                    )
                await self._wait_for_validation(authz_url)
        finally:
            await _unpublish_all(unpublish, published)

    async def _fetch_authz(self, authz_url: str) -> messages.Authorization:
        authz, _ = await self._call(
            "fetching the authorization", _fetch_authz, self._client, authz_url
        )
        return authz

    def _http01(
        self, authz: messages.Authorization
    ) -> tuple[messages.ChallengeBody, acme_challenges.HTTP01]:
        for challenge in authz.challenges:
            if isinstance(challenge.chall, acme_challenges.HTTP01):
                return challenge, challenge.chall
        raise AcmeRefused(f"the CA offered no http-01 challenge for {authz.identifier.value}")

    async def _wait_for_validation(self, authz_url: str) -> None:
        # The first look comes after the first delay: asked at once, a CA has never validated
        # yet, and the request would only tell so.
        polls = _Backoff()
        retry_after = None
        while True:
            await self._sleep(polls.next(retry_after), "validate the challenge")
            authz, retry_after = await self._call(
                "waiting for validation", _fetch_authz, self._client, authz_url
            )
            if authz.status == messages.STATUS_VALID:
                return
            if authz.status != messages.STATUS_PENDING:
                raise self._challenge_failed(authz)

    def _challenge_failed(self, authz: messages.Authorization) -> ChallengeFailed:
        problem = next((c.error for c in authz.challenges if c.error is not None), None)
        name = authz.identifier.value
        where = f"http://{name}/.well-known/acme-challenge/"
        if problem is None:
            return ChallengeFailed(
                f"the CA could not validate {where}: authorization {authz.status}"
            )
        return ChallengeFailed(
            f"the CA could not validate {where}: {describe_problem(problem, name)}",
            problem_type=problem.typ,
        )

    async def finalize(self, order: messages.OrderResource) -> bytes:
        """Finalize ``order`` with our CSR once it is ready; return the checked chain PEM.

        An order whose authorizations were just validated is finalized straight away, without
        asking first whether it is ready (a CA that disagrees answers orderNotReady, and the
        order is then polled); the finalization's answer is the order itself, often already
        valid, so the certificate is downloaded without polling in between.
        """
        polls = _Backoff()
        body, retry_after = order.body, None
        finalized = tried_early = False
        while True:
            if body.status == messages.STATUS_VALID and body.certificate is not None:
                return self._checked(await self._download(body.certificate))
            if body.status == messages.STATUS_INVALID:
                raise self._issuance_refused(body)
            # "pending" here is our copy from before the authorizations were validated: try
            # once; the CA's own view decides (orderNotReady: poll until it says "ready").
            early = body.status == messages.STATUS_PENDING and not tried_early
            if not finalized and (body.status == messages.STATUS_READY or early):
                tried_early = True
                answer = await self._call(
                    "finalizing the order", _begin_finalization, self._client, order
                )
                if answer is not None:
                    finalized, body = True, answer
                    continue
            await self._sleep(polls.next(retry_after), "issue the certificate")
            body, retry_after = await self._call(
                "polling the order", _fetch_order, self._client, order.uri
            )

    async def _download(self, url: str) -> bytes:
        return await self._call("downloading the certificate", _download, self._client, url)

    def _issuance_refused(self, body: messages.Order) -> AcmeRefused:
        if body.error is None:
            return AcmeRefused(f"the CA abandoned the order for {self._hostname}")
        return AcmeRefused(
            f"the CA refused to issue for {self._hostname}: "
            f"{describe_problem(body.error, self._hostname)}",
            problem_type=body.error.typ,
        )

    def _checked(self, chain_pem: bytes) -> bytes:
        """Refuse a chain whose leaf is not for our key and names (never store such a pair)."""
        try:
            info = certs.inspect_certificate(chain_pem)
        except certs.KeyMaterialError as error:
            raise AcmeError(
                f"the CA sent an unreadable certificate for {self._hostname}"
            ) from error
        if not certs.certificate_matches_key(chain_pem, self._key_pem):
            raise AcmeError(f"the CA issued a certificate for {self._hostname} with another key")
        missing = sorted(self._names - set(info.dns_names))
        if missing:
            raise AcmeError(f"the CA issued a certificate that does not name {', '.join(missing)}")
        return chain_pem

    async def _sleep(self, seconds: float, what: str) -> None:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise AcmeUnavailable(
                f"the CA at {self._config.ca_origin} did not {what} for {self._hostname} "
                f"within {self._config.order_timeout:g} seconds"
            )
        await asyncio.sleep(min(seconds, remaining))

    async def _call(self, step: str, function: Callable[..., T], *args: Any) -> T:
        net = self._client.net
        assert isinstance(net, Network)
        return await blocking(self._config, self._pause, step, self._hostname, net, function, *args)


# The functions below run in worker threads; each touches only the client it is given.


def _post_as_get(client: ClientV2, url: str) -> requests.Response:
    response: requests.Response = client.net.post(
        url, None, new_nonce_url=client.directory["newNonce"]
    )
    return response


class _NewOrder(messages.NewOrder):
    """The acme library's new-order payload with RFC 9773's ``replaces``."""

    replaces: str | None = jose_field("replaces", omitempty=True)


def _new_order(client: ClientV2, csr_pem: bytes, options: OrderOptions) -> messages.OrderResource:
    """``ClientV2.new_order`` for our single DNS name, with ``profile`` and ``replaces``."""
    names = certs.csr_dns_names(csr_pem)
    identifiers = [messages.Identifier(typ=messages.IDENTIFIER_FQDN, value=n) for n in names]
    payload = _NewOrder(identifiers=identifiers, profile=options.profile, replaces=options.replaces)
    try:
        response = _post_new_order(client, payload)
    except (acme_errors.ConflictError, messages.Error) as error:
        # RFC 9773 answers an order replacing a certificate that already has a replacement
        # with alreadyReplaced, status 409, which the acme library turns into a bare
        # ConflictError. `replaces` only buys the rate-limit exemption: order without it.
        replaced = isinstance(error, acme_errors.ConflictError) or error.code == "alreadyReplaced"
        if options.replaces is None or not replaced:
            raise
        logger.info("%s was replaced already; ordering without replaces", options.replaces)
        response = _post_new_order(client, payload.update(replaces=None))
    body = messages.Order.from_json(response.json())
    authorizations = [
        messages.AuthorizationResource(
            body=messages.Authorization.from_json(_post_as_get(client, url).json()), uri=url
        )
        for url in body.authorizations
    ]
    return messages.OrderResource(
        body=body,
        uri=response.headers.get("Location"),
        authorizations=authorizations,
        csr_pem=csr_pem,
    )


def _post_new_order(client: ClientV2, payload: _NewOrder) -> requests.Response:
    response: requests.Response = client.net.post(
        client.directory["newOrder"], payload, new_nonce_url=client.directory["newNonce"]
    )
    return response


def _fetch_order(client: ClientV2, url: str) -> tuple[messages.Order, float | None]:
    response = _post_as_get(client, url)
    return messages.Order.from_json(response.json()), _retry_after(response)


def _fetch_authz(client: ClientV2, url: str) -> tuple[messages.Authorization, float | None]:
    response = _post_as_get(client, url)
    return messages.Authorization.from_json(response.json()), _retry_after(response)


def _download(client: ClientV2, url: str) -> bytes:
    return _post_as_get(client, url).text.encode()


def _retry_after(response: requests.Response) -> float | None:
    if "Retry-After" not in response.headers:
        return None
    when = ClientV2.retry_after(response, default=1)
    return max(0.0, (when - datetime.now()).total_seconds())


def _begin_finalization(client: ClientV2, order: messages.OrderResource) -> messages.Order | None:
    """The order as the CA answers the finalization; ``None`` if it is not ready for it yet."""
    try:
        return client.begin_finalization(order).body
    except messages.Error as error:
        if error.code != "orderNotReady":  # not ready yet: the polling loop tries again
            raise
        return None


class _Backoff:
    """Polling delays: quick at first (test CAs answer at once), then up to a few seconds."""

    def __init__(self, first: float = 0.2, factor: float = 2.0, cap: float = 3.0) -> None:
        self._delay = first
        self._factor = factor
        self._cap = cap

    def next(self, retry_after: float | None) -> float:
        """The next delay, stretched to the CA's ``Retry-After`` when it asks for more."""
        delay = self._delay
        self._delay = min(self._cap, self._delay * self._factor)
        return max(delay, retry_after or 0.0)


async def _unpublish_all(unpublish: ChallengeHook, published: list[tuple[str, str]]) -> None:
    """Unpublish every challenge; a failure here is logged, never masks the real outcome."""
    for token, key_authorization in published:
        try:
            await unpublish(token, key_authorization)
        except Exception:
            logger.exception("could not unpublish an ACME challenge")
