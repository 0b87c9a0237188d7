"""Leader election: the Lease calls and the elector that makes them (client-go's pattern).

RBAC: leases get/create/update, in the operator's namespace only.

:class:`LeaderElector` reads the Lease every retry period, takes it over once it expired
(``resources.leases`` decides), and while holding it renews it, each write conditional on the
version it last saw or wrote (so two replicas can never both win one version). Holding it sets
:attr:`LeaderElector.leading`. A holder that cannot renew for the renew deadline (measured from
the start of its last successful renewal, by a thread of its own, so a busy event loop cannot
delay it), or that finds the Lease in another's hands, calls ``on_lost``, which ends the
process: a provisioning stopped half-way is resumed by the new holder, which is safe; one that
goes on beside the new holder is not.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from vhost_operator.errors import VhostOperatorError
from vhost_operator.kube.api import ApiClient, call, json_body
from vhost_operator.kube.core import CoreObjects
from vhost_operator.resources.leases import (
    LeaseRecord,
    LeaseTiming,
    Move,
    Observation,
    claimed,
    decide,
    must_stop,
    next_look,
    observe,
)

logger = logging.getLogger(__name__)

WATCHDOG_PERIOD = 0.25
"""Seconds between two checks of the renew deadline by the watchdog thread."""


class LeaseApi:
    """Read, create and update one kind: ``coordination.k8s.io/v1`` Leases."""

    def __init__(self, client: ApiClient, *, timeout: float) -> None:
        """``timeout``: seconds for each request; a hung call must not hold the elector."""
        self._core = CoreObjects(client)
        self._timeout = timeout
        # A thread of its own: a renewal must not queue behind a burst's calls in the shared pool.
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="lease")

    async def read(self, namespace: str, name: str) -> LeaseRecord | None:
        def send() -> LeaseRecord | None:
            try:
                response = self._core.request("GET", _path(namespace, name), timeout=self._timeout)
            except ApiException as error:
                if error.status == 404:
                    return None
                raise
            return lease_record(json_body(response))

        return await call(
            send, what=f"reading Lease {namespace}/{name}", delays=(), executor=self._thread
        )

    async def write(self, namespace: str, name: str, record: LeaseRecord) -> LeaseRecord | None:
        """Create the Lease (``record.version`` empty) or replace the version ``record`` came
        from; the Lease as written, or ``None`` when another replica wrote first (409)."""
        body = lease_body(namespace, name, record)

        def send() -> LeaseRecord | None:
            try:
                if record.version:
                    response = self._core.request(
                        "PUT", _path(namespace, name), body=body, timeout=self._timeout
                    )
                else:
                    response = self._core.request(
                        "POST", _path(namespace), body=body, timeout=self._timeout
                    )
            except ApiException as error:
                if error.status == 409:
                    return None
                raise
            return lease_record(json_body(response))

        return await call(
            send, what=f"writing Lease {namespace}/{name}", delays=(), executor=self._thread
        )


def _path(namespace: str, name: str | None = None) -> str:
    path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
    return f"{path}/{name}" if name is not None else path


def _micro_time(at: datetime | None) -> str | None:
    return None if at is None else at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(text: str | None) -> datetime | None:
    return None if not text else datetime.fromisoformat(text.replace("Z", "+00:00"))


def lease_body(namespace: str, name: str, record: LeaseRecord) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if record.version:
        metadata["resourceVersion"] = record.version
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": metadata,
        "spec": {
            "holderIdentity": record.holder,
            "leaseDurationSeconds": math.ceil(record.duration),
            "leaseTransitions": record.transitions,
            "acquireTime": _micro_time(record.acquired),
            "renewTime": _micro_time(record.renewed),
        },
    }


def lease_record(body: dict[str, Any]) -> LeaseRecord:
    spec = body.get("spec") or {}
    return LeaseRecord(
        holder=spec.get("holderIdentity") or "",
        duration=float(spec.get("leaseDurationSeconds") or 0),
        transitions=int(spec.get("leaseTransitions") or 0),
        acquired=_parse_time(spec.get("acquireTime")),
        renewed=_parse_time(spec.get("renewTime")),
        version=str(body["metadata"]["resourceVersion"]),
    )


class LeaderElector:
    """Competes for the Lease ``namespace/name`` as ``identity``; see the module docstring."""

    def __init__(
        self,
        leases: LeaseApi,
        *,
        namespace: str,
        name: str,
        identity: str,
        timing: LeaseTiming,
        on_lost: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._leases = leases
        self._namespace = namespace
        self._name = name
        self.identity = identity
        self._timing = timing
        self._on_lost = on_lost
        self._clock = clock
        self.leading = asyncio.Event()
        """Set once this replica holds the Lease; never cleared (losing it ends the process)."""
        self._renewed_at = 0.0
        self._mine: LeaseRecord | None = None
        self._released = threading.Event()

    def __repr__(self) -> str:
        return f"LeaderElector({self._namespace}/{self._name} as {self.identity})"

    async def run(self) -> None:
        observation: Observation | None = None
        while True:
            if self._mine is not None:
                await self._renew()
                await asyncio.sleep(self._timing.retry_period)
                continue
            try:
                record = await self._leases.read(self._namespace, self._name)
            except VhostOperatorError as error:
                logger.warning("leader election: %s", error)
                await asyncio.sleep(self._timing.retry_period)
                continue
            observation = observe(observation, record, self._clock())
            if decide(observation, self.identity, self._clock()) != Move.WAIT:
                await self._claim(record)
            if self._mine is None:
                delay = next_look(observation, self.identity, self._clock(), self._timing)
                await asyncio.sleep(delay)

    async def _claim(self, record: LeaseRecord | None) -> None:
        """Create or take over the Lease seen as ``record``."""
        started = self._clock()
        new = claimed(record, self.identity, datetime.now(UTC), self._timing)
        try:
            written = await self._leases.write(self._namespace, self._name, new)
        except VhostOperatorError as error:
            logger.warning("leader election: %s", error)
            return
        if written is None:
            return  # another replica was faster
        self._mine, self._renewed_at = written, started
        previous = record.holder if record is not None and record.holder else "nobody"
        logger.info(
            "leader election: %s now holds Lease %s/%s (after %s)",
            self.identity,
            self._namespace,
            self._name,
            previous,
        )
        threading.Thread(target=self._watch_deadline, name="lease-deadline", daemon=True).start()
        self.leading.set()

    async def _renew(self) -> None:
        assert self._mine is not None
        started = self._clock()
        new = claimed(self._mine, self.identity, datetime.now(UTC), self._timing)
        try:
            written = await asyncio.wait_for(
                self._leases.write(self._namespace, self._name, new),
                self._timing.renew_deadline,
            )
        except (VhostOperatorError, TimeoutError) as error:
            logger.warning("leader election: renewing failed: %s", error or "timed out")
            return  # tried again next period; the watchdog stops us at the deadline
        if written is None:
            self._on_lost(f"Lease {self._namespace}/{self._name} was taken over by another replica")
            return
        self._mine, self._renewed_at = written, started

    async def release(self) -> None:
        """Give the Lease up (client-go's ``ReleaseOnCancel``), so that another replica takes
        over at its next look instead of after the Lease's duration. Call it only once nothing
        of this process provisions any more; nothing without the Lease."""
        mine, self._mine = self._mine, None
        if mine is None:
            return
        self._released.set()
        released = dataclasses.replace(
            mine, holder="", duration=1.0, renewed=datetime.now(UTC), acquired=None
        )
        try:
            written = await self._leases.write(self._namespace, self._name, released)
        except VhostOperatorError as error:  # it expires by itself
            logger.warning("leader election: releasing failed: %s", error)
            return
        if written is None:  # a renewal cut short by the shutdown changed it: it expires
            logger.warning("leader election: the Lease changed meanwhile; not released")
            return
        logger.info("leader election: %s released the Lease", self.identity)

    def _watch_deadline(self) -> None:
        """In a thread of its own: end leadership at the renew deadline, whatever the event
        loop is doing."""
        while not must_stop(self._renewed_at, self._clock(), self._timing):
            if self._released.wait(WATCHDOG_PERIOD):
                return
        self._on_lost(
            f"Lease {self._namespace}/{self._name} not renewed for "
            f"{self._timing.renew_deadline:g} seconds"
        )
