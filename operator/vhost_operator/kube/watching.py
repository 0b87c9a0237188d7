"""List-then-watch of one kind of object, as an async stream of events.

The blocking ``kubernetes`` watch runs in a thread of its own and hands events to the event loop,
so one watch costs one thread and one HTTP stream however many objects it covers: the way to keep
state current for thousands of hosts without polling each one.

The events (``resources.watch``) carry raw dicts, never client models: a ``SYNC`` with every object
first and after every relist, then ``ADDED``, ``MODIFIED`` and ``DELETED``.

Usage::

    watch = ObjectWatch(core.list_namespaced_config_map, "vhost-operator",
                        label_selector="vhost-operator.io/component=nginx-site", what="sites")
    async for event in watch.events():
        ...
    watch.stop()
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import kubernetes
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

from vhost_operator.resources.models import GROUP, VERSION
from vhost_operator.resources.watch import Object, WatchEvent

logger = logging.getLogger(__name__)

WATCH_TIMEOUT_SECONDS = 240
"""Server-side length of one watch request; the watch resumes from the last version after it.
Short enough that a stopped watch's thread ends soon, long enough to cost nothing."""

RECONNECT_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0)
"""Seconds before listing again after consecutive failures; the last one repeats."""


class _Relist(Exception):
    """The watch cannot resume from its version: list again."""


class ObjectWatch:
    """Lists, then watches, the objects ``list_function(*arguments, **filters)`` returns."""

    def __init__(
        self,
        list_function: Callable[..., Any],
        *arguments: Any,
        what: str,
        page_size: int | None = None,
        slim: Callable[[Object], Object] | None = None,
        **filters: Any,
    ) -> None:
        """``page_size`` lists in pages of that many objects; ``slim`` keeps only what the
        consumer reads of each object, in the watch thread (a consumer of thousands of objects
        then never holds thousands of whole objects at once)."""
        self._list = list_function
        self._arguments = arguments
        self._filters = filters
        self._what = what
        self._page_size = page_size
        self._slim = slim or (lambda obj: obj)
        self._stopped = threading.Event()

    def __repr__(self) -> str:
        return f"ObjectWatch({self._what})"

    async def events(self) -> AsyncIterator[WatchEvent]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[WatchEvent | BaseException] = asyncio.Queue()

        def deliver(item: WatchEvent | BaseException) -> None:
            # After stop() the thread may still read one more event (its read only ends with
            # the next one); by then the consumer, even its event loop, may be gone.
            if self._stopped.is_set():
                return
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is closed
                self._stopped.set()

        thread = threading.Thread(
            target=self._pump, args=(deliver,), name=f"watch-{self._what}", daemon=True
        )
        thread.start()
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.stop()

    def stop(self) -> None:
        """Ends the watch thread at its next event (or the watch's timeout)."""
        self._stopped.set()

    # -- the blocking side, in the watch thread ------------------------------------------------

    def _pump(self, deliver: Callable[[WatchEvent | BaseException], None]) -> None:
        failures = 0
        while not self._stopped.is_set():
            try:
                version = self._list_all(deliver)
                failures = 0
                while not self._stopped.is_set():
                    version = self._watch_from(version, deliver)
            except _Relist:
                logger.debug("watch of %s expired; listing again", self._what)
            except (ApiException, urllib3.exceptions.HTTPError, OSError, ValueError) as error:
                if self._stopped.is_set():
                    return  # stop() closed the stream under the watch: not a failure
                delay = RECONNECT_DELAYS[min(failures, len(RECONNECT_DELAYS) - 1)]
                failures += 1
                logger.warning(
                    "watch of %s failed (%s); listing again in %ss", self._what, error, delay
                )
                self._stopped.wait(delay)
            except BaseException as error:  # a bug: surface it in the consumer, not a dead thread
                deliver(error)
                return

    def _list_all(self, deliver: Callable[[WatchEvent | BaseException], None]) -> str:
        objects: list[Object] = []
        pages: dict[str, Any] = {"limit": self._page_size} if self._page_size else {}
        while True:
            response = self._list(
                *self._arguments, _preload_content=False, **pages, **self._filters
            )
            body = json.loads(response.data)
            objects += [self._slim(obj) for obj in body.get("items") or ()]
            version: str = body["metadata"]["resourceVersion"]
            token = body["metadata"].get("continue")
            if not (token and self._page_size):
                break
            pages["_continue"] = token
        deliver(WatchEvent("SYNC", objects=tuple(objects)))
        return version

    def _watch_from(
        self, version: str, deliver: Callable[[WatchEvent | BaseException], None]
    ) -> str:
        # The stream is read and parsed here, once per event: the client's own Watch parses
        # every event twice more to build models (a few percent of the operator's CPU).
        try:
            response = self._list(
                *self._arguments,
                watch=True,
                resource_version=version,
                timeout_seconds=WATCH_TIMEOUT_SECONDS,
                allow_watch_bookmarks=True,
                _preload_content=False,
                **self._filters,
            )
        except ApiException as error:
            if error.status == 410:
                raise _Relist() from error
            raise
        try:
            if not 200 <= response.status <= 299:
                if response.status == 410:
                    raise _Relist()
                raise ApiException(status=response.status, reason=response.reason)
            for line in _lines(response):
                event = json.loads(line)
                kind, obj = event["type"], event["object"]
                version = obj.get("metadata", {}).get("resourceVersion", version)
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    deliver(WatchEvent(kind, object=self._slim(obj)))
                elif kind == "ERROR":
                    raise (
                        _Relist()
                        if obj.get("code") == 410
                        else ApiException(status=obj.get("code"))
                    )
                if self._stopped.is_set():
                    break
        finally:
            # Closed first: a stream left mid-way must not go back to the pool half read.
            response.close()
            response.release_conn()
        return version


def _lines(response: Any) -> Iterator[bytes]:
    """The non-empty lines of a streamed response, as they complete."""
    pending = b""
    for chunk in response.stream(amt=None, decode_content=False):
        pending += chunk
        *complete, pending = pending.split(b"\n")
        yield from (line for line in complete if line)


LIST_PAGE_SIZE = 500
"""Objects per page when a watch lists a whole kind (a restart with 10,000 hosts lists 20 pages
instead of one response of tens of megabytes)."""


def watch_cluster_objects(
    objects: kubernetes.client.CustomObjectsApi,
    plural: str,
    *,
    what: str,
    slim: Callable[[Object], Object],
) -> ObjectWatch:
    """Every object of one of our cluster-scoped kinds, listed in pages, then watched; each
    reduced by ``slim``."""
    return ObjectWatch(
        objects.list_cluster_custom_object,
        GROUP,
        VERSION,
        plural,
        what=what,
        page_size=LIST_PAGE_SIZE,
        slim=slim,
    )
