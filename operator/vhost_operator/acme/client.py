"""A narrow async ACME client: one account, HTTP-01 orders for single hostnames.

It wraps certbot's ``acme`` library, whose calls block, by running each of them in a worker
thread (``asyncio.to_thread``) while the hooks the caller passes (publish the challenge, persist
the order URL, self-check) run on the event loop between them.

Errors raised here, all mapped at this boundary from ``acme``, ``josepy`` and ``requests``::

    VhostOperatorError
    └── AcmeError                 protocol nonsense, a certificate not matching its key
        ├── AcmeUnavailable       the CA could not be reached, timed out, answered 5xx or
        │   │                     kept rejecting nonces; transient-ish: retrying later may help
        │   └── AcmeRetryLater    the CA answered 429 or 503 with ``Retry-After``: it named
        │                         the time before which it must not be asked again
        ├── AcmeRefused           the CA answered with an ACME problem (rejectedIdentifier,
        │                         unauthorized, rateLimited without Retry-After, ...)
        ├── ChallengeFailed       the CA tried to validate and could not; carries its detail
        └── SelfCheckFailed       (challenges.py) our own fetch of the challenge URL failed;
                                  the CA was not asked

Every message is stable: it names the step, the CA's address from the configuration, the host
and the CA's problem type and detail, with random identifiers (tokens, order and authorization
ids), timestamps and object addresses removed. Identical failures therefore write identical
``status.error`` text and do not cause reconcile hot loops.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
from acme import challenges as acme_challenges
from acme import errors as acme_errors
from acme import messages
from acme.client import ClientNetwork, ClientV2
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from josepy import errors as jose_errors
from josepy.jwa import ES256, ES384, ES512, RS256, JWASignature
from josepy.jwk import JWK, JWKEC, JWKRSA
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FilePath,
    SecretStr,
    field_validator,
    model_validator,
)
from requests.adapters import HTTPAdapter

from vhost_operator import certs
from vhost_operator.errors import VhostOperatorError

logger = logging.getLogger(__name__)

T = TypeVar("T")

ChallengeHook = Callable[[str, str], Awaitable[None]]
"""``(token, key_authorization)``: publish, unpublish or self-check one HTTP-01 challenge."""

OrderHook = Callable[[str], Awaitable[None]]
"""``(order_url)``: called once a new order exists, before any validation starts."""

BAD_NONCE_ATTEMPTS = 10
"""Times one request is sent while the CA rejects its replay nonce (``badNonce``). A rejected
nonce means the CA did not process the request, so sending it again is always safe; CAs may
reject good nonces at random (pebble rejects 5 % by default, up to any share it is told), and
the acme library tries only twice: at 30 % that fails 9 % of all requests. Ten tries leave
0.3 ** 10, about six in a million."""


class AcmeError(VhostOperatorError):
    """Base of the ACME errors; its message is meant for ``status.error`` as it is."""

    def __init__(self, message: str, *, problem_type: str | None = None) -> None:
        super().__init__(message)
        self.problem_type = problem_type
        """The CA's ``urn:ietf:params:acme:error:*`` type, when the CA sent a problem."""


class AcmeUnavailable(AcmeError):
    """The CA could not be reached or did not finish in time; a later retry may succeed."""


class AcmeRetryLater(AcmeUnavailable):
    """The CA asked to be left alone until ``until`` (``429``/``503`` with ``Retry-After``).

    Nothing is wrong with the host: its order waits, and no request may reach the CA before
    ``until``. ``reason`` is the CA's problem (or HTTP status) without the host or the step, so
    that hosts that never called the CA can be told why they wait too.
    """

    def __init__(
        self, message: str, *, until: datetime, reason: str, problem_type: str | None = None
    ) -> None:
        super().__init__(message, problem_type=problem_type)
        self.until = until
        self.reason = reason


class AcmeRefused(AcmeError):
    """The CA understood the request and refused it (an ACME problem document)."""


class ChallengeFailed(AcmeError):
    """The CA could not validate the HTTP-01 challenge; the message carries the CA's detail."""


class AcmeConfig(BaseModel):
    """Which CA to use and how to talk to it. Secrets stay out of ``repr`` and logs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    directory_url: str
    """The CA's ACME directory, e.g. ``https://acme-v02.api.letsencrypt.org/directory``."""
    contact_email: str | None = None
    """Where the CA sends expiry and policy mail; set on account creation only."""
    eab_kid: str | None = None
    """External Account Binding key id, for CAs that require one (ZeroSSL, private CAs)."""
    eab_hmac_key: SecretStr | None = None
    """External Account Binding MAC key, base64url as CAs hand it out."""
    ca_bundle_path: FilePath | None = None
    """PEM bundle trusted for the CA's HTTPS API instead of the system store (private CAs)."""
    user_agent: str = "vhost-operator"
    timeout: int = Field(default=30, ge=1, le=300)
    """Seconds allowed for one HTTP request to the CA."""
    order_timeout: float = Field(default=120.0, gt=0)
    """Seconds to wait for the CA to validate and issue before giving up (AcmeUnavailable)."""

    @field_validator("directory_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("directory_url must be an http(s) URL")
        return value

    @field_validator("contact_email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[^@\s,]+@[^@\s,]+", value):
            raise ValueError("contact_email must be a single email address")
        return value

    @field_validator("eab_hmac_key")
    @classmethod
    def _base64url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9_-]+=*", value.get_secret_value()):
            raise ValueError("eab_hmac_key must be base64url")
        return value

    @model_validator(mode="after")
    def _eab_pair(self) -> AcmeConfig:
        if (self.eab_kid is None) != (self.eab_hmac_key is None):
            raise ValueError("eab_kid and eab_hmac_key must be set together")
        return self

    @property
    def ca_origin(self) -> str:
        """``scheme://host:port`` of the CA: the stable address named in error messages."""
        parts = urlsplit(self.directory_url)
        return f"{parts.scheme}://{parts.netloc}"


@dataclasses.dataclass(frozen=True)
class IssuedCertificate:
    """A freshly issued certificate chain (leaf first) and the order that produced it."""

    chain_pem: bytes
    order_url: str


@dataclasses.dataclass(frozen=True)
class _Account:
    """A registered account: what every later request is signed with."""

    jwk: JWK
    alg: JWASignature
    url: str
    directory: messages.Directory


class AcmeClient:
    """Registers one ACME account and orders certificates with it over HTTP-01.

    Call :meth:`register` once, then :meth:`issue` as often as needed, concurrently too: each
    issuance opens its own connection and nonce pool.
    """

    def __init__(self, config: AcmeConfig) -> None:
        self._config = config
        self._account: _Account | None = None
        self._pause = _Pause()
        # What requests would read from the environment on every request (proxies, a CA
        # bundle), read once: the CA's address never changes, and scanning the environment
        # was a few percent of the operator's CPU while ordering hundreds of certificates.
        self._proxies = requests.utils.get_environ_proxies(config.directory_url)
        self._ca_bundle = (
            str(config.ca_bundle_path)
            if config.ca_bundle_path is not None
            else _environment_ca_bundle()
        )

    @property
    def account_url(self) -> str | None:
        """The account's URL at the CA once registered (stable for a given account key)."""
        return self._account.url if self._account else None

    async def register(self, account_key_pem: bytes | None) -> bytes:
        """Find the account of ``account_key_pem`` at the CA, or create it; return the key PEM.

        With ``None`` a new key is generated. The caller stores the returned PEM (a Secret) and
        passes it back next time, so the operator keeps one account instead of creating one per
        start. A given key is first looked up with ``onlyReturnExisting``, so restarts never send
        the External Account Binding again. Raises :class:`AcmeError` subclasses, and
        :class:`~vhost_operator.certs.KeyMaterialError` for an unusable key.
        """
        key_pem = certs.new_private_key_pem() if account_key_pem is None else account_key_pem
        jwk, alg = _jwk_for(key_pem)
        self._pause.check(self._config.ca_origin)
        net = self._network(jwk, alg, account=None)
        try:
            directory = await self._call(
                "fetching the directory", net, _get_directory, self._config, net
            )
            client = ClientV2(directory, net)
            url = None
            if account_key_pem is not None:
                url = await self._call("looking up the account", net, _find_account, client)
            if url is None:
                url = await self._create_account(client, net, jwk)
        finally:
            net.session.close()
        self._account = _Account(jwk, alg, url, directory)
        logger.info("using ACME account %s", url)
        return key_pem

    async def _create_account(self, client: ClientV2, net: _Network, jwk: JWK) -> str:
        eab = None
        if self._config.eab_kid is not None and self._config.eab_hmac_key is not None:
            eab = messages.ExternalAccountBinding.from_data(
                account_public_key=jwk.public_key(),
                kid=self._config.eab_kid,
                hmac_key=self._config.eab_hmac_key.get_secret_value(),
                directory=client.directory,
            )
        elif client.external_account_required():
            raise AcmeRefused(
                f"the CA at {self._config.ca_origin} requires External Account Binding; "
                "configure its key id and MAC key"
            )
        registration = messages.NewRegistration.from_data(
            email=self._config.contact_email,
            terms_of_service_agreed=True,
            external_account_binding=eab,
        )
        return await self._call("creating the account", net, _create_account, client, registration)

    async def issue(
        self,
        hostname: str,
        private_key_pem: bytes,
        *,
        publish: ChallengeHook,
        unpublish: ChallengeHook,
        self_check: ChallengeHook | None = None,
        order_url: str | None = None,
        on_order_created: OrderHook | None = None,
    ) -> IssuedCertificate:
        """Order, validate and download a certificate for ``hostname`` and ``private_key_pem``.

        ``order_url`` resumes an earlier order when the CA still holds it (pending, ready,
        processing or valid, for this hostname), so a restart mid-issuance does not order twice;
        otherwise a new order is created and reported to ``on_order_created`` before validation
        starts. The challenge is published, ``self_check`` (if any) must pass before the CA is
        asked, and it is unpublished again however the issuance ends. The downloaded leaf is
        checked against ``private_key_pem``: a mismatched pair is never returned.

        Once the CA asked for a pause (:class:`AcmeRetryLater`, from any issuance), no new
        issuance starts before its end: this raises the same error without asking the CA.
        Issuances already under way go on (their orders exist; breaking off in the middle of a
        validation would waste it); each stops at its own next ``Retry-After``.
        Raises :class:`AcmeError` subclasses (including ``SelfCheckFailed`` from the hook), and
        :class:`~vhost_operator.certs.KeyMaterialError` for an unusable private key.
        """
        self._pause.check(self._config.ca_origin)
        session = self._open_session(hostname, private_key_pem)
        try:
            order = await session.resume(order_url) if order_url else None
            if order is None:
                order = await session.create_order()
                if on_order_created is not None:
                    await on_order_created(order.uri)
            if order.body.status == messages.STATUS_PENDING:
                await session.authorize(order, publish, unpublish, self_check)
            chain_pem = await session.finalize(order)
        finally:
            session.close()
        return IssuedCertificate(chain_pem=chain_pem, order_url=order.uri)

    def _open_session(self, hostname: str, private_key_pem: bytes) -> _OrderSession:
        if self._account is None:
            raise AcmeError("the ACME account is not registered yet")
        account = self._account
        registration = messages.RegistrationResource(uri=account.url, body=messages.Registration())
        net = self._network(account.jwk, account.alg, account=registration)
        return _OrderSession(
            client=ClientV2(account.directory, net),
            account=account,
            config=self._config,
            pause=self._pause,
            hostname=hostname,
            private_key_pem=private_key_pem,
        )

    def _network(
        self, jwk: JWK, alg: JWASignature, account: messages.RegistrationResource | None
    ) -> _Network:
        net = _Network(
            jwk,
            account=account,
            alg=alg,
            user_agent=self._config.user_agent,
            timeout=self._config.timeout,
        )
        net.session.trust_env = False
        net.session.proxies.update(self._proxies)
        if self._ca_bundle is not None:
            net.session.mount("https://", _TrustingAdapter(self._ca_bundle))
        return net

    async def _call(self, step: str, net: _Network, function: Callable[..., T], *args: Any) -> T:
        return await _blocking(self._config, self._pause, step, "", net, function, *args)


class _OrderSession:
    """One issuance: its own connection to the CA and everything known about the order."""

    def __init__(
        self,
        *,
        client: ClientV2,
        account: _Account,
        config: AcmeConfig,
        pause: _Pause,
        hostname: str,
        private_key_pem: bytes,
    ) -> None:
        self._client = client
        self._account = account
        self._config = config
        self._pause = pause
        self._hostname = hostname
        self._key_pem = private_key_pem
        self._csr_pem = certs.csr_pem(private_key_pem, hostname)
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
        return body.status in usable and names == {self._hostname} and not expired

    async def _issued_for_our_key(self, body: messages.Order) -> bool:
        if body.certificate is None:
            return False
        chain = await self._download(body.certificate)
        try:
            return certs.certificate_matches_key(chain, self._key_pem)
        except certs.KeyMaterialError:  # unreadable: as good as not ours
            return False

    async def create_order(self) -> messages.OrderResource:
        order: messages.OrderResource = await self._call(
            "creating the order", self._client.new_order, self._csr_pem
        )
        logger.info("created order %s for %s", order.uri, self._hostname)
        return order

    async def authorize(
        self,
        order: messages.OrderResource,
        publish: ChallengeHook,
        unpublish: ChallengeHook,
        self_check: ChallengeHook | None,
    ) -> None:
        """Complete every pending authorization of ``order`` over HTTP-01."""
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
                key_authorization = http01.validation(self._account.jwk)
                published.append((token, key_authorization))
                await publish(token, key_authorization)
                if self_check is not None:
                    await self_check(token, key_authorization)
                if challenge.status == messages.STATUS_PENDING:
                    response = http01.response(self._account.jwk)
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
        raise AcmeRefused(f"the CA offered no http-01 challenge for {self._hostname}")

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
        where = f"http://{self._hostname}/.well-known/acme-challenge/"
        if problem is None:
            return ChallengeFailed(
                f"the CA could not validate {where}: authorization {authz.status}"
            )
        return ChallengeFailed(
            f"the CA could not validate {where}: {_describe_problem(problem, self._hostname)}",
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
            f"{_describe_problem(body.error, self._hostname)}",
            problem_type=body.error.typ,
        )

    def _checked(self, chain_pem: bytes) -> bytes:
        """Refuse a chain whose leaf is not for our key and hostname (never store such a pair)."""
        try:
            info = certs.inspect_certificate(chain_pem)
        except certs.KeyMaterialError as error:
            raise AcmeError(
                f"the CA sent an unreadable certificate for {self._hostname}"
            ) from error
        if not certs.certificate_matches_key(chain_pem, self._key_pem):
            raise AcmeError(f"the CA issued a certificate for {self._hostname} with another key")
        if self._hostname not in info.dns_names:
            raise AcmeError(f"the CA issued a certificate that does not name {self._hostname}")
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
        assert isinstance(net, _Network)
        return await _blocking(
            self._config, self._pause, step, self._hostname, net, function, *args
        )


# The functions below run in worker threads; each touches only the client it is given.


def _get_directory(config: AcmeConfig, net: ClientNetwork) -> messages.Directory:
    return ClientV2.get_directory(config.directory_url, net)


def _find_account(client: ClientV2) -> str | None:
    """The URL of the account signed by the client's key, or ``None`` if there is none."""
    try:
        client.new_account(messages.NewRegistration(only_return_existing=True))
    except acme_errors.ConflictError as existing:  # 200 + Location: the account exists
        return existing.location
    except messages.Error as error:
        if error.code == "accountDoesNotExist":
            return None
        raise
    raise AcmeError("the CA created an account although asked only to look one up")


def _create_account(client: ClientV2, registration: messages.NewRegistration) -> str:
    try:
        created = client.new_account(registration)
    except acme_errors.ConflictError as existing:  # registered meanwhile ("already registered")
        return existing.location
    return created.uri


def _post_as_get(client: ClientV2, url: str) -> requests.Response:
    response: requests.Response = client.net.post(
        url, None, new_nonce_url=client.directory["newNonce"]
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


def _environment_ca_bundle() -> str | None:
    """The CA bundle requests itself would take from the environment, if any."""
    return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or None


class _TrustingAdapter(HTTPAdapter):
    """Verifies the CA's HTTPS certificate against a given bundle instead of the system store.

    ``acme`` passes ``verify=True`` with every request, which overrides a session-level bundle;
    substituting it at the transport keeps the trust decision per client instead of global
    (``REQUESTS_CA_BUNDLE`` would change it for the whole process).
    """

    def __init__(self, ca_bundle_path: str) -> None:
        super().__init__()
        self._ca_bundle_path = ca_bundle_path

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float | None, float | None] | None = None,
        verify: bool | str = True,
        cert: str | tuple[str, str] | None = None,
        proxies: dict[str, str] | None = None,
    ) -> requests.Response:
        # requests turns verify=True into REQUESTS_CA_BUNDLE when that is set, so anything but
        # an explicit "do not verify" means: verify against the configured bundle.
        trusted = self._ca_bundle_path if verify is not False else False
        return super().send(request, stream, timeout, trusted, cert, proxies)


def _jwk_for(key_pem: bytes) -> tuple[JWK, JWASignature]:
    """The account key as a JWK with the JWS algorithm that matches its type and size."""
    key = certs.load_private_key(key_pem)
    if isinstance(key, rsa.RSAPrivateKey):
        return JWKRSA(key=key), RS256
    algorithms = {"secp256r1": ES256, "secp384r1": ES384, "secp521r1": ES512}
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name not in algorithms:
        raise certs.KeyMaterialError("the ACME account key must be RSA or ECDSA P-256/384/521")
    return JWKEC(key=key), algorithms[key.curve.name]


async def _blocking(
    config: AcmeConfig,
    pause: _Pause,
    step: str,
    hostname: str,
    net: _Network,
    function: Callable[..., T],
    *args: Any,
) -> T:
    """Run one blocking ``acme`` call in a thread and map its failure onto our error tree; a
    ``Retry-After`` the CA sent with it pauses every new issuance of the account."""
    try:
        return await asyncio.to_thread(function, *args)
    except AcmeError:
        raise
    except _LIBRARY_ERRORS as error:
        doing = f"{step} for {hostname}" if hostname else step
        until = net.retry_after
        if until is None or isinstance(error, requests.RequestException):
            raise _translate(error, config.ca_origin, doing, hostname) from error
        wait = _retry_later(error, config.ca_origin, doing, hostname, until)
        pause.note(wait)
        raise wait from error


def parse_retry_after(value: str | None, now: datetime) -> datetime | None:
    """The time a ``Retry-After`` header names (seconds, or an HTTP-date), as aware UTC.

    ``None`` for a missing or unreadable header. A time in the past means "now". The result
    is rounded up to a whole second: status shows seconds, and waking a moment late is
    harmless while a moment early would call the CA before the time it gave.
    """
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        until = now + timedelta(seconds=int(value))
    else:
        try:
            until = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if until.tzinfo is None:  # "-0000": UTC by RFC 5322
            until = until.replace(tzinfo=UTC)
    until = max(until.astimezone(UTC), now)
    whole = until.replace(microsecond=0)
    return whole if whole == until else whole + timedelta(seconds=1)


class _Pause:
    """The end of the latest pause the CA asked for: no new issuance starts before it.

    Let's Encrypt's limits on new orders are per account and its overload answers per client
    address, so a ``Retry-After`` given to one host's request holds for every host's.
    """

    def __init__(self) -> None:
        self._until: datetime | None = None
        self._reason = ""

    def note(self, wait: AcmeRetryLater) -> None:
        if self._until is None or wait.until > self._until:
            self._until, self._reason = wait.until, wait.reason

    def check(self, origin: str) -> None:
        """Raise :class:`AcmeRetryLater` while the pause lasts."""
        if self._until is not None and datetime.now(UTC) < self._until:
            raise AcmeRetryLater(
                f"the CA at {origin} asked to wait: {self._reason}",
                until=self._until,
                reason=self._reason,
            )


class _Network(ClientNetwork):
    """The acme library's transport, sending a request again while the CA rejects its nonce
    (:data:`BAD_NONCE_ATTEMPTS`), and keeping the ``Retry-After`` of a ``429``/``503`` answer
    (the library's errors do not carry the response)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.retry_after: datetime | None = None
        """When the last answer was a 429 or 503 with a readable ``Retry-After``: its time."""
        self.session.hooks["response"].append(self._note_retry_after)

    def _note_retry_after(self, response: requests.Response, *_: Any, **__: Any) -> None:
        self.retry_after = None
        if response.status_code in (429, 503):
            header = response.headers.get("Retry-After")
            self.retry_after = parse_retry_after(header, datetime.now(UTC))

    def post(self, *args: Any, **kwargs: Any) -> requests.Response:
        for attempt in range(1, BAD_NONCE_ATTEMPTS + 1):
            try:
                response: requests.Response = self._post_once(*args, **kwargs)
                return response
            except messages.Error as error:
                if error.code != "badNonce" or attempt == BAD_NONCE_ATTEMPTS:
                    raise
                logger.debug("the CA rejected a nonce (attempt %d), sending again", attempt)
        raise AssertionError("unreachable")


def _retry_later(
    error: Exception, origin: str, doing: str, hostname: str, until: datetime
) -> AcmeRetryLater:
    problem_type = None
    if isinstance(error, messages.Error):
        reason, problem_type = _describe_problem(error, hostname), error.typ
    elif isinstance(error, acme_errors.ClientError) and isinstance(
        response := error.args[0] if error.args else None, requests.Response
    ):
        reason = f"HTTP {response.status_code}"
    else:
        reason = "the CA is busy"
    return AcmeRetryLater(
        f"the CA at {origin} asked to wait while {doing}: {reason}",
        until=until,
        reason=reason,
        problem_type=problem_type,
    )


# What the acme library, josepy and requests raise for failures of the CA or the network.
# KeyError/ValueError cover answers missing a field or not being JSON at all.
_LIBRARY_ERRORS = (
    requests.RequestException,
    acme_errors.Error,
    jose_errors.Error,
    ValueError,
    KeyError,
)


def _translate(error: Exception, origin: str, doing: str, hostname: str) -> AcmeError:
    """The stable :class:`AcmeError` for a library failure while ``doing`` something."""
    if isinstance(error, messages.Error):
        return _from_problem(error, origin, doing, hostname)
    if isinstance(error, requests.RequestException) and not isinstance(
        error, requests.exceptions.InvalidJSONError
    ):
        return AcmeUnavailable(
            f"cannot reach the ACME server {origin} while {doing}: {_network_cause(error)}"
        )
    if isinstance(error, acme_errors.ClientError) and isinstance(
        response := error.args[0] if error.args else None, requests.Response
    ):
        return _from_status(response.status_code, origin, doing)
    if isinstance(error, acme_errors.NonceError):
        return AcmeRefused(f"the CA at {origin} kept rejecting replay nonces while {doing}")
    return AcmeError(
        f"the ACME server {origin} sent an answer that is not valid ACME while {doing}"
    )


def _network_cause(error: requests.RequestException) -> str:
    # Never str(error): requests puts object addresses and changing ports into it.
    if isinstance(error, requests.exceptions.SSLError):
        return "TLS verification failed; trust its CA (ca_bundle_path) or check directory_url"
    if isinstance(error, requests.exceptions.Timeout):
        return "timed out"
    if isinstance(error, requests.exceptions.ConnectionError):
        return "connection failed"
    return f"request failed ({type(error).__name__})"


def _from_status(status: int, origin: str, doing: str) -> AcmeError:
    """An HTTP error without an ACME problem document (a proxy in between, a wrong URL)."""
    message = f"the ACME server {origin} answered HTTP {status} while {doing}"
    if status >= 500 or status == 429:
        return AcmeUnavailable(message)
    return AcmeRefused(message)


def _from_problem(problem: messages.Error, origin: str, doing: str, hostname: str) -> AcmeError:
    description = _describe_problem(problem, hostname)
    if problem.code == "badNonce":  # after BAD_NONCE_ATTEMPTS tries: the CA is unwell
        return AcmeUnavailable(
            f"the CA at {origin} kept rejecting replay nonces while {doing}",
            problem_type=problem.typ,
        )
    if problem.code == "serverInternal":
        return AcmeUnavailable(
            f"the CA at {origin} failed internally while {doing}: {description}",
            problem_type=problem.typ,
        )
    return AcmeRefused(
        f"the CA at {origin} refused {doing}: {description}", problem_type=problem.typ
    )


def _describe_problem(problem: messages.Error, hostname: str) -> str:
    """``code: detail`` of a CA problem, with volatile parts (ids, tokens, times) removed."""
    kind = problem.code or problem.typ
    if not problem.detail:
        return kind
    return f"{kind}: {stable_text(problem.detail, keep=hostname)}"


_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?")
_BASE64URL_RUN = re.compile(r"[A-Za-z0-9_-]{16,}")
_MAX_DETAIL = 300


def stable_text(text: str, keep: str = "") -> str:
    """``text`` with random-looking identifiers and timestamps replaced, and kept short.

    CAs put tokens, order and authorization ids and times into their problem details; status
    must not change between identical failures, so those become ``<id>`` and ``<time>``. A
    run of 16+ base64url characters mixing lower case with upper case or digits counts as an
    id; ``keep`` (the hostname, whose labels can look like that) is never touched.
    """
    placeholder = "\x00"
    masked = text.replace(keep, placeholder) if keep else text
    masked = _TIMESTAMP.sub("<time>", masked)
    masked = _BASE64URL_RUN.sub(_redact_if_random, masked)
    masked = masked.replace(placeholder, keep) if keep else masked
    return masked if len(masked) <= _MAX_DETAIL else masked[: _MAX_DETAIL - 1] + "…"


def _redact_if_random(match: re.Match[str]) -> str:
    run = match.group()
    has_lower = any(c.islower() for c in run)
    has_other = any(c.isupper() or c.isdigit() for c in run)
    return "<id>" if has_lower and has_other else run
