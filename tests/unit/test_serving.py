"""Waiting for the nginx agent's reports (``provisioning.serving.SiteApplications``)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from vhost_operator.provisioning.chain import StepFailed
from vhost_operator.provisioning.serving import SiteApplications
from vhost_operator.resources import labels
from vhost_operator.resources.watch import WatchEvent


def configmap(name: str, **annotations: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "annotations": annotations}}


def applied(name: str, config_hash: str, serial: str | None = None) -> WatchEvent:
    annotations = {labels.CONFIG_HASH: config_hash, labels.APPLIED_CONFIG_HASH: config_hash}
    if serial is not None:
        annotations[labels.APPLIED_CERTIFICATE_SERIAL] = serial
    return WatchEvent("MODIFIED", object=configmap(name, **annotations))


def test_waiters_wake_on_their_own_configmap() -> None:
    async def scenario() -> list[str]:
        sites = SiteApplications()
        sites.handle(WatchEvent("SYNC", objects=()))
        done: list[str] = []

        async def wait(name: str, serial: str | None = None) -> None:
            await sites.wait_applied(name, config_hash="h1", serial=serial, timeout=5)
            done.append(name)

        tasks = [
            asyncio.create_task(wait("a")),
            asyncio.create_task(wait("b", serial="5")),
            asyncio.create_task(wait("c")),
        ]
        await asyncio.sleep(0)
        sites.handle(applied("b", "h1"))  # the config, but not yet the certificate
        sites.handle(applied("a", "h0"))  # an older config
        await asyncio.sleep(0.01)
        assert done == []
        sites.handle(applied("b", "h1", serial="5"))
        sites.handle(applied("a", "h1"))
        await asyncio.sleep(0.01)
        sites.handle(WatchEvent("SYNC", objects=(applied("c", "h1").object or {},)))
        await asyncio.gather(*tasks)
        return done

    assert asyncio.run(scenario()) == ["b", "a", "c"]


def test_already_applied_returns_at_once() -> None:
    async def scenario() -> None:
        sites = SiteApplications()
        sites.handle(applied("a", "h1", serial="7"))
        await sites.wait_applied("a", config_hash="h1", serial="7", timeout=0.01)

    asyncio.run(scenario())


def test_a_rejection_of_this_config_fails_the_wait() -> None:
    async def scenario() -> None:
        sites = SiteApplications()
        waiting = asyncio.create_task(
            sites.wait_applied("a", config_hash="h2", serial=None, timeout=5)
        )
        await asyncio.sleep(0)
        # An error about an earlier config is not about this one.
        sites.handle(WatchEvent("MODIFIED", configmap("a", **{labels.APPLY_ERROR: "h1: old"})))
        await asyncio.sleep(0.01)
        assert not waiting.done()
        sites.handle(
            WatchEvent("MODIFIED", configmap("a", **{labels.APPLY_ERROR: "h2: bad directive"}))
        )
        await waiting

    with pytest.raises(StepFailed, match="nginx rejected the config: bad directive"):
        asyncio.run(scenario())


def test_no_report_times_out() -> None:
    async def scenario() -> None:
        sites = SiteApplications()
        await sites.wait_applied("a", config_hash="h1", serial=None, timeout=0.05)

    with pytest.raises(StepFailed, match=r"did not apply the config within 0\.05s"):
        asyncio.run(scenario())


def test_after_the_first_list_a_configmap_not_seen_does_not_exist() -> None:
    sites = SiteApplications()
    assert not sites.synced, "before the list, absence means nothing"
    sites.handle(WatchEvent("SYNC", objects=(configmap("vhost-a"),)))
    assert sites.synced
    assert sites.get("vhost-a") is not None and sites.get("vhost-b") is None
