"""The whole product on real parts: operator + nginx agent + Debian's nginx + pebble, on the
local control plane.

pebble validates HTTP-01 *through nginx* (its HTTP port is nginx's), nginx proxies the challenge
to the operator's responder, the certificate is issued, the agent loads it into nginx, and the
test's TLS client verifies the chain against pebble's root with SNI, as a browser would.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from tests.harness import kube
from tests.harness.agent import AgentProcess
from tests.harness.clusters import Cluster
from tests.harness.nginx import (
    NginxServer,
    http_request,
    http_status,
    https_exchange,
    https_request,
    served_certificate,
)
from tests.harness.operator import OperatorProcess
from tests.harness.pebble import Pebble
from tests.harness.waiting import get_object, phase_of, renew, wait_for
from tests.integration.conftest import OperatorFactory

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def pebble(nginx: NginxServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pebble]:
    """Overrides conftest's: this CA validates through nginx's HTTP port."""
    with Pebble(http_port=nginx.http_port, workdir=tmp_path_factory.mktemp("pebble")) as ca:
        yield ca


@pytest.fixture
def serving_operator(
    start_operator: OperatorFactory, nginx: NginxServer, agent: AgentProcess, upstream: int
) -> OperatorFactory:
    """Starts the operator wired to this nginx: challenges and self-checks go through it, and
    the chain waits for the agent and for nginx to present the new certificate."""

    def start(**overrides: str) -> OperatorProcess:
        wired = {
            "nginx_http_port": str(nginx.http_port),
            "nginx_https_port": str(nginx.https_port),
            "nginx_certificate_dir": str(nginx.root / "certs"),
            "self_check_address": f"http://127.0.0.1:{nginx.http_port}",
            "upstream": f"http://127.0.0.1:{upstream}",
            "nginx_wait_for_agent": "true",
            "nginx_probe_address": f"127.0.0.1:{nginx.https_port}",
        }
        return start_operator(**{**wired, **overrides})  # a test may rewire one of them

    return start


def ready(obj: dict[str, object]) -> bool:
    return phase_of(obj) in ("Ready", "Failed")


def test_apply_to_served_over_https_with_the_issued_certificate(
    cluster: Cluster,
    serving_operator: OperatorFactory,
    nginx: NginxServer,
    pebble: Pebble,
    tmp_path: Path,
) -> None:
    serving_operator()
    hostname = "shop.example.com"
    started = time.monotonic()
    kube.apply_manifests(cluster, [kube.virtualhost("shop", hostname)], tmp_path)
    host = wait_for(cluster, "vh", "shop", ready, what="Ready", timeout=90)
    elapsed = time.monotonic() - started
    assert phase_of(host) == "Ready", host["status"]
    final = next(e for e in host["status"]["chain"] if e["step"] == "final")
    serial = host["status"]["certificate"]["serial"]
    assert final["message"].endswith(f"served with certificate {serial}")

    root = pebble.root_pem()
    status, body = https_request(nginx.https_port, hostname, root)
    assert (status, body) == (200, f"upstream for {hostname}\n")
    leaf = served_certificate(nginx.https_port, hostname)
    assert leaf is not None and format(leaf.serial_number, "x") == serial
    assert hostname in leaf.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value.get_values_for_type(x509.DNSName)
    redirect, _, headers = http_request(nginx.http_port, hostname)
    assert redirect == 301
    assert headers["Location"] == f"https://{hostname}:{nginx.https_port}/"
    print(f"\napply -> Ready (served over HTTPS) for one host: {elapsed:.2f}s")


def test_disable_and_enable_in_nginx_then_delete(
    cluster: Cluster,
    serving_operator: OperatorFactory,
    nginx: NginxServer,
    pebble: Pebble,
    tmp_path: Path,
) -> None:
    serving_operator()
    hostname = "toggle.example.com"
    kube.apply_manifests(cluster, [kube.virtualhost("toggle", hostname)], tmp_path)
    assert phase_of(wait_for(cluster, "vh", "toggle", ready, what="Ready", timeout=90)) == "Ready"
    assert https_request(nginx.https_port, hostname, pebble.root_pem())[0] == 200

    cluster.kubectl("patch", "vh", "toggle", "--type=merge", "-p", '{"spec":{"enabled":false}}')
    eventually(lambda: served_certificate(nginx.https_port, hostname) is None, "site dropped")
    assert (nginx.root / "sites-available" / f"{hostname}.conf").exists(), "its config stays"
    cluster.kubectl("patch", "vh", "toggle", "--type=merge", "-p", '{"spec":{"enabled":true}}')
    # Until the old workers of the previous reload have drained, a connection can still land on
    # one that does not know the site: wait for a verified answer, not just any handshake.
    eventually(lambda: serves_verified(nginx, hostname, pebble.root_pem()), "site back")

    cluster.kubectl("delete", "vh", "toggle", "--timeout=60s")
    eventually(lambda: http_status(nginx.http_port, hostname) == 404, "default server")
    assert not (nginx.root / "sites-available" / f"{hostname}.conf").exists()
    assert not (nginx.root / "certs" / hostname).exists()
    leftovers = cluster.kubectl("get", "configmaps,secrets", "-n", kube.NAMESPACE, "-o", "name")
    assert "toggle" not in leftovers.stdout


def test_renewal_is_served_by_nginx(
    cluster: Cluster,
    serving_operator: OperatorFactory,
    nginx: NginxServer,
    pebble: Pebble,
    tmp_path: Path,
) -> None:
    serving_operator()  # nothing is due for years: the test asks for its one renewal below
    hostname = "renew.example.com"
    kube.apply_manifests(cluster, [kube.virtualhost("renew", hostname)], tmp_path)
    host = wait_for(cluster, "vh", "renew", ready, what="Ready", timeout=90)
    first = host["status"]["certificate"]["serial"]

    # Exactly one renewal: nothing renews after it, so nginx must end up serving its certificate.
    renewed = renew(cluster, "renew", "served-by-nginx")
    [renewal] = [c for c in renewed["status"]["conditions"] if c["type"] == "CertificateRenewal"]
    assert renewal["status"] == "True", renewal
    serial = renewed["status"]["certificate"]["serial"]
    assert serial != first

    def served() -> bool:
        leaf = served_certificate(nginx.https_port, hostname)
        return leaf is not None and format(leaf.serial_number, "x") == serial

    eventually(served, "nginx serving the renewed certificate", timeout=60)
    assert https_request(nginx.https_port, hostname, pebble.root_pem())[0] == 200


def test_additional_names_share_one_certificate_and_a_changed_list_is_reissued_while_serving(
    cluster: Cluster,
    serving_operator: OperatorFactory,
    nginx: NginxServer,
    pebble: Pebble,
    tmp_path: Path,
) -> None:
    """Every name is validated through nginx (one HTTP-01 authorization each), one certificate
    names them all, and nginx serves it for each name by SNI. Adding a name re-runs the chain
    (Pending, then Ready with a new certificate) while the current certificate keeps being
    served: every handshake during the change verifies."""
    serving_operator()
    hostname, imap, autoconfig = (f"{n}.sans.example.com" for n in ("mail", "imap", "autoconfig"))
    manifest = kube.virtualhost("sans", hostname, additionalNames=[imap])
    kube.apply_manifests(cluster, [manifest], tmp_path)
    host = wait_for(cluster, "vh", "sans", ready, what="Ready", timeout=90)
    assert phase_of(host) == "Ready", host["status"]
    first = host["status"]["certificate"]
    assert first["names"] == [hostname, imap]
    root = pebble.root_pem()
    for name in (hostname, imap):
        assert https_request(nginx.https_port, name, root) == (200, f"upstream for {name}\n")
        assert served_names(nginx, name) == (first["serial"], [hostname, imap])

    changed = time.monotonic()
    cluster.kubectl(
        "patch",
        "vh",
        "sans",
        "--type=merge",
        "-p",
        f'{{"spec":{{"additionalNames":["{imap}","{autoconfig}"]}}}}',
    )
    phases, serials, failures = [], set(), []
    while time.monotonic() - changed < 90:
        current = get_object(cluster, "vh", "sans") or {}
        phases.append(phase_of(current))
        try:  # the hostname stays served with a valid certificate throughout
            assert https_request(nginx.https_port, hostname, root)[0] == 200
            serials.add(served_names(nginx, hostname)[0])
        except (OSError, ssl.SSLError, AssertionError) as error:
            failures.append(repr(error))
        certificate = current.get("status", {}).get("certificate") or {}
        if phase_of(current) == "Ready" and certificate.get("serial") != first["serial"]:
            break
        time.sleep(0.1)
    elapsed = time.monotonic() - changed
    assert phase_of(current) == "Ready", current.get("status")
    assert failures == [], failures
    second = current["status"]["certificate"]
    assert second["names"] == [hostname, imap, autoconfig]
    chain = {entry["step"]: entry for entry in current["status"]["chain"]}
    assert chain["bootstrap"]["message"].startswith("current certificate kept serving")
    assert f"certificate {second['serial']} issued by order" in chain["certificate"]["message"]
    assert serials <= {first["serial"], second["serial"]}
    for name in (hostname, imap, autoconfig):
        eventually(lambda n=name: serves_verified(nginx, n, root), f"{name} served")
        assert served_names(nginx, name) == (second["serial"], [hostname, imap, autoconfig])
    print(
        f"\nadditionalNames changed -> Ready with {second['names']} in {elapsed:.2f}s; "
        f"phases seen: {sorted(set(phases), key=phases.index)}; "
        f"serials served meanwhile: {sorted(serials)} (first {first['serial']})"
    )


def test_mta_sts_policy_is_served_for_each_linked_domain_with_its_name_in_the_certificate(
    cluster: Cluster,
    serving_operator: OperatorFactory,
    nginx: NginxServer,
    pebble: Pebble,
    tmp_path: Path,
) -> None:
    """``spec.mtaSts`` puts mta-sts.<domain> of every linked domain into the certificate, and a
    sending server fetching the policy over verified HTTPS gets it as text/plain; linking one
    more domain re-issues the certificate with that domain's policy host."""
    serving_operator()
    hostname = "mail.sts.example.com"
    policy = {"mode": "enforce", "mx": [hostname, "*.mx.sts.example.com"], "maxAge": 86400}
    manifest = kube.virtualhost("sts", hostname, domains=["sts.example.com"], mtaSts=policy)
    kube.apply_manifests(cluster, [manifest], tmp_path)
    host = wait_for(cluster, "vh", "sts", ready, what="Ready", timeout=90)
    assert phase_of(host) == "Ready", host["status"]
    assert host["status"]["certificate"]["names"] == [hostname, "mta-sts.sts.example.com"]
    expected = (
        f"version: STSv1\nmode: enforce\nmx: {hostname}\nmx: *.mx.sts.example.com\nmax_age: 86400\n"
    )
    root = pebble.root_pem()
    status, body, headers = https_exchange(
        nginx.https_port, "mta-sts.sts.example.com", root, "/.well-known/mta-sts.txt"
    )
    assert (status, body) == (200, expected)
    assert headers["content-type"] == "text/plain"
    print(f"\nhttps://mta-sts.sts.example.com/.well-known/mta-sts.txt:\n{body}")

    cluster.kubectl(
        "patch",
        "vh",
        "sts",
        "--type=merge",
        "-p",
        '{"spec":{"domains":["sts.example.com","sts.example.org"]}}',
    )

    def reissued() -> bool:
        names = (
            (get_object(cluster, "vh", "sts") or {}).get("status", {}).get("certificate") or {}
        ).get("names")
        return names == [hostname, "mta-sts.sts.example.com", "mta-sts.sts.example.org"]

    eventually(reissued, "a certificate with the new domain's policy host", timeout=90)
    eventually(
        lambda: serves_verified(nginx, "mta-sts.sts.example.org", root), "the new policy host"
    )
    assert https_exchange(
        nginx.https_port, "mta-sts.sts.example.org", root, "/.well-known/mta-sts.txt"
    )[:2] == (200, expected)
    assert served_names(nginx, hostname)[1] == [
        hostname,
        "mta-sts.sts.example.com",
        "mta-sts.sts.example.org",
    ]


def served_names(nginx: NginxServer, hostname: str) -> tuple[str, list[str]]:
    """The serial and SAN list of the certificate nginx presents for SNI ``hostname``."""
    leaf = served_certificate(nginx.https_port, hostname)
    assert leaf is not None, f"no certificate served for {hostname}"
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return format(leaf.serial_number, "x"), san.get_values_for_type(x509.DNSName)


def serves_verified(nginx: NginxServer, hostname: str, root: bytes) -> bool:
    try:
        return https_request(nginx.https_port, hostname, root)[0] == 200
    except (OSError, ssl.SSLError):
        return False


def eventually(probe: object, what: str, timeout: float = 30) -> None:
    assert callable(probe)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return
        time.sleep(0.2)
    raise AssertionError(f"no {what} within {timeout}s")
