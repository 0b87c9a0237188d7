"""An in-memory ACME CA with the calls the certificate step makes, for unit tests.

:class:`FakeAcme` has the methods of ``AcmeClient`` that ``provisioning.certificates`` uses
(its ``CertificateAuthority`` protocol): ``register``, ``issue`` (with a profile the
directory must list, and ``replaces``) and ``renewal_info``. It keeps orders in a dict,
signs certificates with a CA key of its own, and follows the real client's contract where the
step depends on it: an order is resumed by URL when it can still produce the certificate, a new
order is reported to ``on_order_created`` before validation, the challenge is published, checked
and unpublished however validation ends, and an unusable private key raises
``KeyMaterialError``. Failures are injected by setting attributes: what a CA refuses, what goes
wrong during validation, or a CA that signs another key.

No network, no clock of its own beyond the certificate's validity, no ACME library.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from vhost_operator import certs
from vhost_operator.acme.errors import AcmeError, AcmeUnavailable, check_profile
from vhost_operator.acme.orders import (
    ChallengeHook,
    IssuedCertificate,
    OrderHook,
    OrderOptions,
    RenewalInfo,
    SelfCheckHook,
)

ORIGIN = "https://ca.fake"
"""Where the fake CA pretends to live: its order URLs start with it."""


@dataclasses.dataclass
class FakeOrder:
    """One order the fake CA holds."""

    url: str
    names: tuple[str, ...]
    """The hostname, then the additional names."""
    status: str = "pending"
    """``pending`` → ``ready`` (validated) → ``valid`` (issued); ``invalid`` after a failure."""
    chain_pem: bytes | None = None
    options: OrderOptions = dataclasses.field(default_factory=OrderOptions)
    """The profile and ``replaces`` the order was created with."""


class FakeAcme:
    """An in-memory CA behind the interface of ``AcmeClient.register`` and ``.issue``."""

    def __init__(self, validity: timedelta = timedelta(days=90)) -> None:
        self.validity = validity
        self.orders: dict[str, FakeOrder] = {}
        self.account_key: bytes | None = None
        self.registrations = 0
        """How often :meth:`register` was called."""
        self.refuse_orders: AcmeError | None = None
        """Raised instead of creating a new order (a rate limit, a rejected identifier)."""
        self.fail_validation: AcmeError | None = None
        """Raised after the challenge was published (and checked); the order stays pending for
        an ``AcmeUnavailable`` (a timeout: resumable) and becomes invalid otherwise."""
        self.sign_another_key = False
        """Issue the certificate for a key of the CA's own instead of the requested one."""
        self.profiles: dict[str, timedelta] = {}
        """ACME profiles the directory lists, with the validity each gives (none: no profiles)."""
        self.renewal_windows: dict[str, RenewalInfo] | None = None
        """ACME Renewal Information by certificate ID; ``None``: the CA offers none. A
        certificate without an entry gets the middle third of its lifetime."""
        self.renewal_info_requests: list[str] = []
        self._numbers = itertools.count(1)
        self._ca_key = ec.generate_private_key(ec.SECP256R1())
        self._ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Fake ACME CA")])

    async def register(self, account_key_pem: bytes | None) -> bytes:
        self.registrations += 1
        key = certs.new_private_key_pem() if account_key_pem is None else account_key_pem
        certs.load_private_key(key)  # an unusable key fails as with the real client
        self.account_key = key
        return key

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
        if self.account_key is None:
            raise AcmeError("the ACME account is not registered yet")
        options = options or OrderOptions()
        check_profile(options.profile, {name: "" for name in self.profiles}, ORIGIN)
        # The real client builds the CSR first.
        certs.csr_pem(private_key_pem, hostname, additional_names)
        names = (hostname, *additional_names)
        order = self._resumable(order_url, names, private_key_pem)
        if order is None:
            order = self._new_order(names, options)
            if on_order_created is not None:
                await on_order_created(order.url)
        if order.status == "pending":
            await self._validate(order, publish, unpublish, self_check)
        if order.chain_pem is None:
            order.chain_pem = self._sign(names, private_key_pem, order.options.profile)
            order.status = "valid"
        return IssuedCertificate(chain_pem=order.chain_pem, order_url=order.url)

    def _resumable(
        self, url: str | None, names: tuple[str, ...], key_pem: bytes
    ) -> FakeOrder | None:
        order = self.orders.get(url) if url else None
        if order is None or set(order.names) != set(names) or order.status == "invalid":
            return None
        if order.chain_pem is not None and not certs.certificate_matches_key(
            order.chain_pem, key_pem
        ):
            return None  # issued for another key: order anew
        return order

    @property
    def renewal_info_supported(self) -> bool:
        return self.renewal_windows is not None

    async def renewal_info(self, certificate_id: str) -> RenewalInfo | None:
        if self.renewal_windows is None:
            return None
        self.renewal_info_requests.append(certificate_id)
        if certificate_id in self.renewal_windows:
            return self.renewal_windows[certificate_id]
        for order in self.orders.values():
            if order.chain_pem is not None and certs.certificate_id(order.chain_pem) == (
                certificate_id
            ):
                info = certs.inspect_certificate(order.chain_pem)
                third = (info.not_after - info.not_before) / 3
                return RenewalInfo(info.not_before + third, info.not_after - third, None)
        return None

    def _new_order(self, names: tuple[str, ...], options: OrderOptions) -> FakeOrder:
        if self.refuse_orders is not None:
            raise self.refuse_orders
        order = FakeOrder(url=f"{ORIGIN}/order/{next(self._numbers)}", names=names, options=options)
        self.orders[order.url] = order
        return order

    async def _validate(
        self,
        order: FakeOrder,
        publish: ChallengeHook,
        unpublish: ChallengeHook,
        self_check: SelfCheckHook | None,
    ) -> None:
        token = f"token-{order.url.rpartition('/')[2]}"
        key_authorization = f"{token}.fake-thumbprint"
        await publish(token, key_authorization)
        try:
            if self_check is not None:
                for name in order.names:
                    await self_check(name, token, key_authorization)
            failure = self.fail_validation
            if failure is not None:
                if not isinstance(failure, AcmeUnavailable):
                    order.status = "invalid"
                raise failure
            order.status = "ready"
        finally:
            await unpublish(token, key_authorization)

    def _sign(self, names: tuple[str, ...], key_pem: bytes, profile: str | None) -> bytes:
        key = certs.load_private_key(
            certs.new_private_key_pem() if self.sign_another_key else key_pem
        )
        validity = self.profiles[profile] if profile is not None else self.validity
        now = datetime.now(UTC)
        leaf = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self._ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=1))
            .not_valid_after(now + validity)
            .add_extension(
                x509.SubjectAlternativeName([x509.DNSName(name) for name in names]),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._ca_key.public_key()),
                critical=False,
            )
            .sign(self._ca_key, hashes.SHA256())
        )
        return leaf.public_bytes(serialization.Encoding.PEM)
