"""The provisioning chain against a real API server and a real ACME CA (pebble).

pebble validates HTTP-01 by connecting straight to the operator's challenge responder (its
``httpPort`` is the responder's port); serving through nginx is the nginx agent's test.
"""

from __future__ import annotations

import base64
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store

from tests.harness import kube
from tests.harness.clusters import Cluster
from tests.harness.pebble import Pebble
from tests.harness.processes import free_port
from tests.harness.standin import Handler, StandIn
from tests.harness.waiting import get_object, phase_of, wait_for
from tests.integration.conftest import OperatorFactory
from vhost_operator.kube.objects import FIELD_MANAGER
from vhost_operator.resources import labels
from vhost_operator.resources.models import VirtualHost
from vhost_operator.resources.naming import (
    next_key_secret_name,
    site_configmap_name,
    tls_secret_name,
)

pytestmark = pytest.mark.cluster


def chain_states(obj: dict[str, object]) -> list[tuple[str, str]]:
    status = obj.get("status", {})
    assert isinstance(status, dict)
    return [(entry["step"], entry["state"]) for entry in status.get("chain", [])]


def settled(obj: dict[str, object]) -> bool:
    return phase_of(obj) in ("Ready", "Failed")


def verify_chain(chain_pem: bytes, root_pem: bytes, hostname: str) -> x509.Certificate:
    certificates = x509.load_pem_x509_certificates(chain_pem)
    root = x509.load_pem_x509_certificate(root_pem)
    verifier = PolicyBuilder().store(Store([root])).build_server_verifier(x509.DNSName(hostname))
    verifier.verify(certificates[0], certificates[1:])
    return certificates[0]


# -- success ---------------------------------------------------------------------------------


def test_host_goes_pending_to_ready_with_a_verified_certificate(
    cluster: Cluster, start_operator: OperatorFactory, pebble: Pebble, tmp_path: Path
) -> None:
    operator = start_operator()
    started = time.monotonic()
    kube.apply_manifests(cluster, [kube.virtualhost("one", "one.example.com")], tmp_path)
    ready = wait_for(cluster, "vh", "one", settled, what="Ready or Failed", timeout=60)
    elapsed = time.monotonic() - started
    assert phase_of(ready) == "Ready", ready["status"]
    assert chain_states(ready) == [
        ("bootstrap", "Succeeded"),
        ("certificate", "Succeeded"),
        ("final", "Succeeded"),
        ("ready", "Succeeded"),
    ]
    certificate = ready["status"]["certificate"]
    assert certificate["secretName"] == tls_secret_name("one")
    assert certificate["notBefore"] < certificate["renewalTime"] < certificate["notAfter"]
    conditions = {c["type"]: c["status"] for c in ready["status"]["conditions"]}
    assert conditions == {"Ready": "True", "Provisioned": "True", "CertificateValid": "True"}

    tls = kube.secret_data(cluster, tls_secret_name("one"))
    assert tls is not None
    leaf = verify_chain(tls["tls.crt"], pebble.root_pem(), "one.example.com")
    assert format(leaf.serial_number, "x") == certificate["serial"].lower().lstrip("0")
    assert kube.secret_data(cluster, next_key_secret_name("one")) is None, (
        "the pending key is cleaned up"
    )
    secret_type = cluster.kubectl(
        "get", "secret", tls_secret_name("one"), "-n", kube.NAMESPACE, "-o", "jsonpath={.type}"
    ).stdout
    assert secret_type == "kubernetes.io/tls"

    config = cluster.kubectl(
        "get",
        "configmap",
        site_configmap_name("one"),
        "-n",
        kube.NAMESPACE,
        "-o",
        "jsonpath={.data.one\\.example\\.com\\.conf}",
    ).stdout
    # No certificate of its own: the TLS sites share the default server's context.
    assert " ssl http2;\n    server_name one.example.com;" in config
    assert "ssl_certificate" not in config
    # HTTPS only: the nginx agent's one shared port-80 server answers its renewals' challenges.
    assert config.count("    listen ") == 1 and "acme-challenge" not in config
    print(f"\napply -> Ready for 1 host: {elapsed:.2f}s")

    # Hosts by phase are read from the operator's catalog at scrape time, and its watch may
    # see the Ready status a moment after the test does.
    ready_gauge = 'vhost_operator_virtualhosts{phase="Ready"} 1.0'
    deadline = time.monotonic() + 10
    scraped = operator.metrics()
    while ready_gauge not in scraped and time.monotonic() < deadline:
        time.sleep(0.2)
        scraped = operator.metrics()
    assert ready_gauge in scraped
    assert 'vhost_operator_acme_orders_total{outcome="issued"} 1.0' in scraped
    assert (
        'vhost_operator_step_duration_seconds_count{result="succeeded",step="certificate"} 1.0'
        in scraped
    )
    assert 'vhost_operator_certificate_expiry_timestamp_seconds{virtualhost="one"}' in scraped
    check_step_events(cluster, ready)


def check_step_events(cluster: Cluster, ready: dict[str, Any]) -> None:
    """An Event for every step and one for Ready, about the host (kopf's form: cluster-scoped,
    so filed in "default"), posted by the operator's own API client, not kopf's."""
    expected = [
        ("StepSucceeded", "bootstrap"),
        ("StepSucceeded", "certificate"),
        ("StepSucceeded", "final"),
        ("Ready", "one.example.com is ready"),
    ]

    # Posted in the background: the last may arrive a moment after the Ready status.
    deadline = time.monotonic() + 10
    events = kube.events_about(cluster, "VirtualHost", "one")
    while len(events) < len(expected) and time.monotonic() < deadline:
        time.sleep(0.2)
        events = kube.events_about(cluster, "VirtualHost", "one")
    events.sort(key=lambda event: event["eventTime"])
    assert [(e["reason"], e["message"]) for e in events] == expected
    for event in events:
        assert event["type"] == "Normal"
        assert event["involvedObject"] == {
            "apiVersion": ready["apiVersion"],
            "kind": "VirtualHost",
            "name": "one",
            "uid": ready["metadata"]["uid"],
            "namespace": "default",
        }
        assert event["metadata"]["namespace"] == "default"
        assert event["metadata"]["name"].startswith("kopf-event-")
        assert event["source"] == {"component": "vhost-operator"}
        reporting = (event["reportingComponent"], event["reportingInstance"])
        assert reporting == ("vhost-operator", "dev")
        assert event["firstTimestamp"] and event["lastTimestamp"] and event["eventTime"]
        assert {entry["manager"] for entry in event["metadata"]["managedFields"]} == {FIELD_MANAGER}


def test_fifty_hosts_at_once(
    cluster: Cluster, start_operator: OperatorFactory, pebble: Pebble, tmp_path: Path
) -> None:
    start_operator()
    hosts = [kube.virtualhost(f"many-{i}", f"many-{i}.example.com") for i in range(50)]
    started = time.monotonic()
    kube.apply_manifests(cluster, hosts, tmp_path)
    deadline = started + 180
    phases: dict[str, str] = {}
    while time.monotonic() < deadline:
        listed = cluster.kubectl(
            "get",
            "vh",
            "-o",
            'jsonpath={range .items[*]}{.metadata.name}={.status.phase}{"\\n"}{end}',
        ).stdout
        phases = dict(
            line.split("=", 1) for line in listed.splitlines() if line.startswith("many-")
        )
        if len(phases) == 50 and all(p in ("Ready", "Failed") for p in phases.values()):
            break
        time.sleep(0.5)
    elapsed = time.monotonic() - started
    assert sorted(set(phases.values())) == ["Ready"], phases
    print(f"\napply -> Ready for 50 hosts at once: {elapsed:.2f}s ({50 / elapsed:.1f} hosts/s)")


# -- failures end Failed at the right step, the rest Cancelled --------------------------------


def assert_failed_at_certificate(obj: dict[str, object], *fragments: str) -> str:
    assert phase_of(obj) == "Failed", obj.get("status")
    assert chain_states(obj) == [
        ("bootstrap", "Succeeded"),
        ("certificate", "Failed"),
        ("final", "Cancelled"),
        ("ready", "Cancelled"),
    ]
    status = obj["status"]
    assert isinstance(status, dict)
    error = status["error"]
    assert error["step"] == "certificate"
    for fragment in fragments:
        assert fragment in error["message"], error["message"]
    assert status["failedAttempts"] == 1 and status["lastFailureTime"]
    message: str = error["message"]
    return message


def test_unreachable_acme_directory(
    cluster: Cluster, start_operator: OperatorFactory, tmp_path: Path
) -> None:
    dead = free_port()
    start_operator(acme_directory_url=f"https://127.0.0.1:{dead}/dir")
    kube.apply_manifests(cluster, [kube.virtualhost("no-ca", "no-ca.example.com")], tmp_path)
    failed = wait_for(cluster, "vh", "no-ca", settled, what="Failed", timeout=60)
    message = assert_failed_at_certificate(failed, f"127.0.0.1:{dead}")
    print(f"\nunreachable directory: {message}")
    events = cluster.kubectl(
        "get", "events", "--field-selector", "involvedObject.name=no-ca"
    ).stdout
    assert "StepFailed" in events


def test_self_check_fails_fast_naming_the_cause(
    cluster: Cluster, start_operator: OperatorFactory, tmp_path: Path
) -> None:
    start_operator(self_check_address=f"http://127.0.0.1:{free_port()}")
    kube.apply_manifests(cluster, [kube.virtualhost("no-route", "no-route.example.com")], tmp_path)
    failed = wait_for(cluster, "vh", "no-route", settled, what="Failed", timeout=60)
    message = assert_failed_at_certificate(failed, "no-route.example.com", "port 80")
    print(f"\nself-check failure: {message}")


def test_challenge_unreachable_for_the_ca(
    cluster: Cluster, start_operator: OperatorFactory, tmp_path: Path
) -> None:
    # The responder listens elsewhere than where pebble connects, and no self-check warns first.
    start_operator(challenge_listen_port=str(free_port()), self_check_enabled="false")
    kube.apply_manifests(cluster, [kube.virtualhost("unseen", "unseen.example.com")], tmp_path)
    failed = wait_for(cluster, "vh", "unseen", settled, what="Failed", timeout=60)
    message = assert_failed_at_certificate(failed, "unseen.example.com")
    print(f"\nCA could not validate: {message}")


def test_ca_refusing_the_account(
    cluster: Cluster, responder_port: int, tmp_path: Path, start_operator: OperatorFactory
) -> None:
    with Pebble(
        http_port=responder_port,
        eab_keys={"kid-1": "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"},
        workdir=tmp_path / "eab-pebble",
    ) as strict:
        start_operator(
            acme_directory_url=strict.directory_url, acme_ca_bundle=str(strict.ca_bundle_path)
        )
        kube.apply_manifests(
            cluster, [kube.virtualhost("refused", "refused.example.com")], tmp_path
        )
        failed = wait_for(cluster, "vh", "refused", settled, what="Failed", timeout=60)
    message = assert_failed_at_certificate(failed, "External Account Binding")
    print(f"\nCA refusing: {message}")


# -- a crash in the middle of the certificate step -------------------------------------------


class SlowHairpin:
    """An HTTP server that answers the self-check slowly, holding the step mid-issuance."""

    def __init__(self, responder_port: int, delay: float) -> None:
        target, pause = f"http://127.0.0.1:{responder_port}", delay

        class Slow(Handler):
            def do_GET(self) -> None:
                time.sleep(pause)
                request = urllib.request.Request(
                    target + self.path, headers={"Host": self.headers["Host"]}
                )
                try:
                    with urllib.request.urlopen(request, timeout=5) as answer:
                        body = answer.read()
                except OSError:  # the operator was killed meanwhile: that is the point
                    self.send_error(502)
                    return
                self.reply(body)

        # the killed operator hangs up on us; nothing to report
        self.server = StandIn(Slow, report_errors=False)
        self.port = self.server.port

    def close(self) -> None:
        self.server.close()


def killed_mid_certificate(
    cluster: Cluster,
    start_operator: OperatorFactory,
    responder_port: int,
    name: str,
    tmp_path: Path,
) -> tuple[bytes, str]:
    """Host ``name`` (``<name>.example.com``) created, the operator killed as soon as the host's
    order URL is stored (its self-check held slow meanwhile: the CA has validated nothing): the
    pending key and the order URL."""
    hairpin = SlowHairpin(responder_port, delay=4)
    try:
        first = start_operator(self_check_address=f"http://127.0.0.1:{hairpin.port}")
        kube.apply_manifests(cluster, [kube.virtualhost(name, f"{name}.example.com")], tmp_path)
        deadline = time.monotonic() + 30
        pending: dict[str, bytes] | None = None
        while time.monotonic() < deadline:
            secret = cluster.kubectl(
                "get",
                "secret",
                tls_secret_name(name),  # a first certificate's key waits in it
                "-n",
                kube.NAMESPACE,
                "--ignore-not-found",
                "-o",
                "jsonpath={.metadata.annotations.vhost-operator\\.io/order-url}",
            ).stdout
            if secret:
                pending = kube.secret_data(cluster, tls_secret_name(name))
                order_url = secret
                break
            time.sleep(0.05)
        assert pending is not None, "the order was never recorded"
        first.kill()
    finally:
        hairpin.close()
    interrupted = get_object(cluster, "vh", name)
    assert interrupted is not None and phase_of(interrupted) == "Pending"
    assert ("certificate", "Running") in chain_states(interrupted)
    return pending["tls.key"], order_url


def assert_ready_from_that_order(
    cluster: Cluster, pebble: Pebble, name: str, key: bytes, order_url: str
) -> None:
    """Host ``name`` Ready with a certificate for ``key`` from the order at ``order_url``, the
    only order the CA validated for it."""
    ready = wait_for(cluster, "vh", name, settled, what="Ready after restart", timeout=60)
    assert phase_of(ready) == "Ready", ready["status"]
    tls = kube.secret_data(cluster, tls_secret_name(name))
    assert tls is not None
    assert tls["tls.key"] == key, "the key stored before the order is the one used"
    verify_chain(tls["tls.crt"], pebble.root_pem(), f"{name}.example.com")
    certificate_step = next(e for e in ready["status"]["chain"] if e["step"] == "certificate")
    assert certificate_step["message"].endswith(f"issued by order {order_url}"), (
        "the order placed before the crash is the one that was finished"
    )
    log = pebble.logs(lines=100_000)
    assert log.count(f'Value:"{name}.example.com"') == 1, "one validation for the host, not two"
    order_id = order_url.rsplit("/", 1)[-1]
    assert f"for order {order_id}" in log
    print(f"\nresumed order {order_url}")


def as_an_earlier_release_left_it(
    cluster: Cluster, name: str, key: bytes, order_url: str, tmp_path: Path
) -> None:
    """Releases before the TLS Secret held a first certificate's pending key kept it, with its
    order, in the next-key Secret, and created the TLS Secret only with the certificate."""
    host = VirtualHost.from_body(get_object(cluster, "vh", name) or {})
    next_key = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": next_key_secret_name(name),
            "namespace": kube.NAMESPACE,
            "labels": labels.component_labels(labels.NEXT_KEY_COMPONENT),
            "annotations": {
                labels.VIRTUALHOST: name,
                labels.HOSTNAME: f"{name}.example.com",
                labels.ORDER_URL: order_url,
            },
            "ownerReferences": [host.owner_reference()],
        },
        "type": "Opaque",
        "data": {"tls.key": base64.b64encode(key).decode()},
    }
    kube.apply_manifests(cluster, [next_key], tmp_path)
    cluster.kubectl("delete", "secret", tls_secret_name(name), "-n", kube.NAMESPACE)


@pytest.mark.parametrize("release", ["this", "earlier"])
def test_sigkill_mid_certificate_resumes_the_same_order(
    cluster: Cluster,
    start_operator: OperatorFactory,
    responder_port: int,
    pebble: Pebble,
    tmp_path: Path,
    release: str,
) -> None:
    """Killed once the order URL is stored, the operator resumes that order with that key. A
    host an earlier release left that way (the key and order in the next-key Secret) too,
    after the upgrade, and its next-key Secret goes."""
    name = f"crash-{release}"
    key, order_url = killed_mid_certificate(cluster, start_operator, responder_port, name, tmp_path)
    if release == "earlier":
        as_an_earlier_release_left_it(cluster, name, key, order_url, tmp_path)
    start_operator()
    assert_ready_from_that_order(cluster, pebble, name, key, order_url)
    assert kube.secret_data(cluster, next_key_secret_name(name)) is None
