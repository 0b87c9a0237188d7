"""Events (core/v1) about our objects, posted the operator's lean way. RBAC: events create in
``EVENTS_NAMESPACE``.

The same Events kopf's ``kopf.event`` posts (:func:`event_body` builds kopf's body, field for
field), without kopf's path: its queue, router and a worker task per object that lingers for
the next Event, then its aiohttp client with the authentication wrapper and request tracing,
about 1 ms of the operator's CPU per Event, half of it the request itself, which costs the same
here (README, Performance); the chain posts four per host. Here an Event is queued
(:meth:`EventPoster.post` returns at once: a chain never waits on one), and a few workers post
what is queued, several Events per thread hop, through :func:`kube.core.send`. A post that
fails is retried a bounded number of times, then logged and dropped, as kopf does: Events are
helpful, not part of any state.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import datetime
import logging
from collections.abc import Sequence
from typing import Any, Literal

import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

from vhost_operator.kube.api import TRANSIENT_STATUSES, ApiClient, drained
from vhost_operator.kube.core import send
from vhost_operator.kube.objects import FIELD_MANAGER

logger = logging.getLogger(__name__)

EventType = Literal["Normal", "Warning"]

EVENTS_NAMESPACE = "default"
"""Where the Events of a cluster-scoped object go, as with kopf: the namespace of its login,
which for the ``kubernetes`` client's login (``kopf.login_via_client``, ours) is none, so
"default". The chart's Role for Events is there (``rbac.eventsNamespace``)."""

REPORTING_COMPONENT = "vhost-operator"
"""``source.component`` and ``reportingComponent`` ("From" in ``kubectl describe``); kopf's
setting (``settings.posting.reporting_component``) is given the same name for its own Events."""

REPORTING_INSTANCE = "dev"
"""``reportingInstance``: kopf's default, which its Events have always carried here."""

NAME_PREFIX = "kopf-event-"
"""``generateName`` of every Event: kopf's, so that Events look as they always did."""

MAX_MESSAGE_LENGTH = 1024
"""Longer messages lose their middle (``...``), as kopf cuts them (the API server refuses an
Event whose message is too long)."""
CUT_INFIX = "..."

WORKERS = 12
"""Thread hops posting Events at the same time. They take their threads from the operator's
pool for blocking calls (``handlers.context.BLOCKING_CALL_THREADS``, 32), which the chains keep
busy in a burst: then Events get about ``WORKERS`` of its 32 shares of the requests sent, and
they are 4 of the 21 requests a new host sends through it (13 API writes, 8 ACME requests). At
4 (a share of 12.5 % for 19 % of the requests) the queue grew all through 10,000-host rounds
until it was full and Events were dropped (1,824 and 4,970 in two rounds). Between bursts a
worker posts whatever is queued and ends."""

BATCH = 16
"""Events posted, one after another, in one thread hop at most."""

MAX_QUEUED = 10_000
"""Events waiting at most; more (the API server unreachable for long) are dropped, logged."""

RETRY_DELAYS = (1.0, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0)
"""Seconds between attempts at an Event the API server did not take for a transient reason:
kopf's default backoffs for Events (``settings.posting.default_backoffs``)."""

FLUSH_TIMEOUT = 5.0
"""Seconds :meth:`EventPoster.close` waits for queued Events at shutdown."""


@dataclasses.dataclass(frozen=True)
class Involved:
    """The object an Event is about: kopf's ``build_object_reference`` of its body."""

    api_version: str
    kind: str
    name: str
    uid: str | None = None
    namespace: str | None = None


@dataclasses.dataclass(frozen=True)
class Event:
    involved: Involved
    type: EventType
    reason: str
    message: str
    at: datetime.datetime


def cut_message(message: str) -> str:
    """``message``, at most ``MAX_MESSAGE_LENGTH`` long: kopf's cut, which keeps both ends."""
    if len(message) <= MAX_MESSAGE_LENGTH:
        return message
    prefix = message[: MAX_MESSAGE_LENGTH // 2 - (len(CUT_INFIX) // 2)]
    suffix = message[-MAX_MESSAGE_LENGTH // 2 + (len(CUT_INFIX) - len(CUT_INFIX) // 2) :]
    return f"{prefix}{CUT_INFIX}{suffix}"


def event_namespace(involved: Involved) -> str:
    return involved.namespace or EVENTS_NAMESPACE


def event_body(event: Event) -> dict[str, Any]:
    """The Event's JSON, as kopf's ``post_event`` builds it."""
    namespace = event_namespace(event.involved)
    involved = event.involved
    reference = {
        "apiVersion": involved.api_version,
        "kind": involved.kind,
        "name": involved.name,
        "uid": involved.uid,
    }
    # kopf leaves out what is empty, then names the Event's namespace in the reference.
    reference = {key: value for key, value in reference.items() if value}
    reference["namespace"] = namespace
    # Always six digits of the second: eventTime is a MicroTime, which the API server parses
    # only with them, and isoformat() leaves them out at a whole second (kopf's body then
    # fails with 400 Bad Request, once in a million Events; otherwise the text is kopf's).
    now = event.at.isoformat(timespec="microseconds")
    return {
        "metadata": {"namespace": namespace, "generateName": NAME_PREFIX},
        "action": "Action?",
        "type": event.type,
        "reason": event.reason,
        "message": cut_message(event.message),
        "reportingComponent": REPORTING_COMPONENT,
        "reportingInstance": REPORTING_INSTANCE,
        "source": {"component": REPORTING_COMPONENT},
        "involvedObject": reference,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "eventTime": now,
    }


def create_event(client: ApiClient, event: Event) -> None:
    """Post one Event (blocks: run it in a thread), written by the operator's field manager."""
    path = f"/api/v1/namespaces/{event_namespace(event.involved)}/events"
    query = [("fieldManager", FIELD_MANAGER)]
    drained(send(client, "POST", path, query=query, body=event_body(event)))


def transient(error: Exception) -> bool:
    """Whether a failed post may succeed later without anyone acting."""
    if isinstance(error, ApiException):
        return error.status in TRANSIENT_STATUSES
    return isinstance(error, urllib3.exceptions.HTTPError | OSError)


def post_batch(client: ApiClient, events: Sequence[Event]) -> list[tuple[Event, Exception]]:
    """Post ``events`` one after another (blocks: one thread hop for all); the ones that
    failed, with their error. Never raises for one Event."""
    failed: list[tuple[Event, Exception]] = []
    for event in events:
        try:
            create_event(client, event)
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as error:
            failed.append((event, error))
    return failed


def _dropped(event: Event, error: Exception) -> None:
    # kopf's warning for a failed Event, with the same details.
    logger.warning(
        "Failed to post an event. Ignoring and continuing. Error: %s. "
        "Event: type=%r, reason=%r, message=%r, about %s %s.",
        error,
        event.type,
        event.reason,
        event.message,
        event.involved.kind,
        event.involved.name,
    )


class EventPoster:
    """Posts Events in the background, from a queue: :meth:`post` from the event loop's thread,
    :meth:`close` at shutdown.

    Events are posted in the order they were queued, but up to ``workers`` hops at a time, so
    two Events of one object may be created in another order; their timestamps (taken when
    queued) keep the order they happened in, and what ``kubectl`` shows is sorted by them.
    """

    def __init__(
        self,
        client: ApiClient,
        *,
        workers: int = WORKERS,
        batch: int = BATCH,
        max_queued: int = MAX_QUEUED,
        delays: Sequence[float] = RETRY_DELAYS,
        executor: concurrent.futures.Executor | None = None,
    ) -> None:
        self._client = client
        self._workers = workers
        self._batch = batch
        self._max_queued = max_queued
        self._delays = tuple(delays)
        self._executor = executor
        self._queued: collections.deque[Event] = collections.deque()
        self._running: set[asyncio.Task[None]] = set()
        self._closed = False

    def post(self, involved: Involved, *, type: EventType, reason: str, message: str) -> None:
        """Queue an Event about ``involved`` (now); returns at once."""
        event = Event(involved, type, reason, message, datetime.datetime.now(datetime.UTC))
        if self._closed or len(self._queued) >= self._max_queued:
            _dropped(event, RuntimeError("closed" if self._closed else "too many queued"))
            return
        self._queued.append(event)
        if len(self._running) < self._workers:
            task = asyncio.get_running_loop().create_task(self._work(), name="event poster")
            self._running.add(task)

    async def close(self, timeout: float = FLUSH_TIMEOUT) -> None:
        """Post what is queued, for up to ``timeout`` seconds, then drop the rest (logged)."""
        self._closed = True
        if self._running:
            await asyncio.wait(set(self._running), timeout=timeout)
        for task in set(self._running):
            task.cancel()
        if self._running:
            await asyncio.wait(set(self._running))
        if self._queued:
            logger.warning("dropped %d Events not posted at shutdown", len(self._queued))
            self._queued.clear()

    async def _work(self) -> None:
        task = asyncio.current_task()
        try:
            while self._queued:
                batch = [self._queued.popleft() for _ in range(min(self._batch, len(self._queued)))]
                await self._post(batch)
        finally:
            # At once, with no await since the queue was found empty: a post() from now on
            # sees this worker gone and starts another.
            if task is not None:
                self._running.discard(task)

    async def _post(self, events: list[Event]) -> None:
        """Post ``events`` in one thread hop; retry the ones that failed for a transient reason
        after each delay, and drop the rest."""
        loop = asyncio.get_running_loop()
        for delay in (*self._delays, None):
            failed = await loop.run_in_executor(self._executor, post_batch, self._client, events)
            events = []
            for event, error in failed:
                if delay is not None and transient(error):
                    events.append(event)
                else:
                    _dropped(event, error)
            if delay is None or not events:
                return
            logger.debug("retrying %d Events in %ss", len(events), delay)
            await asyncio.sleep(delay)
