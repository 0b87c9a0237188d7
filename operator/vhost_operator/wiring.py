"""The operator process (``vhost-operator run``): its wiring, and kopf started with it.

The one module that knows which concrete class plays which part: it connects to the API server,
wraps the client for each kind, registers the ACME account, and assembles the provisioning steps
and the renewal path from the settings (:func:`build_context`). :func:`run` registers the
handlers and hands the context to kopf as its memo; the handlers read it with
``handlers.context.context_of``.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import uuid
from datetime import UTC, datetime, timedelta

import kopf

from vhost_operator.acme.challenges import ChallengeResponder, ChallengeStore, Refresh, SelfChecker
from vhost_operator.acme.client import AcmeClient
from vhost_operator.acme.config import AcmeConfig
from vhost_operator.catalog import HostCatalog
from vhost_operator.handlers.context import BLOCKING_CALL_THREADS, OperatorContext
from vhost_operator.kube.api import ApiClient, connect
from vhost_operator.kube.events import EventPoster
from vhost_operator.kube.hostdomains import HostDomainsApi
from vhost_operator.kube.leases import LeaderElector, LeaseApi
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
from vhost_operator.resources.leases import LeaseTiming
from vhost_operator.resources.models import WAKE_ANNOTATION
from vhost_operator.settings import Settings

WATCHES = 3
"""Watches on the same client, one connection each: VirtualHosts, MailDomains, site ConfigMaps."""

LOST_LEADERSHIP_EXIT = 3
"""Exit status of a replica that lost the Lease (as client-go's ``OnStoppedLeading``: the
process ends, its Deployment starts it again as a follower)."""

logger = logging.getLogger(__name__)


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
    hosts = HostCatalog()
    self_check = None
    if settings.acme_enabled:
        acme_client = AcmeClient(acme_config(settings), connections=BLOCKING_CALL_THREADS)
        account = AcmeAccount(acme_client, objects, settings)
        # With several replicas, a challenge goes into the host's status too: any replica may
        # be asked for it (one more status write per order).
        board = VirtualHostApi(client) if settings.leader_election_enabled else None
        if settings.self_check_enabled:
            self_check = SelfChecker(settings.self_check_address, settings.self_check_timeout)
        certificates = CertificateStep(
            account,
            challenges,
            objects,
            settings,
            budget=order_ledger(settings, objects),
            board=board,
            earlier=hosts,
            self_check=self_check,
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
    responder = None
    if settings.acme_enabled:
        refresh = None
        if settings.leader_election_enabled:
            refresh = challenge_refresh(challenges, hosts, virtualhosts)
        responder = ChallengeResponder(challenges, refresh)

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
        events=EventPoster(client),
        renewal_info=account,
        responder=responder,
        self_check=self_check,
        hosts=hosts,
        elector=elector(settings, client) if settings.leader_election_enabled else None,
    )


def order_ledger(settings: Settings, objects: NamespacedObjects) -> OrderLedger | None:
    if settings.acme_order_limit == 0:
        return None
    limits = BudgetLimits(settings.acme_order_limit, timedelta(seconds=settings.acme_order_window))
    account = (settings.operator_namespace, settings.acme_account_secret)
    return OrderLedger(limits, objects, account, clock=utc_now)


def challenge_refresh(
    challenges: ChallengeStore, hosts: HostCatalog, virtualhosts: VirtualHostApi
) -> Refresh:
    """Reads the challenges of a hostname's hosts into ``challenges``, for a token asked of
    this replica before the watch brought it."""

    async def refresh(hostname: str) -> None:
        for name in hosts.named_for(hostname):
            challenges.share(name, await virtualhosts.read_challenge(name))

    return refresh


def elector(settings: Settings, client: ApiClient) -> LeaderElector:
    timing = LeaseTiming(
        lease_duration=settings.lease_duration,
        renew_deadline=settings.lease_renew_deadline,
        retry_period=settings.lease_retry_period,
    )
    return LeaderElector(
        LeaseApi(client, timeout=settings.lease_retry_period),
        namespace=settings.operator_namespace,
        name=settings.lease_name,
        # The pod's name, and a part unique to this process: a restarted container must not
        # take itself for the holder its previous process was.
        identity=f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}",
        timing=timing,
        on_lost=stop_provisioning,
    )


def stop_provisioning(reason: str) -> None:
    """End the process at once, threads and all: nothing it started may write after this."""
    logger.critical("leader election: %s; exiting, to start again as a follower", reason)
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stderr.flush()
    os._exit(LOST_LEADERSHIP_EXIT)


def acme_config(settings: Settings) -> AcmeConfig:
    return AcmeConfig(
        directory_url=settings.acme_directory_url,
        contact_email=settings.acme_email,
        eab_kid=settings.acme_eab_kid,
        eab_hmac_key=settings.acme_eab_hmac_key,
        ca_bundle_path=settings.acme_ca_bundle,
        order_timeout=settings.acme_order_timeout,
    )
