"""The gate's in-memory view of every VirtualHost: served name -> ``HostEntry``.

A host's additional names (``spec.additionalNames``) are served by nginx like its hostname, so a
login through one of them is decided by the same host's domains.

State only, no I/O: it changes when ``apply`` is handed a watch event (``resources.watch``), and
each login reads it with one dict lookup. A ``SYNC`` event (every object, after each list)
replaces the whole state, so deletions missed while the watch was disconnected do not linger.

Should two VirtualHosts claim one hostname (the webhook refuses that, but it may be down), the
oldest claim wins (``resources.claims``: the rule the operator and the nginx agent follow too,
so the gate admits for the host nginx serves); when it goes, the next one takes over, as the
operator hands the hostname over to it. A VirtualHost whose spec cannot be read is left out
(its users are denied, the safe side) and logged; a theme value that fails validation is
dropped, so that field inherits.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import pydantic

from vhost_operator.resources.claims import Claim, senior
from vhost_operator.resources.models import VirtualHostSpec
from vhost_operator.resources.watch import WatchEvent
from vhost_operator.tenancy import themes
from vhost_operator.tenancy.gate import HostEntry

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class _Claim:
    """One VirtualHost object's entry, with what decides between rival claims on a hostname."""

    name: str
    created: str  # RFC 3339 in UTC: sorts as a string
    entry: HostEntry
    names: tuple[str, ...]
    """The hostname and the additional names: each leads to ``entry``."""

    @property
    def claim(self) -> Claim:
        return Claim(self.created, self.name)


def _claim_of(body: Mapping[str, Any]) -> _Claim | None:
    """The claim a raw VirtualHost makes, or ``None`` (logged) if its spec is unusable."""
    metadata = body.get("metadata") or {}
    name = str(metadata.get("name", "?"))
    try:
        spec = VirtualHostSpec.model_validate(dict(body.get("spec") or {}))
        theme, problems = themes.sanitise(spec.theme)
        entry = HostEntry(
            hostname=spec.hostname,
            additional_names=frozenset(spec.other_names),
            enabled=spec.enabled,
            domains=frozenset(spec.domains),
            theme=theme,
        )
    except (pydantic.ValidationError, ValueError) as error:
        logger.warning("VirtualHost %s left out of the gate: unreadable spec: %s", name, error)
        return None
    for problem in problems:
        logger.warning("VirtualHost %s: theme value ignored (inherits): %s", name, problem)
    created = str(metadata.get("creationTimestamp", ""))
    return _Claim(name=name, created=created, entry=entry, names=spec.names)


class HostDirectory:
    """served name -> entry of every VirtualHost, current as of the last event applied."""

    def __init__(self) -> None:
        self._claims: dict[str, _Claim] = {}  # object name -> its claim
        self._claimants: dict[str, dict[str, _Claim]] = {}  # served name -> object -> claim
        self._hosts: dict[str, HostEntry] = {}  # served name -> the winning claim's entry
        self._synced = False

    # -- reading (per request) -------------------------------------------------------------

    def lookup(self, hostname: str) -> HostEntry | None:
        """The entry for a *normalised* hostname, or ``None``."""
        return self._hosts.get(hostname)

    @property
    def synced(self) -> bool:
        """True once a full list has been applied: before that, "unknown host" means nothing."""
        return self._synced

    def __len__(self) -> int:
        """The hosts served (each once, however many names it has)."""
        return sum(1 for name, entry in self._hosts.items() if name == entry.hostname)

    # -- writing (per watch event) ---------------------------------------------------------

    def apply(self, event: WatchEvent) -> None:
        if event.type == "SYNC":
            self.replace(event.objects)
        elif event.object is not None and event.type == "DELETED":
            self.remove(event.object)
        elif event.object is not None:
            self.upsert(event.object)

    def replace(self, bodies: Iterable[Mapping[str, Any]]) -> None:
        self._claims.clear()
        self._claimants.clear()
        self._hosts.clear()
        for body in bodies:
            self.upsert(body)
        self._synced = True
        logger.info("gate directory loaded: %d virtual hosts", len(self))

    def upsert(self, body: Mapping[str, Any]) -> None:
        name = str((body.get("metadata") or {}).get("name", ""))
        self._drop(name)
        claim = _claim_of(body)
        if claim is not None:
            self._claims[name] = claim
            for served in claim.names:
                self._claimants.setdefault(served, {})[name] = claim
                self._elect(served)

    def remove(self, body: Mapping[str, Any]) -> None:
        self._drop(str((body.get("metadata") or {}).get("name", "")))

    def _drop(self, name: str) -> None:
        old = self._claims.pop(name, None)
        if old is None:
            return
        for served in old.names:
            rivals = self._claimants.get(served, {})
            rivals.pop(name, None)
            if not rivals:
                self._claimants.pop(served, None)
            self._elect(served)

    def _elect(self, hostname: str) -> None:
        rivals = self._claimants.get(hostname)
        if not rivals:
            self._hosts.pop(hostname, None)
            return
        senior_claim = senior(claim.claim for claim in rivals.values())
        winner = rivals[senior_claim.name]
        if len(rivals) > 1:
            logger.warning(
                "hostname %s is claimed by VirtualHosts %s; the oldest, %s, is used",
                hostname,
                ", ".join(sorted(rivals)),
                winner.name,
            )
        self._hosts[hostname] = winner.entry
