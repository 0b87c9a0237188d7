"""The operator process (``vhost-operator run``): its wiring, and kopf started with it.

The one module that knows which concrete class plays which part: it connects to the API server,
wraps the client for each kind, registers the ACME account, and assembles the provisioning steps
and the renewal path from the settings (:func:`build_context`). :func:`run` registers the
handlers and hands the context to kopf as its memo; the handlers read it with
``handlers.context.context_of``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import kopf

from vhost_operator.acme.challenges import ChallengeResponder, ChallengeStore
from vhost_operator.acme.client import AcmeClient
from vhost_operator.acme.config import AcmeConfig
from vhost_operator.handlers.context import BLOCKING_CALL_THREADS, OperatorContext
from vhost_operator.kube.api import connect
from vhost_operator.kube.hostdomains import HostDomainsApi
from vhost_operator.kube.maildomains import MailDomainApi
from vhost_operator.kube.objects import NamespacedObjects
from vhost_operator.kube.virtualhosts import VirtualHostApi
from vhost_operator.provisioning.budget import BudgetLimits
from vhost_operator.provisioning.certificates import AcmeAccount, CertificateStep
from vhost_operator.provisioning.chain import utc_now
from vhost_operator.provisioning.ledger import OrderLedger
from vhost_operator.provisioning.renewal import CertificateRenewer, ServedRenewal
from vhost_operator.provisioning.serving import SiteApplications
from vhost_operator.provisioning.sites import FINAL
from vhost_operator.provisioning.steps import StepServices, plan_steps
from vhost_operator.provisioning.wakeups import WakeUps
from vhost_operator.resources.models import WAKE_ANNOTATION
from vhost_operator.settings import Settings

WATCHES = 3
"""Watches on the same client, one connection each: VirtualHosts, MailDomains, site ConfigMaps."""


def run(settings: Settings, *, verbose: bool) -> None:
    import vhost_operator.handlers  # registers the handlers with kopf

    if settings.webhook_enabled:
        vhost_operator.handlers.enable_admission()

    log_format = kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.FULL
    kopf.configure(verbose=verbose, log_format=log_format)
    if not verbose:
        # A line per webhook review, challenge request and probe: noise, and CPU under load.
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    context = build_context(settings)
    kopf.run(
        clusterwide=True,
        standalone=True,
        memo=context.as_memo(),
        liveness_endpoint=f"http://0.0.0.0:{settings.liveness_port}/healthz",
    )


def build_context(settings: Settings) -> OperatorContext:
    client = connect(connections=BLOCKING_CALL_THREADS + WATCHES)
    objects = NamespacedObjects(client)
    challenges = ChallengeStore()
    certificates = None
    account = None
    if settings.acme_enabled:
        account = AcmeAccount(AcmeClient(acme_config(settings)), objects, settings)
        certificates = CertificateStep(
            account, challenges, objects, settings, budget=order_ledger(settings, objects)
        )
    applications = (
        SiteApplications(replica_watch=bool(settings.nginx_replica_selector))
        if settings.nginx_enabled
        else None
    )
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
        renewal_info=account,
        responder=ChallengeResponder(challenges) if settings.acme_enabled else None,
    )


def order_ledger(settings: Settings, objects: NamespacedObjects) -> OrderLedger | None:
    if settings.acme_order_limit == 0:
        return None
    limits = BudgetLimits(settings.acme_order_limit, timedelta(seconds=settings.acme_order_window))
    account = (settings.operator_namespace, settings.acme_account_secret)
    return OrderLedger(limits, objects, account, clock=utc_now)


def acme_config(settings: Settings) -> AcmeConfig:
    return AcmeConfig(
        directory_url=settings.acme_directory_url,
        contact_email=settings.acme_email,
        eab_kid=settings.acme_eab_kid,
        eab_hmac_key=settings.acme_eab_hmac_key,
        ca_bundle_path=settings.acme_ca_bundle,
        order_timeout=settings.acme_order_timeout,
    )
