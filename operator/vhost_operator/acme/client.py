"""A narrow async ACME client: one account, HTTP-01 orders for a hostname and its additional names.

It wraps certbot's ``acme`` library, whose calls block, by running each of them in a worker
thread (``asyncio.to_thread``) while the hooks the caller passes (publish the challenge, persist
the order URL, self-check) run on the event loop between them.

Its errors, their mapping and the stable messages are in ``errors``, its configuration in
``config``, the transport in ``transport`` and one issuance in ``orders``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import requests
from acme import errors as acme_errors
from acme import messages
from acme.client import ClientNetwork, ClientV2
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from josepy.jwa import ES256, ES384, ES512, RS256, JWASignature
from josepy.jwk import JWK, JWKEC, JWKRSA

from vhost_operator import certs
from vhost_operator.acme.config import AcmeConfig
from vhost_operator.acme.connections import SharedConnections
from vhost_operator.acme.errors import AcmeError, AcmeRefused, check_profile
from vhost_operator.acme.orders import (
    Account,
    ChallengeHook,
    IssuedCertificate,
    OrderHook,
    OrderOptions,
    OrderSession,
    RenewalInfo,
    SelfCheckHook,
)
from vhost_operator.acme.transport import (
    Network,
    Pause,
    blocking,
    environment_ca_bundle,
    parse_retry_after,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

CONNECTIONS = 10
"""Default number of connections to the CA a client keeps open (``requests``' own default):
size it to the threads that may call the CA at the same time, as the operator does."""


class AcmeClient:
    """Registers one ACME account and orders certificates with it over HTTP-01.

    Call :meth:`register` once, then :meth:`issue` as often as needed, concurrently too: each
    issuance has its own session; all share one pool of nonces and up to ``connections``
    connections to the CA (:class:`SharedConnections`), open for the client's life.
    """

    def __init__(self, config: AcmeConfig, *, connections: int = CONNECTIONS) -> None:
        self._config = config
        self._account: Account | None = None
        self._pause = Pause()
        # What requests would read from the environment on every request (proxies, a CA
        # bundle), read once: the CA's address never changes, and scanning the environment
        # was a few percent of the operator's CPU while ordering hundreds of certificates.
        proxies = requests.utils.get_environ_proxies(config.directory_url)
        self._ca_bundle = (
            str(config.ca_bundle_path)
            if config.ca_bundle_path is not None
            else environment_ca_bundle()
        )
        self._connections = SharedConnections(
            self._ca_bundle, connections=connections, proxies=proxies
        )
        self._nonces: set[str] = set()  # the library's type; they are bytes
        """Replay nonces, shared by every issuance (``Network``)."""

    @property
    def account_url(self) -> str | None:
        """The account's URL at the CA once registered (stable for a given account key)."""
        return self._account.url if self._account else None

    @property
    def profiles(self) -> Mapping[str, str]:
        """The ACME profiles the CA's directory lists (name → description); empty without."""
        if self._account is None:
            return {}
        meta = getattr(self._account.directory, "meta", None)
        return dict(getattr(meta, "profiles", None) or {})

    @property
    def renewal_info_supported(self) -> bool:
        """Whether the CA's directory has ``renewalInfo`` (ACME Renewal Information)."""
        return self._account is not None and _renewal_info_url(self._account.directory) is not None

    async def renewal_info(self, certificate_id: str) -> RenewalInfo | None:
        """The CA's suggested renewal window of the certificate ``certificate_id`` names
        (``certs.certificate_id``), or ``None`` when the CA has no renewalInfo or does not
        know the certificate (another CA's, or a test CA restarted). An unauthenticated GET:
        it spends no nonce, and a ``429`` for it does not pause issuance."""
        if self._account is None:
            raise AcmeError("the ACME account is not registered yet")
        base = _renewal_info_url(self._account.directory)
        if base is None or not certificate_id:
            return None
        # Not while the CA asked for a pause: "no request before that time" holds for it too.
        self._pause.check(self._config.ca_origin)
        net = self._network(self._account.jwk, self._account.alg, account=None)
        try:
            return await blocking(
                self._config,
                Pause(),  # a 429 here must not stop issuance: pace ARI, not orders
                "fetching renewal information",
                "",
                net,
                _fetch_renewal_info,
                net,
                f"{base.rstrip('/')}/{certificate_id}",
            )
        finally:
            net.session.close()

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
        self._account = Account(jwk, alg, url, directory)
        logger.info("using ACME account %s", url)
        return key_pem

    async def _create_account(self, client: ClientV2, net: Network, jwk: JWK) -> str:
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
        self_check: SelfCheckHook | None = None,
        order_url: str | None = None,
        on_order_created: OrderHook | None = None,
        options: OrderOptions | None = None,
        additional_names: Sequence[str] = (),
    ) -> IssuedCertificate:
        """Order, validate and download a certificate for ``hostname`` and ``private_key_pem``.

        ``additional_names`` go into the same certificate (its subjectAltName, after the
        hostname); each name's authorization is validated like the hostname's, self-check
        included.

        ``order_url`` resumes an earlier order when the CA still holds it (pending, ready,
        processing or valid, for exactly these names), so a restart mid-issuance does not order
        twice; otherwise a new order is created and reported to ``on_order_created`` before
        validation starts. Each challenge is published, ``self_check`` (if any) must pass before
        the CA is asked, and it is unpublished again however the issuance ends. The downloaded
        leaf is checked against ``private_key_pem``: a mismatched pair is never returned.

        Once the CA asked for a pause (:class:`AcmeRetryLater`, from any issuance), no new
        issuance starts before its end: this raises the same error without asking the CA.
        Issuances already under way go on (their orders exist; breaking off in the middle of a
        validation would waste it); each stops at its own next ``Retry-After``.
        ``options`` go into a new order: a profile the directory does not list is refused
        (:class:`AcmeRefused` naming the ones it does) before anything is ordered.
        Raises :class:`AcmeError` subclasses (including ``SelfCheckFailed`` from the hook), and
        :class:`~vhost_operator.certs.KeyMaterialError` for an unusable private key.
        """
        options = options or OrderOptions()
        self._pause.check(self._config.ca_origin)
        if self._account is not None:
            check_profile(options.profile, self.profiles, self._config.ca_origin)
        session = self._open_session(hostname, private_key_pem, additional_names)
        try:
            order = await session.resume(order_url) if order_url else None
            if order is None:
                order = await session.create_order(options)
                if on_order_created is not None:
                    await on_order_created(order.uri)
            if order.body.status == messages.STATUS_PENDING:
                await session.authorize(order, publish, unpublish, self_check)
            chain_pem = await session.finalize(order)
        finally:
            session.close()
        return IssuedCertificate(chain_pem=chain_pem, order_url=order.uri)

    def _open_session(
        self, hostname: str, private_key_pem: bytes, additional_names: Sequence[str]
    ) -> OrderSession:
        if self._account is None:
            raise AcmeError("the ACME account is not registered yet")
        account = self._account
        registration = messages.RegistrationResource(uri=account.url, body=messages.Registration())
        net = self._network(account.jwk, account.alg, account=registration)
        return OrderSession(
            client=ClientV2(account.directory, net),
            account=account,
            config=self._config,
            pause=self._pause,
            hostname=hostname,
            private_key_pem=private_key_pem,
            additional_names=additional_names,
        )

    def _network(
        self, jwk: JWK, alg: JWASignature, account: messages.RegistrationResource | None
    ) -> Network:
        return Network(
            jwk,
            account=account,
            alg=alg,
            user_agent=self._config.user_agent,
            timeout=self._config.timeout,
            connections=self._connections,
            nonces=self._nonces,
        )

    async def _call(self, step: str, net: Network, function: Callable[..., T], *args: Any) -> T:
        return await blocking(self._config, self._pause, step, "", net, function, *args)


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


def _renewal_info_url(directory: messages.Directory) -> str | None:
    try:
        url = directory["renewalInfo"]
    except KeyError:
        return None
    return str(url) if url else None


def _fetch_renewal_info(net: ClientNetwork, url: str) -> RenewalInfo | None:
    try:
        response = net.get(url, content_type="application/json")
    except messages.Error as error:
        if error.code == "notFound" or error.code == "malformed":  # not this CA's certificate
            return None
        raise
    info = messages.RenewalInfo.from_json(response.json())
    window = info.suggested_window
    retry_after = parse_retry_after(response.headers.get("Retry-After"), datetime.now(UTC))
    return RenewalInfo(
        start=window.start.astimezone(UTC), end=window.end.astimezone(UTC), retry_after=retry_after
    )


def _jwk_for(key_pem: bytes) -> tuple[JWK, JWASignature]:
    """The account key as a JWK with the JWS algorithm that matches its type and size."""
    key = certs.load_private_key(key_pem)
    if isinstance(key, rsa.RSAPrivateKey):
        return JWKRSA(key=key), RS256
    algorithms = {"secp256r1": ES256, "secp384r1": ES384, "secp521r1": ES512}
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name not in algorithms:
        raise certs.KeyMaterialError("the ACME account key must be RSA or ECDSA P-256/384/521")
    return JWKEC(key=key), algorithms[key.curve.name]
