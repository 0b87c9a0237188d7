"""The ``certificate`` step: an ACME certificate for the host, stored as its TLS Secret.

Crash safety, in order: the private key is stored before an order is placed; the order URL is
stored beside it as soon as the CA created the order, so a restart resumes the order instead of
placing another; the issued chain is checked against the stored key before it is written. A TLS
Secret that already holds a current certificate for the hostname is reused, so re-running the
step never orders again.

Where the pending key is stored: a host's first certificate is ordered with its key stored in the
host's TLS Secret itself, created with the key and an empty ``tls.crt`` (the API server requires
both keys of a ``kubernetes.io/tls`` Secret, not a certificate in them) and the component label
of a pending key, so neither agent (they watch the label ``tls``) takes it for a certificate
until the certificate is stored in it. A renewal cannot do that (the TLS Secret keeps serving the
current certificate until the new one replaces it): its key is stored in the next-key Secret,
which is removed once the certificate is stored (a pending key that the TLS Secret already holds
is spent and replaced, so a renewal always ends with a new certificate).

Releases before that kept a first certificate's key in the next-key Secret too, and created the
TLS Secret only with the certificate. A host left that way across an upgrade (killed in its
certificate step, waiting for the CA, or Failed there) is recognised by its status, at no
request: the operator's catalog of VirtualHosts, as it stands when this replica first needs it
(when it provisions, so the earlier release's leader has stopped: one leader at a time), names
the hosts without a certificate whose certificate step had begun (:class:`EarlierAttempts`).
For those alone, when the TLS Secret's create shows nothing pending in it, the next-key Secret
is read, and a key pending there is adopted with its order and the CA's pause: written into the
TLS Secret just created (its own new key never went into an order), then the next-key Secret is
deleted, and the order is resumed as any other. Killed between the create and that write, the
host orders anew with the key the create stored (once); between the write and the delete, it
resumes the adopted order from the TLS Secret, and the next-key Secret, holding the spent key,
goes as any spent key does. New hosts cost no request more, but for the few whose first
certificate step runs before the catalog's first list is complete, or whose own start of it
the catalog already shows when this replica first asks (a read each, once per process).

API requests for a new host, three (with a thousand hosts at once, each one counts): the TLS
Secret created with the key (the API server refuses the create when the name is taken, and only
then is it read: a pending key to resume, a certificate to keep, or another's), the order URL
applied to it, then the certificate, neither write preceded by a read. A renewal reads the TLS
Secret once, creates the next-key Secret outright (read only when refused: a key is pending
already), writes the order URL and the certificate without another read, and deletes the
next-key Secret by the uid it was created (or read) with.

When the CA asks for a pause (``429``/``503`` with ``Retry-After``) the step defers until then
(:class:`~vhost_operator.provisioning.chain.StepDeferred`): the key and the order stay in the
Secret holding the key, together with the time, so that neither this process nor a restarted
one calls the CA for the host before it, and the order is resumed afterwards instead of placed
again.

A new order is placed only within the account's order budget (``provisioning.budget``): a host
beyond it defers to the time its order will be placed, before any call to the CA.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

from vhost_operator.acme.challenges import ChallengeStore, SelfChecker
from vhost_operator.acme.errors import AcmeError, AcmeRetryLater
from vhost_operator.acme.orders import (
    ChallengeHook,
    IssuedCertificate,
    OrderHook,
    OrderOptions,
    RenewalInfo,
    SelfCheckHook,
)
from vhost_operator.certs import (
    ARI,
    CertificateInfo,
    KeyMaterialError,
    RenewalWindow,
    certificate_id,
    certificate_matches_key,
    inspect_certificate,
    lifetime_window,
    new_private_key_pem,
    time_in_window,
)
from vhost_operator.errors import ForeignObjectError, VhostOperatorError
from vhost_operator.kube.objects import SecretData
from vhost_operator.metrics import ACME_ORDERS
from vhost_operator.provisioning.chain import StepDeferred, StepFailed, StepOutcome, utc_now
from vhost_operator.provisioning.ledger import OrderLedger
from vhost_operator.resources import labels
from vhost_operator.resources.models import CertificateStatus, RenewalWindowStatus, VirtualHost
from vhost_operator.resources.naming import foreign_owner, next_key_secret_name, tls_secret_name
from vhost_operator.settings import Settings

logger = logging.getLogger(__name__)

CERTIFICATE = "certificate"

TLS_SECRET_TYPE = "kubernetes.io/tls"

CONCURRENT_ORDERS = 64
"""ACME orders in progress at once; the other hosts' certificate steps wait their turn. A burst
of a thousand new hosts would otherwise open a thousand orders at once: the CA's rate limits
(Let's Encrypt: 300 new orders per account per 3 hours, paced by ``provisioning.budget``; per-IP
request limits, answered with ``Retry-After``) and the HTTP-01 path (nginx's connections, the
challenge responder, the self-check) take the brunt, and orders time out. An order takes about a
second on a busy 2-core node (8 requests, each waiting for a thread and the loop): at 16, the
limit this had before, pebble's log showed 16 orders in flight nearly every second of a
1,000-host round, so the limit, not the CPU, set the pace (about 16 hosts/s); at 64, 30 on
average and the limit reached in 8 of 48 seconds (README, Performance)."""


@dataclasses.dataclass
class PendingKey:
    """What the next-key Secret holds: the key an order is placed with, and how far it got."""

    key: bytes
    order_url: str | None = None
    ca_not_before: datetime | None = None
    """The CA asked not to be called before this time ..."""
    ca_wait_reason: str = ""
    """... and this is what it said."""
    uid: str | None = None
    """The uid of the Secret holding it, once known: a next-key Secret is deleted by that uid."""
    in_tls_secret: bool = False
    """Held by the host's TLS Secret (a first certificate), not by the next-key Secret."""


class EarlierAttempts(Protocol):
    """Which hosts may hold a first certificate's key pending from an earlier release
    (``catalog.HostCatalog``)."""

    def begun_first_certificates(self) -> frozenset[str] | None:
        """The hosts without a certificate whose certificate step had begun, as listed now;
        ``None`` until the catalog holds every host."""
        ...


class SecretStore(Protocol):
    """``kube.objects.NamespacedObjects``; see there for ``checked`` and ``uid``."""

    async def read_secret(self, namespace: str, name: str) -> SecretData | None: ...

    async def create_secret(
        self, namespace: str, manifest: dict[str, Any], data: dict[str, bytes]
    ) -> str | None: ...

    async def apply_secret(
        self,
        namespace: str,
        manifest: dict[str, Any],
        data: dict[str, bytes],
        *,
        checked: bool = False,
    ) -> None: ...

    async def delete_secret(
        self, namespace: str, name: str, *, owner: str, uid: str | None = None
    ) -> None: ...


class ChallengeBoard(Protocol):
    """Where a challenge is published for the other replicas (the host's status)."""

    async def publish_challenge(self, name: str, token: str, key_authorization: str) -> None: ...


class CertificateAuthority(Protocol):
    """The calls this step makes on its CA, and no others: ``acme.client.AcmeClient`` in the
    operator, ``acme.fake.FakeAcme`` in unit tests. See ``AcmeClient`` for the contract."""

    async def register(self, account_key_pem: bytes | None) -> bytes: ...

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
    ) -> IssuedCertificate: ...

    @property
    def renewal_info_supported(self) -> bool:
        """Whether the CA offers ACME Renewal Information (known once registered)."""

    async def renewal_info(self, certificate_id: str) -> RenewalInfo | None: ...


class AcmeAccount:
    """The operator's one ACME account: its key lives in a Secret, registered once per process."""

    def __init__(
        self, client: CertificateAuthority, secrets: SecretStore, settings: Settings
    ) -> None:
        self.client = client
        self._secrets = secrets
        self._settings = settings
        self._registered = False
        self._lock = asyncio.Lock()

    async def ensure_registered(self) -> None:
        async with self._lock:
            if self._registered:
                return
            namespace, name = self._settings.operator_namespace, self._settings.acme_account_secret
            stored = await self._secrets.read_secret(namespace, name)
            stored_key = stored.data.get("account.key") if stored else None
            try:
                key = await self.client.register(stored_key)
            except KeyMaterialError as error:
                raise StepFailed(
                    f"the ACME account key in Secret {namespace}/{name} is unusable ({error}); "
                    "restore it, or delete the Secret to register a new account"
                ) from error
            if key != stored_key:
                manifest = {
                    "metadata": {
                        "name": name,
                        "labels": labels.component_labels("acme-account"),
                        "annotations": {labels.ACME_DIRECTORY: self._settings.acme_directory_url},
                    },
                    "type": "Opaque",
                }
                await self._secrets.apply_secret(namespace, manifest, {"account.key": key})
            self._registered = True

    @property
    def uses_renewal_info(self) -> bool:
        """Whether renewals follow the CA's renewal information (offered, and not turned off);
        known once registered."""
        return self._settings.renewal_info_enabled and self.client.renewal_info_supported

    async def renewal_info(self, certificate_id: str) -> RenewalInfo | None:
        """The CA's suggested renewal window for a certificate; ``None`` without ARI."""
        await self.ensure_registered()
        if not self.uses_renewal_info:
            return None
        return await self.client.renewal_info(certificate_id)


class CertificateStep:
    """Order (or reuse) the host's certificate and store it as a ``kubernetes.io/tls`` Secret."""

    name = CERTIFICATE

    def __init__(
        self,
        account: AcmeAccount,
        challenges: ChallengeStore,
        secrets: SecretStore,
        settings: Settings,
        clock: Callable[[], datetime] = utc_now,
        budget: OrderLedger | None = None,
        board: ChallengeBoard | None = None,
        earlier: EarlierAttempts | None = None,
        self_check: SelfCheckHook | None = None,
    ) -> None:
        """``board``: with several replicas, each challenge is also published there before
        the CA is asked to validate (nginx may send the CA to any replica). ``earlier``: where
        to find the hosts an earlier release may have left with a first key pending in the
        next-key Secret (see the module docstring); without it none is looked for.
        ``self_check``: the self-check to run when the settings enable it (the operator's keeps
        its connections, ``acme.challenges.SelfChecker``); ``None``: one that connects anew for
        each check."""
        self._account = account
        self._self_check = self_check or SelfChecker(
            settings.self_check_address, settings.self_check_timeout, keep_connections=False
        )
        self._budget = budget
        self._board = board
        self._challenges = challenges
        self._secrets = secrets
        self._settings = settings
        self._clock = clock
        self._orders = asyncio.Semaphore(CONCURRENT_ORDERS)
        self._earlier = earlier
        self._begun_before: frozenset[str] | None = None
        """``earlier``'s answer when this replica first needed it: hosts it begins itself
        later are not in it."""

    async def run(self, host: VirtualHost) -> StepOutcome:
        if host.status.certificate is None:
            # A new host, most likely: its key goes straight into a new TLS Secret. Refused
            # (the name is taken: a pending key, a certificate, another's), the Secret is read.
            pending = PendingKey(new_private_key_pem(), in_tls_secret=True)
            if await self._create_pending_key(host, pending):
                pending = await self._adopt_earlier_key(host, pending)
                return await self._issue_and_store(host, pending)
        current = await self._tls_secret(host)
        reusable = await self._reusable(current, host)
        if reusable is not None:
            assert current is not None
            await self._drop_spent_key(host, current)
            return StepOutcome(message="current certificate kept", certificate=reusable)
        return await self._order_new(host, current)

    async def _adopt_earlier_key(self, host: VirtualHost, created: PendingKey) -> PendingKey:
        """The key to order a first certificate with, once ``created`` (a new key in a new TLS
        Secret) is stored: a key an earlier release left pending in the next-key Secret, with
        its order and the CA's pause, moved into the TLS Secret; else ``created``. Only a host
        that may have one (see the module docstring) costs a read."""
        if not self._may_hold_earlier_key(host):
            return created
        namespace, name = self._settings.nginx_namespace, next_key_secret_name(host.name)
        stored = await self._secrets.read_secret(namespace, name)
        if stored is None or not stored.data.get("tls.key"):
            return created
        if foreign_owner(stored.metadata, host.name) is not None:
            return created  # never a key kept for another host; this one has its own now
        adopted = dataclasses.replace(_pending_key(stored, in_tls_secret=True), uid=created.uid)
        # Checked: this step created the TLS Secret. Stored before the next-key Secret goes,
        # so that a restart in between resumes the same order from the TLS Secret.
        await self._write_pending_key(host, adopted, checked=True)
        await self._secrets.delete_secret(namespace, name, owner=host.name, uid=stored.uid)
        logger.info("%s: resuming the first key and order an earlier release left", host.name)
        return adopted

    def _may_hold_earlier_key(self, host: VirtualHost) -> bool:
        if self._earlier is None:
            return False
        if self._begun_before is None:
            self._begun_before = self._earlier.begun_first_certificates()
            if self._begun_before is None:  # not listed yet: it may be any host
                return True
        return host.name in self._begun_before

    async def _tls_secret(self, host: VirtualHost) -> SecretData | None:
        """The host's TLS Secret, if any; :class:`ForeignObjectError` if the one under its name
        is another's. Read once per step: the step's writes of it rely on this read."""
        namespace, name = self._settings.nginx_namespace, tls_secret_name(host.name)
        current = await self._secrets.read_secret(namespace, name)
        if current is not None:
            _check_owner(current, host, f"Secret {namespace}/{name}")
        return current

    async def _drop_spent_key(self, host: VirtualHost, current: SecretData) -> None:
        """Delete a pending key the TLS Secret already holds: an attempt (or a leader killed
        mid-step) stored the certificate but not yet removed the key. A pending key of its
        own (a renewal in flight) stays."""
        namespace, name = self._settings.nginx_namespace, next_key_secret_name(host.name)
        pending = await self._secrets.read_secret(namespace, name)
        if pending is not None and pending.data.get("tls.key") == current.data.get("tls.key"):
            await self._secrets.delete_secret(namespace, name, owner=host.name, uid=pending.uid)

    async def renew(self, host: VirtualHost) -> StepOutcome:
        """Order a new certificate even if the current one is still good. The current Secret
        keeps serving until the new pair, checked against each other, replaces it."""
        return await self._order_new(host, await self._tls_secret(host))

    async def _order_new(self, host: VirtualHost, current: SecretData | None) -> StepOutcome:
        """Order (or resume the pending order of) a certificate; ``current``: the host's TLS
        Secret as this step read it."""
        return await self._issue_and_store(host, await self._next_key(host, current))

    async def _issue_and_store(self, host: VirtualHost, pending: PendingKey) -> StepOutcome:
        """Order with the stored ``pending`` key (or resume its order), store the certificate."""
        key = pending.key
        if pending.ca_not_before is not None and self._clock() < pending.ca_not_before:
            raise _deferred(pending.ca_not_before, pending.ca_wait_reason)
        counted = False
        try:
            await self._account.ensure_registered()
            if self._budget is not None and self._places_new_order(host, pending):
                await self._budget.admit(host.name)
                counted = True
            issued = await self._issue(host, pending, self._order_options(host), counted=counted)
        except AcmeRetryLater as wait:
            if counted and pending.order_url is None and self._budget is not None:
                self._budget.refund()  # no order was created: the CA counted none
            pending.ca_not_before, pending.ca_wait_reason = wait.until, str(wait)
            await self._write_pending_key(host, pending, checked=True)
            raise _deferred(wait.until, str(wait)) from wait
        if not certificate_matches_key(issued.chain_pem, key):
            raise StepFailed("the CA returned a certificate that does not match the stored key")
        await self._store(host, issued.chain_pem, key)
        if not pending.in_tls_secret:
            await self._secrets.delete_secret(
                self._settings.nginx_namespace,
                next_key_secret_name(host.name),
                owner=host.name,
                uid=pending.uid,
            )
        profile = profile_of(host, self._settings)
        status = await self.certificate_status(host, issued.chain_pem, profile=profile)
        return StepOutcome(
            message=f"certificate {status.serial} issued by order {issued.order_url}",
            certificate=status,
        )

    def _places_new_order(self, host: VirtualHost, pending: PendingKey) -> bool:
        """Whether this attempt counts against the account's order budget: only a new order
        does, not one resumed (the CA counted it when it was created), nor a renewal ordered
        inside the window the CA's renewal information (RFC 9773) suggested: it names the
        certificate it replaces, and Let's Encrypt exempts such renewals from its limits."""
        if pending.order_url is not None:
            return False
        return not self._renews_inside_ca_window(host)

    def _renews_inside_ca_window(self, host: VirtualHost) -> bool:
        current = host.status.certificate
        window = current.renewal_window if current is not None else None
        return (
            window is not None
            and window.source == ARI
            and self._account.uses_renewal_info
            and window.start <= self._clock()
        )

    async def certificate_status(
        self, host: VirtualHost, chain_pem: bytes, *, profile: str | None
    ) -> CertificateStatus:
        """The status of a certificate: its renewal time is a point in the CA's suggested
        window when the CA offers renewal information, else the fraction-of-lifetime rule."""
        info = inspect_certificate(chain_pem)
        ident = certificate_id(chain_pem)
        window = await self._window(host, info, ident)
        return CertificateStatus(
            secret_name=tls_secret_name(host.name),
            not_before=info.not_before,
            not_after=info.not_after,
            serial=info.serial,
            renewal_time=time_in_window(window, info.serial),
            renewal_window=RenewalWindowStatus(
                start=window.start, end=window.end, source=window.source
            ),
            certificate_id=ident or None,
            profile=profile,
            names=list(info.dns_names),
        )

    async def _window(self, host: VirtualHost, info: CertificateInfo, ident: str) -> RenewalWindow:
        fallback = lifetime_window(
            info, self._settings.renewal_fraction, self._settings.renewal_spread
        )
        if not self._settings.renewal_info_enabled:
            return fallback
        known = host.status.certificate
        kept = known.renewal_window if known is not None and known.serial == info.serial else None
        if kept is not None and kept.source == ARI:
            # Fetched for this certificate already; ``renewal_info`` keeps it current.
            return RenewalWindow(start=kept.start, end=kept.end, source=ARI)
        try:
            suggested = await self._account.renewal_info(ident)
        except AcmeError as error:  # the scanner asks again later; meanwhile our own rule
            logger.info("%s: no renewal information (%s)", host.name, error)
            return fallback
        if suggested is None:
            return fallback
        return RenewalWindow(start=suggested.start, end=suggested.end, source=ARI)

    def _order_options(self, host: VirtualHost) -> OrderOptions:
        """The host's profile (renewals keep it), and the certificate a renewal replaces: its
        renewal inside the CA's window is then exempt from the CA's rate limits."""
        current = host.status.certificate
        replaces = None
        if current is not None and self._account.uses_renewal_info:
            replaces = current.certificate_id
        return OrderOptions(profile=profile_of(host, self._settings), replaces=replaces)

    async def _reusable(
        self, secret: SecretData | None, host: VirtualHost
    ) -> CertificateStatus | None:
        if secret is None or not secret.data.get("tls.crt") or not secret.data.get("tls.key"):
            return None
        chain, key = secret.data["tls.crt"], secret.data["tls.key"]
        try:
            info = inspect_certificate(chain)
            matches = certificate_matches_key(chain, key)
        except KeyMaterialError:
            return None
        # Exactly the host's names: a changed list (additionalNames, or the linked domains
        # under mtaSts) needs a new certificate.
        if not matches or set(info.dns_names) != set(host.spec.names):
            return None
        known = host.status.certificate
        profile = known.profile if known is not None and known.serial == info.serial else None
        status = await self.certificate_status(host, chain, profile=profile)
        return status if self._clock() < status.renewal_time else None

    async def _next_key(self, host: VirtualHost, current: SecretData | None) -> PendingKey:
        """The key to order with: the stored one after a restart, else a new one, stored first.

        A new key is stored by a create, which the API server refuses when a key is pending
        already (a restart, a renewal in flight): only then is the stored one read. A stored
        key that the TLS Secret (``current``) already holds is spent: an attempt stored its
        certificate and crashed before removing the pending key. Resuming its order would
        "renew" to the very same certificate, so a new key (and a new order) is used instead.
        A TLS Secret without a certificate holds the pending key of the host's first one
        (see ``run``): that key is resumed.
        """
        if current is not None and _pending_in_tls_secret(current):
            return _pending_key(current, in_tls_secret=True)
        namespace, name = self._settings.nginx_namespace, next_key_secret_name(host.name)
        pending = PendingKey(new_private_key_pem())
        if await self._create_pending_key(host, pending):
            return pending
        stored = await self._secrets.read_secret(namespace, name)
        if stored is not None:
            # Never order with (or resume the order of) a key kept for another host.
            _check_owner(stored, host, f"Secret {namespace}/{name}")
        if stored is not None and stored.data.get("tls.key"):
            if current is None or current.data.get("tls.key") != stored.data["tls.key"]:
                return _pending_key(stored, in_tls_secret=False)
            # Deleted, not overwritten: an apply would leave an order URL written by another
            # field manager beside the new key.
            await self._secrets.delete_secret(namespace, name, owner=host.name, uid=stored.uid)
            if await self._create_pending_key(host, pending):
                return pending
        # Without a key, or gone or back meanwhile: stored the checked way.
        await self._write_pending_key(host, pending, checked=False)
        return pending

    async def _create_pending_key(self, host: VirtualHost, pending: PendingKey) -> bool:
        """Store ``pending`` in a new Secret (the TLS or the next-key Secret, as it says);
        ``False`` if one of that name exists already."""
        manifest = self._pending_key_manifest(host, pending)
        pending.uid = await self._secrets.create_secret(
            self._settings.nginx_namespace, manifest, _pending_data(pending)
        )
        return pending.uid is not None

    async def _write_pending_key(
        self, host: VirtualHost, pending: PendingKey, *, checked: bool
    ) -> None:
        """``checked``: this step created or read (and checked) the Secret holding the key."""
        namespace = self._settings.nginx_namespace
        manifest = self._pending_key_manifest(host, pending)
        await self._secrets.apply_secret(
            namespace, manifest, _pending_data(pending), checked=checked
        )

    def _pending_key_manifest(self, host: VirtualHost, pending: PendingKey) -> dict[str, Any]:
        """The Secret holding ``pending``: the next-key Secret, or the TLS Secret of a first
        certificate (its type fixed at creation; the component label a pending key's until the
        certificate is stored, see the module docstring)."""
        annotations = {labels.VIRTUALHOST: host.name, labels.HOSTNAME: host.spec.hostname}
        if pending.order_url:
            annotations[labels.ORDER_URL] = pending.order_url
        if pending.ca_not_before is not None:
            annotations[labels.CA_NOT_BEFORE] = pending.ca_not_before.isoformat()
            annotations[labels.CA_WAIT_REASON] = pending.ca_wait_reason
        if pending.in_tls_secret:
            name, type_ = tls_secret_name(host.name), TLS_SECRET_TYPE
        else:
            name, type_ = next_key_secret_name(host.name), "Opaque"
        return {
            "metadata": {
                "name": name,
                "labels": labels.component_labels(labels.NEXT_KEY_COMPONENT),
                "annotations": annotations,
                "ownerReferences": [host.owner_reference()],
            },
            "type": type_,
        }

    async def _issue(
        self, host: VirtualHost, pending: PendingKey, options: OrderOptions, *, counted: bool
    ) -> IssuedCertificate:
        async def remember_order(url: str) -> None:
            if not counted and self._budget is not None:
                # The stored order could not be resumed (it turned invalid): this one is new.
                await self._budget.record()
            pending.order_url, pending.ca_not_before = url, None
            await self._write_pending_key(host, pending, checked=True)

        try:
            async with self._orders:
                issued = await self._order(
                    host, pending.key, pending.order_url, remember_order, options
                )
        except VhostOperatorError as failure:
            ACME_ORDERS.labels(type(failure).__name__).inc()
            raise
        ACME_ORDERS.labels("issued").inc()
        return issued

    async def _order(
        self,
        host: VirtualHost,
        key: bytes,
        order_url: str | None,
        remember_order: OrderHook,
        options: OrderOptions,
    ) -> IssuedCertificate:
        check: SelfCheckHook | None = None
        if self._settings.self_check_enabled:
            check = self._self_check
        board = self._board

        async def publish(token: str, key_authorization: str) -> None:
            await self._challenges.publish(token, key_authorization)
            if board is not None:
                await board.publish_challenge(host.name, token, key_authorization)

        try:
            return await self._account.client.issue(
                host.spec.hostname,
                key,
                publish=publish,
                unpublish=self._challenges.unpublish,
                self_check=check,
                order_url=order_url,
                on_order_created=remember_order,
                options=options,
                additional_names=host.spec.other_names,
            )
        except KeyMaterialError as error:
            raise StepFailed(f"the stored private key is unusable: {error}") from error

    async def _store(self, host: VirtualHost, chain: bytes, key: bytes) -> None:
        manifest = {
            "metadata": {
                "name": tls_secret_name(host.name),
                "labels": labels.component_labels(labels.TLS_COMPONENT),
                "annotations": {labels.VIRTUALHOST: host.name, labels.HOSTNAME: host.spec.hostname},
                "ownerReferences": [host.owner_reference()],
            },
            "type": TLS_SECRET_TYPE,
        }
        # Checked: the step created the TLS Secret, or read it at its start (``_tls_secret``).
        await self._secrets.apply_secret(
            self._settings.nginx_namespace,
            manifest,
            {"tls.crt": chain, "tls.key": key},
            checked=True,
        )


def _pending_in_tls_secret(secret: SecretData) -> bool:
    """Whether the host's TLS Secret holds the pending key of its first certificate."""
    return not secret.data.get("tls.crt") and bool(secret.data.get("tls.key"))


def _pending_key(secret: SecretData, *, in_tls_secret: bool) -> PendingKey:
    """The pending key ``secret`` holds, with its order and the CA's pause, if any."""
    return PendingKey(
        secret.data["tls.key"],
        secret.annotations.get(labels.ORDER_URL),
        _time_or_none(secret.annotations.get(labels.CA_NOT_BEFORE)),
        secret.annotations.get(labels.CA_WAIT_REASON, ""),
        uid=secret.uid,
        in_tls_secret=in_tls_secret,
    )


def _pending_data(pending: PendingKey) -> dict[str, bytes]:
    """The data of the Secret holding ``pending``: a TLS Secret must have both keys."""
    if pending.in_tls_secret:
        return {"tls.crt": b"", "tls.key": pending.key}
    return {"tls.key": pending.key}


def profile_of(host: VirtualHost, settings: Settings) -> str | None:
    """The ACME profile the host's certificates are ordered with: its own, else the default."""
    return host.spec.acme_profile or settings.acme_profile


def _check_owner(secret: SecretData, host: VirtualHost, what: str) -> None:
    problem = foreign_owner(secret.metadata, host.name)
    if problem is not None:
        raise ForeignObjectError(
            f"{what} is not VirtualHost {host.name}'s: {problem}; left as it is"
        )


def _deferred(until: datetime, why: str) -> StepDeferred:
    return StepDeferred(f"waiting for the CA until {until.isoformat()}: {why}", until=until)


def _time_or_none(text: str | None) -> datetime | None:
    """A stored time; an unreadable one (edited by hand) counts as none rather than stopping
    the step for good."""
    try:
        return datetime.fromisoformat(text) if text else None
    except ValueError:
        return None
