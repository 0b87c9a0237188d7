"""The ``certificate`` step: an ACME certificate for the host, stored as its TLS Secret.

Crash safety, in order: the private key is stored (the next-key Secret) before an order is
placed; the order URL is stored on that Secret as soon as the CA created the order, so a restart
resumes the order instead of placing another; the issued chain is checked against the stored key
before it is written; only then is the next-key Secret removed. A TLS Secret that already holds a
current certificate for the hostname is reused, so re-running the step never orders again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from vhost_operator.acme import (
    AcmeClient,
    ChallengeStore,
    KeyMaterialError,
    certificate_matches_key,
    inspect_certificate,
    new_private_key_pem,
    renewal_time,
    self_checker,
)
from vhost_operator.acme.client import ChallengeHook, IssuedCertificate, OrderHook
from vhost_operator.errors import ForeignObjectError, VhostOperatorError
from vhost_operator.kube.objects import SecretData
from vhost_operator.metrics import ACME_ORDERS
from vhost_operator.provisioning.chain import StepFailed, StepOutcome, utc_now
from vhost_operator.resources import labels
from vhost_operator.resources.models import CertificateStatus, VirtualHost
from vhost_operator.resources.naming import foreign_owner, next_key_secret_name, tls_secret_name
from vhost_operator.settings import Settings

CERTIFICATE = "certificate"

CONCURRENT_ORDERS = 16
"""ACME orders in progress at once; the other hosts' certificate steps wait their turn. A burst
of a thousand new hosts would otherwise open a thousand orders at once: the CA's rate limits
(Let's Encrypt: 300 new orders per account per 3 hours, per-IP request limits) and the HTTP-01
path (nginx's connections, the challenge responder, the self-check) take the brunt, and orders
time out. 16 at a time keep a test CA busy and the challenge path far from its limits."""


class SecretStore(Protocol):
    async def read_secret(self, namespace: str, name: str) -> SecretData | None: ...

    async def apply_secret(
        self, namespace: str, manifest: dict[str, Any], data: dict[str, bytes]
    ) -> None: ...

    async def delete_secret(self, namespace: str, name: str, *, owner: str) -> None: ...


class AcmeAccount:
    """The operator's one ACME account: its key lives in a Secret, registered once per process."""

    def __init__(self, client: AcmeClient, secrets: SecretStore, settings: Settings) -> None:
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
            key = await self.client.register(stored_key)
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
    ) -> None:
        self._account = account
        self._challenges = challenges
        self._secrets = secrets
        self._settings = settings
        self._clock = clock
        self._orders = asyncio.Semaphore(CONCURRENT_ORDERS)

    async def run(self, host: VirtualHost) -> StepOutcome:
        namespace = self._settings.nginx_namespace
        current = await self._secrets.read_secret(namespace, tls_secret_name(host.name))
        reusable = self._reusable(current, host)
        if reusable is not None:
            return StepOutcome(message="current certificate kept", certificate=reusable)
        return await self.renew(host)

    async def renew(self, host: VirtualHost) -> StepOutcome:
        """Order a new certificate even if the current one is still good. The current Secret
        keeps serving until the new pair, checked against each other, replaces it."""
        namespace = self._settings.nginx_namespace
        key, order_url = await self._next_key(host)
        await self._account.ensure_registered()
        issued = await self._issue(host, key, order_url)
        if not certificate_matches_key(issued.chain_pem, key):
            raise StepFailed("the CA returned a certificate that does not match the stored key")
        await self._store(host, issued.chain_pem, key)
        await self._secrets.delete_secret(
            namespace, next_key_secret_name(host.name), owner=host.name
        )
        status = self.certificate_status(host, issued.chain_pem)
        return StepOutcome(
            message=f"certificate {status.serial} issued by order {issued.order_url}",
            certificate=status,
        )

    def certificate_status(self, host: VirtualHost, chain_pem: bytes) -> CertificateStatus:
        info = inspect_certificate(chain_pem)
        return CertificateStatus(
            secret_name=tls_secret_name(host.name),
            not_before=info.not_before,
            not_after=info.not_after,
            serial=info.serial,
            renewal_time=renewal_time(info, self._settings.renewal_fraction),
        )

    def _reusable(self, secret: SecretData | None, host: VirtualHost) -> CertificateStatus | None:
        if secret is None or not secret.data.get("tls.crt") or not secret.data.get("tls.key"):
            return None
        chain, key = secret.data["tls.crt"], secret.data["tls.key"]
        try:
            info = inspect_certificate(chain)
            matches = certificate_matches_key(chain, key)
        except KeyMaterialError:
            return None
        if not matches or host.spec.hostname not in info.dns_names:
            return None
        status = self.certificate_status(host, chain)
        return status if self._clock() < status.renewal_time else None

    async def _next_key(self, host: VirtualHost) -> tuple[bytes, str | None]:
        """The key to order with: the stored one after a restart, else a new one, stored first."""
        namespace, name = self._settings.nginx_namespace, next_key_secret_name(host.name)
        stored = await self._secrets.read_secret(namespace, name)
        if stored is not None and foreign_owner({"annotations": stored.annotations}, host.name):
            # Never order with (or resume the order of) a key kept for another host.
            raise ForeignObjectError(f"Secret {namespace}/{name} is not VirtualHost {host.name}'s")
        if stored is not None and stored.data.get("tls.key"):
            return stored.data["tls.key"], stored.annotations.get(labels.ORDER_URL)
        key = new_private_key_pem()
        await self._secrets.apply_secret(
            namespace, self._next_key_manifest(host, None), {"tls.key": key}
        )
        return key, None

    def _next_key_manifest(self, host: VirtualHost, order_url: str | None) -> dict[str, Any]:
        annotations = {labels.VIRTUALHOST: host.name, labels.HOSTNAME: host.spec.hostname}
        if order_url:
            annotations[labels.ORDER_URL] = order_url
        return {
            "metadata": {
                "name": next_key_secret_name(host.name),
                "labels": labels.component_labels(labels.NEXT_KEY_COMPONENT),
                "annotations": annotations,
                "ownerReferences": [host.owner_reference()],
            },
            "type": "Opaque",
        }

    async def _issue(
        self, host: VirtualHost, key: bytes, order_url: str | None
    ) -> IssuedCertificate:
        namespace = self._settings.nginx_namespace

        async def remember_order(url: str) -> None:
            manifest = self._next_key_manifest(host, url)
            await self._secrets.apply_secret(namespace, manifest, {"tls.key": key})

        try:
            async with self._orders:
                issued = await self._order(host, key, order_url, remember_order)
        except VhostOperatorError as failure:
            ACME_ORDERS.labels(type(failure).__name__).inc()
            raise
        ACME_ORDERS.labels("issued").inc()
        return issued

    async def _order(
        self, host: VirtualHost, key: bytes, order_url: str | None, remember_order: OrderHook
    ) -> IssuedCertificate:
        check: ChallengeHook | None = None
        if self._settings.self_check_enabled:
            check = self_checker(host.spec.hostname, self._settings.self_check_address)
        try:
            return await self._account.client.issue(
                host.spec.hostname,
                key,
                publish=self._challenges.publish,
                unpublish=self._challenges.unpublish,
                self_check=check,
                order_url=order_url,
                on_order_created=remember_order,
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
            "type": "kubernetes.io/tls",
        }
        await self._secrets.apply_secret(
            self._settings.nginx_namespace, manifest, {"tls.crt": chain, "tls.key": key}
        )
