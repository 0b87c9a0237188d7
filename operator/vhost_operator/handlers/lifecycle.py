"""Operator start-up and shutdown: kopf's settings, the thread pool, the challenge responder."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from typing import Any

import kopf

from vhost_operator.acme import ChallengeResponder
from vhost_operator.handlers.context import context_of
from vhost_operator.resources.models import GROUP

BLOCKING_CALL_THREADS = 64
"""Threads for the blocking Kubernetes and ACME client calls. asyncio's default (CPU count + 4)
would let six hosts provision at a time on a 2-core node while the rest wait for a thread."""

_responder: ChallengeResponder | None = None


def configure_kopf(settings: kopf.OperatorSettings) -> None:
    """Keep kopf's bookkeeping out of ``.status`` (annotations under our own prefix), and keep
    kopf's own Events to warnings: our steps post theirs, and each post is an API call."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = "vhost-operator"


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    global _responder
    configure_kopf(settings)
    asyncio.get_running_loop().set_default_executor(
        concurrent.futures.ThreadPoolExecutor(BLOCKING_CALL_THREADS, thread_name_prefix="blocking")
    )
    context = context_of(memo)
    if context.settings.acme_enabled:
        _responder = ChallengeResponder(context.challenges)
        await _responder.start("0.0.0.0", context.settings.challenge_listen_port)


@kopf.on.cleanup()
async def stop(**_: Any) -> None:
    if _responder is not None:
        await _responder.stop()
