"""Operator start-up and shutdown: kopf's settings, the thread pool, the challenge responder."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any

import aiohttp
import kopf

from vhost_operator.acme import ChallengeResponder
from vhost_operator.admission.tls import make_serving_material
from vhost_operator.handlers.context import BLOCKING_CALL_THREADS, OperatorContext, context_of
from vhost_operator.handlers.observability import serve_metrics
from vhost_operator.handlers.renewal import start_scanner
from vhost_operator.handlers.webhook_server import ReasonedWebhookServer
from vhost_operator.kube.sites import SiteObjects
from vhost_operator.metrics import HostView
from vhost_operator.provisioning.renewal import RenewalCandidate
from vhost_operator.resources.models import GROUP
from vhost_operator.settings import Settings

KOPF_CONNECTIONS = 32
"""Connections kopf's own API client may have open at once (kopf's default: no limit). kopf
patches every object it handles, so a thousand hosts at once meant a thousand concurrent TLS
connections (handshakes, memory), and the API server's priority-and-fairness queues answered the
overflow with 429 Too Many Requests, which kopf retries a second or more later. Its few watches
hold one connection each; the requests queue for the rest."""

KOPF_PREFIX = f"kopf.{GROUP}"
"""Annotation prefix of kopf's bookkeeping (progress and last handled configuration)."""

_responder: ChallengeResponder | None = None
_scanner: asyncio.Task[None] | None = None
_watch: asyncio.Task[None] | None = None


def configure_kopf(settings: kopf.OperatorSettings) -> None:
    """Keep kopf's bookkeeping out of ``.status`` (annotations under our own prefix), and keep
    kopf's own Events to warnings: our steps post theirs, and each post is an API call."""
    # A prefix of kopf's own: kopf leaves every annotation under its prefix out of the object's
    # diff, and our retry annotation (vhost-operator.io/retry) must show up there.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=KOPF_PREFIX, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = "vhost-operator"


@kopf.on.login()
async def login(
    *,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    settings: kopf.OperatorSettings,
    **_: Any,
) -> kopf.AiohttpSession | None:
    """kopf's own login (in-cluster service account, else kubeconfig), with a session that
    keeps at most ``KOPF_CONNECTIONS`` connections."""
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
        )
    return kopf.AiohttpSession(
        server=info.server,
        default_namespace=info.default_namespace,
        priority=info.priority,
        expiration=info.expiration,
        aiohttp_session=session,
    )


@kopf.on.startup()
async def start(
    *,
    settings: kopf.OperatorSettings,
    memo: kopf.Memo,
    renewal_candidates: kopf.Index[str, RenewalCandidate] | None = None,
    host_views: kopf.Index[str, HostView] | None = None,
    **_: Any,
) -> None:
    global _responder, _scanner, _watch
    configure_kopf(settings)
    asyncio.get_running_loop().set_default_executor(
        concurrent.futures.ThreadPoolExecutor(BLOCKING_CALL_THREADS, thread_name_prefix="blocking")
    )
    context = context_of(memo)
    if context.settings.metrics_port:
        assert host_views is not None, "the host index is registered in handlers"
        serve_metrics(context.settings.metrics_port, host_views)
    if context.settings.webhook_enabled:
        serve_admission(settings, context.settings)
    if context.applications is not None:
        _watch = asyncio.create_task(follow_sites(context), name="site-applications")
    if context.settings.acme_enabled:
        _responder = ChallengeResponder(context.challenges)
        await _responder.start("0.0.0.0", context.settings.challenge_listen_port)
        # kopf creates every index before start-up handlers run, and fills it while watching.
        assert renewal_candidates is not None, "the renewal index is registered in handlers"
        _scanner = start_scanner(context, renewal_candidates)


async def follow_sites(context: OperatorContext) -> None:
    """Feed the nginx agent's reports (site ConfigMap annotations) to the waiting steps."""
    assert context.applications is not None
    sites = SiteObjects(context.client, context.settings.nginx_namespace)
    async for event in sites.watch_configmaps().events():
        context.applications.handle(event)


def serve_admission(kopf_settings: kopf.OperatorSettings, settings: Settings) -> None:
    """Serve the validating webhook over TLS and let kopf keep its configuration current."""
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
    kopf_settings.admission.server = ReasonedWebhookServer(
        addr="0.0.0.0",
        port=settings.webhook_port,
        host=settings.webhook_host,
        certfile=str(certificate),
        pkeyfile=str(key),
        cadata=ca_pem,
    )
    kopf_settings.admission.managed = settings.webhook_configuration_name


@kopf.on.cleanup()
async def stop(**_: Any) -> None:
    for task in (_scanner, _watch):
        if task is not None:
            task.cancel()
    if _responder is not None:
        await _responder.stop()
