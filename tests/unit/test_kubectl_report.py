"""What ``kubectl vhost`` prints (``vhost_operator.kubectl.report``), and where it finds its
credentials: pure functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.unit.builders import virtualhost_body
from vhost_operator.kube.admin import kubeconfig_files
from vhost_operator.kubectl import report
from vhost_operator.kubectl.report import SiteReport
from vhost_operator.resources import labels
from vhost_operator.resources.models import VirtualHost

NOW = datetime(2026, 11, 27, 18, 0, tzinfo=UTC)
SELF_CHECK = (
    "self-check of http://mail.example.com/.well-known/acme-challenge/: could not connect; port "
    "80 is closed or blocked, or DNS does not point at this cluster"
)


def at(minutes: float) -> str:
    return (NOW + timedelta(minutes=minutes)).isoformat()


def entry(step: str, state: str, start: float | None = None, end: float | None = None) -> Any:
    found: dict[str, Any] = {"step": step, "state": state}
    if start is not None:
        found["startedAt"] = at(start)
    if end is not None:
        found["finishedAt"] = at(end)
    return found


CERTIFICATE = {
    "secretName": "vhost-ready-tls",
    "notBefore": at(-60 * 24),
    "notAfter": at(60 * 24 * 89),
    "serial": "4f2a9c",
    "renewalTime": at(60 * 24 * 59),
}


def host(name: str = "mail", **status: Any) -> VirtualHost:
    metadata = {"name": name, "uid": "u", "generation": 1}
    body = virtualhost_body(
        f"{name}.example.com", metadata=metadata, status=status, domains=["example.com"]
    )
    return VirtualHost.from_body(body)


def failed_host() -> VirtualHost:
    return host(
        phase="Failed",
        failedAttempts=1,
        lastFailureTime=at(-3),
        error={"step": "certificate", "message": SELF_CHECK, "at": at(-3)},
        chain=[
            entry("bootstrap", "Succeeded", -4, -3.9),
            entry("certificate", "Failed", -3.9, -3),
            entry("final", "Cancelled"),
            entry("ready", "Cancelled"),
        ],
    )


def ready_host(name: str = "mail") -> VirtualHost:
    return host(
        name,
        phase="Ready",
        certificate=CERTIFICATE,
        chain=[
            entry("bootstrap", "Succeeded", -10, -9.9),
            entry("certificate", "Succeeded", -9.9, -9),
            entry("final", "Succeeded", -9, -8.5),
            entry("ready", "Succeeded", -8.5, -8.5),
        ],
    )


def site(
    *,
    published: str = "abc123",
    applied: str | None = "abc123",
    serial: str | None = "4f2a9c",
    error: str | None = None,
    enabled: bool = True,
    stage: str = "final",
) -> SiteReport:
    annotations = {
        "vhost-operator.io/virtualhost": "mail",
        "vhost-operator.io/stage": stage,
        "vhost-operator.io/enabled": "true" if enabled else "false",
        "vhost-operator.io/config-hash": published,
    }
    for key, value in (
        ("applied-config-hash", applied),
        ("applied-certificate-serial", serial),
        ("apply-error", error),
    ):
        if value is not None:
            annotations[f"vhost-operator.io/{key}"] = value
    return SiteReport.of(
        {"metadata": {"name": "vhost-mail", "namespace": "web", "annotations": annotations}}
    )


def assert_fits(text: str) -> None:
    too_wide = [line for line in text.splitlines() if len(line) > report.WIDTH]
    assert too_wide == []


def test_status_of_a_failed_host_says_why_and_what_to_do() -> None:
    text = report.status_text(failed_host(), None, now=NOW)
    assert_fits(text)
    assert text.startswith("VirtualHost mail: mail.example.com is Failed\n")
    assert "certificate  Failed     2026-11-27 17:56:06Z  2026-11-27 17:57:00Z  54.0s" in text
    assert "final        Cancelled" in text
    assert "Error:        step certificate, 2026-11-27 17:57:00Z (3m ago)" in text
    assert "Likely cause: the hostname does not reach this cluster's nginx on port 80" in text
    assert "then retry:\n              kubectl vhost retry mail\n" in text
    assert "Failures:     1, last 2026-11-27 17:57:00Z (3m ago)" in text
    assert "Certificate:  none" in text


def test_status_of_a_ready_host_shows_the_window_and_what_nginx_serves() -> None:
    text = report.status_text(ready_host(), site(), now=NOW)
    assert_fits(text)
    assert "is Ready" in text and "Error:" not in text
    assert "  notAfter    2027-02-24 18:00:00Z (in 89d)" in text
    assert "  renewalTime 2027-01-25 18:00:00Z (in 59d)" in text
    assert "ConfigMap web/vhost-mail: the final config abc123, enabled" in text
    assert "nginx runs it (the agent reports abc123 applied)" in text
    assert "certificate: nginx serves serial 4f2a9c" in text


def test_status_says_whether_the_mail_services_serve_the_certificate() -> None:
    condition = {
        "type": "MailServing",
        "status": "False",
        "reason": "Refused",
        "message": "dovecot: doveconf -n failed",
        "lastTransitionTime": at(-1),
    }
    refused = host(phase="Ready", certificate=CERTIFICATE, conditions=[condition])
    assert "  mail: NOT serving (Refused): dovecot: doveconf -n failed" in report.status_text(
        refused, site(), now=NOW
    )
    serving = {**condition, "status": "True", "reason": "Serving", "message": "dovecot serves"}
    text = report.status_text(host(certificate=CERTIFICATE, conditions=[serving]), None, now=NOW)
    assert "  mail: dovecot serves" in text
    assert "  mail: " not in report.status_text(ready_host(), site(), now=NOW)


def test_a_running_step_shows_for_how_long() -> None:
    pending = host(phase="Pending", chain=[entry("bootstrap", "Running", -2)])
    text = report.status_text(pending, None, now=NOW)
    assert (
        "bootstrap    Running    2026-11-27 17:58:00Z  -                     running for 2m" in text
    )


@pytest.mark.parametrize(
    ("kwargs", "label"),
    [
        ({}, "final"),
        ({"applied": "old999"}, "applying"),
        ({"error": "abc123: host not found in upstream"}, "rejected"),
        ({"error": "old999: an earlier config's error"}, "final"),
        ({"enabled": False}, "disabled"),
        ({"serial": "1111"}, "old cert"),
        ({"stage": "bootstrap", "serial": None}, "bootstrap"),
    ],
)
def test_serving_label(kwargs: dict[str, Any], label: str) -> None:
    assert report.serving_label(site(**kwargs), "4f2a9c") == label


def test_only_an_error_about_the_published_config_counts_as_rejected() -> None:
    lines = report.serving_lines(site(error="old999: bad directive"), "4f2a9c")
    assert "nginx runs it (the agent reports abc123 applied)" in lines
    assert "earlier error (about another config): old999: bad directive" in lines
    rejected = report.serving_lines(site(applied="old999", error="abc123: bad directive"), None)
    assert "nginx REJECTED it: bad directive" in rejected
    assert report.serving_lines(None, None)[0].startswith("no site ConfigMap")


def test_list_fits_in_a_terminal_and_filters_failed_hosts() -> None:
    long_name = "a-very-long-virtualhost-name-for-a-customer-with-a-long-domain"
    failing = failed_host().model_copy(update={"name": long_name})
    hosts = [ready_host("ready"), failing, host("new")]
    table = report.list_table(hosts, {"ready": site()}, now=NOW)
    assert_fits(table)
    lines = table.splitlines()
    assert lines[0].split() == ["NAME", "HOSTNAME", "PHASE", "STEP", "CERT", "EXPIRES", "NGINX"]
    assert [line.split()[0] for line in lines[1:]] == ["a-very-long-virtualho…", "new", "ready"]
    assert lines[1].split()[2:5] == ["Failed", "certificate", "-"]
    assert lines[3].split()[2:] == ["Ready", "-", "in", "89d", "final"]
    failed = report.list_table(hosts, {}, now=NOW, failed_only=True).splitlines()
    assert len(failed) == 2 and "Failed" in failed[1]
    assert report.list_table([ready_host()], {}, now=NOW, failed_only=True) == (
        "No Failed VirtualHosts.\n"
    )


@pytest.mark.parametrize(
    ("message", "cause"),
    [
        (SELF_CHECK, "port 80"),
        (
            "self-check of http://h/.well-known/acme-challenge/: the answer is not this order's "
            "challenge",
            "DNS points at another server",
        ),
        ("cannot reach the ACME server https://ca while ordering", "wrong ACME directory URL"),
        ("the CA at https://ca requires External Account Binding; configure", "External Account"),
        ("nginx did not apply the config within 60s; is the nginx agent running", "no nginx agent"),
        ("nginx rejected the config: unknown directive", "nginx refused this host's config"),
    ],
)
def test_known_failures_have_a_likely_cause(message: str, cause: str) -> None:
    diagnosis = report.diagnose(message)
    assert diagnosis is not None and cause in diagnosis.cause


def test_an_unknown_failure_has_no_made_up_cause() -> None:
    assert report.diagnose("something nobody has seen") is None
    text = report.status_text(
        host(phase="Failed", error={"step": "final", "message": "odd", "at": at(-1)}), None, now=NOW
    )
    assert "Likely cause" not in text
    assert "What to do:   fix the cause above; then retry:\n" in text


def test_a_refused_retry_is_explained_in_plain_words() -> None:
    running = host(phase="Pending", chain=[entry("certificate", "Running", -1)])
    webhook = "retry refused: VirtualHost mail is Pending; ..."
    text = report.explain_refused_retry(running, "mail", webhook, NOW)
    assert_fits(text)
    assert "409 Conflict" in text
    assert "step certificate started 1m ago" in " ".join(text.split())
    assert "fights the one in flight" in " ".join(text.split())
    ready = report.explain_refused_retry(ready_host(), "mail", webhook, NOW)
    assert "nothing to retry" in ready and "\n  kubectl vhost renew mail\n" in ready


def test_renewal_is_refused_where_the_operator_would_ignore_it() -> None:
    assert report.renew_refusal(ready_host()) is None
    failed = report.renew_refusal(failed_host().model_copy(deep=True))
    assert failed is not None and "no certificate" in failed
    with_certificate = host(phase="Failed", certificate=CERTIFICATE)
    refused = report.renew_refusal(with_certificate)
    assert refused is not None and "kubectl vhost retry mail" in refused
    pending = report.renew_refusal(host(phase="Pending", certificate=CERTIFICATE))
    assert pending is not None and "in flight" in pending


def test_relative_times() -> None:
    assert report.relative(NOW + timedelta(days=3, hours=5), NOW) == "in 3d"
    assert report.relative(NOW - timedelta(seconds=90), NOW) == "1m ago"
    assert report.relative(NOW, NOW) == "in 0s"


def test_credentials_are_found_like_kubectl(tmp_path: Path) -> None:
    assert kubeconfig_files("/flag", "/env", tmp_path) == "/flag"
    assert kubeconfig_files(None, "/a:/b", tmp_path) == "/a:/b"
    assert kubeconfig_files(None, None, tmp_path) is None  # in-cluster
    (tmp_path / ".kube").mkdir()
    (tmp_path / ".kube" / "config").write_text("{}")
    assert kubeconfig_files(None, "", tmp_path) == str(tmp_path / ".kube" / "config")


def test_status_shows_where_the_renewal_time_comes_from() -> None:
    window = {"start": at(60 * 24 * 58), "end": at(60 * 24 * 60), "source": "ari"}
    ari = host(phase="Ready", certificate={**CERTIFICATE, "renewalWindow": window, "profile": "x"})
    text = report.status_text(ari, site(), now=NOW)
    assert_fits(text)
    assert (
        "  window      2027-01-24 18:00:00Z .. 2027-01-26 18:00:00Z (the CA's renewal information)"
        in text
    )
    assert "  profile     x" in text
    instant = {"start": at(60 * 24 * 59), "end": at(60 * 24 * 59), "source": "lifetime"}
    lifetime = host(phase="Ready", certificate={**CERTIFICATE, "renewalWindow": instant})
    text = report.status_text(lifetime, site(), now=NOW)
    assert "  window      the lifetime rule (RENEWAL_FRACTION), no renewal information" in text


def test_status_shows_the_certificates_names_and_a_changed_list() -> None:
    names = ["mail.example.com", "imap.example.com"]
    covered = host(phase="Ready", certificate={**CERTIFICATE, "names": names})
    text = report.status_text(covered, site(), now=NOW)
    assert "  names       mail.example.com, imap.example.com" in text
    assert "a new certificate is due" in text, "imap is not in the spec"
    assert "(-imap.example.com)" in text
    assert_fits(text)
    in_spec = covered.model_copy(
        update={"spec": covered.spec.model_copy(update={"additional_names": ["imap.example.com"]})}
    )
    assert "a new certificate is due" not in report.status_text(in_spec, site(), now=NOW)


def test_with_several_replicas_the_lagging_one_stands_for_all() -> None:
    annotations = {"vhost-operator.io/stage": "final", "vhost-operator.io/config-hash": "abc123"}
    for replica, applied in (("nginx-a", "abc123"), ("nginx-b", "old999")):
        keys = labels.report_keys(replica)
        annotations[keys.config_hash] = applied
        annotations[keys.serial] = "4f2a9c"
    several = SiteReport.of({"metadata": {"name": "vhost-mail", "annotations": annotations}})
    assert several.lagging == ["nginx-b"]
    assert report.serving_label(several, "4f2a9c") == "applying"
    lines = report.serving_lines(several, "4f2a9c")
    assert "reports from nginx replicas nginx-a, nginx-b; behind: nginx-b" in lines
    assert any(line.startswith("nginx still runs old999") for line in lines)
