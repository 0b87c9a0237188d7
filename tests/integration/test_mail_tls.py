"""The mail TLS agent on real servers: Debian's Postfix and Dovecot on loopback ports, the
certificates issued by pebble through the operator's normal chain (or self-signed, where the
test needs to change them at will), TLS clients that send SNI as mail clients do.

Each handshake is checked for the certificate of the name asked for (verified against pebble's
root where pebble issued it), on SMTP with STARTTLS, submissions and IMAPS (implicit TLS) and IMAP
with STARTTLS.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cryptography import x509

from tests.harness import kube
from tests.harness.agent import MailTlsAgentProcess
from tests.harness.clusters import Cluster
from tests.harness.mail import (
    IMAP,
    IMAPS,
    SMTP,
    SUBMISSIONS,
    MailServers,
    Session,
    client_context,
    served_leaf,
)
from tests.harness.nginx import self_signed_certificate
from tests.harness.pebble import Pebble
from tests.harness.processes import unverified_tls
from tests.harness.waiting import get_object, phase_of, renew, wait_for
from tests.integration.conftest import OperatorFactory
from vhost_operator.certs import inspect_certificate
from vhost_operator.resources import labels
from vhost_operator.resources.mailtls import decode
from vhost_operator.resources.naming import tls_secret_name

pytestmark = pytest.mark.cluster

REPORT = "vhost-mail-tls"
RENEWAL = "mail-tls-renewal-1"
KINDS = (SMTP, SUBMISSIONS, IMAP, IMAPS)
SERVICE_OF = {SMTP: "postfix", SUBMISSIONS: "postfix", IMAP: "dovecot", IMAPS: "dovecot"}
T = TypeVar("T")


@pytest.fixture(scope="module")
def mail() -> Iterator[MailServers]:
    with MailServers() as servers:
        yield servers


@pytest.fixture(scope="module")
def mail_agent(cluster: Cluster, mail: MailServers) -> Iterator[MailTlsAgentProcess]:
    kube.ensure_namespace(cluster)
    cluster.kubectl("create", "configmap", REPORT, "-n", kube.NAMESPACE)
    agent = MailTlsAgentProcess(cluster.kubeconfig, mail, kube.NAMESPACE, REPORT)
    try:
        yield agent.start()
    finally:
        agent.stop()
        cluster.kubectl("delete", "configmap", REPORT, "-n", kube.NAMESPACE, "--ignore-not-found")
        cluster.kubectl(
            "delete",
            "secrets",
            "-n",
            kube.NAMESPACE,
            "-l",
            f"{labels.COMPONENT}={labels.TLS_COMPONENT}",
            "--ignore-not-found",
            "--wait=false",  # kubectl's wait reads a hundred Secrets back at 5 a second
        )


def eventually(probe: Callable[[], T | None], *, timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout}s")
        time.sleep(0.1)


def serial(certificate: x509.Certificate) -> str:
    return format(certificate.serial_number, "x")


def report(cluster: Cluster) -> dict[str, Any]:
    found = cluster.kubectl("get", "configmap", REPORT, "-n", kube.NAMESPACE, "-o", "json")
    data: dict[str, str] = json.loads(found.stdout).get("data") or {}
    return {secret: decode(value) for secret, value in data.items()}


def served_serial(mail: MailServers, kind: str, sni: str, context: Any = None) -> str | None:
    try:
        return serial(served_leaf(kind, mail.ports[kind], sni, context or unverified_tls()))
    except (OSError, AssertionError):
        return None  # not served yet (e.g. the default certificate fails verification)


def wait_served(
    mail: MailServers, kind: str, sni: str, accept: Callable[[str], bool], context: Any = None
) -> str:
    """Until a new session with ``sni`` gets a certificate whose serial ``accept`` takes."""

    def probe() -> str | None:
        found = served_serial(mail, kind, sni, context)
        return found if found is not None and accept(found) else None

    return eventually(probe, timeout=30, what=f"{kind} serving the certificate for {sni}")


def mail_serving(serial: str | None) -> Callable[[dict[str, Any]], bool]:
    """A VirtualHost whose MailServing is True for ``serial`` (``None``: its current one)."""

    def check(host: dict[str, Any]) -> bool:
        status = host.get("status") or {}
        wanted = serial or (status.get("certificate") or {}).get("serial")
        return (
            any(
                c["type"] == "MailServing"
                and c["status"] == "True"
                and c["message"] == f"dovecot, postfix serve certificate {wanted}"
                for c in status.get("conditions") or ()
            )
            and (status.get("certificate") or {}).get("serial") == wanted
        )

    return check


def all_serve(mail: MailServers, sni: str, wanted: str, kinds: tuple[str, ...] = KINDS) -> bool:
    return all(served_serial(mail, kind, sni) == wanted for kind in kinds)


# -- two hosts issued by pebble, then renewed ---------------------------------------------------


def test_each_host_gets_its_pebble_certificate_everywhere_and_renewals_keep_sessions(
    cluster: Cluster,
    start_operator: OperatorFactory,
    pebble: Pebble,
    mail: MailServers,
    mail_agent: MailTlsAgentProcess,
    tmp_path: Path,
) -> None:
    start_operator()  # nothing is due for years: the test asks for its one renewal below
    hosts = {"mx-a": "mx-a.example.com", "mx-b": "mx-b.example.com"}
    kube.apply_manifests(
        cluster, [kube.virtualhost(name, hostname) for name, hostname in hosts.items()], tmp_path
    )
    serials = {}
    for name in hosts:
        ready = wait_for(
            cluster, "vh", name, lambda o: phase_of(o) == "Ready", what="Ready", timeout=90
        )
        serials[name] = ready["status"]["certificate"]["serial"]

    context = client_context(pebble.root_pem())
    table = []
    for name, hostname in hosts.items():
        for kind in KINDS:
            # Verified: pebble's root, and the name asked for (check_hostname).
            served = wait_served(mail, kind, hostname, serials[name].__eq__, context)
            table.append((kind, SERVICE_OF[kind], hostname, served))
    assert serials["mx-a"] != serials["mx-b"]
    for name in hosts:
        host = wait_for(
            cluster, "vh", name, mail_serving(serials[name]), what="MailServing", timeout=30
        )
        # The agent reports after its reload: only MailServing (made from the report) says
        # that the report is there; a served certificate does not.
        entry = report(cluster)[tls_secret_name(name)]
        assert entry.serving == {"postfix": serials[name], "dovecot": serials[name]}, entry
        assert not entry.errors
        [condition] = [c for c in host["status"]["conditions"] if c["type"] == "MailServing"]
        print(f"\n{name}: MailServing={condition['status']} {condition['message']}")
    print("\nTLS handshakes (service, port kind, SNI, serial served):")
    for kind, service, hostname, served in table:
        print(f"  {service:8} {kind:12} {hostname:18} {served}")

    # Sessions established with the first certificate stay up across the renewal's reloads.
    sessions = [Session(kind, mail.ports[kind], hosts["mx-a"], context) for kind in KINDS]
    first = serials["mx-a"]
    reloads = mail_agent.reloads()
    # Exactly one renewal, asked for as the renewal scanner asks for one when a certificate is
    # due: nothing renews after it, so every check below looks at that renewal's certificate.
    # (A lifetime rule that makes each certificate due seconds after issuance renews it again
    # and again, and MailServing then chases a serial that keeps changing.)
    host = renew(cluster, "mx-a", RENEWAL)
    renewal = [c for c in host["status"]["conditions"] if c["type"] == "CertificateRenewal"]
    assert [c["status"] for c in renewal] == ["True"], renewal
    renewed = host["status"]["certificate"]["serial"]
    assert renewed != first
    new = {kind: wait_served(mail, kind, hosts["mx-a"], renewed.__eq__, context) for kind in KINDS}
    for session in sessions:
        assert session.alive(), f"{session.kind} session dropped by the reload"
        assert serial(session.leaf) == first
        session.close()
    after = mail_agent.reloads()
    assert all(after[service] > reloads[service] for service in ("postfix", "dovecot")), after
    wait_for(cluster, "vh", "mx-a", mail_serving(renewed), what="MailServing", timeout=30)
    entry = report(cluster)[tls_secret_name("mx-a")]
    assert entry.serving == {"postfix": renewed, "dovecot": renewed}, entry
    assert not entry.errors
    # The other host was not renewed, and keeps its certificate on every port.
    for kind in KINDS:
        wait_served(mail, kind, hosts["mx-b"], serials["mx-b"].__eq__, context)
    other = get_object(cluster, "vh", "mx-b")
    assert other is not None and other["status"]["certificate"]["serial"] == serials["mx-b"]
    print(
        f"renewal of mx-a.example.com: {first} -> {new}; sessions opened before it all still "
        f"answer NOOP; reloads postfix {after['postfix'] - reloads['postfix']}, "
        f"dovecot {after['dovecot'] - reloads['dovecot']}"
    )


# -- refusals: the last good state keeps serving -----------------------------------------------


def apply_secrets(cluster: Cluster, secrets: list[dict[str, Any]], tmp_path: Path) -> None:
    path = tmp_path / f"secrets-{time.monotonic_ns()}.json"
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": secrets}))
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))


def self_signed_secret(name: str, hostname: str) -> tuple[dict[str, Any], str]:
    chain, key = self_signed_certificate([hostname])
    return kube.tls_secret(name, chain, key), inspect_certificate(chain).serial


def wait_report(cluster: Cluster, secret: str, accept: Callable[[Any], bool]) -> Any:
    def probe() -> Any:
        entry = report(cluster).get(secret)
        return entry if entry is not None and accept(entry) else None

    return eventually(probe, timeout=60, what=f"the report on {secret}")


@pytest.mark.parametrize(
    ("refusing", "config", "breakage"),
    [
        pytest.param("postfix", "postfix_main_cf", "this line is no parameter\n", id="postfix"),
        pytest.param("dovecot", "dovecot_conf", "}\n", id="dovecot"),
    ],
)
def test_a_config_one_service_refuses_is_reported_and_the_other_serves_on(
    cluster: Cluster,
    mail: MailServers,
    mail_agent: MailTlsAgentProcess,
    tmp_path: Path,
    refusing: str,
    config: str,
    breakage: str,
) -> None:
    hostname = f"refuse-{refusing}.example.com"
    secret, first = self_signed_secret(f"refuse-{refusing}-tls", hostname)
    name = secret["metadata"]["name"]
    apply_secrets(cluster, [secret], tmp_path)
    wait_report(cluster, name, lambda e: e.serving == {"postfix": first, "dovecot": first})
    assert all_serve(mail, hostname, first)

    path: Path = getattr(mail, config)
    original = path.read_text()
    refusals = mail_agent.metrics()[f"vhost_mail_tls_{refusing}_refusals_total"]
    other = "dovecot" if refusing == "postfix" else "postfix"
    try:
        path.write_text(original + breakage)
        renewed, second = self_signed_secret(name, hostname)
        apply_secrets(cluster, [renewed], tmp_path)
        entry = wait_report(cluster, name, lambda e: refusing in e.errors)
        print(f"\n{refusing} refused: {entry.errors[refusing]}")
        assert entry.serving == {refusing: first, other: second}, entry
        assert mail_agent.metrics()[f"vhost_mail_tls_{refusing}_refusals_total"] > refusals
        # The refusing service still serves the last good certificate; the other, the new one.
        kinds = {kind for kind in KINDS if SERVICE_OF[kind] == refusing}
        assert all_serve(mail, hostname, first, tuple(kinds))
        assert all_serve(mail, hostname, second, tuple(set(KINDS) - kinds))
    finally:
        path.write_text(original)
    # Fixed: the agent's retry brings the refusing service to the new certificate.
    wait_report(cluster, name, lambda e: e.serving[refusing] == second and not e.errors)
    assert all_serve(mail, hostname, second)


def test_a_service_that_is_down_is_reported_and_catches_up_when_it_is_back(
    cluster: Cluster, mail: MailServers, mail_agent: MailTlsAgentProcess, tmp_path: Path
) -> None:
    secret, first = self_signed_secret("down-tls", "down.example.com")
    apply_secrets(cluster, [secret], tmp_path)
    wait_report(cluster, "down-tls", lambda e: e.serving == {"postfix": first, "dovecot": first})
    mail.stop_dovecot()
    try:
        renewed, second = self_signed_secret("down-tls", "down.example.com")
        apply_secrets(cluster, [renewed], tmp_path)
        entry = wait_report(cluster, "down-tls", lambda e: "dovecot" in e.errors)
        print(f"\ndovecot down: {entry.errors['dovecot']}")
        assert entry.serving == {"postfix": second, "dovecot": first}, entry
        assert all_serve(mail, "down.example.com", second, (SMTP, SUBMISSIONS))
    finally:
        mail.start_dovecot()
    # Back: it starts with the agent's current generation, and the retry reloads it.
    wait_report(cluster, "down-tls", lambda e: e.serving["dovecot"] == second and not e.errors)
    assert all_serve(mail, "down.example.com", second)


def test_a_secret_with_a_broken_key_is_reported_and_takes_no_other_host_down(
    cluster: Cluster, mail: MailServers, mail_agent: MailTlsAgentProcess, tmp_path: Path
) -> None:
    good, good_serial = self_signed_secret("good-tls", "good.example.com")
    chain, _ = self_signed_certificate(["broken.example.com"])
    _, other_key = self_signed_certificate(["elsewhere.example.com"])
    broken = kube.tls_secret("broken-tls", chain, other_key)  # a key of another certificate
    apply_secrets(cluster, [good, broken], tmp_path)
    entry = wait_report(cluster, "broken-tls", lambda e: bool(e.errors))
    assert "does not belong to the certificate" in entry.errors["postfix"], entry
    wait_report(cluster, "good-tls", lambda e: e.serving["postfix"] == good_serial)
    assert all_serve(mail, "good.example.com", good_serial)


# -- a burst -----------------------------------------------------------------------------------

BURST = 100


def all_reported(cluster: Cluster, serials: dict[str, str]) -> bool:
    """Both services report serving each Secret's serial."""
    found = report(cluster)
    return all(
        found.get(name) is not None
        and found[name].serving == {"postfix": wanted, "dovecot": wanted}
        for name, wanted in serials.items()
    )


def test_a_burst_of_a_hundred_certificate_changes_takes_a_few_reloads(
    cluster: Cluster, mail: MailServers, mail_agent: MailTlsAgentProcess, tmp_path: Path
) -> None:
    names = [f"burst-{i}-tls" for i in range(BURST)]
    lines = []
    for round_ in ("new", "renewed"):
        made = [self_signed_secret(name, f"burst-{i}.example.com") for i, name in enumerate(names)]
        serials = {name: serial_ for name, (_, serial_) in zip(names, made, strict=True)}
        before, started = mail_agent.reloads(), time.monotonic()
        apply_secrets(cluster, [secret for secret, _ in made], tmp_path)

        eventually(
            functools.partial(all_reported, cluster, serials),
            timeout=90,
            what=f"{BURST} {round_} certificates reported",
        )
        elapsed, after = time.monotonic() - started, mail_agent.reloads()
        reloads = {service: after[service] - before[service] for service in after}
        lines.append(
            f"{BURST} {round_} certificates: reloads postfix {reloads['postfix']}, dovecot "
            f"{reloads['dovecot']}; all served and reported after {elapsed:.1f}s"
        )
        for service, count in reloads.items():
            assert 1 <= count <= 5, (service, count)
        for i in (0, BURST - 1):
            assert all_serve(mail, f"burst-{i}.example.com", serials[names[i]])
    print("\n" + "\n".join(lines))


# -- restarts ----------------------------------------------------------------------------------


def test_a_restarted_agent_writes_nothing_new_and_reloads_each_service_once(
    cluster: Cluster, mail: MailServers, mail_agent: MailTlsAgentProcess, tmp_path: Path
) -> None:
    secret, serial_ = self_signed_secret("restart-tls", "restart.example.com")
    apply_secrets(cluster, [secret], tmp_path)
    wait_report(cluster, "restart-tls", lambda e: e.serving["dovecot"] == serial_)
    current = {
        service: (mail.agent_root / service / "current").resolve()
        for service in SERVICE_OF.values()
    }
    for service in current:
        # The current generation and at most the one before it are kept.
        assert len(list((mail.agent_root / service / "generations").iterdir())) <= 2

    mail_agent.stop()
    mail_agent.start()
    assert mail_agent.reloads() == {"postfix": 1, "dovecot": 1}  # the start-up reload only
    for service, generation in current.items():
        assert (mail.agent_root / service / "current").resolve() == generation, service
    assert all_serve(mail, "restart.example.com", serial_)
