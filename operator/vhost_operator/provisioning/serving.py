"""Waiting until nginx serves what a step published, as the nginx agents report it.

Each nginx replica's agent annotates each site ConfigMap with the config hash and certificate
serial its nginx has loaded (or the error nginx gave), under keys of its own
(``labels.report_keys``). One watch of those ConfigMaps feeds :class:`SiteApplications`; with
several replicas, a watch of the nginx pods tells it which replicas are ready: a host is served
once every ready replica serves it (a replica that is not ready takes no traffic, and one that
is gone must not block). A step waits on it for its own ConfigMap. Nothing polls per host.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Collection, Mapping
from typing import Any

from vhost_operator.provisioning.chain import StepFailed
from vhost_operator.resources import labels
from vhost_operator.resources.naming import foreign_owner
from vhost_operator.resources.watch import WatchEvent

SINGLE = ("",)
"""The replicas to wait for without a replica watch: the one unnamed agent."""


@dataclasses.dataclass(frozen=True)
class ReplicaReport:
    """What one agent reported on a site ConfigMap."""

    applied_hash: str | None = None
    applied_serial: str | None = None
    error: str | None = None

    def serves(self, config_hash: str | None, serial: str | None) -> bool:
        """Whether nginx runs ``config_hash`` and certificate ``serial`` (``None``: any)."""
        return config_hash in (None, self.applied_hash) and serial in (None, self.applied_serial)


@dataclasses.dataclass(frozen=True)
class Applied:
    """A site ConfigMap's published config and what each agent reported for it."""

    config_hash: str | None
    reports: Mapping[str, ReplicaReport]
    """By replica name; "" is the unnamed agent of a single nginx."""
    claim: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """Whose the ConfigMap is: the metadata ``resources.naming.foreign_owner`` reads."""

    def belongs_to(self, virtualhost: str) -> bool:
        return foreign_owner(self.claim, virtualhost) is None

    @classmethod
    def of(cls, annotations: Mapping[str, str], claim: Mapping[str, Any] | None = None) -> Applied:
        fields: dict[str, list[str | None]] = {}
        for key, value in annotations.items():
            found = labels.reporting_replica(key)
            if found is not None:
                replica, index = found
                fields.setdefault(replica, [None, None, None])[index] = value
        return cls(
            config_hash=annotations.get(labels.CONFIG_HASH),
            reports={replica: ReplicaReport(*values) for replica, values in fields.items()},
            claim=claim or {},
        )

    def report(self, replica: str = "") -> ReplicaReport:
        return self.reports.get(replica) or ReplicaReport()

    def lagging(
        self, replicas: Collection[str], config_hash: str | None, serial: str | None
    ) -> list[str]:
        """The replicas among ``replicas`` whose nginx does not serve ``config_hash`` and
        certificate ``serial`` (``None``: whatever it is)."""
        return sorted(r for r in replicas if not self.report(r).serves(config_hash, serial))

    def serves(
        self, config_hash: str | None, serial: str | None, replicas: Collection[str] = SINGLE
    ) -> bool:
        """Whether every replica in ``replicas`` (at least one) serves it."""
        return bool(replicas) and not self.lagging(replicas, config_hash, serial)

    def rejection(self, replicas: Collection[str], config_hash: str) -> tuple[str, str] | None:
        """``(replica, nginx's message)`` if one of ``replicas`` refused ``config_hash``.

        The agent prefixes its error with the hash of the config it refused, so an error left
        over from an earlier config does not count for this one.
        """
        prefix = f"{config_hash}: "
        for replica in sorted(replicas):
            error = self.report(replica).error
            if error and error.startswith(prefix):
                return replica, error.removeprefix(prefix)
        return None


def pod_ready(pod: Mapping[str, Any]) -> bool:
    """Whether an nginx pod takes traffic: Ready, and not being deleted (a deleted pod stays
    Ready for its grace period, but its endpoints are gone and its agent stops)."""
    metadata = pod.get("metadata") or {}
    if metadata.get("deletionTimestamp"):
        return False
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def describe_replicas(replicas: Collection[str]) -> str:
    return "nginx" if list(replicas) == [""] else "nginx replica(s) " + ", ".join(replicas)


class SiteApplications:
    """The agent's reports, by ConfigMap name, and waiting for one to match.

    A waiter is woken only by events about its own ConfigMap (or a relist): with a thousand
    hosts provisioning at once, waking every waiter on every event would be a million wake-ups.
    """

    def __init__(self, *, replica_watch: bool = False) -> None:
        """``replica_watch``: several nginx replicas, whose pods ``handle_replicas`` is fed;
        otherwise a single unnamed agent."""
        self.synced = False
        """Whether a full list has arrived: from then on, a ConfigMap not here does not exist
        (give or take the watch's lag)."""
        self._sites: dict[str, Applied] = {}
        self._wakers: dict[str, asyncio.Event] = {}
        """ConfigMap name -> the event its waiters wait on; set (and dropped) on a change."""
        self._replica_watch = replica_watch
        self._pods: dict[str, bool] = {}
        """nginx pod name -> whether it is ready."""
        self._ready_replicas: tuple[str, ...] = () if replica_watch else SINGLE

    @property
    def replicas(self) -> tuple[str, ...]:
        """The replicas that must serve a config before it counts as applied."""
        return self._ready_replicas

    def handle_replicas(self, event: WatchEvent) -> None:
        """An event of the nginx pods' watch: wake every waiter when the ready set changes
        (rare: a rollout, a pod lost), since it changes what each of them waits for."""
        if event.type == "SYNC":
            self._pods = {_name(pod): pod_ready(pod) for pod in event.objects}
        elif event.object is not None:
            if event.type == "DELETED":
                self._pods.pop(_name(event.object), None)
            else:
                self._pods[_name(event.object)] = pod_ready(event.object)
        ready = tuple(sorted(name for name, is_ready in self._pods.items() if is_ready))
        if ready != self._ready_replicas:
            self._ready_replicas = ready
            self._wake_all()

    def _wake_all(self) -> None:
        wakers, self._wakers = self._wakers, {}
        for waker in wakers.values():
            waker.set()

    def handle(self, event: WatchEvent) -> None:
        if event.type == "SYNC":
            self._sites = {_name(o): _applied(o) for o in event.objects}
            self.synced = True
            self._wake_all()
            return
        if event.object is None:
            return
        name = _name(event.object)
        if event.type == "DELETED":
            self._sites.pop(name, None)
        else:
            self._sites[name] = _applied(event.object)
        if name in self._wakers:
            self._wakers.pop(name).set()

    def get(self, configmap: str) -> Applied | None:
        return self._sites.get(configmap)

    async def wait_applied(
        self, configmap: str, *, config_hash: str, serial: str | None, timeout: float
    ) -> None:
        """Return once nginx serves ``config_hash`` (and certificate ``serial``, if given).

        Raises :class:`StepFailed` when nginx rejected that config, or after ``timeout``.
        """
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            site = self._sites.get(configmap)
            replicas = self._ready_replicas
            if site is not None and site.serves(config_hash, serial, replicas):
                return
            rejected = site.rejection(replicas, config_hash) if site is not None else None
            if rejected is not None:
                who = "nginx" if not rejected[0] else f"nginx replica {rejected[0]}"
                raise StepFailed(f"{who} rejected the config: {rejected[1]}")
            if asyncio.get_running_loop().time() >= deadline:
                raise StepFailed(self._timed_out(site, config_hash, serial, timeout))
            waker = self._wakers.get(configmap)
            if waker is None:
                waker = self._wakers[configmap] = asyncio.Event()
            try:
                async with asyncio.timeout_at(deadline):
                    await waker.wait()
            except TimeoutError:
                continue

    def _timed_out(
        self, site: Applied | None, config_hash: str, serial: str | None, timeout: float
    ) -> str:
        replicas = self._ready_replicas
        if not replicas:
            return f"no nginx replica was ready within {timeout:g}s to apply the config"
        if replicas == SINGLE:
            return (
                f"nginx did not apply the config within {timeout:g}s; is the nginx agent "
                "running in the nginx namespace?"
            )
        lagging = site.lagging(replicas, config_hash, serial) if site else list(replicas)
        return (
            f"{describe_replicas(lagging)} did not apply the config within {timeout:g}s "
            f"({len(replicas) - len(lagging)} of {len(replicas)} ready replicas did)"
        )


def _name(obj: Mapping[str, Any]) -> str:
    name: str = obj["metadata"]["name"]
    return name


def _annotations(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict(obj.get("metadata", {}).get("annotations") or {})


def _read_by_operator(key: str) -> bool:
    return (
        key in (labels.CONFIG_HASH, labels.VIRTUALHOST) or labels.reporting_replica(key) is not None
    )


def slim_site(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a site ConfigMap :meth:`SiteApplications.handle` reads (``kube.watching``'s
    ``slim``): its name, the annotations of the config hash, the owner and the agents' reports,
    and who owns it. Not its ``data`` (the nginx config), nor its ``managedFields``: a relist
    of 10,000 sites then never holds 10,000 configs at once."""
    metadata = obj.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    return {
        "metadata": {
            "name": metadata.get("name"),
            "annotations": {k: v for k, v in annotations.items() if _read_by_operator(k)},
            "ownerReferences": [
                {"kind": ref.get("kind"), "name": ref.get("name")}
                for ref in metadata.get("ownerReferences") or []
            ],
        }
    }


def _applied(obj: Mapping[str, Any]) -> Applied:
    annotations = _annotations(obj)
    metadata = obj.get("metadata") or {}
    owner = annotations.get(labels.VIRTUALHOST)
    claim = {
        "annotations": {labels.VIRTUALHOST: owner} if owner is not None else {},
        "ownerReferences": [
            {"kind": ref.get("kind"), "name": ref.get("name")}
            for ref in metadata.get("ownerReferences") or []
        ],
    }
    return Applied.of(annotations, claim)
