"""What ``kubectl vhost`` prints. Pure: objects and the current time in, text out.

Everything fits in :data:`WIDTH` columns: long values are cut (tables) or wrapped (messages).
"""

from __future__ import annotations

import dataclasses
import textwrap
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from vhost_operator.provisioning.serving import Applied, ReplicaReport
from vhost_operator.resources import conditions, labels
from vhost_operator.resources.models import Phase, RenewalWindowStatus, StepState, VirtualHost

WIDTH = 100
RENEWAL_CONDITION = "CertificateRenewal"

HostTest = Callable[[VirtualHost], bool]


# -- the nginx agent's report ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SiteReport:
    """A site ConfigMap: what the operator published and what the nginx agent says nginx runs."""

    namespace: str
    name: str
    virtualhost: str | None
    stage: str | None
    enabled: bool
    applied: Applied

    @classmethod
    def of(cls, configmap: Mapping[str, Any]) -> SiteReport:
        metadata = configmap.get("metadata") or {}
        annotations: dict[str, str] = dict(metadata.get("annotations") or {})
        return cls(
            namespace=str(metadata.get("namespace", "")),
            name=str(metadata.get("name", "")),
            virtualhost=annotations.get(labels.VIRTUALHOST),
            stage=annotations.get(labels.STAGE),
            enabled=annotations.get(labels.ENABLED, "true") == "true",
            applied=Applied.of(annotations),
        )

    @property
    def lagging(self) -> list[str]:
        """The replicas (of several) whose agent reports another config than the published one.
        The plugin does not know which replicas are ready: it shows every report there is."""
        reports = self.applied.reports
        return self.applied.lagging(reports, self.applied.config_hash, None) if reports else []

    @property
    def report(self) -> ReplicaReport:
        """The one report that stands for all: a lagging replica's if one lags."""
        reports = self.applied.reports
        lagging = self.lagging
        if lagging:
            return reports[lagging[0]]
        return reports[min(reports)] if reports else ReplicaReport()

    @property
    def rejected(self) -> str | None:
        """nginx's error about the published config, if it refused that very config."""
        error, published = self.report.error, self.applied.config_hash
        if error and published and error.startswith(f"{published}: "):
            return error.removeprefix(f"{published}: ")
        return None

    @property
    def loaded(self) -> bool:
        published = self.applied.config_hash
        return published is not None and self.report.applied_hash == published


def serving_label(site: SiteReport | None, serial: str | None) -> str:
    """One word or two for the list: what nginx does with this host."""
    if site is None:
        return "-"
    if site.rejected is not None:
        return "rejected"
    if not site.loaded:
        return "applying"
    if not site.enabled:
        return "disabled"
    if site.stage == "final" and serial and site.report.applied_serial != serial:
        return "old cert"
    return site.stage or "serving"


def serving_lines(site: SiteReport | None, serial: str | None) -> list[str]:
    """What nginx serves for the host, as the agent reported it, in sentences."""
    if site is None:
        return [
            "no site ConfigMap: nginx steps are off, the host is disabled and was never "
            "provisioned, or the ConfigMap is in another namespace (--nginx-namespace)"
        ]
    where = f"ConfigMap {site.namespace}/{site.name}"
    stage = site.stage or "unknown"
    published = _short_hash(site.applied.config_hash)
    lines = [f"{where}: the {stage} config {published}, {_enabled(site.enabled)}"]
    if site.rejected is not None:
        lines.append(f"nginx REJECTED it: {site.rejected}")
        lines.append(
            "nginx keeps serving the host's previous config; the other hosts are unaffected"
        )
    elif site.loaded:
        lines.append(f"nginx runs it (the agent reports {published} applied)")
    elif site.report.applied_hash:
        lines.append(
            f"nginx still runs {_short_hash(site.report.applied_hash)}; the agent has not "
            "applied the published config yet (is it running?)"
        )
    else:
        lines.append("the agent has not reported this config as applied yet (is it running?)")
    if len(site.applied.reports) > 1:
        named = ", ".join(sorted(site.applied.reports))
        behind = f"; behind: {', '.join(site.lagging)}" if site.lagging else ""
        lines.append(f"reports from nginx replicas {named}{behind}")
    if site.report.error and site.rejected is None:
        lines.append(f"earlier error (about another config): {site.report.error}")
    served = site.report.applied_serial
    if served:
        if serial and served != serial:
            lines.append(
                f"certificate: nginx serves serial {served}, not the host's current {serial}"
            )
        else:
            lines.append(f"certificate: nginx serves serial {served}")
    elif site.stage == "final" and serial:
        lines.append("certificate: none reported served yet")
    return lines


def _enabled(enabled: bool) -> str:
    return "enabled" if enabled else "disabled (in sites-available only)"


def _short_hash(value: str | None) -> str:
    return value[:12] if value else "(none)"


# -- time -----------------------------------------------------------------------------------


def timestamp(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%SZ") if value is not None else "-"


def relative(value: datetime, now: datetime) -> str:
    """``in 3d`` / ``5m ago``: the largest unit, rounded down."""
    seconds = (value - now).total_seconds()
    span = _span(abs(seconds))
    return f"in {span}" if seconds >= 0 else f"{span} ago"


def _span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def _took(started: datetime | None, finished: datetime | None) -> str:
    if started is None or finished is None:
        return ""
    seconds = (finished - started).total_seconds()
    return f"{seconds:.1f}s" if seconds < 60 else _span(seconds)


# -- likely causes --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Diagnosis:
    cause: str
    fix: str


_DIAGNOSES: tuple[tuple[tuple[str, ...], Diagnosis], ...] = (
    (
        ("self-check", "does not resolve"),
        Diagnosis(
            "the hostname has no DNS record yet",
            "create its DNS record pointing at this cluster's public address, wait for it to "
            "propagate",
        ),
    ),
    (
        ("self-check", "not this order's challenge"),
        Diagnosis(
            "DNS points at another server, or another ACME client answers for the name",
            "point the hostname's DNS at this cluster",
        ),
    ),
    (
        ("self-check", "instead of the challenge"),
        Diagnosis(
            "something other than this nginx answers on port 80, or nginx redirects the "
            "challenge path",
            "point DNS here and let port 80 reach nginx without redirects",
        ),
    ),
    (
        ("self-check",),
        Diagnosis(
            "the hostname does not reach this cluster's nginx on port 80 (DNS not pointing "
            "here yet, or a firewall or load balancer blocks port 80)",
            "fix DNS or the firewall and wait for propagation; on hairpin-NAT networks switch "
            "the self-check off (SELF_CHECK_ENABLED=false)",
        ),
    ),
    (
        ("requires External Account Binding",),
        Diagnosis(
            "the CA needs External Account Binding",
            "set ACME_EAB_KID and ACME_EAB_HMAC_KEY (chart: acme.eab)",
        ),
    ),
    (
        ("cannot reach the ACME server",),
        Diagnosis(
            "wrong ACME directory URL, or no egress from the operator to the CA",
            "fix ACME_DIRECTORY_URL or the network policy",
        ),
    ),
    (
        ("the CA could not validate",),
        Diagnosis(
            "the CA could not fetch the challenge from nginx on port 80 (its view of DNS or the "
            "network differs from the cluster's)",
            "read the CA's detail in the message; check DNS and port 80 from outside",
        ),
    ),
    (
        ("rateLimited",),
        Diagnosis(
            "the CA's rate limit for this name or account",
            "wait until the limit resets (the message says when), then retry",
        ),
    ),
    (
        ("the CA refused", "the CA at"),
        Diagnosis(
            "the CA refused the request",
            "read the CA's reason in the message",
        ),
    ),
    (
        ("did not apply the config within",),
        Diagnosis(
            "no nginx agent reported the config: the agent is not running, or cannot read "
            "the nginx namespace",
            "check the nginx pod and its agent's log",
        ),
    ),
    (
        ("nginx rejected the config",),
        Diagnosis(
            "nginx refused this host's config (the message is nginx's); the other sites keep "
            "serving",
            "fix what nginx names",
        ),
    ),
    (
        ("Kubernetes API answered 403",),
        Diagnosis(
            "the operator's ServiceAccount lacks a permission",
            "check the chart's RBAC and the namespace settings",
        ),
    ),
    (
        ("API server unreachable", "Kubernetes API answered 5"),
        Diagnosis(
            "the API server was unavailable for a while",
            "nothing to fix if it is back",
        ),
    ),
)


def diagnose(message: str) -> Diagnosis | None:
    """The likely cause of a step's error message and what to do, from the known failures
    (README, Troubleshooting). Within one entry any of the words may match, except for the
    self-check entries, which need every word."""
    for words, diagnosis in _DIAGNOSES:
        matches = all if words[0] == "self-check" else any
        if matches(word in message for word in words):
            return diagnosis
    return None


# -- status ---------------------------------------------------------------------------------


def status_text(host: VirtualHost, site: SiteReport | None, *, now: datetime) -> str:
    """``kubectl vhost status NAME``."""
    status = host.status
    phase = status.phase or Phase.PENDING
    lines = [f"VirtualHost {host.name}: {host.spec.hostname} is {phase}"]
    lines += _field("Domains", ", ".join(host.spec.domains) or "(none)")
    lines += _field("Enabled", "yes" if host.spec.enabled else "no")
    if status.failed_attempts:
        last = status.last_failure_time
        when = f", last {timestamp(last)} ({relative(last, now)})" if last else ""
        lines += _field("Failures", f"{status.failed_attempts}{when}")
    lines.append("")
    lines += _chain_lines(host, now)
    if status.error is not None and phase == Phase.FAILED:
        lines.append("")
        error = status.error
        lines += _field(
            "Error", f"step {error.step}, {timestamp(error.at)} ({relative(error.at, now)})"
        )
        lines += _wrapped(error.message, indent="  ")
        diagnosis = diagnose(error.message)
        if diagnosis is not None:
            lines += _field("Likely cause", diagnosis.cause)
        fix = diagnosis.fix if diagnosis is not None else "fix the cause above"
        lines += _field("What to do", f"{fix}; then retry:")
        lines.append(f"{'':14}kubectl vhost retry {host.name}")
    lines.append("")
    lines += _certificate_lines(host, now)
    lines.append("")
    lines.append("nginx (the agent's report):")
    serial = status.certificate.serial if status.certificate else None
    for line in serving_lines(site, serial):
        lines += _wrapped(line, indent="  ")
    return "\n".join(lines) + "\n"


def _field(name: str, value: str) -> list[str]:
    return _wrapped(value, indent=" " * 14, first=f"{name + ':':<14}")


def _wrapped(text: str, *, indent: str, first: str | None = None) -> list[str]:
    return textwrap.wrap(
        text,
        width=WIDTH,
        initial_indent=indent if first is None else first,
        subsequent_indent=indent,
        break_on_hyphens=False,
    ) or [first or indent]


def _chain_lines(host: VirtualHost, now: datetime) -> list[str]:
    chain = host.status.chain
    if not chain:
        return ["Chain:        (not started: is the operator running?)"]
    lines = ["Chain:", f"  {'STEP':<12} {'STATE':<10} {'STARTED':<21} {'FINISHED':<21} TOOK"]
    for entry in chain:
        took = _took(entry.started_at, entry.finished_at)
        if entry.state == StepState.RUNNING and entry.started_at is not None:
            took = f"running for {relative(entry.started_at, now).removesuffix(' ago')}"
        lines.append(
            f"  {entry.step:<12} {entry.state.value:<10} {timestamp(entry.started_at):<21} "
            f"{timestamp(entry.finished_at):<21} {took}".rstrip()
        )
        if entry.message and entry.state != StepState.FAILED:
            lines += _wrapped(entry.message, indent=" " * 15)
    return lines


def _certificate_lines(host: VirtualHost, now: datetime) -> list[str]:
    certificate = host.status.certificate
    if certificate is None:
        return ["Certificate:  none (ACME off, or not issued yet)"]
    lines = _field("Certificate", f"serial {certificate.serial}, Secret {certificate.secret_name}")
    for label, value in (
        ("notBefore", certificate.not_before),
        ("notAfter", certificate.not_after),
        ("renewalTime", certificate.renewal_time),
    ):
        lines.append(f"  {label:<12}{timestamp(value)} ({relative(value, now)})")
    lines += _window_lines(certificate.renewal_window, certificate.profile)
    if certificate.names is not None:
        lines += _wrapped(f"names       {', '.join(certificate.names)}", indent="  ")
        missing = [n for n in host.spec.names if n not in certificate.names]
        extra = [n for n in certificate.names if n not in host.spec.names]
        if missing or extra:
            drift = ", ".join([*(f"+{name}" for name in missing), *(f"-{name}" for name in extra)])
            lines += _wrapped(
                f"the spec names other names ({drift}): a new certificate is due "
                "(ordered once the host is Ready and enabled)",
                indent="  ",
            )
    renewal = next((c for c in host.status.conditions if c.type == RENEWAL_CONDITION), None)
    if renewal is not None:
        outcome = "succeeded" if renewal.status.value == "True" else "FAILED"
        lines += _wrapped(
            f"last renewal {outcome} {timestamp(renewal.last_transition_time)}: {renewal.message}",
            indent="  ",
        )
    mail = next((c for c in host.status.conditions if c.type == conditions.MAIL_SERVING), None)
    if mail is not None:
        verdict = "" if mail.status.value == "True" else f"NOT serving ({mail.reason}): "
        lines += _wrapped(f"mail: {verdict}{mail.message}", indent="  ")
    if not host.spec.enabled:
        lines.append("  the host is disabled: the renewal scanner skips it")
    return lines


def _window_lines(window: RenewalWindowStatus | None, profile: str | None) -> list[str]:
    """Where the renewal time comes from: the CA's suggested window, or the lifetime rule."""
    lines = []
    if window is not None and window.source == "ari":
        lines.append(
            f"  {'window':<12}{timestamp(window.start)} .. {timestamp(window.end)} "
            "(the CA's renewal information)"
        )
    elif window is not None:
        lines.append(
            f"  {'window':<12}the lifetime rule (RENEWAL_FRACTION), no renewal information"
        )
    if profile:
        lines.append(f"  {'profile':<12}{profile}")
    return lines


# -- list -----------------------------------------------------------------------------------

_COLUMNS = (("NAME", 22), ("HOSTNAME", 26), ("PHASE", 7), ("STEP", 11), ("CERT EXPIRES", 12))


def list_table(
    hosts: Iterable[VirtualHost],
    sites: Mapping[str, SiteReport],
    *,
    now: datetime,
    failed_only: bool = False,
) -> str:
    """``kubectl vhost list``: one line per host, at most :data:`WIDTH` columns."""
    header = [name for name, _ in _COLUMNS] + ["NGINX"]
    rows = [header]
    for host in sorted(hosts, key=lambda h: h.name):
        phase = host.status.phase or Phase.PENDING
        if failed_only and phase != Phase.FAILED:
            continue
        certificate = host.status.certificate
        serial = certificate.serial if certificate else None
        rows.append(
            [
                host.name,
                host.spec.hostname,
                phase.value,
                _current_step(host),
                relative(certificate.not_after, now) if certificate else "-",
                serving_label(sites.get(host.name), serial),
            ]
        )
    if len(rows) == 1:
        return "No Failed VirtualHosts.\n" if failed_only else "No VirtualHosts.\n"
    return "\n".join(_row(row) for row in rows) + "\n"


def _current_step(host: VirtualHost) -> str:
    """The step that failed, or the one running, or ``-``."""
    if host.status.error is not None and host.status.phase == Phase.FAILED:
        return host.status.error.step
    running = [e.step for e in host.status.chain if e.state == StepState.RUNNING]
    return running[0] if running else "-"


def _row(cells: Sequence[str]) -> str:
    widths = [width for _, width in _COLUMNS]
    parts = [_cut(cell, width).ljust(width) for cell, width in zip(cells, widths, strict=False)]
    return " ".join([*parts, _cut(cells[-1], 10)]).rstrip()


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


# -- retry and renew ------------------------------------------------------------------------


def explain_refused_retry(
    host: VirtualHost | None, name: str, webhook_message: str, now: datetime
) -> str:
    """Plain words for the webhook's 409 on a retry."""
    lines = [f"The admission webhook refused the retry of {name} (409 Conflict)."]
    if host is None:
        return "\n".join([*lines, webhook_message]) + "\n"
    phase = host.status.phase or Phase.PENDING
    if phase == Phase.PENDING:
        running = next((e for e in host.status.chain if e.state == StepState.RUNNING), None)
        doing = "its provisioning chain is running"
        if running is not None and running.started_at is not None:
            doing = (
                f"its provisioning chain is running: step {running.step} started "
                f"{relative(running.started_at, now)}"
            )
        lines += _wrapped(
            f"{name} is Pending: {doing}. A retry now would start a second chain that fights "
            "the one in flight (two orders at the CA, two configs for nginx), so it is only "
            "accepted once the host is Failed. Wait for the chain to end; if it fails, fix the "
            "cause and retry then. To follow it:",
            indent="",
        )
        lines.append(f"  kubectl vhost status {name}")
    elif phase == Phase.READY:
        lines.append(
            f"{name} is Ready and serving: there is nothing to retry. For a new certificate:"
        )
        lines.append(f"  kubectl vhost renew {name}")
    else:
        lines += _wrapped(webhook_message, indent="")
    return "\n".join(lines) + "\n"


def renew_refusal(host: VirtualHost) -> str | None:
    """Why a renewal request would do nothing now (the operator renews Ready hosts only), or
    ``None`` when it can go ahead."""
    phase = host.status.phase or Phase.PENDING
    if host.status.certificate is None:
        return f"{host.name} holds no certificate (ACME off, or not issued yet): nothing to renew."
    if phase == Phase.FAILED:
        return (
            f"{host.name} is Failed: the operator renews Ready hosts only. Fix the cause "
            f"(kubectl vhost status {host.name}) and run: kubectl vhost retry {host.name}"
        )
    if phase == Phase.PENDING:
        return (
            f"{host.name} is Pending: its provisioning chain is in flight and ends with a "
            "current certificate; a renewal now would fight it. Wait until it is Ready."
        )
    if not host.spec.enabled:
        return (
            f"{host.name} is disabled: nginx does not serve its challenge, so a renewal would "
            "fail. Enable it first."
        )
    return None


def retry_observed(host: VirtualHost, value: str) -> bool:
    """The operator has acted on the retry ``value`` and the chain it started has ended."""
    return host.status.observed_retry == value and host.status.phase in (Phase.READY, Phase.FAILED)


def renewal_observed(host: VirtualHost, value: str) -> bool:
    return host.status.observed_renewal == value


def outcome_line(host: VirtualHost) -> str:
    phase = host.status.phase or Phase.PENDING
    text = f"{host.name} is {phase}"
    ready = next((c for c in host.status.conditions if c.type == conditions.READY), None)
    if phase == Phase.FAILED and host.status.error is not None:
        text += f": {host.status.error.step}: {host.status.error.message}"
    elif ready is not None and ready.message:
        text += f" ({ready.message})"
    return text
