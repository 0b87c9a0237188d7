"""Linking MailDomains to VirtualHosts: the seed's domain-first workflow.

A MailDomain names a hostname. Its domain must end up in ``spec.domains`` of the VirtualHost
with that hostname (created when none has it) and of no other host. Clearing the hostname or
deleting the MailDomain takes the domain off; deleting the VirtualHost clears the hostname of
the MailDomains that named it (:func:`unlink_maildomains_of`), which stay.

Concurrency: kopf handles different MailDomains at the same time, and users edit hosts too, so
nothing here writes what it read without a version check.

- A host is created under a name derived from its hostname alone: two MailDomains creating the
  host for one new hostname pick the same name, one create wins, and the other gets
  AlreadyExists and adds its domain to the winner's host.
- ``spec.domains`` is written conditionally on the resourceVersion it was computed from. On a
  conflict the host is read again and the change computed anew, a bounded number of times.
- The domain is first taken off other hosts, then put on its own: the webhook refuses a domain
  listed by two hosts, so the other order would be refused on every move.

Where the domain is listed comes from hints (the operator's catalog, ``vhost_operator.catalog``,
which may lag by a watch event); every hint is read again before anything is written.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from typing import Protocol, TypeVar

from vhost_operator.errors import InvalidResourceError, TransientApiError, VhostOperatorError
from vhost_operator.kube.preconditions import Contended, NameTaken
from vhost_operator.provisioning.chain import Clock, utc_now
from vhost_operator.resources.claims import Claim
from vhost_operator.resources.maildomains import (
    VIRTUALHOST_DELETED,
    HostDomains,
    MailDomain,
    MailDomainStatus,
    claimed_by_other,
    status_after,
    virtualhost_names,
)

T = TypeVar("T")
logger = logging.getLogger(__name__)

ATTEMPTS = 8
"""Rounds of read-and-write before a contended change counts as failed (kopf retries later)."""

MAX_BACKOFF = 1.0
"""Seconds: the longest pause between two rounds."""


class HostStore(Protocol):
    """The VirtualHost calls linking makes (``kube.hostdomains.HostDomainsApi``)."""

    async def get(self, name: str) -> HostDomains | None: ...

    async def create(
        self, name: str, hostname: str, domains: Sequence[str], *, created_for: str
    ) -> HostDomains: ...

    async def set_domains(
        self, host: HostDomains, domains: Sequence[str]
    ) -> HostDomains | None: ...


class HostHints(Protocol):
    """Where to look first; may lag behind the API server by a watch event."""

    def named_for(self, hostname: str) -> Collection[str]:
        """Names of the VirtualHosts with this hostname."""
        ...

    def listing(self, domain: str) -> Collection[str]:
        """Names of the VirtualHosts whose ``spec.domains`` lists this domain."""
        ...


class MailDomainStore(Protocol):
    """The MailDomain calls (``kube.maildomains.MailDomainApi``)."""

    async def list_all(self) -> list[MailDomain]: ...

    async def get(self, name: str) -> MailDomain | None: ...

    async def clear_virtual_host(self, domain: MailDomain) -> bool: ...

    async def write_status(self, name: str, status: MailDomainStatus) -> None: ...


Announce = Callable[[MailDomain, str], None]
"""Posts a (Normal) Event about a MailDomain: the handlers' ``kopf.event``."""


class DomainClaimed(VhostOperatorError):
    """Another, older MailDomain describes the same domain; this one links nothing."""

    def __init__(self, domain: str, owner: str) -> None:
        super().__init__(
            f"domain {domain} is already described by MailDomain {owner}; a domain links to at "
            "most one virtual host"
        )
        self.owner = owner


class HostBeingDeleted(VhostOperatorError):
    """The host for the hostname is being deleted; link again once it is gone."""


@dataclasses.dataclass(frozen=True)
class LinkOutcome:
    linked: str | None
    """The VirtualHost the domain is listed by now, if any."""
    hostname: str | None = None
    created: bool = False
    """``linked`` was created for this domain."""
    added: bool = False
    """The domain was added to ``linked`` just now (it was not listed there before)."""
    removed_from: tuple[str, ...] = ()
    """VirtualHosts the domain was taken off."""


# -- MailDomain events -------------------------------------------------------------------------


async def reconcile_maildomain(
    domain: MailDomain, hosts: HostStore, hints: HostHints, claims: Iterable[Claim]
) -> LinkOutcome:
    """Make the hosts' domains match the MailDomain's ``spec.virtualHost``."""
    owner = claimed_by_other(domain, claims)
    if owner is not None:
        raise DomainClaimed(domain.spec.name, owner)
    previous = domain.status.linked_virtual_host
    if domain.spec.virtual_host is None:
        return await unlink_domain(domain.spec.name, previous=previous, hosts=hosts, hints=hints)
    return await link_domain(
        domain.spec.name,
        domain.spec.virtual_host,
        previous=previous,
        hosts=hosts,
        hints=hints,
        created_for=f"MailDomain/{domain.name}",
    )


async def release_maildomain(
    domain: MailDomain, hosts: HostStore, hints: HostHints, claims: Iterable[Claim]
) -> LinkOutcome:
    """A MailDomain is deleted: take its domain off every host, unless the domain belongs to an
    older MailDomain (then this one never linked it, and the link is the other's)."""
    if claimed_by_other(domain, claims) is not None:
        return LinkOutcome(linked=None)
    return await unlink_domain(
        domain.spec.name, previous=domain.status.linked_virtual_host, hosts=hosts, hints=hints
    )


async def link_domain(
    domain: str,
    hostname: str,
    *,
    previous: str | None,
    hosts: HostStore,
    hints: HostHints,
    created_for: str,
) -> LinkOutcome:
    """List ``domain`` on the host with ``hostname`` (created when missing), and on no other."""
    elsewhere = _places(domain, previous, hints)
    removed = await _take_off(domain, elsewhere, hosts, keep_hostname=hostname)
    host, created, added = await _put_on(domain, hostname, hosts, hints, created_for=created_for)
    return LinkOutcome(
        linked=host.name, hostname=hostname, created=created, added=added, removed_from=removed
    )


async def unlink_domain(
    domain: str, *, previous: str | None, hosts: HostStore, hints: HostHints
) -> LinkOutcome:
    """Take ``domain`` off every host that lists it."""
    removed = await _take_off(domain, _places(domain, previous, hints), hosts, keep_hostname=None)
    return LinkOutcome(linked=None, removed_from=removed)


def _places(domain: str, previous: str | None, hints: HostHints) -> set[str]:
    # The recorded link covers a lagging catalog; the catalog covers a link made by hand, and one
    # made just before a crash that kept the status from being written.
    return {*hints.listing(domain), *([previous] if previous else [])}


async def _put_on(
    domain: str, hostname: str, hosts: HostStore, hints: HostHints, *, created_for: str
) -> tuple[HostDomains, bool, bool]:
    """The host the domain is now listed on, whether it was created, whether the domain was
    added (not listed before)."""

    async def attempt() -> tuple[HostDomains, bool, bool]:
        found, free = await _find_host(hostname, hosts, hints)
        if found is None:
            if free is None:
                taken = ", ".join(virtualhost_names(hostname))
                raise InvalidResourceError(
                    f"cannot create a VirtualHost for {hostname}: the names {taken} are used by "
                    "VirtualHosts of other hostnames"
                )
            created = await hosts.create(free, hostname, [domain], created_for=created_for)
            return created, True, True
        if found.deleting:
            raise HostBeingDeleted(
                f"VirtualHost {found.name} ({hostname}) is being deleted; the domain is linked "
                "once it is gone"
            )
        if domain in found.domains:
            return found, False, False
        updated = await hosts.set_domains(found, [*found.domains, domain])
        if updated is None:
            raise Contended(f"VirtualHost {found.name} disappeared while linking")
        return updated, False, True

    return await _until_uncontended(attempt, what=f"linking domain {domain} to {hostname}")


async def _find_host(
    hostname: str, hosts: HostStore, hints: HostHints
) -> tuple[HostDomains | None, str | None]:
    """The host with ``hostname``, or else the name to create it under (``None``: none free).

    The derived names come first and are read from the API server, not the catalog: a host that
    another handler created a moment ago is found even before its watch event arrives.
    """
    free: str | None = None
    candidates = virtualhost_names(hostname)
    for name in candidates:
        host = await hosts.get(name)
        if host is None:
            free = free or name
        elif host.hostname == hostname:
            return host, None
    # A host created by hand under a name of the user's choosing.
    for name in sorted(set(hints.named_for(hostname)) - set(candidates)):
        host = await hosts.get(name)
        if host is not None and host.hostname == hostname:
            return host, None
    return None, free


async def _take_off(
    domain: str, names: Collection[str], hosts: HostStore, *, keep_hostname: str | None
) -> tuple[str, ...]:
    removed: list[str] = []
    for name in sorted(names):
        if await _remove_from(domain, name, hosts, keep_hostname=keep_hostname):
            removed.append(name)
    return tuple(removed)


async def _remove_from(
    domain: str, name: str, hosts: HostStore, *, keep_hostname: str | None
) -> bool:
    async def attempt() -> bool:
        host = await hosts.get(name)
        # A host being deleted goes with its list; writing to it would only race the finalizer.
        if host is None or host.deleting or domain not in host.domains:
            return False
        if host.hostname == keep_hostname:
            return False
        remaining = [d for d in host.domains if d != domain]
        return await hosts.set_domains(host, remaining) is not None

    return await _until_uncontended(attempt, what=f"unlinking domain {domain} from {name}")


async def _until_uncontended(attempt: Callable[[], Awaitable[T]], *, what: str) -> T:
    """Run ``attempt`` (read, compute, write) again while it loses races, a bounded number of
    times. A lost create needs no pause (the winner's host is there to be read); a lost
    conditional write pauses with jitter, so the two writers do not collide again in step."""
    last: VhostOperatorError | None = None
    for round_ in range(ATTEMPTS):
        try:
            return await attempt()
        except NameTaken as error:
            last = error
            logger.debug("%s: lost a create race (%s); reading again", what, error)
        except Contended as error:
            last = error
            logger.debug("%s: lost a write race (%s); reading again", what, error)
            await asyncio.sleep(random.uniform(0, min(MAX_BACKOFF, 0.02 * 2**round_)))
    raise TransientApiError(f"{what}: still conflicting after {ATTEMPTS} attempts ({last})")


# -- VirtualHost deletion ----------------------------------------------------------------------


async def unlink_maildomains_of(
    hostname: str,
    virtualhost: str,
    maildomains: MailDomainStore,
    *,
    announce: Announce | None = None,
    clock: Clock = utc_now,
) -> list[str]:
    """A VirtualHost is being deleted: its MailDomains stay, without the association.

    Clears ``spec.virtualHost`` of the MailDomains naming ``hostname`` (as the seed clears the
    domain's virtual-host field, so the operator does not create the host again for them) and
    ``status.linkedVirtualHost`` of those linked to ``virtualhost``. Returns their names.
    """
    unlinked: list[str] = []
    for domain in await maildomains.list_all():
        if not _points_at(domain, hostname, virtualhost):
            continue
        message = f"VirtualHost {virtualhost} ({hostname}) was deleted: domain {domain.spec.name} "
        message += (
            "is no longer linked and spec.virtualHost was cleared"
            if domain.spec.virtual_host == hostname
            else "is no longer linked"
        )
        # Status first: the reconcile that the cleared spec.virtualHost triggers then sees why
        # the domain was unlinked, and keeps saying so.
        status = status_after(
            domain,
            linked=None,
            hostname=None,
            now=clock(),
            reason=VIRTUALHOST_DELETED,
            message=message,
        )
        await maildomains.write_status(domain.name, status)
        await _clear_virtual_host(domain, hostname, virtualhost, maildomains)
        unlinked.append(domain.name)
        if announce is not None:
            announce(domain, message)
    return unlinked


def _points_at(domain: MailDomain, hostname: str, virtualhost: str) -> bool:
    return domain.spec.virtual_host == hostname or domain.status.linked_virtual_host == virtualhost


async def _clear_virtual_host(
    domain: MailDomain, hostname: str, virtualhost: str, maildomains: MailDomainStore
) -> None:
    """Clear ``spec.virtualHost`` if it still names ``hostname``; a user who points it at another
    host meanwhile wins (the write is conditional on the version read)."""
    current: MailDomain | None = domain

    async def attempt() -> None:
        nonlocal current
        if current is None or current.spec.virtual_host != hostname:
            return
        try:
            await maildomains.clear_virtual_host(current)
        except Contended:
            current = await maildomains.get(domain.name)
            raise

    await _until_uncontended(attempt, what=f"unlinking MailDomain {domain.name} from {virtualhost}")
