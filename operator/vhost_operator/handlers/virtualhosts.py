"""VirtualHost events → the provisioning chain."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec

import kopf

from vhost_operator.catalog import HostRecord
from vhost_operator.errors import TransientApiError
from vhost_operator.handlers.context import OperatorContext, context_of
from vhost_operator.handlers.maildomains import unlinked_announcer
from vhost_operator.kube.events import Involved
from vhost_operator.provisioning.chain import run_chain, utc_now
from vhost_operator.provisioning.cleanup import release
from vhost_operator.provisioning.decisions import Action, decide, names_refusal, successor
from vhost_operator.provisioning.linking import unlink_maildomains_of
from vhost_operator.provisioning.renewal import renew_certificate
from vhost_operator.provisioning.sites import publish_enabled
from vhost_operator.resources.hostnames import primary_hostname_problem
from vhost_operator.resources.models import (
    GROUP,
    RETRY_ANNOTATION,
    VERSION,
    VIRTUALHOSTS,
    Phase,
    VirtualHost,
    VirtualHostStatus,
)

logger = logging.getLogger(__name__)
P = ParamSpec("P")

API_RETRY_DELAY = 5.0
"""Seconds before kopf runs a handler again that failed because the API server was unreachable
or overloaded beyond the bounded retries of one call (kopf's default for an error: 60 s, which
left hosts idle for most of a minute after an API server restart). The chain resumes from the
status it last wrote."""


def _retried_soon_on_api_trouble(
    handler: Callable[P, Coroutine[Any, Any, None]],
) -> Callable[P, Coroutine[Any, Any, None]]:
    """``handler``, with an API outage answered by a retry after ``API_RETRY_DELAY``."""

    @functools.wraps(handler)  # the same name: kopf keys its progress records by it
    async def retried(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            await handler(*args, **kwargs)
        except TransientApiError as error:
            raise kopf.TemporaryError(str(error), delay=API_RETRY_DELAY) from error

    return retried


CATALOG_WAIT = 5.0
"""Seconds a chain waits for the catalog's first list just after a start, so that an older
VirtualHost with the same hostname is known before anything is provisioned."""


class KubernetesChainRecorder:
    """Records chain progress on the VirtualHost itself: its status and its Events.

    Given kopf's ``patch`` of the handler, the run's last status goes into it instead of a
    write of its own: kopf sends it right after the handler returns, with its record of the
    handled spec (``status.lastHandledConfiguration``, ``handlers.kopf_storage``), in one
    status patch: a VirtualHost write less per run. Should the operator stop before kopf's
    patch, the host has the status written before (its last step Running) and no record of
    the spec: the next start runs the chain again, which resumes with that step.
    """

    def __init__(self, context: OperatorContext, patch: kopf.Patch | None = None) -> None:
        self._context = context
        self._patch = patch

    async def write_status(
        self, host: VirtualHost, status: VirtualHostStatus, *, last: bool = False
    ) -> None:
        if last and self._patch is not None:
            self._patch.status.update(status.to_merge_patch())
        else:
            await self._context.virtualhosts.write_status(host.name, status)

    async def event(self, host: VirtualHost, *, warning: bool, reason: str, message: str) -> None:
        # Queued: the chain goes on at once, the Event is posted in the background.
        self._context.events.post(
            Involved(f"{GROUP}/{VERSION}", "VirtualHost", host.name, host.uid),
            type="Warning" if warning else "Normal",
            reason=reason,
            message=message,
        )


@kopf.on.resume(GROUP, VERSION, VIRTUALHOSTS)
@kopf.on.create(GROUP, VERSION, VIRTUALHOSTS)
@kopf.on.update(GROUP, VERSION, VIRTUALHOSTS)
@_retried_soon_on_api_trouble
async def reconcile(body: kopf.Body, memo: kopf.Memo, patch: kopf.Patch, **_: Any) -> None:
    context = context_of(memo)
    host = VirtualHost.from_body(body)
    action = decide(host)
    recorder = KubernetesChainRecorder(context, patch)
    if action in (Action.PROVISION, Action.RETRY, Action.REISSUE):
        refused = primary_hostname_problem(host.spec.hostname, context.settings.primary_hostnames)
        # Uniqueness without the webhook: an older VirtualHost serving a name keeps it.
        hosts = context.hosts
        await hosts.wait(CATALOG_WAIT)
        status = await run_chain(
            host,
            context.steps,
            recorder,
            restart=action in (Action.RETRY, Action.REISSUE),
            refused=refused,
            on_deferred=context.wakeups.schedule_host,
            guard=lambda h: names_refusal(h, hosts.rivals),
        )
        logger.info("VirtualHost %s: chain ended %s", host.name, status.phase)
    elif action == Action.REFUSE_RETRY:
        phase = host.status.phase
        await recorder.write_status(
            host, host.status.model_copy(update={"observed_retry": host.retry_request})
        )
        await recorder.event(
            host,
            warning=True,
            reason="RetryRefused",
            message=f"retry is only accepted for Failed hosts; this one is {phase}",
        )
    elif action == Action.RENEW and context.renewer is not None:
        status = await renew_certificate(
            host,
            context.renewer,
            recorder,
            clock=utc_now,
            on_deferred=context.wakeups.schedule_host,
        )
        logger.info("VirtualHost %s: renewal ended %s", host.name, status.phase)
    elif action == Action.OBSERVE:
        if context.settings.nginx_enabled:
            await publish_enabled(host, context.objects, context.settings)
        await recorder.write_status(
            host, host.status.model_copy(update={"observed_generation": host.generation})
        )


@kopf.on.delete(GROUP, VERSION, VIRTUALHOSTS)
@_retried_soon_on_api_trouble
async def delete(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """The finalizer's work: remove what the host owns before the object goes."""
    context = context_of(memo)
    host = VirtualHost.from_body(body)
    removed = await release(host, context.objects, context.settings)
    await _hand_over(context, host)
    # Linked MailDomains stay; only their association goes (and the host is not re-created).
    await unlink_maildomains_of(
        host.spec.hostname, host.name, context.maildomains, announce=unlinked_announcer(context)
    )
    logger.info("VirtualHost %s deleted; removed %s", host.name, ", ".join(removed))


async def _hand_over(context: OperatorContext, host: VirtualHost) -> None:
    """The next oldest VirtualHost serving one of this host's names (its hostname or another),
    Failed because this one kept it, is retried as if its owner had asked (the retry
    annotation, visibly): it takes over."""
    hosts = context.hosts
    heirs: dict[str, str] = {}  # VirtualHost -> the first name it takes over
    for served in host.spec.names:
        name = successor(host, [*hosts.rivals(served), host.claim])
        record = hosts.get(name) if name is not None else None
        if name is not None and record is not None and record.view.phase == Phase.FAILED.value:
            heirs.setdefault(name, served)
    if not heirs:
        return
    # The retried chain asks the catalog who keeps the hostname: it must see this host as
    # being deleted first (kopf and the catalog follow separate watches).
    deadline = asyncio.get_running_loop().time() + CATALOG_WAIT
    while not _deleting(hosts.get(host.name)) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.1)
    for name, served in heirs.items():
        await context.virtualhosts.annotate(name, {RETRY_ANNOTATION: f"takeover-from-{host.uid}"})
        logger.info("VirtualHost %s takes name %s over from %s", name, served, host.name)


def _deleting(record: HostRecord | None) -> bool:
    return record is None or record.deleting
