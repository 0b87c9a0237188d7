"""ACME Renewal Information and ACME profiles against a real pebble that has both.

Pebble (built from its pinned module, ``hack/build-pebble.sh``) lists two profiles here:
``classic`` (90-day certificates, the operator's default in these tests) and ``shortlived``
(6 days). Its renewal information suggests a window around two thirds of each certificate's
lifetime, moves a revoked certificate's window into the past, and can be given any window
through its management interface, as a CA does in an incident. The operator asks again every
few seconds here (``RENEWAL_INFO_MAX_AGE``) and scans every two, so a moved window is renewed
within seconds.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.harness import kube
from tests.harness.clusters import Cluster
from tests.harness.operator import OperatorProcess
from tests.harness.pebble import Pebble
from tests.harness.waiting import phase_of, wait_for
from tests.integration.conftest import OperatorFactory
from vhost_operator.resources.naming import tls_secret_name

pytestmark = pytest.mark.cluster

DAY = 24 * 3600
PROFILES = {"classic": 90 * DAY, "shortlived": 6 * DAY}
SUGGESTED = re.compile(r"VirtualHost (\S+): the CA suggests renewal from (\S+) to (\S+); ")


@pytest.fixture(scope="module")
def pebble(responder_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pebble]:
    """This module's CA: the conftest's, with two profiles."""
    workdir = tmp_path_factory.mktemp("pebble-profiles")
    with Pebble(http_port=responder_port, workdir=workdir, profiles=PROFILES) as ca:
        yield ca


def start(start_operator: OperatorFactory) -> OperatorProcess:
    return start_operator(
        acme_profile="classic",
        renewal_interval="2",
        renewal_spacing="0",
        renewal_info_max_age="3",
        renewal_info_rate="20",
    )


def certificate(obj: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = obj.get("status", {}).get("certificate") or {}
    return found


def when(text: str) -> datetime:
    return datetime.fromisoformat(text)


def lifetime(cert: dict[str, Any]) -> timedelta:
    return when(cert["notAfter"]) - when(cert["notBefore"])


def ready_host(cluster: Cluster, name: str, tmp_path: Path, **spec: Any) -> dict[str, Any]:
    kube.apply_manifests(cluster, [kube.virtualhost(name, f"{name}.example.com", **spec)], tmp_path)
    host = wait_for(cluster, "vh", name, lambda o: phase_of(o) in ("Ready", "Failed"), timeout=60)
    assert phase_of(host) == "Ready", host["status"]
    return host


def replacements(pebble: Pebble) -> int:
    """Orders pebble accepted as the replacement of a certificate (``replaces``)."""
    return pebble.log_count("is a replacement of")


def suggested_windows(operator: OperatorProcess, name: str) -> list[tuple[datetime, datetime]]:
    """The moved windows the operator recorded for host ``name`` (its log)."""
    log = operator.log_path.read_text(errors="replace")
    return [(when(a), when(b)) for host, a, b in SUGGESTED.findall(log) if host == name]


def test_a_renewal_inside_the_cas_window_names_the_certificate_it_replaces(
    cluster: Cluster, start_operator: OperatorFactory, pebble: Pebble, tmp_path: Path
) -> None:
    start(start_operator)
    host = ready_host(cluster, "ari-window", tmp_path)
    first = certificate(host)
    window = first["renewalWindow"]
    assert window["source"] == "ari"
    assert first["profile"] == "classic" and lifetime(first) == timedelta(seconds=90 * DAY - 1)
    # pebble's window: a day either side of the point where a third of the lifetime remains.
    ideal = when(first["notAfter"]) - lifetime(first) / 3
    assert abs(when(window["start"]) - (ideal - timedelta(days=1))) < timedelta(seconds=2)
    assert abs(when(window["end"]) - (ideal + timedelta(days=1))) < timedelta(seconds=2)
    assert when(window["start"]) <= when(first["renewalTime"]) <= when(window["end"])
    replaced_before = replacements(pebble)

    # The CA moves the window to the next few seconds, as it would in an incident.
    chain = kube.secret_data(cluster, tls_secret_name("ari-window"))
    assert chain is not None
    start_at = datetime.now(UTC) + timedelta(seconds=4)
    pebble.set_renewal_window(chain["tls.crt"], start_at, start_at + timedelta(seconds=8))

    moved = wait_for(
        cluster,
        "vh",
        "ari-window",
        lambda o: certificate(o).get("renewalWindow", {}).get("start") != window["start"],
        what="the moved window in status",
        timeout=30,
    )
    moved_cert = certificate(moved)
    if moved_cert["serial"] == first["serial"]:  # seen before the renewal: it is the new window
        moved_window = moved_cert["renewalWindow"]
        assert abs(when(moved_window["start"]) - start_at) < timedelta(seconds=1)
        assert when(moved_window["start"]) <= when(moved_cert["renewalTime"])
        assert when(moved_cert["renewalTime"]) <= when(moved_window["end"])
    renewed = wait_for(
        cluster,
        "vh",
        "ari-window",
        lambda o: certificate(o).get("serial") not in (None, first["serial"]),
        what="a renewed certificate",
        timeout=40,
    )
    second = certificate(renewed)
    issued = when(second["notBefore"])
    # Inside the window (pebble dates a certificate at its issuance, to the second).
    assert start_at - timedelta(seconds=1) <= issued <= start_at + timedelta(seconds=10)
    assert replacements(pebble) == replaced_before + 1, "the renewal order names `replaces`"
    assert second["profile"] == "classic" and second["renewalWindow"]["source"] == "ari"
    assert phase_of(renewed) == "Ready"


def test_a_revoked_certificate_gets_a_window_in_the_past_and_is_renewed_at_the_next_scan(
    cluster: Cluster, start_operator: OperatorFactory, pebble: Pebble, tmp_path: Path
) -> None:
    operator = start(start_operator)
    first = certificate(ready_host(cluster, "ari-revoked", tmp_path))
    assert when(first["renewalTime"]) > datetime.now(UTC) + timedelta(days=50)
    secret = kube.secret_data(cluster, tls_secret_name("ari-revoked"))
    assert secret is not None

    revoked_at = datetime.now(UTC)
    pebble.revoke(secret["tls.crt"], secret["tls.key"])

    renewed = wait_for(
        cluster,
        "vh",
        "ari-revoked",
        lambda o: certificate(o).get("serial") not in (None, first["serial"]),
        what="a certificate renewed after the revocation",
        timeout=40,
    )
    events = cluster.kubectl(
        "get", "events", "-A", "--field-selector", "involvedObject.name=ari-revoked", "-o", "json"
    ).stdout
    assert '"Renewed"' in events
    second = certificate(renewed)
    assert when(second["notBefore"]) >= revoked_at - timedelta(seconds=1)
    assert phase_of(renewed) == "Ready"
    # pebble suggested renewing a revoked certificate an hour ago: the renewal time the
    # operator chose in that window had passed, so the next scan renewed it.
    [(_, end_at)] = suggested_windows(operator, "ari-revoked")
    assert end_at < revoked_at - timedelta(minutes=59)


def test_a_host_profile_gives_its_lifetime_and_renewals_keep_it(
    cluster: Cluster, start_operator: OperatorFactory, tmp_path: Path
) -> None:
    start(start_operator)
    short = certificate(ready_host(cluster, "short", tmp_path, acmeProfile="shortlived"))
    classic = certificate(ready_host(cluster, "classic", tmp_path))

    assert short["profile"] == "shortlived"
    assert lifetime(short) == timedelta(seconds=6 * DAY - 1)
    assert classic["profile"] == "classic"
    assert lifetime(classic) == timedelta(seconds=90 * DAY - 1)
    # Renewal follows the actual lifetime: a 6-day certificate is renewed after 3 to 5 days.
    after = when(short["renewalTime"]) - when(short["notBefore"])
    assert timedelta(days=3) - timedelta(seconds=2) <= after <= timedelta(days=5)
    print(
        f"\nshortlived: lifetime {lifetime(short)}, renewal after {after}; "
        f"classic: lifetime {lifetime(classic)}, renewal after "
        f"{when(classic['renewalTime']) - when(classic['notBefore'])}"
    )

    cluster.kubectl("annotate", "vh", "short", "vhost-operator.io/renew=1", "--overwrite")
    renewed = wait_for(
        cluster,
        "vh",
        "short",
        lambda o: certificate(o).get("serial") not in (None, short["serial"]),
        what="a renewed certificate",
        timeout=40,
    )
    again = certificate(renewed)
    assert again["profile"] == "shortlived"
    assert lifetime(again) == timedelta(seconds=6 * DAY - 1)


def test_an_unknown_profile_fails_naming_the_profiles_on_offer(
    cluster: Cluster, start_operator: OperatorFactory, pebble: Pebble, tmp_path: Path
) -> None:
    start(start_operator)
    orders_before = pebble.log_count("Added order")
    kube.apply_manifests(
        cluster,
        [kube.virtualhost("tls-profile", "tls-profile.example.com", acmeProfile="tlsserver")],
        tmp_path,
    )
    failed = wait_for(
        cluster, "vh", "tls-profile", lambda o: phase_of(o) == "Failed", what="Failed", timeout=60
    )
    error = failed["status"]["error"]
    assert error["step"] == "certificate"
    origin = pebble.directory_url.rsplit("/", 1)[0]
    assert error["message"] == (
        f"the CA at {origin} offers no ACME profile 'tlsserver'; it offers: classic, shortlived"
    )
    assert pebble.log_count("Added order") == orders_before, "refused before ordering"
