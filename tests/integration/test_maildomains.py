"""MailDomain linking on the real control plane, through ``kubectl`` as a user types it.

The operator runs as a real process with ACME and nginx off (hosts are Ready at once), once with
its admission webhook and once without: the webhook hides some races (it refuses a second host
for a hostname or a domain), so the bare operator must get them right on its own.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import kube
from tests.harness.clusters import Cluster
from tests.harness.operator import OperatorProcess
from tests.harness.processes import free_port
from tests.harness.waiting import get_object, phase_of, wait_for

pytestmark = pytest.mark.cluster

ZONE = "mdtest.example"
"""Every hostname here ends with it: cleanup finds the hosts the operator created by it."""
LABEL = "vhost-operator.io/test"
LABEL_VALUE = "maildomains"
WEBHOOK_CONFIGURATION = "vhost-operator.io"

Object = dict[str, Any]


@pytest.fixture(scope="module", params=["webhook", "no-webhook"])
def operator(
    request: pytest.FixtureRequest, cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    settings = {"VHOST_OPERATOR_ACME_ENABLED": "false", "VHOST_OPERATOR_NGINX_ENABLED": "false"}
    webhook = request.param == "webhook"
    if webhook:
        settings |= {
            "VHOST_OPERATOR_WEBHOOK_ENABLED": "true",
            "VHOST_OPERATOR_WEBHOOK_HOST": "127.0.0.1",
            "VHOST_OPERATOR_WEBHOOK_PORT": str(free_port()),
        }
    else:
        # One left by an earlier module would point at a stopped operator (harmless with
        # failurePolicy Ignore, but this run is meant to be without it).
        delete_webhook_configuration(cluster)
    process = OperatorProcess(
        cluster.kubeconfig, tmp_path_factory.mktemp(f"operator-{request.param}"), settings
    ).start()
    if webhook:
        wait_until(lambda: webhook_registered(cluster), what="the webhook configuration")
    yield process
    try:
        clean_up(cluster)
    finally:
        process.stop()
        if webhook:
            delete_webhook_configuration(cluster)


def webhook_registered(cluster: Cluster) -> bool:
    found = cluster.kubectl(
        "get", "validatingwebhookconfiguration", WEBHOOK_CONFIGURATION, "--ignore-not-found"
    )
    return bool(found.stdout.strip())


def delete_webhook_configuration(cluster: Cluster) -> None:
    """Both halves: the mutating one covers MailDomains too (kopf's finalizer)."""
    cluster.kubectl(
        "delete",
        "validatingwebhookconfiguration,mutatingwebhookconfiguration",
        WEBHOOK_CONFIGURATION,
        "--ignore-not-found",
    )


def clean_up(cluster: Cluster) -> None:
    """While the operator still runs (it holds finalizers on both kinds): our MailDomains, then
    every host in our zone."""
    cluster.kubectl("delete", "md", "-l", f"{LABEL}={LABEL_VALUE}", "--timeout=60s")
    names = [host["metadata"]["name"] for host in hosts_in_zone(cluster)]
    if names:
        cluster.kubectl("delete", "vh", *names, "--ignore-not-found", "--timeout=60s")


@pytest.fixture
def webhook_on(operator: OperatorProcess) -> bool:
    return operator.settings.get("VHOST_OPERATOR_WEBHOOK_ENABLED") == "true"


# -- helpers -----------------------------------------------------------------------------------


def maildomain(name: str, domain: str, virtual_host: str | None = None) -> Object:
    spec: Object = {"name": domain}
    if virtual_host is not None:
        spec["virtualHost"] = virtual_host
    return {
        "apiVersion": "vhost-operator.io/v1alpha1",
        "kind": "MailDomain",
        "metadata": {"name": name, "labels": {LABEL: LABEL_VALUE}},
        "spec": spec,
    }


def apply(cluster: Cluster, tmp_path: Path, *manifests: Object) -> None:
    """One ``kubectl apply`` of all manifests: they reach the operator at the same moment."""
    kube.apply_manifests(cluster, list(manifests), tmp_path)


def hosts_in_zone(cluster: Cluster) -> list[Object]:
    listed = json.loads(cluster.kubectl("get", "vh", "-o", "json").stdout)
    return [h for h in listed["items"] if h["spec"]["hostname"].endswith(f".{ZONE}")]


def hosts_named_for(cluster: Cluster, hostname: str) -> list[Object]:
    return [h for h in hosts_in_zone(cluster) if h["spec"]["hostname"] == hostname]


def wait_until(check: Callable[[], bool], *, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"no {what} within {timeout}s")


def host_with(
    cluster: Cluster, hostname: str, domains: list[str], *, timeout: float = 30
) -> Object:
    """Wait until exactly one host has ``hostname``, listing exactly ``domains``, and is Ready."""
    found: list[Object] = []

    def settled() -> bool:
        nonlocal found
        found = hosts_named_for(cluster, hostname)
        return (
            len(found) == 1
            and sorted(found[0]["spec"].get("domains") or []) == sorted(domains)
            and phase_of(found[0]) == "Ready"
        )

    try:
        wait_until(settled, what=f"one Ready host {hostname} with {domains}", timeout=timeout)
    except AssertionError as error:
        raise AssertionError(f"{error}; hosts: {[h['spec'] for h in found]}") from None
    return found[0]


def linked_to(name: str | None) -> Callable[[Object], bool]:
    def check(md: Object) -> bool:
        status = md.get("status") or {}
        linked = status.get("linkedVirtualHost")
        done = status.get("observedGeneration") == md["metadata"]["generation"]
        return done and linked == name

    return check


def linked_condition(md: Object) -> Object:
    conditions = {c["type"]: c for c in (md.get("status") or {}).get("conditions", [])}
    condition: Object = conditions["Linked"]
    return condition


def event_reasons(cluster: Cluster, name: str) -> list[str]:
    return [event["reason"] for event in kube.events_about(cluster, "MailDomain", name)]


def wait_for_events(cluster: Cluster, name: str, *reasons: str) -> None:
    wait_until(
        lambda: set(reasons) <= set(event_reasons(cluster, name)),
        what=f"events {reasons} on MailDomain {name}",
        timeout=15,
    )


def delete_md(cluster: Cluster, *names: str) -> None:
    cluster.kubectl("delete", "md", *names, "--ignore-not-found", "--timeout=30s")


# -- linking -----------------------------------------------------------------------------------


def test_a_maildomain_creates_its_host_and_another_joins_it(
    cluster: Cluster, operator: OperatorProcess, tmp_path: Path
) -> None:
    hostname = f"mail.one.{ZONE}"
    apply(cluster, tmp_path, maildomain("one-alpha", "alpha.one.test", hostname))
    host = host_with(cluster, hostname, ["alpha.one.test"])
    name = host["metadata"]["name"]
    assert name == f"mail-one-{ZONE.replace('.', '-')}"
    assert host["metadata"]["annotations"]["vhost-operator.io/created-for"] == (
        "MailDomain/one-alpha"
    )
    alpha = wait_for(cluster, "md", "one-alpha", linked_to(name), what="the link")
    assert linked_condition(alpha)["status"] == "True"
    wait_for_events(cluster, "one-alpha", "HostCreated", "Linked")

    apply(cluster, tmp_path, maildomain("one-beta", "beta.one.test", hostname))
    host_with(cluster, hostname, ["alpha.one.test", "beta.one.test"])
    wait_for(cluster, "md", "one-beta", linked_to(name), what="the link")
    row = next(
        line for line in cluster.kubectl("get", "md").stdout.splitlines() if "one-beta" in line
    )
    assert row.split()[:4] == ["one-beta", "beta.one.test", hostname, name]
    delete_md(cluster, "one-alpha", "one-beta")
    host_with(cluster, hostname, [])


def test_changing_the_hostname_moves_the_domain_and_clearing_it_unlinks(
    cluster: Cluster, operator: OperatorProcess, tmp_path: Path
) -> None:
    first, second = f"mail.two.{ZONE}", f"mail.three.{ZONE}"
    apply(
        cluster,
        tmp_path,
        maildomain("move-a", "a.move.test", first),
        maildomain("move-stay", "stay.move.test", first),
    )
    host_with(cluster, first, ["a.move.test", "stay.move.test"])

    cluster.kubectl(
        "patch", "md", "move-a", "--type=merge", "-p", json.dumps({"spec": {"virtualHost": second}})
    )
    target = host_with(cluster, second, ["a.move.test"])
    host_with(cluster, first, ["stay.move.test"])
    wait_for(cluster, "md", "move-a", linked_to(target["metadata"]["name"]), what="the move")
    wait_for_events(cluster, "move-a", "Unlinked")

    cluster.kubectl(
        "patch", "md", "move-a", "--type=merge", "-p", json.dumps({"spec": {"virtualHost": ""}})
    )
    host_with(cluster, second, [])
    cleared = wait_for(cluster, "md", "move-a", linked_to(None), what="the unlink")
    assert "linkedVirtualHost" not in cleared["status"]
    assert linked_condition(cleared)["status"] == "False"
    assert linked_condition(cleared)["reason"] == "NoVirtualHost"
    host_with(cluster, first, ["stay.move.test"])
    delete_md(cluster, "move-a", "move-stay")


def test_deleting_a_maildomain_unlinks_it_and_keeps_the_host(
    cluster: Cluster, operator: OperatorProcess, tmp_path: Path
) -> None:
    hostname = f"mail.four.{ZONE}"
    apply(
        cluster,
        tmp_path,
        maildomain("gone-a", "a.gone.test", hostname),
        maildomain("gone-b", "b.gone.test", hostname),
    )
    host_with(cluster, hostname, ["a.gone.test", "b.gone.test"])
    delete_md(cluster, "gone-a")
    assert get_object(cluster, "md", "gone-a") is None
    host_with(cluster, hostname, ["b.gone.test"])
    delete_md(cluster, "gone-b")
    host_with(cluster, hostname, [])


def test_a_domain_listed_by_hand_on_another_host_is_moved(
    cluster: Cluster, operator: OperatorProcess, tmp_path: Path
) -> None:
    by_hand = f"hand.{ZONE}"
    apply(
        cluster,
        tmp_path,
        kube.virtualhost("md-by-hand", by_hand, domains=["hand.test", "kept.hand.test"]),
    )
    host_with(cluster, by_hand, ["hand.test", "kept.hand.test"])
    hostname = f"mail.five.{ZONE}"
    apply(cluster, tmp_path, maildomain("hand", "hand.test", hostname))
    host_with(cluster, hostname, ["hand.test"])
    host_with(cluster, by_hand, ["kept.hand.test"])
    delete_md(cluster, "hand")


def test_deleting_the_host_keeps_its_maildomains_without_the_link(
    cluster: Cluster, operator: OperatorProcess, tmp_path: Path
) -> None:
    hostname = f"mail.six.{ZONE}"
    apply(
        cluster,
        tmp_path,
        maildomain("orphan-a", "a.orphan.test", hostname),
        maildomain("orphan-b", "b.orphan.test", hostname),
    )
    host = host_with(cluster, hostname, ["a.orphan.test", "b.orphan.test"])
    name = host["metadata"]["name"]
    for md in ("orphan-a", "orphan-b"):
        wait_for(cluster, "md", md, linked_to(name), what="the link")

    cluster.kubectl("delete", "vh", name, "--timeout=30s")
    for md in ("orphan-a", "orphan-b"):
        kept = wait_for(
            cluster,
            "md",
            md,
            lambda o: linked_to(None)(o) and "virtualHost" not in o["spec"],
            what="the association removed",
        )
        condition = linked_condition(kept)
        assert condition["status"] == "False"
        assert condition["reason"] == "VirtualHostDeleted"
        assert name in condition["message"]
    wait_for_events(cluster, "orphan-a", "Unlinked")
    # The operator must not create the host again from the MailDomains that named it.
    time.sleep(3)
    assert hosts_named_for(cluster, hostname) == []
    assert get_object(cluster, "md", "orphan-a") is not None
    delete_md(cluster, "orphan-a", "orphan-b")


@pytest.mark.parametrize("round_", range(5))
def test_maildomains_applied_together_for_a_new_hostname_share_one_host(
    cluster: Cluster, operator: OperatorProcess, tmp_path: Path, round_: int
) -> None:
    hostname = f"mail.race{round_}.{ZONE}"
    names = [f"race{round_}-{letter}" for letter in "abc"]
    domains = [f"{letter}.race{round_}.test" for letter in "abc"]
    apply(
        cluster,
        tmp_path,
        *(maildomain(n, d, hostname) for n, d in zip(names, domains, strict=True)),
    )
    host = host_with(cluster, hostname, domains)
    for name in names:
        wait_for(cluster, "md", name, linked_to(host["metadata"]["name"]), what="the link")
    # Settled for good: no late second host, no domain dropped by a lost write.
    time.sleep(1)
    host_with(cluster, hostname, domains, timeout=1)
    delete_md(cluster, *names)


# -- one domain, one host ----------------------------------------------------------------------


def test_a_second_maildomain_for_one_domain_never_takes_it(
    cluster: Cluster, operator: OperatorProcess, webhook_on: bool, tmp_path: Path
) -> None:
    apply(cluster, tmp_path, maildomain("dup-first", "dup.test", f"mail.seven.{ZONE}"))
    host_with(cluster, f"mail.seven.{ZONE}", ["dup.test"])
    second = maildomain("dup-second", "dup.test", f"mail.eight.{ZONE}")
    if webhook_on:
        path = tmp_path / "second.yaml"
        path.write_text(json.dumps(second))
        refused = cluster.kubectl("apply", "-f", str(path), check=False)
        assert refused.returncode != 0
        assert "domain dup.test is already described by MailDomain dup-first" in refused.stderr
    else:
        apply(cluster, tmp_path, second)
        claimed = wait_for(
            cluster,
            "md",
            "dup-second",
            lambda o: bool((o.get("status") or {}).get("conditions")),
            what="a condition",
        )
        assert linked_condition(claimed)["reason"] == "DomainClaimed"
        assert "linkedVirtualHost" not in claimed["status"]
        host_with(cluster, f"mail.seven.{ZONE}", ["dup.test"], timeout=2)
        assert hosts_named_for(cluster, f"mail.eight.{ZONE}") == []
    delete_md(cluster, "dup-second", "dup-first")
    host_with(cluster, f"mail.seven.{ZONE}", [])


@pytest.mark.parametrize("operator", ["webhook"], indirect=True)  # a rule of the webhook
def test_the_webhook_refuses_a_domain_another_host_lists(
    cluster: Cluster, operator: OperatorProcess, tmp_path: Path
) -> None:
    apply(cluster, tmp_path, maildomain("listed", "listed.test", f"mail.nine.{ZONE}"))
    host_with(cluster, f"mail.nine.{ZONE}", ["listed.test"])
    path = tmp_path / "other.yaml"
    path.write_text(
        json.dumps(kube.virtualhost("md-other", f"other.{ZONE}", domains=["listed.test"]))
    )
    refused = cluster.kubectl("apply", "-f", str(path), check=False)
    assert refused.returncode != 0
    assert "(Conflict)" in refused.stderr
    assert "domain listed.test is already linked to VirtualHost mail-nine-" in refused.stderr
    assert get_object(cluster, "vh", "md-other") is None
    delete_md(cluster, "listed")
