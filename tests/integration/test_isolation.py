"""No host can hurt another, with the real operator and API server (and pebble).

The operator runs without waiting for an nginx agent, mostly without ACME (bootstrap → final →
ready): what matters here is which objects it writes and deletes, and for which host.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.harness import kube
from tests.harness.clusters import Cluster
from tests.harness.waiting import get_object, phase_of, wait_for
from tests.integration.conftest import OperatorFactory
from vhost_operator.resources import labels
from vhost_operator.resources.models import RETRY_ANNOTATION
from vhost_operator.resources.naming import (
    legacy_derived_name,
    next_key_secret_name,
    site_configmap_name,
    tls_secret_name,
)

pytestmark = pytest.mark.cluster


def settled(obj: dict[str, Any]) -> bool:
    return phase_of(obj) in ("Ready", "Failed")


def configmap(cluster: Cluster, name: str) -> dict[str, Any] | None:
    found = cluster.kubectl(
        "get", "configmap", name, "-n", kube.NAMESPACE, "-o", "json", "--ignore-not-found"
    ).stdout
    return json.loads(found) if found.strip() else None


def foreign_configmap(name: str, owner: str, hostname: str) -> dict[str, Any]:
    """A ConfigMap as the operator writes it for VirtualHost ``owner``."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": kube.NAMESPACE,
            "labels": labels.component_labels(labels.SITE_COMPONENT),
            "annotations": {labels.VIRTUALHOST: owner, labels.HOSTNAME: hostname},
        },
        "data": {f"{hostname}.conf": f"# {owner}'s config\n"},
    }


def test_a_short_name_spelt_like_a_shortened_one_cannot_touch_the_other_host(
    cluster: Cluster, start_operator: OperatorFactory, tmp_path: Path
) -> None:
    """The attack of issue 13: names used to keep short names as they are and shorten long
    ones to prefix + hash, so a short name could equal another host's shortened name."""
    start_operator(acme_enabled="false")
    victim = "victim-" + "x" * 60  # too long for "vhost-<name>" in 63 characters
    squatter = legacy_derived_name(victim).removeprefix("vhost-")
    assert len(squatter) <= 57 and legacy_derived_name(squatter) == legacy_derived_name(victim)

    kube.apply_manifests(cluster, [kube.virtualhost(victim, "victim.example.com")], tmp_path)
    wait_for(cluster, "vh", victim, lambda o: phase_of(o) == "Ready", what="Ready", timeout=60)
    kube.apply_manifests(cluster, [kube.virtualhost(squatter, "squatter.example.com")], tmp_path)
    wait_for(cluster, "vh", squatter, settled, what="a settled phase", timeout=60)

    site = configmap(cluster, site_configmap_name(victim))
    assert site is not None
    assert site["metadata"]["annotations"][labels.HOSTNAME] == "victim.example.com"
    assert list(site["data"]) == ["victim.example.com.conf"]

    cluster.kubectl("delete", "vh", squatter, "--timeout=30s")
    site = configmap(cluster, site_configmap_name(victim))
    assert site is not None, "deleting the squatter removed the victim's ConfigMap"
    assert site["metadata"]["annotations"][labels.HOSTNAME] == "victim.example.com"
    victim_host = get_object(cluster, "vh", victim)
    assert victim_host is not None and phase_of(victim_host) == "Ready"


def test_an_object_of_another_host_is_neither_overwritten_nor_deleted(
    cluster: Cluster, start_operator: OperatorFactory, tmp_path: Path
) -> None:
    """Were two names ever to meet (a hash collision, a hand-made object), the operator
    refuses to overwrite or delete what belongs to another host."""
    start_operator(acme_enabled="false")
    name = site_configmap_name("intruded")
    other = foreign_configmap(name, "someone-else", "someone.example.com")
    kube.apply_manifests(cluster, [other], tmp_path)

    kube.apply_manifests(cluster, [kube.virtualhost("intruded", "intruded.example.com")], tmp_path)
    failed = wait_for(cluster, "vh", "intruded", settled, what="a settled phase", timeout=60)
    print(f"\nstatus.error: {failed['status'].get('error')}")
    assert phase_of(failed) == "Failed"
    assert "belongs to VirtualHost someone-else" in failed["status"]["error"]["message"]
    kept = configmap(cluster, name)
    assert kept is not None and kept["data"] == other["data"], "overwritten"

    cluster.kubectl("delete", "vh", "intruded", "--timeout=30s")
    kept = configmap(cluster, name)
    assert kept is not None and kept["data"] == other["data"], "deleted with the wrong host"
    cluster.kubectl("delete", "configmap", name, "-n", kube.NAMESPACE)


def test_objects_under_the_names_of_earlier_releases_move_to_the_new_names(
    cluster: Cluster, start_operator: OperatorFactory, tmp_path: Path
) -> None:
    """A host provisioned by an earlier release runs from ``vhost-<name>`` objects: the next
    publish replaces its ConfigMap by the new name, deletion removes what is left, and a
    legacy-named object of another host is left alone."""
    start_operator(acme_enabled="false")
    legacy_site = legacy_derived_name("moved")
    legacy_tls = legacy_derived_name("moved", "-tls")
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": legacy_tls,
            "namespace": kube.NAMESPACE,
            "annotations": {labels.VIRTUALHOST: "moved"},
        },
        "stringData": {"tls.crt": "old certificate", "tls.key": "old key"},
    }
    kube.apply_manifests(
        cluster, [foreign_configmap(legacy_site, "moved", "moved.example.com"), secret], tmp_path
    )
    kube.apply_manifests(cluster, [kube.virtualhost("moved", "moved.example.com")], tmp_path)
    wait_for(cluster, "vh", "moved", lambda o: phase_of(o) == "Ready", what="Ready", timeout=60)
    assert configmap(cluster, legacy_site) is None, "the old ConfigMap would serve twice"
    assert configmap(cluster, site_configmap_name("moved")) is not None

    cluster.kubectl("delete", "vh", "moved", "--timeout=30s")
    assert kube.secret_data(cluster, legacy_tls) is None, "the old TLS Secret is left behind"
    assert configmap(cluster, site_configmap_name("moved")) is None

    # Another host's object under this host's old name stays (the old names could collide).
    kube.apply_manifests(
        cluster, [foreign_configmap(legacy_site, "someone-else", "else.example.com")], tmp_path
    )
    kube.apply_manifests(cluster, [kube.virtualhost("moved", "moved.example.com")], tmp_path)
    wait_for(cluster, "vh", "moved", lambda o: phase_of(o) == "Ready", what="Ready", timeout=60)
    cluster.kubectl("delete", "vh", "moved", "--timeout=30s")
    assert configmap(cluster, legacy_site) is not None
    cluster.kubectl("delete", "configmap", legacy_site, "-n", kube.NAMESPACE)


def test_without_the_webhook_the_oldest_host_keeps_its_hostname(
    cluster: Cluster, start_operator: OperatorFactory, tmp_path: Path
) -> None:
    """The webhook's failurePolicy is Ignore: with it absent, the operator itself keeps one
    VirtualHost per hostname. The younger one fails naming the owner, orders no certificate
    and writes no nginx config; once the owner is deleted, it takes the hostname over."""
    start_operator()  # ACME through pebble, no webhook
    hostname = "dup.example.com"
    kube.apply_manifests(cluster, [kube.virtualhost("dup-first", hostname)], tmp_path)
    wait_for(cluster, "vh", "dup-first", lambda o: phase_of(o) == "Ready", what="Ready", timeout=90)
    kube.apply_manifests(cluster, [kube.virtualhost("dup-second", hostname)], tmp_path)
    second = wait_for(cluster, "vh", "dup-second", settled, what="a settled phase", timeout=60)
    print(f"\nstatus.error: {second['status'].get('error')}")
    assert phase_of(second) == "Failed"
    assert "already used by VirtualHost dup-first" in second["status"]["error"]["message"]
    states = {entry["step"]: entry["state"] for entry in second["status"]["chain"]}
    assert states["certificate"] == "Cancelled", "an ACME order for a hostname it does not keep"
    assert kube.secret_data(cluster, next_key_secret_name("dup-second")) is None
    assert kube.secret_data(cluster, tls_secret_name("dup-second")) is None
    assert configmap(cluster, site_configmap_name("dup-second")) is None
    first = get_object(cluster, "vh", "dup-first")
    assert first is not None and phase_of(first) == "Ready"

    cluster.kubectl("delete", "vh", "dup-first", "--timeout=30s")
    taken = wait_for(
        cluster, "vh", "dup-second", lambda o: phase_of(o) == "Ready", what="Ready", timeout=90
    )
    assert taken["metadata"]["annotations"][RETRY_ANNOTATION].startswith("takeover-from-")


def test_without_the_webhook_the_oldest_host_keeps_an_additional_name(
    cluster: Cluster, start_operator: OperatorFactory, tmp_path: Path
) -> None:
    """The same rule for additional names: the younger host listing a name the older one
    serves fails before any step, naming the owner; once the owner is deleted it takes the
    name over and gets a certificate that names it."""
    start_operator()  # ACME through pebble, no webhook
    shared = "imap.shared.example.com"
    first = kube.virtualhost("extra-first", "mail.first.example.com", additionalNames=[shared])
    kube.apply_manifests(cluster, [first], tmp_path)
    wait_for(cluster, "vh", "extra-first", is_ready, what="Ready", timeout=90)
    second = kube.virtualhost("extra-second", "mail.second.example.com", additionalNames=[shared])
    kube.apply_manifests(cluster, [second], tmp_path)
    failed = wait_for(cluster, "vh", "extra-second", settled, what="a settled phase", timeout=60)
    print(f"\nstatus.error: {failed['status'].get('error')}")
    assert phase_of(failed) == "Failed"
    assert failed["status"]["error"]["message"].startswith(
        f"additional name {shared} is already served by VirtualHost extra-first, which is older"
    )
    assert kube.secret_data(cluster, next_key_secret_name("extra-second")) is None

    cluster.kubectl("delete", "vh", "extra-first", "--timeout=30s")
    taken = wait_for(cluster, "vh", "extra-second", is_ready, what="Ready", timeout=90)
    assert taken["metadata"]["annotations"][RETRY_ANNOTATION].startswith("takeover-from-")
    assert taken["status"]["certificate"]["names"] == ["mail.second.example.com", shared]


def is_ready(obj: dict[str, object]) -> bool:
    return phase_of(obj) == "Ready"
