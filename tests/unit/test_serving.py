"""Waiting for the nginx agent's reports (``provisioning.serving.SiteApplications``)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from vhost_operator.provisioning.chain import StepFailed
from vhost_operator.provisioning.serving import Applied, SiteApplications, pod_ready, slim_site
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


# -- several nginx replicas --------------------------------------------------------------------


def replica_report(replica: str, config_hash: str, serial: str | None = None) -> dict[str, str]:
    keys = labels.report_keys(replica)
    report = {keys.config_hash: config_hash}
    if serial is not None:
        report[keys.serial] = serial
    return report


def pod(name: str, *, ready: bool = True, deleting: bool = False) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if deleting:
        metadata["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    status = "True" if ready else "False"
    return {"metadata": metadata, "status": {"conditions": [{"type": "Ready", "status": status}]}}


def test_report_keys_name_their_replica() -> None:
    assert labels.report_keys() == (
        labels.APPLIED_CONFIG_HASH,
        labels.APPLIED_CERTIFICATE_SERIAL,
        labels.APPLY_ERROR,
    )
    keys = labels.report_keys("nginx-7d9-abcde")
    assert keys.config_hash == "nginx-7d9-abcde.replicas.vhost-operator.io/applied-config-hash"
    for index, key in enumerate(keys):
        assert labels.reporting_replica(key) == ("nginx-7d9-abcde", index)
    assert labels.reporting_replica(labels.APPLY_ERROR) == ("", 2)
    assert labels.reporting_replica(labels.CONFIG_HASH) is None
    assert labels.reporting_replica("replicas.vhost-operator.io/apply-error") is None
    assert labels.reporting_replica("x.example.com/applied-config-hash") is None


def test_a_host_is_served_when_every_given_replica_serves_it() -> None:
    site = Applied.of(
        {
            labels.CONFIG_HASH: "h2",
            **replica_report("a", "h2", "5"),
            **replica_report("b", "h2", "4"),
            **replica_report("c", "h1", "5"),
        }
    )
    assert site.lagging(["a", "b", "c"], "h2", "5") == ["b", "c"]
    assert site.lagging(["a", "b", "c"], "h2", None) == ["c"]
    assert site.lagging(["a", "b"], None, "5") == ["b"]
    assert site.lagging(["a", "gone"], "h2", "5") == ["gone"], "no report: lagging"
    assert site.serves("h2", "5", ["a"])
    assert not site.serves("h2", "5", []), "nobody serves it"
    assert not site.serves("h2", "5"), "the unnamed agent never reported"


def test_only_ready_pods_that_are_not_being_deleted_count() -> None:
    assert pod_ready(pod("a"))
    assert not pod_ready(pod("a", ready=False))
    assert not pod_ready(pod("a", deleting=True))
    assert not pod_ready({"metadata": {"name": "a"}})


def test_waiting_follows_the_ready_replicas() -> None:
    async def scenario() -> None:
        sites = SiteApplications(replica_watch=True)
        sites.handle(WatchEvent("SYNC", objects=()))
        sites.handle_replicas(
            WatchEvent("SYNC", objects=(pod("a"), pod("b"), pod("c", ready=False)))
        )
        assert sites.replicas == ("a", "b")
        waiting = asyncio.create_task(
            sites.wait_applied("s", config_hash="h1", serial="5", timeout=5)
        )
        await asyncio.sleep(0)
        sites.handle(WatchEvent("MODIFIED", configmap("s", **replica_report("a", "h1", "5"))))
        await asyncio.sleep(0.01)
        assert not waiting.done(), "b has not applied it"
        # b is being deleted: what it reports no longer matters.
        sites.handle_replicas(WatchEvent("MODIFIED", pod("b", deleting=True)))
        await asyncio.wait_for(waiting, 1)
        # A new replica that becomes ready must serve it too before the next wait returns.
        sites.handle_replicas(WatchEvent("ADDED", pod("d")))
        with pytest.raises(StepFailed) as failed:
            await sites.wait_applied("s", config_hash="h1", serial="5", timeout=0.05)
        assert "nginx replica(s) d did not apply the config" in str(failed.value)
        assert "1 of 2 ready replicas did" in str(failed.value)

    asyncio.run(scenario())


def test_a_replica_rejecting_the_config_is_named() -> None:
    async def scenario() -> None:
        sites = SiteApplications(replica_watch=True)
        sites.handle_replicas(WatchEvent("SYNC", objects=(pod("a"), pod("b"))))
        error = labels.report_keys("b").error
        sites.handle(WatchEvent("MODIFIED", configmap("s", **{error: "h1: bad directive"})))
        await sites.wait_applied("s", config_hash="h1", serial=None, timeout=1)

    with pytest.raises(StepFailed, match="nginx replica b rejected the config: bad directive"):
        asyncio.run(scenario())


def test_without_a_ready_replica_nothing_counts_as_applied() -> None:
    async def scenario() -> None:
        sites = SiteApplications(replica_watch=True)
        sites.handle(WatchEvent("MODIFIED", configmap("s", **replica_report("a", "h1"))))
        sites.handle_replicas(WatchEvent("SYNC", objects=(pod("a", ready=False),)))
        await sites.wait_applied("s", config_hash="h1", serial=None, timeout=0.05)

    with pytest.raises(StepFailed, match="no nginx replica was ready"):
        asyncio.run(scenario())


def site_configmap() -> dict[str, Any]:
    """A site ConfigMap as the watch brings it: config data, managed fields, the operator's
    annotations and two replicas' reports."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "vhost-mail-example-com",
            "namespace": "nginx",
            "uid": "u1",
            "resourceVersion": "9",
            "labels": {labels.COMPONENT: labels.SITE_COMPONENT},
            "annotations": {
                labels.CONFIG_HASH: "h1",
                labels.VIRTUALHOST: "mail-example-com",
                labels.HOSTNAME: "mail.example.com",
                labels.STAGE: "final",
                **replica_report("a", "h1", "5"),
                **replica_report("b", "h0"),
                labels.APPLY_ERROR: "h1: bad",
            },
            "ownerReferences": [
                {"kind": "VirtualHost", "name": "mail-example-com", "uid": "v1", "apiVersion": "x"}
            ],
            "managedFields": [{"manager": "vhost-operator", "fieldsV1": {"f:data": {}}}],
        },
        "data": {"site.conf": "server { listen 443 ssl; }\n" * 50},
    }


def test_the_slim_site_keeps_only_what_the_waiters_read() -> None:
    full = site_configmap()
    slim = slim_site(full)
    assert slim == {
        "metadata": {
            "name": "vhost-mail-example-com",
            "annotations": {
                labels.CONFIG_HASH: "h1",
                labels.VIRTUALHOST: "mail-example-com",
                **replica_report("a", "h1", "5"),
                **replica_report("b", "h0"),
                labels.APPLY_ERROR: "h1: bad",
            },
            "ownerReferences": [{"kind": "VirtualHost", "name": "mail-example-com"}],
        }
    }
    whole, slimmed = SiteApplications(), SiteApplications()
    whole.handle(WatchEvent("SYNC", objects=(full,)))
    slimmed.handle(WatchEvent("SYNC", objects=(slim,)))
    assert slimmed.get("vhost-mail-example-com") == whole.get("vhost-mail-example-com")
