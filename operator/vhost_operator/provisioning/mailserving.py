"""The ``MailServing`` condition: whether the mail services serve a host's current certificate,
as the mail TLS agents report it (``resources.mailtls``).

Fed by two watches the operator keeps anyway or cheaply: the few report ConfigMaps (one per
agent) and the VirtualHost catalog. A report event marks the hosts of the Secrets whose entry
changed; a host event marks that host (its serial, or a status write that carried an old
condition). One task then writes the condition of each marked host whose condition differs:
nothing polls per host, and a burst of renewals is one pass.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Protocol

from vhost_operator.resources.mailtls import MailServing, decode
from vhost_operator.resources.models import ConditionStatus
from vhost_operator.resources.watch import WatchEvent

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class MailCondition:
    status: ConditionStatus
    reason: str
    message: str


@dataclasses.dataclass(frozen=True, slots=True)
class MailSubject:
    """What the condition of one host depends on (the catalog keeps it per host)."""

    secret: str
    serial: str
    current: MailCondition | None
    """The ``MailServing`` condition its status holds now."""


def mail_condition(serial: str, reports: Mapping[str, MailServing | None]) -> MailCondition:
    """The condition of a host whose certificate has ``serial``, from each agent's report on
    its Secret (``None``: that agent has not reported on it yet), by agent."""
    labelled = len(reports) > 1
    serving, behind, refused = [], [], []
    for agent, report in sorted(reports.items()):
        if report is None:
            behind.append(f"{agent} has not reported it yet")
            continue
        for service, served in sorted(report.serving.items()):
            name = f"{service} ({agent})" if labelled else service
            if served == serial:
                serving.append(name)
            elif service in report.errors:
                refused.append(f"{name}: {report.errors[service]}")
            else:
                behind.append(f"{name} serves {served or 'nothing yet'}")
    if refused:
        return MailCondition(ConditionStatus.FALSE, "Refused", "; ".join(refused + behind))
    if behind or not serving:
        message = "; ".join(behind) or "no mail service reported"
        return MailCondition(ConditionStatus.FALSE, "Pending", f"not serving {serial}: {message}")
    return MailCondition(
        ConditionStatus.TRUE, "Serving", f"{', '.join(serving)} serve certificate {serial}"
    )


class MailHosts(Protocol):
    """The host catalog as the keeper reads it (``catalog.HostCatalog``)."""

    def mail_subject(self, name: str) -> MailSubject | None: ...

    def named_by_secret(self, secret: str) -> Iterable[str]: ...

    def names(self) -> Iterable[str]: ...


WriteCondition = Callable[[str, MailCondition], Awaitable[None]]


class MailServingKeeper:
    """Keeps ``MailServing`` of every host in line with the agents' reports."""

    def __init__(self, hosts: MailHosts) -> None:
        self._hosts = hosts
        self._reports: dict[str, dict[str, MailServing | None]] = {}
        """Report ConfigMap → TLS Secret → that agent's report."""
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()

    def handle_report(self, event: WatchEvent) -> None:
        before = self._reports
        if event.type == "SYNC":
            self._reports = {_name(o): _entries(o) for o in event.objects}
        elif event.object is not None:
            self._reports = dict(before)
            if event.type == "DELETED":
                self._reports.pop(_name(event.object), None)
            else:
                self._reports[_name(event.object)] = _entries(event.object)
        changed = set()
        for agent in set(before) | set(self._reports):
            old, new = before.get(agent, {}), self._reports.get(agent, {})
            changed |= {
                secret for secret in set(old) | set(new) if old.get(secret) != new.get(secret)
            }
        for secret in changed:
            self._mark(self._hosts.named_by_secret(secret))

    def handle_host(self, event: WatchEvent) -> None:
        if event.type == "SYNC":
            self._mark(self._hosts.names())
        elif event.object is not None and event.type != "DELETED":
            self._mark([_name(event.object)])

    def desired(self, name: str) -> MailCondition | None:
        """The host's condition; ``None`` where no agent reports (no mail TLS in use) or the
        host has no certificate."""
        subject = self._hosts.mail_subject(name)
        reporting = {agent: entries for agent, entries in self._reports.items() if entries}
        if subject is None or not reporting:
            return None
        reports = {agent: entries.get(subject.secret) for agent, entries in reporting.items()}
        return mail_condition(subject.serial, reports)

    async def run(self, write: WriteCondition) -> None:
        """Write the condition of every marked host whose condition differs, until cancelled."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            dirty, self._dirty = self._dirty, set()
            for name in sorted(dirty):
                wanted = self.desired(name)
                subject = self._hosts.mail_subject(name)
                if wanted is None or subject is None or subject.current == wanted:
                    continue
                try:
                    await write(name, wanted)
                except Exception:  # one host's API error must not hold up the others
                    logger.exception("could not write MailServing of VirtualHost %s", name)

    def _mark(self, names: Iterable[str]) -> None:
        self._dirty.update(names)
        if self._dirty:
            self._wake.set()


def _entries(configmap: Mapping[str, object]) -> dict[str, MailServing | None]:
    data = configmap.get("data") or {}
    assert isinstance(data, Mapping)
    return {str(secret): decode(str(value)) for secret, value in data.items()}


def _name(obj: Mapping[str, object]) -> str:
    metadata = obj.get("metadata")
    assert isinstance(metadata, Mapping)
    return str(metadata["name"])
