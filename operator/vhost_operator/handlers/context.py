"""What every handler needs, handed over through kopf's ``memo``.

Built once at start-up by ``vhost_operator.wiring``; the handlers only read it.
"""

from __future__ import annotations

import asyncio
import dataclasses

import kopf

from vhost_operator.acme.challenges import ChallengeResponder, ChallengeStore, SelfChecker
from vhost_operator.catalog import ClaimCatalog, HostCatalog
from vhost_operator.kube.api import ApiClient
from vhost_operator.kube.events import EventPoster
from vhost_operator.kube.hostdomains import HostDomainsApi
from vhost_operator.kube.leases import LeaderElector
from vhost_operator.kube.maildomains import MailDomainApi
from vhost_operator.kube.objects import NamespacedObjects
from vhost_operator.kube.virtualhosts import VirtualHostApi
from vhost_operator.provisioning.chain import Step
from vhost_operator.provisioning.renewal import CertificateRenewer
from vhost_operator.provisioning.renewal_info import RenewalInfoSource
from vhost_operator.provisioning.serving import SiteApplications
from vhost_operator.provisioning.wakeups import WakeUps
from vhost_operator.settings import Settings

_KEY = "vhost_operator_context"

BLOCKING_CALL_THREADS = 32
"""Threads for the blocking Kubernetes and ACME client calls, and connections the Kubernetes
client keeps open (one per thread, so no call pays for a TLS handshake). asyncio's default
(CPU count + 4) would let six hosts provision at a time on a 2-core node while the rest wait
for a thread; many more than 32 only add memory and lock contention: the API server on the
same cores answers no faster."""


@dataclasses.dataclass(frozen=True)
class OperatorContext:
    settings: Settings
    virtualhosts: VirtualHostApi
    objects: NamespacedObjects
    challenges: ChallengeStore
    steps: list[Step]
    renewer: CertificateRenewer | None
    """Renews a host's certificate (and waits for nginx to serve it); ``None`` without ACME."""
    applications: SiteApplications | None
    """The nginx agent's reports, fed by a watch; ``None`` when nginx is disabled."""
    client: ApiClient
    maildomains: MailDomainApi
    hostdomains: HostDomainsApi
    """VirtualHost calls of MailDomain linking (conditional writes of ``spec.domains``)."""
    wakeups: WakeUps
    """Hosts whose chain waits for a time (the CA's ``Retry-After``)."""
    events: EventPoster
    """Posts the Events about our objects in the background (closed by ``handlers.lifecycle``)."""
    renewal_info: RenewalInfoSource | None = None
    """The CA's renewal information (the ACME account); ``None`` without ACME."""
    responder: ChallengeResponder | None = None
    """The HTTP-01 responder, started and stopped by ``handlers.lifecycle``; ``None`` without
    ACME."""
    self_check: SelfChecker | None = None
    """The certificate step's self-check, whose connections ``handlers.lifecycle`` closes;
    ``None`` without ACME or with the self-check off."""
    elector: LeaderElector | None = None
    """Leader election among replicas (started by ``handlers.lifecycle``); ``None``: this
    process provisions alone."""
    tasks: list[asyncio.Task[None]] = dataclasses.field(default_factory=list)
    """What ``handlers.lifecycle`` starts and cancels: the catalogs' and the site reports'
    watches, the renewal scanner, the memory release."""
    hosts: HostCatalog = dataclasses.field(default_factory=HostCatalog)
    """Every VirtualHost, fed by a watch from start-up on (``handlers.lifecycle``)."""
    claims: ClaimCatalog = dataclasses.field(default_factory=ClaimCatalog)
    """Every MailDomain's claim on its domain, fed likewise."""

    async def until_leading(self) -> None:
        """Return once this replica may provision: at once without leader election."""
        if self.elector is not None:
            await self.elector.leading.wait()

    def as_memo(self) -> kopf.Memo:
        # kopf copies the memo per object; a plain Memo holding one shared context copies cleanly.
        return kopf.Memo({_KEY: self})


def context_of(memo: kopf.Memo) -> OperatorContext:
    context = memo.get(_KEY)
    assert isinstance(context, OperatorContext), "start the operator with `vhost-operator run`"
    return context
