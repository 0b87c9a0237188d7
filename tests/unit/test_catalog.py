"""The operator's catalogs of VirtualHosts and MailDomains (``vhost_operator.catalog``)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from tests.unit.builders import virtualhost_body
from vhost_operator.acme.challenges import ChallengeStore
from vhost_operator.catalog import (
    ClaimCatalog,
    HostCatalog,
    share_challenges,
    slim_host,
    slim_maildomain,
)
from vhost_operator.resources.claims import Claim
from vhost_operator.resources.watch import WatchEvent

CERTIFICATE = {
    "secretName": "a-tls",
    "notBefore": "2026-01-01T00:00:00+00:00",
    "notAfter": "2026-04-01T00:00:00+00:00",
    "serial": "1f",
    "renewalTime": "2026-03-01T00:00:00+00:00",
}


def host(name: str, hostname: str, *domains: str, **status: Any) -> dict[str, Any]:
    metadata = {
        "name": name,
        "uid": f"uid-{name}",
        "generation": 1,
        "annotations": {"kopf.vhost-operator.io/last-handled-configuration": "{...}"},
        "managedFields": [{"manager": "kubectl"}],
    }
    status = {"chain": [{"step": "bootstrap"}], **status}
    return virtualhost_body(hostname, metadata=metadata, status=status, domains=list(domains))


def maildomain(name: str, domain: str, created: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "creationTimestamp": created, "uid": "x"},
        "spec": {"name": domain, "virtualHost": f"mail.{domain}"},
    }


def test_hosts_by_hostname_and_domain_follow_the_events() -> None:
    hosts = HostCatalog()
    assert not hosts.synced
    hosts.apply(WatchEvent("SYNC", objects=(host("a", "mail.a.test", "a.test", "b.test"),)))
    assert hosts.synced and len(hosts) == 1
    assert list(hosts.named_for("mail.a.test")) == ["a"]
    assert list(hosts.listing("b.test")) == ["a"]

    hosts.apply(WatchEvent("ADDED", object=host("dup", "mail.a.test")))
    assert sorted(hosts.named_for("mail.a.test")) == ["a", "dup"]

    hosts.apply(WatchEvent("MODIFIED", object=host("a", "mail.a.test", "a.test")))
    assert list(hosts.listing("b.test")) == []
    assert list(hosts.listing("a.test")) == ["a"]

    hosts.apply(WatchEvent("DELETED", object=host("dup", "mail.a.test")))
    assert list(hosts.named_for("mail.a.test")) == ["a"]

    # A relist replaces everything: what it does not show is gone.
    hosts.apply(WatchEvent("SYNC", objects=(host("c", "mail.c.test"),)))
    assert list(hosts.named_for("mail.a.test")) == [] and len(hosts) == 1


def test_views_and_renewal_candidates() -> None:
    hosts = HostCatalog()
    hosts.apply(
        WatchEvent(
            "SYNC",
            objects=(
                host("new", "mail.new.test"),
                host("served", "mail.served.test", phase="Ready", certificate=CERTIFICATE),
            ),
        )
    )
    views = {view.name: (view.phase, view.not_after_timestamp) for view in hosts.views()}
    assert views["new"] == ("Pending", None)
    assert views["served"][0] == "Ready" and views["served"][1] is not None
    candidates = list(hosts.candidates())
    assert [c.name for c in candidates] == ["served"]
    assert candidates[0].renewal_time.isoformat() == CERTIFICATE["renewalTime"]


def test_only_enabled_hosts_show_a_renewal_time() -> None:
    """The scanner never renews a disabled host: its renewal time must not look overdue."""
    disabled = host("off", "mail.off.test", phase="Ready", certificate=CERTIFICATE)
    disabled["spec"]["enabled"] = False
    hosts = HostCatalog()
    hosts.apply(
        WatchEvent(
            "SYNC",
            objects=(
                host("new", "mail.new.test"),
                host("on", "mail.on.test", phase="Ready", certificate=CERTIFICATE),
                disabled,
            ),
        )
    )
    renewal = {view.name: view.renewal_timestamp for view in hosts.views()}
    assert renewal == {"new": None, "on": 1772323200.0, "off": None}  # 2026-03-01T00:00:00Z


def test_slimmed_hosts_make_the_same_records() -> None:
    body = host("served", "mail.served.test", "served.test", phase="Ready", certificate=CERTIFICATE)
    body["metadata"]["annotations"]["vhost-operator.io/renew"] = "2026-03-02T00:00:00+00:00"
    slim = slim_host(body)
    assert "managedFields" not in slim["metadata"] and "chain" not in slim["status"]
    assert slim["metadata"]["annotations"] == {
        "vhost-operator.io/renew": "2026-03-02T00:00:00+00:00"
    }
    full, thin = HostCatalog(), HostCatalog()
    full.apply(WatchEvent("SYNC", objects=(body,)))
    thin.apply(WatchEvent("SYNC", objects=(slim,)))
    assert full.get("served") == thin.get("served")
    record = thin.get("served")
    assert record is not None and record.candidate is not None
    assert record.candidate.requested == "2026-03-02T00:00:00+00:00"


def test_claims_by_domain() -> None:
    claims = ClaimCatalog()
    claims.apply(
        WatchEvent(
            "SYNC",
            objects=(
                slim_maildomain(maildomain("first", "a.test", "2026-01-01T00:00:00Z")),
                maildomain("second", "a.test", "2026-01-02T00:00:00Z"),
            ),
        )
    )
    assert sorted(claims.claims("a.test")) == [
        Claim("2026-01-01T00:00:00Z", "first"),
        Claim("2026-01-02T00:00:00Z", "second"),
    ]
    claims.apply(
        WatchEvent("MODIFIED", object=maildomain("first", "b.test", "2026-01-01T00:00:00Z"))
    )
    assert claims.claims("a.test") == [Claim("2026-01-02T00:00:00Z", "second")]
    claims.apply(WatchEvent("DELETED", object=maildomain("second", "a.test", "")))
    assert claims.claims("a.test") == []
    assert claims.claims("b.test") == [Claim("2026-01-01T00:00:00Z", "first")]


def test_waiting_for_the_first_list() -> None:
    async def scenario() -> tuple[bool, bool]:
        hosts = HostCatalog()
        early = await hosts.wait(0.01)
        waiting = asyncio.create_task(hosts.wait(5))
        await asyncio.sleep(0)
        hosts.apply(WatchEvent("SYNC", objects=()))
        return early, await waiting

    assert asyncio.run(scenario()) == (False, True)


VALID = {"type": "CertificateValid", "status": "True", "reason": "Valid"}
VALID["lastTransitionTime"] = "2026-01-01T00:00:00+00:00"


def test_failed_hosts_and_valid_certificates_are_kept_for_the_scanner() -> None:
    hosts = HostCatalog()
    failed = host(
        "broken",
        "mail.b.test",
        phase="Failed",
        failedAttempts=2,
        lastFailureTime="2026-03-01T00:00:00+00:00",
        conditions=[{"type": "Ready", "status": "False", "reason": "StepFailed"}],
    )
    served = host(
        "served", "mail.s.test", phase="Ready", certificate=CERTIFICATE, conditions=[VALID]
    )
    hosts.apply(WatchEvent("SYNC", objects=(slim_host(failed), slim_host(served))))
    assert [(c.name, c.failed_attempts) for c in hosts.failed()] == [("broken", 2)]
    assert [c.certificate_valid for c in hosts.candidates()] == [True]
    assert slim_host(served)["status"]["conditions"] == [VALID], "only what the scanner reads"
    hosts.apply(WatchEvent("MODIFIED", object=host("broken", "mail.b.test", phase="Pending")))
    assert list(hosts.failed()) == []


def test_a_duty_earlier_than_the_planned_wake_wakes_the_scanner() -> None:
    async def scenario() -> list[bool]:
        hosts = HostCatalog()
        hosts.apply(WatchEvent("SYNC", objects=()))
        hosts.plan_wake(datetime(2026, 6, 1, tzinfo=UTC))
        woken = []
        later = dict(CERTIFICATE, notAfter="2026-07-01T00:00:00+00:00")
        for certificate in (later, CERTIFICATE):  # expires after, then before the planned wake
            waiting = asyncio.create_task(hosts.wait_for_duty(5))
            await asyncio.sleep(0)
            served = host("s", "mail.s.test", certificate=certificate, conditions=[VALID])
            hosts.apply(WatchEvent("MODIFIED", object=served))
            await asyncio.sleep(0.01)
            woken.append(waiting.done())
            waiting.cancel()
        return woken

    assert asyncio.run(scenario()) == [False, True]


def test_challenges_in_the_hosts_status_are_shared_with_the_store() -> None:
    """Every replica answers what the leader published in ``status.acmeChallenge``; the
    chain's next status write removes it, and so does the host's deletion."""
    store = ChallengeStore()
    published = {"acmeChallenge": {"token": "tok-a", "keyAuthorization": "tok-a.thumb"}}
    a = slim_host(host("a", "mail.a.test", **published))
    share_challenges(store, WatchEvent("SYNC", objects=(a, slim_host(host("b", "mail.b.test")))))
    assert store.get("tok-a") == "tok-a.thumb"

    later = {"acmeChallenge": {"token": "tok-b", "keyAuthorization": "tok-b.thumb"}}
    share_challenges(store, WatchEvent("MODIFIED", object=slim_host(host("b", "x", **later))))
    assert store.get("tok-b") == "tok-b.thumb"
    share_challenges(store, WatchEvent("MODIFIED", object=slim_host(host("a", "mail.a.test"))))
    assert store.get("tok-a") is None
    share_challenges(store, WatchEvent("DELETED", object=slim_host(host("b", "x", **later))))
    assert store.get("tok-b") is None
    assert len(store) == 0  # shared answers are not this process's own


def test_a_relist_replaces_the_shared_challenges() -> None:
    store = ChallengeStore()
    published = {"acmeChallenge": {"token": "tok-a", "keyAuthorization": "tok-a.thumb"}}
    share_challenges(store, WatchEvent("ADDED", object=slim_host(host("a", "x", **published))))
    share_challenges(store, WatchEvent("SYNC", objects=()))
    assert store.get("tok-a") is None


def test_hosts_whose_first_certificate_has_begun() -> None:
    """What ``provisioning.certificates`` asks to find keys an earlier release may have left:
    no certificate, and a certificate step begun (running, waiting for the CA, or failed);
    kept through slimming (the certificate step's entry only)."""

    def chain(state: str, started: bool = True) -> list[dict[str, Any]]:
        entry = {"step": "certificate", "state": state}
        if started:
            entry["startedAt"] = "2026-01-01T00:00:00Z"
        return [{"step": "bootstrap", "state": "Succeeded"}, entry]

    bodies = [
        host("running", "mail.running.test", chain=chain("Running")),
        host("waiting", "mail.waiting.test", chain=chain("Pending")),
        host("failed", "mail.failed.test", phase="Failed", chain=chain("Failed")),
        host("new", "mail.new.test"),
        host("not-yet", "mail.not-yet.test", chain=chain("Pending", started=False)),
        host("cancelled", "mail.cancelled.test", phase="Failed", chain=chain("Cancelled", False)),
        host("served", "mail.served.test", certificate=CERTIFICATE, chain=chain("Running")),
    ]
    hosts = HostCatalog()
    assert hosts.begun_first_certificates() is None, "not listed yet"
    hosts.apply(WatchEvent("SYNC", objects=tuple(slim_host(body) for body in bodies)))
    assert hosts.begun_first_certificates() == frozenset({"running", "waiting", "failed"})
    assert slim_host(bodies[0])["status"]["chain"] == [chain("Running")[1]]
    assert "chain" not in slim_host(bodies[-1])["status"]
