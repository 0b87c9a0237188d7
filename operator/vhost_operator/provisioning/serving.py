"""Waiting until nginx serves what a step published, as the nginx agent reports it.

The agent annotates each site ConfigMap with the config hash and certificate serial nginx has
loaded (or the error nginx gave). One watch of those ConfigMaps feeds :class:`SiteApplications`;
a step waits on it for its own ConfigMap. Nothing polls per host.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
from typing import Any

from vhost_operator.provisioning.chain import StepFailed
from vhost_operator.resources import labels
from vhost_operator.resources.watch import WatchEvent


@dataclasses.dataclass(frozen=True)
class Applied:
    """A site ConfigMap's published config and what the agent reported for it."""

    config_hash: str | None
    applied_hash: str | None
    applied_serial: str | None
    error: str | None

    @classmethod
    def of(cls, annotations: Mapping[str, str]) -> Applied:
        return cls(
            config_hash=annotations.get(labels.CONFIG_HASH),
            applied_hash=annotations.get(labels.APPLIED_CONFIG_HASH),
            applied_serial=annotations.get(labels.APPLIED_CERTIFICATE_SERIAL),
            error=annotations.get(labels.APPLY_ERROR),
        )

    def serves(self, config_hash: str, serial: str | None) -> bool:
        """Whether nginx runs ``config_hash`` (and, if given, certificate ``serial``)."""
        return self.applied_hash == config_hash and serial in (None, self.applied_serial)


class SiteApplications:
    """The agent's reports, by ConfigMap name, and waiting for one to match.

    A waiter is woken only by events about its own ConfigMap (or a relist): with a thousand
    hosts provisioning at once, waking every waiter on every event would be a million wake-ups.
    """

    def __init__(self) -> None:
        self.synced = False
        """Whether a full list has arrived: from then on, a ConfigMap not here does not exist
        (give or take the watch's lag)."""
        self._sites: dict[str, Applied] = {}
        self._wakers: dict[str, asyncio.Event] = {}
        """ConfigMap name -> the event its waiters wait on; set (and dropped) on a change."""

    def handle(self, event: WatchEvent) -> None:
        if event.type == "SYNC":
            self._sites = {_name(o): Applied.of(_annotations(o)) for o in event.objects}
            self.synced = True
            wakers, self._wakers = self._wakers, {}
            for waker in wakers.values():
                waker.set()
            return
        if event.object is None:
            return
        name = _name(event.object)
        if event.type == "DELETED":
            self._sites.pop(name, None)
        else:
            self._sites[name] = Applied.of(_annotations(event.object))
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
            if site is not None and site.serves(config_hash, serial):
                return
            # The agent prefixes its error with the hash of the config it refused, so an error
            # left over from an earlier config does not fail this one.
            prefix = f"{config_hash}: "
            if site is not None and site.error and site.error.startswith(prefix):
                raise StepFailed(f"nginx rejected the config: {site.error.removeprefix(prefix)}")
            if asyncio.get_running_loop().time() >= deadline:
                raise StepFailed(
                    f"nginx did not apply the config within {timeout:g}s; is the nginx agent "
                    "running in the nginx namespace?"
                )
            waker = self._wakers.get(configmap)
            if waker is None:
                waker = self._wakers[configmap] = asyncio.Event()
            try:
                async with asyncio.timeout_at(deadline):
                    await waker.wait()
            except TimeoutError:
                continue


def _name(obj: Mapping[str, Any]) -> str:
    name: str = obj["metadata"]["name"]
    return name


def _annotations(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict(obj.get("metadata", {}).get("annotations") or {})
