"""The operator's in-memory catalogs of VirtualHosts and MailDomains. State only, no I/O.

Each is kept current from one list-then-watch stream of its kind (``kube.watching``, started by
``handlers.lifecycle``): the stream's ``SYNC`` replaces everything at once, so a catalog knows
when it holds every object (``synced``), and later events change one entry each. Everything
that looks across objects reads them: the webhook (a hostname or domain already taken), MailDomain
linking (where a domain is listed), the renewal scanner (whose certificate is due or expired,
which Failed host is due for a retry; a new such duty wakes it, see ``wait_for_duty``) and
``/metrics`` (hosts by phase).

An entry is a few small strings per object, and an event changes one dict entry. Nothing waits
for a catalog but the code that asks for it: unlike kopf's indexes, which hold every handler
back until every object is indexed, they let kopf's workers start at once and be bounded in
number (``handlers.lifecycle.WORKER_LIMIT``).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Collection, Iterator, Mapping
from datetime import datetime
from typing import Any

import pydantic

from vhost_operator.acme.challenges import ChallengeStore
from vhost_operator.metrics import HostView
from vhost_operator.provisioning.certificates import CERTIFICATE
from vhost_operator.provisioning.mailserving import MailCondition, MailSubject
from vhost_operator.provisioning.renewal import RenewalCandidate
from vhost_operator.provisioning.retries import RetryCandidate
from vhost_operator.resources.claims import Claim
from vhost_operator.resources.conditions import CERTIFICATE_VALID, MAIL_SERVING
from vhost_operator.resources.models import (
    ACME_CHALLENGE,
    RENEW_ANNOTATION,
    RETRY_ANNOTATION,
    ConditionStatus,
    Phase,
    StepState,
    VirtualHost,
    published_challenge,
    served_names,
)
from vhost_operator.resources.watch import WatchEvent

logger = logging.getLogger(__name__)

Object = Mapping[str, Any]


@dataclasses.dataclass(frozen=True, slots=True)
class HostRecord:
    """What the catalog keeps of one VirtualHost."""

    name: str
    hostname: str
    domains: tuple[str, ...]
    claim: Claim
    """Its claim on ``hostname`` and its additional names: the oldest VirtualHost keeps a name
    (``resources.claims``)."""
    deleting: bool
    """Being deleted (its finalizer runs): it no longer keeps its hostname from the others."""
    view: HostView
    candidate: RenewalCandidate | None
    """Set when the host holds a certificate (see ``provisioning.renewal``)."""
    failure: RetryCandidate | None = None
    """Set when the host is Failed (see ``provisioning.retries``)."""
    other_names: tuple[str, ...] = ()
    """The names it serves besides ``hostname``: additional names, MTA-STS policy hosts."""
    mail: MailSubject | None = None
    """Set when the host holds a certificate (see ``provisioning.mailserving``)."""
    first_certificate_begun: bool = False
    """No certificate, and its certificate step has begun (running, waiting or failed): a key
    may be pending for it (``provisioning.certificates.EarlierAttempts``)."""


_HOST_ANNOTATIONS = (RENEW_ANNOTATION, RETRY_ANNOTATION)
_HOST_STATUS = (
    "phase",
    "certificate",
    "observedRenewal",
    "observedRetry",
    "observedGeneration",
    "failedAttempts",
    "lastFailureTime",
    ACME_CHALLENGE,
)
_HOST_CONDITIONS = (CERTIFICATE_VALID, MAIL_SERVING)
"""The conditions the scanner compares with the clock and the one the mail reports set; the
others stay out of memory."""


def slim_host(body: dict[str, Any]) -> dict[str, Any]:
    """The parts of a raw VirtualHost a :class:`HostRecord` is made of (``kube.watching``'s
    ``slim``): no managed fields, conditions or kopf's copy of the spec, and of the chain only
    the certificate step of a host without a certificate."""
    metadata = body.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    status = body.get("status") or {}
    chain = [entry for entry in status.get("chain") or () if entry.get("step") == CERTIFICATE]
    kept = {"chain": chain} if chain and not status.get("certificate") else {}
    return {
        "metadata": {
            **{
                key: metadata[key]
                for key in ("name", "uid", "generation", "creationTimestamp", "deletionTimestamp")
                if key in metadata
            },
            "annotations": {k: annotations[k] for k in _HOST_ANNOTATIONS if k in annotations},
        },
        "spec": body.get("spec") or {},
        "status": {
            **{key: status[key] for key in _HOST_STATUS if key in status},
            "conditions": [
                c for c in status.get("conditions") or () if c.get("type") in _HOST_CONDITIONS
            ],
            **kept,
        },
    }


def first_certificate_begun(status: Object) -> bool:
    """Whether a host's (raw or slimmed) status shows no certificate and a certificate step
    that has begun and not succeeded."""
    if status.get("certificate"):
        return False
    return any(
        entry.get("step") == CERTIFICATE
        and entry.get("startedAt")
        and entry.get("state") != StepState.SUCCEEDED
        for entry in status.get("chain") or ()
    )


def slim_maildomain(body: dict[str, Any]) -> dict[str, Any]:
    """The parts of a raw MailDomain a :class:`Claim` is made of."""
    metadata = body.get("metadata") or {}
    return {
        "metadata": {k: metadata[k] for k in ("name", "creationTimestamp") if k in metadata},
        "spec": {"name": (body.get("spec") or {}).get("name", "")},
    }


def host_record(body: Object) -> HostRecord:
    """The record of a raw (or slimmed) VirtualHost."""
    metadata = body.get("metadata") or {}
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    name = str(metadata.get("name", ""))
    certificate = status.get("certificate") or {}
    try:
        not_after = certificate.get("notAfter")
        expiry = datetime.fromisoformat(not_after).timestamp() if not_after else None
        # Only hosts with a certificate or a failure have duties the scanner needs to know of.
        host = None
        if certificate or status.get("phase") == Phase.FAILED:
            host = VirtualHost.from_body(body)
        candidate = RenewalCandidate.of(host) if host is not None else None
        failure = RetryCandidate.of(host) if host is not None else None
    except (pydantic.ValidationError, ValueError, KeyError) as error:
        # The CRD's schema makes this rare; such a host keeps its name in the catalog.
        logger.warning("VirtualHost %s: unreadable for the catalog: %s", name, error)
        expiry, candidate, failure = None, None, None
    return HostRecord(
        name=name,
        hostname=str(spec.get("hostname", "")),
        other_names=served_names(spec)[1:],
        domains=tuple(str(domain) for domain in spec.get("domains") or ()),
        claim=Claim(str(metadata.get("creationTimestamp", "")), name),
        deleting="deletionTimestamp" in metadata,
        view=HostView(
            name,
            str(status.get("phase") or "Pending"),
            expiry,
            candidate.renewal_time.timestamp() if candidate and candidate.enabled else None,
        ),
        candidate=candidate,
        failure=failure,
        mail=_mail_subject(status),
        first_certificate_begun=first_certificate_begun(status),
    )


def _mail_subject(status: Object) -> MailSubject | None:
    certificate = status.get("certificate") or {}
    if not certificate.get("secretName") or not certificate.get("serial"):
        return None
    current = next(
        (
            MailCondition(ConditionStatus(c["status"]), c.get("reason", ""), c.get("message", ""))
            for c in status.get("conditions") or ()
            if c.get("type") == MAIL_SERVING and c.get("status") in iter(ConditionStatus)
        ),
        None,
    )
    return MailSubject(str(certificate["secretName"]), str(certificate["serial"]), current)


class _Catalog(abc.ABC):
    """What every catalog shares: applying watch events through ``_clear``/``_put``/``_drop``,
    and the "listed once" flag, awaitable."""

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None
        self.synced = False

    def apply(self, event: WatchEvent) -> None:
        if event.type == "SYNC":
            self._clear()
            for obj in event.objects:
                self._put(obj)
            self.set()
        elif event.object is not None:
            self._drop(str(event.object["metadata"]["name"]))
            if event.type != "DELETED":
                self._put(event.object)

    @abc.abstractmethod
    def _clear(self) -> None:
        """Part of ``apply``."""

    @abc.abstractmethod
    def _put(self, obj: Object) -> None:
        """Part of ``apply``."""

    @abc.abstractmethod
    def _drop(self, name: str) -> None:
        """Part of ``apply``."""

    def set(self) -> None:
        self.synced = True
        if self._event is not None:
            self._event.set()

    async def wait(self, timeout: float) -> bool:
        """Whether the catalog holds every object, waiting up to ``timeout`` seconds for it."""
        if not self.synced:
            if self._event is None:
                self._event = asyncio.Event()
            try:
                async with asyncio.timeout(timeout):
                    await self._event.wait()
            except TimeoutError:
                pass
        return self.synced


class HostCatalog(_Catalog):
    """Every VirtualHost by name, hostname, served name and listed domain
    (``linking.HostHints`` too)."""

    def __init__(self) -> None:
        super().__init__()
        self._hosts: dict[str, HostRecord] = {}
        self._by_hostname: dict[str, tuple[str, ...]] = {}
        self._by_served_name: dict[str, tuple[str, ...]] = {}
        """Every name a host serves (``served_names``): what no two hosts may share."""
        self._by_domain: dict[str, tuple[str, ...]] = {}
        self._by_secret: dict[str, tuple[str, ...]] = {}
        self._failed: dict[str, RetryCandidate] = {}
        self._next_wake: datetime | None = None
        self._duty = asyncio.Event()

    def _clear(self) -> None:
        self._hosts.clear()
        self._by_hostname.clear()
        self._by_served_name.clear()
        self._by_domain.clear()
        self._by_secret.clear()
        self._failed.clear()

    def _put(self, obj: Object) -> None:
        record = host_record(obj)
        self._hosts[record.name] = record
        _add(self._by_hostname, record.hostname, record.name)
        for served in (record.hostname, *record.other_names):
            _add(self._by_served_name, served, record.name)
        for domain in record.domains:
            _add(self._by_domain, domain, record.name)
        if record.mail is not None:
            _add(self._by_secret, record.mail.secret, record.name)
        if record.failure is not None:
            self._failed[record.name] = record.failure
        if self._next_wake is not None and _duty_before(record, self._next_wake):
            self._duty.set()

    def _drop(self, name: str) -> None:
        self._failed.pop(name, None)
        record = self._hosts.pop(name, None)
        if record is not None:
            _remove(self._by_hostname, record.hostname, name)
            for served in (record.hostname, *record.other_names):
                _remove(self._by_served_name, served, name)
            for domain in record.domains:
                _remove(self._by_domain, domain, name)
            if record.mail is not None:
                _remove(self._by_secret, record.mail.secret, name)

    def __len__(self) -> int:
        return len(self._hosts)

    def get(self, name: str) -> HostRecord | None:
        return self._hosts.get(name)

    def named_for(self, hostname: str) -> Collection[str]:
        """Names of the VirtualHosts with this hostname."""
        return self._by_hostname.get(hostname, ())

    def serving(self, name: str) -> Collection[str]:
        """Names of the VirtualHosts serving ``name``: as their hostname or an additional
        name."""
        return self._by_served_name.get(name, ())

    def rivals(self, name: str) -> list[Claim]:
        """The claims of the VirtualHosts serving this name (normally one), but of those
        being deleted."""
        records = (self._hosts[host] for host in self.serving(name))
        return [record.claim for record in records if not record.deleting]

    def listing(self, domain: str) -> Collection[str]:
        """Names of the VirtualHosts whose ``spec.domains`` lists this domain."""
        return self._by_domain.get(domain, ())

    def names(self) -> list[str]:
        return list(self._hosts)

    def named_by_secret(self, secret: str) -> Collection[str]:
        """Names of the VirtualHosts whose certificate is in this TLS Secret (normally one)."""
        return self._by_secret.get(secret, ())

    def begun_first_certificates(self) -> frozenset[str] | None:
        """The hosts without a certificate whose certificate step has begun; ``None`` until
        the catalog holds every host (``provisioning.certificates.EarlierAttempts``)."""
        if not self.synced:
            return None
        return frozenset(r.name for r in self._hosts.values() if r.first_certificate_begun)

    def mail_subject(self, name: str) -> MailSubject | None:
        record = self._hosts.get(name)
        return record.mail if record is not None else None

    def views(self) -> list[HostView]:
        return [record.view for record in self._hosts.values()]

    def candidates(self) -> Iterator[RenewalCandidate]:
        """The hosts holding a certificate. Walk it without awaiting in between."""
        return (record.candidate for record in self._hosts.values() if record.candidate)

    def failed(self) -> Iterator[RetryCandidate]:
        """The Failed hosts. Walk it without awaiting in between."""
        return iter(self._failed.values())

    def plan_wake(self, at: datetime) -> None:
        self._next_wake = at

    async def wait_for_duty(self, timeout: float) -> None:
        if timeout > 0 and not self._duty.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._duty.wait()
        self._duty.clear()


class ClaimCatalog(_Catalog):
    """Every MailDomain's claim on its domain, by domain."""

    def __init__(self) -> None:
        super().__init__()
        self._claims: dict[str, tuple[str, Claim]] = {}  # MailDomain name -> (domain, claim)
        self._by_domain: dict[str, tuple[Claim, ...]] = {}

    def _clear(self) -> None:
        self._claims.clear()
        self._by_domain.clear()

    def _put(self, obj: Object) -> None:
        metadata = obj.get("metadata") or {}
        domain = str((obj.get("spec") or {}).get("name", ""))
        claim = Claim(str(metadata.get("creationTimestamp", "")), str(metadata["name"]))
        self._claims[claim.name] = (domain, claim)
        self._by_domain[domain] = (*self._by_domain.get(domain, ()), claim)

    def _drop(self, name: str) -> None:
        found = self._claims.pop(name, None)
        if found is not None:
            domain, claim = found
            rest = tuple(c for c in self._by_domain.get(domain, ()) if c != claim)
            if rest:
                self._by_domain[domain] = rest
            else:
                self._by_domain.pop(domain, None)

    def claims(self, domain: str) -> list[Claim]:
        """The MailDomains describing ``domain`` (usually one; the oldest one counts)."""
        return list(self._by_domain.get(domain, ()))


def _duty_before(record: HostRecord, when: datetime) -> bool:
    """Whether ``record`` brings the scanner work before ``when``: a failure to retry (its
    backoff is the scanner's to compute), or a certificate called valid that expires sooner."""
    if record.failure is not None and not record.failure.requested:
        return True
    candidate = record.candidate
    return candidate is not None and candidate.certificate_valid and candidate.not_after < when


def _add(index: dict[str, tuple[str, ...]], key: str, name: str) -> None:
    present = index.get(key, ())
    if name not in present:
        index[key] = (*present, name)


def _remove(index: dict[str, tuple[str, ...]], key: str, name: str) -> None:
    rest = tuple(other for other in index.get(key, ()) if other != name)
    if rest:
        index[key] = rest
    else:
        index.pop(key, None)


def share_challenges(store: ChallengeStore, event: WatchEvent) -> None:
    """Keep ``store``'s shared challenges current from an event of the VirtualHost watch: every
    replica answers the challenges the leader published (``status.acmeChallenge``)."""
    if event.type == "SYNC":
        found = {str(obj["metadata"]["name"]): published_challenge(obj) for obj in event.objects}
        store.share_all({name: answer for name, answer in found.items() if answer is not None})
    elif event.object is not None:
        name = str(event.object["metadata"]["name"])
        gone = event.type == "DELETED"
        store.share(name, None if gone else published_challenge(event.object))
