"""No host stuck, no renewal skipped: restarts, broken key material and interrupted renewals,
against a real API server and a real ACME CA (pebble), with the operator as a process."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.harness import kube
from tests.harness.clusters import Cluster
from tests.harness.pebble import Pebble
from tests.harness.waiting import Object, get_object, phase_of, renew, wait_for
from tests.integration.conftest import OperatorFactory
from vhost_operator.resources.models import RENEW_ANNOTATION
from vhost_operator.resources.naming import next_key_secret_name, tls_secret_name

pytestmark = pytest.mark.cluster

ACCOUNT_SECRET = "vhost-operator-acme-account"
"""The operator's default name for the Secret with the ACME account key."""

DUE_AT_ONCE = "0.99999999"
"""A renewal fraction that makes pebble's 5-year certificates due about 1.6 s after issuance."""


def settled(obj: Object) -> bool:
    return phase_of(obj) in ("Ready", "Failed")


def ready(cluster: Cluster, name: str) -> Object:
    found = wait_for(cluster, "vh", name, settled, what="Ready or Failed", timeout=60)
    assert phase_of(found) == "Ready", found["status"]
    return found


def serial(obj: Object) -> str:
    value: str = obj["status"]["certificate"]["serial"]
    return value


def conditions(obj: Object) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in obj["status"].get("conditions", [])}


def apply_secret(cluster: Cluster, manifest: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / f"secret-{manifest['metadata']['name']}.json"
    path.write_text(json.dumps(manifest))
    cluster.kubectl("apply", "-f", str(path))


def test_renewal_scan_runs_at_start_and_renews_due_enabled_hosts_only(
    cluster: Cluster, start_operator: OperatorFactory, tmp_path: Path
) -> None:
    # The suite's test of renewal by due date (the others ask for their one renewal with the
    # renew annotation). The default daily interval: within the test only a scan at start-up can
    # renew anything, and it renews each due host once.
    first = start_operator(renewal_fraction=DUE_AT_ONCE, renewal_info_enabled="false")
    kube.apply_manifests(
        cluster,
        [
            kube.virtualhost("restarted", "restarted.example.com"),
            kube.virtualhost("skipped", "skipped.example.com", enabled=False),
        ],
        tmp_path,
    )
    host, disabled = ready(cluster, "restarted"), ready(cluster, "skipped")
    issued = serial(host)
    stored = kube.secret_data(cluster, tls_secret_name("restarted"))
    first.stop()  # restarted more often than the interval: upgrades, drains, OOM kills
    # Both due before the restart (a second or two after issuance): only then must the scan at
    # start-up renew; a host falling due later waits for the next scan, by design.
    due = max(
        datetime.fromisoformat(h["status"]["certificate"]["renewalTime"]) for h in (host, disabled)
    )
    time.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds()) + 0.5)

    second = start_operator(
        renewal_fraction=DUE_AT_ONCE, renewal_info_enabled="false", renewal_spacing="0"
    )
    renewed = wait_for(
        cluster,
        "vh",
        "restarted",
        lambda o: serial(o) != issued,
        what="a renewal right after the restart",
        timeout=45,
    )
    assert phase_of(renewed) == "Ready"
    assert conditions(renewed)["CertificateRenewal"]["status"] == "True"
    assert kube.secret_data(cluster, tls_secret_name("restarted")) != stored
    # One request, the enabled host's: a disabled host is never renewed (nginx does not serve
    # its challenge), though due as well (no spacing: a request for it would have come at once).
    assert "vhost_operator_renewal_requests_total 1.0" in second.metrics()
    skipped = get_object(cluster, "vh", "skipped")
    assert skipped is not None and serial(skipped) == serial(disabled)
    assert RENEW_ANNOTATION not in skipped["metadata"].get("annotations", {})


def test_unusable_account_key_fails_the_step_with_a_message(
    cluster: Cluster, start_operator: OperatorFactory, tmp_path: Path
) -> None:
    kube.ensure_namespace(cluster)
    corrupted = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": ACCOUNT_SECRET, "namespace": kube.NAMESPACE},
        "type": "Opaque",
        "data": {"account.key": base64.b64encode(b"-----BEGIN garbage-----\n").decode()},
    }
    apply_secret(cluster, corrupted, tmp_path)
    try:
        start_operator()
        kube.apply_manifests(
            cluster, [kube.virtualhost("bad-key", "bad-key.example.com")], tmp_path
        )
        failed = wait_for(cluster, "vh", "bad-key", settled, what="Failed", timeout=45)
    finally:
        cluster.kubectl("delete", "secret", ACCOUNT_SECRET, "-n", kube.NAMESPACE)
    assert phase_of(failed) == "Failed", failed["status"]
    states = [(e["step"], e["state"]) for e in failed["status"]["chain"]]
    assert ("certificate", "Failed") in states and ("final", "Cancelled") in states
    error = failed["status"]["error"]
    assert error["step"] == "certificate"
    assert (
        f"ACME account key in Secret {kube.NAMESPACE}/{ACCOUNT_SECRET} is unusable"
        in (error["message"])
    )
    assert conditions(failed)["Ready"]["reason"] == "StepFailed"
    events = cluster.kubectl(
        "get", "events", "--field-selector", "involvedObject.name=bad-key"
    ).stdout
    assert "StepFailed" in events
    print(f"\nunusable account key: {error['message']}")


def test_renewal_after_a_crash_before_the_pending_key_was_removed_issues_a_new_certificate(
    cluster: Cluster, start_operator: OperatorFactory, tmp_path: Path
) -> None:
    start_operator()
    kube.apply_manifests(cluster, [kube.virtualhost("spent", "spent.example.com")], tmp_path)
    host = ready(cluster, "spent")
    first = serial(host)
    step = next(e for e in host["status"]["chain"] if e["step"] == "certificate")
    order_url = step["message"].rsplit(" ", 1)[-1]
    assert order_url.startswith("https://"), step["message"]
    stored = kube.secret_data(cluster, tls_secret_name("spent"))
    assert stored is not None

    # What a crash between storing the certificate and removing the pending key leaves behind:
    # the pending key (the one now in the TLS Secret) with the URL of its finished order.
    leftover = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": next_key_secret_name("spent"),
            "namespace": kube.NAMESPACE,
            "annotations": {
                "vhost-operator.io/virtualhost": "spent",  # written for this host, as ever
                "vhost-operator.io/order-url": order_url,
            },
        },
        "type": "Opaque",
        "data": {"tls.key": base64.b64encode(stored["tls.key"]).decode()},
    }
    apply_secret(cluster, leftover, tmp_path)
    renewed = renew(cluster, "spent", "after-crash")
    assert conditions(renewed)["CertificateRenewal"]["status"] == "True", renewed["status"]
    assert serial(renewed) != first, "a renewal must end with a new certificate"
    now_stored = kube.secret_data(cluster, tls_secret_name("spent"))
    assert now_stored is not None and now_stored["tls.key"] != stored["tls.key"]
    assert kube.secret_data(cluster, next_key_secret_name("spent")) is None
    assert get_object(cluster, "vh", "spent") is not None


def test_certificate_valid_follows_the_clock_on_a_host_that_runs_no_chain(
    cluster: Cluster, start_operator: OperatorFactory, responder_port: int, tmp_path: Path
) -> None:
    # A disabled host is never renewed: nothing but the clock can tell that its certificate
    # expired. pebble issues 15-second certificates here; the renewal interval stays daily.
    with Pebble(
        http_port=responder_port, workdir=tmp_path / "short-ca", certificate_validity=15
    ) as short:
        start_operator(
            acme_directory_url=short.directory_url, acme_ca_bundle=str(short.ca_bundle_path)
        )
        host = kube.virtualhost("expiring", "expiring.example.com", enabled=False)
        kube.apply_manifests(cluster, [host], tmp_path)
        issued = ready(cluster, "expiring")
    valid = conditions(issued)["CertificateValid"]
    assert valid["status"] == "True", valid
    not_after = datetime.fromisoformat(issued["status"]["certificate"]["notAfter"])
    expired = wait_for(
        cluster,
        "vh",
        "expiring",
        lambda o: conditions(o)["CertificateValid"]["status"] == "False",
        what="CertificateValid=False after notAfter",
        timeout=40,
    )
    noticed = datetime.now(UTC)
    condition = conditions(expired)["CertificateValid"]
    assert condition["reason"] == "Expired", condition
    assert datetime.fromisoformat(condition["lastTransitionTime"]) >= not_after
    assert serial(expired) == serial(issued), "a disabled host is not renewed"
    print(f"\nexpiry noticed {(noticed - not_after).total_seconds():.1f}s after notAfter")


def test_a_failed_host_is_retried_with_backoff_when_enabled(
    cluster: Cluster, start_operator: OperatorFactory, responder_port: int, tmp_path: Path
) -> None:
    late = Pebble(http_port=responder_port, workdir=tmp_path / "late-ca")
    late.ca_bundle_path.write_bytes(b"")  # pebble writes it on start; the setting must name a file
    start_operator(
        acme_directory_url=late.directory_url,
        acme_ca_bundle=str(late.ca_bundle_path),
        retry_backoff_enabled="true",
        retry_backoff_initial="2",
        retry_backoff_max="4",
        retry_backoff_jitter="0.5",
    )
    kube.apply_manifests(cluster, [kube.virtualhost("comeback", "comeback.example.com")], tmp_path)
    # The CA is down: the host fails, is retried by itself, fails again (the backoff grows).
    twice = wait_for(
        cluster,
        "vh",
        "comeback",
        lambda o: o.get("status", {}).get("failedAttempts", 0) >= 2 and phase_of(o) == "Failed",
        what="a second failure after an automatic retry",
        timeout=60,
    )
    retry = twice["metadata"]["annotations"]["vhost-operator.io/retry"]
    assert retry.startswith("auto-1-"), retry
    with late:
        back = wait_for(
            cluster,
            "vh",
            "comeback",
            lambda o: phase_of(o) == "Ready",
            what="Ready once the CA is back, with no user action",
            timeout=60,
        )
    status = back["status"]
    assert status["failedAttempts"] == 0 and "error" not in status
    assert status["observedRetry"].startswith("auto-"), status["observedRetry"]
    last_failure = datetime.fromisoformat(status["lastFailureTime"])
    started = datetime.fromisoformat(status["chain"][0]["startedAt"])
    # At least the shortest backoff (2 s less up to 50 % jitter) after the last failure.
    assert (started - last_failure).total_seconds() >= 1, (last_failure, started)


def test_a_primary_hostname_cannot_become_a_virtualhost(
    cluster: Cluster, start_operator: OperatorFactory, tmp_path: Path
) -> None:
    primary = json.dumps(["webmail.provider.test"])
    # Without the webhook (or with it down: failurePolicy Ignore) the operator refuses it.
    start_operator(primary_hostnames=primary)
    kube.apply_manifests(cluster, [kube.virtualhost("takeover", "webmail.provider.test")], tmp_path)
    failed = wait_for(cluster, "vh", "takeover", settled, what="Failed", timeout=45)
    assert phase_of(failed) == "Failed", failed["status"]
    error = failed["status"]["error"]
    assert error["step"] == "bootstrap"
    assert "webmail.provider.test is a primary hostname of this instance" in error["message"]
    assert all(e["state"] != "Succeeded" for e in failed["status"]["chain"])
    assert kube.secret_data(cluster, tls_secret_name("takeover")) is None
    site = cluster.kubectl(
        "get", "configmap", "-n", kube.NAMESPACE, "-o", "name", "--ignore-not-found"
    ).stdout
    assert "takeover" not in site, "nothing is published for a primary hostname"
