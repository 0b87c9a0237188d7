"""What every handler needs, built once at start-up and handed over through kopf's ``memo``."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import kopf
import kubernetes

from vhost_operator.acme import AcmeClient, AcmeConfig, ChallengeStore
from vhost_operator.catalog import ClaimCatalog, HostCatalog
from vhost_operator.kube.api import connect
from vhost_operator.kube.hostdomains import HostDomainsApi
from vhost_operator.kube.maildomains import MailDomainApi
from vhost_operator.kube.objects import NamespacedObjects
from vhost_operator.kube.virtualhosts import VirtualHostApi
from vhost_operator.provisioning.certificates import AcmeAccount, CertificateStep
from vhost_operator.provisioning.chain import Step
from vhost_operator.provisioning.renewal import CertificateRenewer, ServedRenewal
from vhost_operator.provisioning.serving import SiteApplications
from vhost_operator.provisioning.sites import FINAL
from vhost_operator.provisioning.steps import StepServices, plan_steps
from vhost_operator.provisioning.wakeups import WakeUps
from vhost_operator.resources.models import WAKE_ANNOTATION
from vhost_operator.settings import Settings

_KEY = "vhost_operator_context"

BLOCKING_CALL_THREADS = 32
"""Threads for the blocking Kubernetes and ACME client calls, and connections the Kubernetes
client keeps open (one per thread, so no call pays for a TLS handshake). asyncio's default
(CPU count + 4) would let six hosts provision at a time on a 2-core node while the rest wait
for a thread; many more than 32 only add memory and lock contention: the API server on the
same cores answers no faster."""

WATCHES = 3
"""Watches on the same client, one connection each: VirtualHosts, MailDomains, site ConfigMaps."""


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
    client: kubernetes.client.ApiClient
    maildomains: MailDomainApi
    hostdomains: HostDomainsApi
    """VirtualHost calls of MailDomain linking (conditional writes of ``spec.domains``)."""
    wakeups: WakeUps
    """Hosts whose chain waits for a time (the CA's ``Retry-After``)."""
    hosts: HostCatalog = dataclasses.field(default_factory=HostCatalog)
    """Every VirtualHost, fed by a watch from start-up on (``handlers.lifecycle``)."""
    claims: ClaimCatalog = dataclasses.field(default_factory=ClaimCatalog)
    """Every MailDomain's claim on its domain, fed likewise."""

    def as_memo(self) -> kopf.Memo:
        # kopf copies the memo per object; a plain Memo holding one shared context copies cleanly.
        return kopf.Memo({_KEY: self})


def build_context(settings: Settings) -> OperatorContext:
    client = connect(connections=BLOCKING_CALL_THREADS + WATCHES)
    objects = NamespacedObjects(client)
    challenges = ChallengeStore()
    certificates = None
    if settings.acme_enabled:
        account = AcmeAccount(AcmeClient(acme_config(settings)), objects, settings)
        certificates = CertificateStep(account, challenges, objects, settings)
    applications = SiteApplications() if settings.nginx_enabled else None
    steps = plan_steps(StepServices(settings, objects, certificates, applications))
    renewer: CertificateRenewer | None = certificates
    final = next((step for step in steps if step.name == FINAL), None)
    if certificates is not None and final is not None:
        renewer = ServedRenewal(certificates, final)
    virtualhosts = VirtualHostApi(client)

    async def wake(name: str, now: datetime) -> None:
        # A new value every time: an unchanged annotation would be no change, and no event.
        await virtualhosts.annotate(name, {WAKE_ANNOTATION: now.isoformat()})

    return OperatorContext(
        settings,
        virtualhosts,
        objects,
        challenges,
        steps,
        renewer,
        applications,
        client,
        maildomains=MailDomainApi(client),
        hostdomains=HostDomainsApi(client),
        wakeups=WakeUps(wake, clock=lambda: datetime.now(UTC)),
    )


def acme_config(settings: Settings) -> AcmeConfig:
    return AcmeConfig(
        directory_url=settings.acme_directory_url,
        contact_email=settings.acme_email,
        eab_kid=settings.acme_eab_kid,
        eab_hmac_key=settings.acme_eab_hmac_key,
        ca_bundle_path=settings.acme_ca_bundle,
        order_timeout=settings.acme_order_timeout,
    )


def context_of(memo: kopf.Memo) -> OperatorContext:
    context = memo.get(_KEY)
    assert isinstance(context, OperatorContext), "start the operator with `vhost-operator run`"
    return context
