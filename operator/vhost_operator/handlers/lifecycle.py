"""Operator start-up and shutdown: kopf's settings, the thread pool, the challenge responder."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import logging
import re
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import kopf

from vhost_operator.admission.configuration import mutating_webhooks, validating_webhooks
from vhost_operator.admission.tls import make_serving_material
from vhost_operator.catalog import share_challenges, slim_host, slim_maildomain
from vhost_operator.handlers.context import BLOCKING_CALL_THREADS, OperatorContext, context_of
from vhost_operator.handlers.kopf_bodies import unlink_kopf_views
from vhost_operator.handlers.kopf_patching import skip_empty_json_patches
from vhost_operator.handlers.kopf_queues import slim_kopf_queues
from vhost_operator.handlers.kopf_storage import SlimStatusDiffBaseStorage
from vhost_operator.handlers.kopf_watching import slim_kopf_events
from vhost_operator.handlers.mailserving import MailConditionWrites
from vhost_operator.handlers.observability import serve_metrics
from vhost_operator.handlers.renewal import start_renewal_info, start_scanner
from vhost_operator.handlers.webhook_server import Configure, ReasonedWebhookServer
from vhost_operator.kube.events import REPORTING_COMPONENT
from vhost_operator.kube.mailtls import watch_mail_reports
from vhost_operator.kube.sites import SiteObjects
from vhost_operator.kube.watching import ObjectWatch
from vhost_operator.kube.webhooks import WebhookConfigurations
from vhost_operator.memory import release_periodically
from vhost_operator.provisioning.mailserving import MailServingKeeper
from vhost_operator.provisioning.serving import slim_site
from vhost_operator.resources.models import FINALIZER, GROUP
from vhost_operator.resources.watch import WatchEvent

logger = logging.getLogger(__name__)

KOPF_CONNECTIONS = 32
"""Connections kopf's own API client may have open at once (kopf's default: no limit). kopf
patches every object it handles, so a thousand hosts at once meant a thousand concurrent TLS
connections (handshakes, memory), and the API server's priority-and-fairness queues answered the
overflow with 429 Too Many Requests, which kopf retries a second or more later. Its few watches
hold one connection each; the requests queue for the rest."""

WORKER_LIMIT = 300
"""Objects kopf handles at the same time (kopf's default: no limit, one worker per object with
anything to do). A burst of 10,000 new hosts had 10,000 workers, each holding its object and
handler state, waiting for the same few connections: hundreds of megabytes at the peak, which
Python keeps as its own afterwards. A chain waiting for nginx or the CA holds its slot, so this
also bounds chains in flight, and a chain mostly waits (for the agent's next batch, twice): on
a 2-core node the cores were 92 % busy with 200 while hosts queued for a worker, 97-98 % with
300 (1,000 hosts: 54.7 and 53.4 s → 47.7 and 48.9 s; 10,000 hosts: 687.5 → 577.2 s, the
operator's peak RSS 174 → 185 MiB). (No kopf indexes: with them, a limit below the number of
objects deadlocks kopf's start-up.)"""

WORKER_IDLE_TIMEOUT = 0.5
"""Seconds a worker waits for its object's next event before freeing its slot (kopf: 5 s,
which with a limit makes every object hold a slot for 5 s after its last event)."""

LIST_CHUNK_SIZE = 500
"""Objects per page when kopf lists a kind (its default: everything in one response)."""

KOPF_PREFIX = f"kopf.{GROUP}"
"""Annotation prefix of kopf's bookkeeping (progress and last handled configuration)."""


def configure_kopf(settings: kopf.OperatorSettings) -> None:
    """Keep kopf's progress records in annotations under our own prefix and its record of the
    last handled configuration in ``status.lastHandledConfiguration`` (written with the chain's
    last status: ``handlers.kopf_storage``), keep kopf's own Events to warnings (our steps post
    theirs, through ``kube.events``, and each post is an API call), and bound how many objects
    kopf handles at once."""
    # A prefix of kopf's own: kopf leaves every annotation under its prefix out of the object's
    # diff, and our retry annotation (vhost-operator.io/retry) must show up there.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    settings.persistence.diffbase_storage = SlimStatusDiffBaseStorage(prefix=KOPF_PREFIX)
    settings.persistence.finalizer = FINALIZER
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = REPORTING_COMPONENT
    settings.queueing.worker_limit = WORKER_LIMIT
    settings.queueing.idle_timeout = WORKER_IDLE_TIMEOUT
    settings.watching.chunk_size = LIST_CHUNK_SIZE
    # What waits in kopf's queues for a worker, without the half of each body nobody reads,
    # in queues without their preallocated blocks.
    slim_kopf_events()
    slim_kopf_queues()
    # kopf's patches without a copy of the whole object when nothing is left to diff.
    skip_empty_json_patches()
    # kopf's bodies and patches freed with their last reference, not by full collections.
    unlink_kopf_views()


@kopf.on.login()
async def login(
    *,
    memo: kopf.Memo,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    settings: kopf.OperatorSettings,
    **_: Any,
) -> kopf.AiohttpSession | None:
    """kopf's own login (in-cluster service account, else kubeconfig), with a session that
    keeps at most ``KOPF_CONNECTIONS`` connections, and that holds back a follower's requests
    (:func:`follower_may_send`) until it leads."""
    context = context_of(memo)
    info = kopf.login_via_client(logger=logger, settings=settings)
    if info is None:
        return None
    with warnings.catch_warnings():  # aiohttp deprecates BasicAuth on sessions; kopf does too
        warnings.simplefilter("ignore", DeprecationWarning)
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=KOPF_CONNECTIONS, ssl=info.as_ssl_context()),
            headers=info.as_http_headers(),
            auth=info.as_aiohttp_basic_auth(),
            proxy=info.proxy_url,
            trust_env=info.trust_env,
            trace_configs=[until_leading(context)],
        )
    return kopf.AiohttpSession(
        server=info.server,
        default_namespace=info.default_namespace,
        priority=info.priority,
        expiration=info.expiration,
        aiohttp_session=session,
    )


FOLLOWER_REQUESTS = re.compile(
    r"^/(api|apis|api/v1|apis/[^/]+|apis/[^/]+/[^/]+"
    r"|apis/apiextensions\.k8s\.io/v1/customresourcedefinitions)$"
)
"""What kopf may ask while this replica follows: API discovery and the CRD list (read-only).
kopf serves its webhook only once it has discovered the resources it reviews."""


def follower_may_send(method: str, path: str) -> bool:
    """Whether kopf may send this request before this replica leads. Everything else waits:
    listing and watching our objects (so a follower's kopf runs no handler and writes
    nothing), Events, and the webhook configuration (the leader keeps it current)."""
    return method == "GET" and FOLLOWER_REQUESTS.match(path) is not None


def until_leading(context: OperatorContext) -> aiohttp.TraceConfig:
    """A hook of kopf's HTTP session: a request a follower may not send waits for leadership
    before it goes out."""

    async def hold(_: aiohttp.ClientSession, __: Any, request: Any) -> None:
        if not follower_may_send(request.method, request.url.path):
            await context.until_leading()

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(hold)
    return trace


@kopf.on.startup()
async def start(*, settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    configure_kopf(settings)
    asyncio.get_running_loop().set_default_executor(
        concurrent.futures.ThreadPoolExecutor(BLOCKING_CALL_THREADS, thread_name_prefix="blocking")
    )
    context = context_of(memo)
    if context.elector is not None:
        context.tasks.append(asyncio.create_task(context.elector.run(), name="leader-election"))
    # The catalogs list everything before kopf's watches start handlers (start-up handlers
    # run first); whoever needs a complete catalog waits for its first list.
    # With nginx (and so TLS Secrets in its namespace), mail TLS agents may report on them.
    mail = MailServingKeeper(context.hosts) if context.applications is not None else None
    feed_host = host_feed(context)

    def on_host(event: WatchEvent) -> None:
        feed_host(event)
        if mail is not None:
            mail.handle_host(event)

    context.tasks.append(follow(context.virtualhosts.watch_all(slim_host), on_host))
    context.tasks.append(
        follow(context.maildomains.watch_all(slim_maildomain), context.claims.apply)
    )
    if context.settings.metrics_port:
        serve_metrics(context.settings.metrics_port, context.hosts.views)
    if context.settings.webhook_enabled:
        serve_admission(settings, context)
    if context.applications is not None:
        # The nginx agent's reports (site ConfigMap annotations), for the waiting steps.
        sites = SiteObjects(context.client, context.settings.nginx_namespace)
        context.tasks.append(follow(sites.watch_configmaps(slim_site), context.applications.handle))
        if selector := context.settings.nginx_replica_selector:
            # Which nginx replicas are ready, so a step waits for each of them.
            pods = sites.watch_pods(selector)
            context.tasks.append(follow(pods, context.applications.handle_replicas))
    if mail is not None:
        # The mail TLS agents' reports (a ConfigMap each), for the MailServing condition.
        reports = watch_mail_reports(context.client, context.settings.nginx_namespace)
        context.tasks.append(follow(reports, mail.handle_report))
        context.tasks.append(asyncio.create_task(keep_mail_serving(context, mail), name="mail"))
    if context.responder is not None:
        await context.responder.start("0.0.0.0", context.settings.challenge_listen_port)
        context.tasks.append(asyncio.create_task(context.wakeups.run(), name="wake-ups"))
    # Without ACME it has no certificates to watch, but Failed hosts to retry (if enabled).
    context.tasks.append(start_scanner(context))
    renewal_info = start_renewal_info(context)
    if renewal_info is not None:
        context.tasks.append(renewal_info)
    context.tasks.append(asyncio.create_task(release_periodically(), name="release-freed-memory"))
    # Everything alive now (modules, classes, settings) lives as long as the process: out of
    # the garbage collector's sight, its full collections stay short (webhook latency).
    gc.collect()
    gc.freeze()


async def keep_mail_serving(context: OperatorContext, mail: MailServingKeeper) -> None:
    """Write the MailServing conditions the reports call for; like every write to the hosts,
    only while this replica leads (every replica keeps the reports in memory meanwhile)."""
    await context.until_leading()
    await mail.run(MailConditionWrites(context).write)


def host_feed(context: OperatorContext) -> Callable[[WatchEvent], None]:
    """What the VirtualHost watch feeds: the catalog, and with several replicas also the
    challenges the leader publishes in the hosts' status (every replica answers them)."""
    if context.elector is None or context.responder is None:
        return context.hosts.apply
    challenges = context.challenges

    def feed(event: WatchEvent) -> None:
        context.hosts.apply(event)
        share_challenges(challenges, event)

    return feed


def follow(watch: ObjectWatch, apply: Callable[[WatchEvent], None]) -> asyncio.Task[None]:
    """Hand every event of ``watch`` to ``apply``, until cancelled."""

    async def run() -> None:
        async for event in watch.events():
            apply(event)

    return asyncio.create_task(run(), name=f"follow {watch!r}")


def serve_admission(kopf_settings: kopf.OperatorSettings, context: OperatorContext) -> None:
    """Serve the webhooks over TLS (kopf's server) and keep their configurations current (ours:
    :func:`webhook_configurer`)."""
    settings = context.settings
    if settings.webhook_cert_dir is not None:
        directory = settings.webhook_cert_dir
        ca_pem = (directory / "ca.crt").read_bytes()
        certificate, key = directory / "tls.crt", directory / "tls.key"
    else:
        hosts = sorted({settings.webhook_host, "127.0.0.1", "localhost"})
        hosts.remove(settings.webhook_host)
        material = make_serving_material(
            [settings.webhook_host, *hosts], Path(tempfile.mkdtemp(prefix="vhost-webhook-"))
        )
        ca_pem, certificate, key = material.ca_pem, material.certificate_path, material.key_path
    namespace, _, name = settings.webhook_service.partition("/")
    kopf_settings.admission.server = ReasonedWebhookServer(
        service=(namespace, name) if name else None,
        addr="0.0.0.0",
        port=settings.webhook_port,
        host=settings.webhook_host,
        certfile=str(certificate),
        pkeyfile=str(key),
        cadata=ca_pem,
        configure=webhook_configurer(context),
    )


def webhook_configurer(context: OperatorContext) -> Configure:
    """Write the webhook configurations (with their match conditions) for a client config of
    the webhook server, once this replica leads: every replica serves the webhooks, the
    leader's address is the one registered (as with kopf's managed mode, whose requests
    waited for leadership too). Both kinds have the configured name: the validating reviews,
    and the mutating webhook that adds kopf's finalizer to a new VirtualHost or MailDomain.
    When the server stops, a replica that wrote the configurations empties them, as kopf did:
    the API server then calls no webhook that is gone. It still holds the Lease then (it releases it
    afterwards, in ``stop``); one that loses the Lease exits at once, without this, so it never
    removes a new leader's webhooks."""
    name = context.settings.webhook_configuration_name
    configurations = WebhookConfigurations(context.client)
    written = False

    async def configure(client_config: Any | None) -> None:
        nonlocal written
        if client_config is None:
            if written:
                logger.info("Removing the webhooks of %s.", name)
                await configurations.put("MutatingWebhookConfiguration", name, [])
                await configurations.put("ValidatingWebhookConfiguration", name, [])
            return
        await context.until_leading()
        logger.info("Writing the Validating- and MutatingWebhookConfiguration %s.", name)
        validating = validating_webhooks(client_config, suffix=name)
        await configurations.put("ValidatingWebhookConfiguration", name, validating)
        mutating = mutating_webhooks(client_config, suffix=name)
        await configurations.put("MutatingWebhookConfiguration", name, mutating)
        written = True

    return configure


@kopf.on.cleanup()
async def stop(*, memo: kopf.Memo, **_: Any) -> None:
    context = context_of(memo)
    for task in context.tasks:
        task.cancel()
    context.tasks.clear()
    if context.responder is not None:
        await context.responder.stop()
    if context.self_check is not None:
        await context.self_check.close()
    # The last Events of the chains kopf has just cancelled (a few seconds at most).
    await context.events.close()
    if context.elector is not None:
        # kopf has cancelled every handler; calls already running in threads end first, so
        # that nothing of this process writes once another replica leads.
        await asyncio.get_running_loop().shutdown_default_executor()
        await context.elector.release()
