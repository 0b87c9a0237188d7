"""The ``kubectl vhost`` command (console script ``kubectl-vhost``; kubectl finds it on PATH).

Thin: parse the arguments, make the calls (``kube.admin``), print what ``report`` makes of them.
Exit status 0 on success, 1 when the cluster refused or the host is not in a state for the
request (the reason is printed), 2 on bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from vhost_operator import __version__
from vhost_operator.errors import VhostOperatorError
from vhost_operator.kube.admin import AdminApi, connect_as_user
from vhost_operator.kube.preconditions import Contended
from vhost_operator.kubectl import report
from vhost_operator.resources.models import RENEW_ANNOTATION, RETRY_ANNOTATION, VirtualHost
from vhost_operator.resources.naming import site_configmap_name

NGINX_NAMESPACE_ENV = "VHOST_OPERATOR_NGINX_NAMESPACE"
POLL_SECONDS = 1.0


class Refused(Exception):
    """The request is not carried out; the message says why, in plain words."""


def main(argv: Sequence[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    try:
        api = AdminApi(connect_as_user(arguments.kubeconfig, arguments.context))
        asyncio.run(arguments.run(api, arguments))
    except Refused as refusal:
        sys.stderr.write(str(refusal))
        return 1
    except (VhostOperatorError, OSError) as error:
        sys.stderr.write(f"error: {error}\n")
        return 1
    return 0


def _connection_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """The options that say which cluster and namespace. Accepted before and after the command
    (kubectl users write them anywhere); after it, only when given, so as not to reset them."""

    def default(value: str | None) -> str | None:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument(
        "--kubeconfig",
        default=default(None),
        help="kubeconfig file(s) (default: $KUBECONFIG, ~/.kube/config, in-cluster)",
    )
    parser.add_argument("--context", default=default(None), help="the kubeconfig context")
    parser.add_argument(
        "--nginx-namespace",
        default=default(os.environ.get(NGINX_NAMESPACE_ENV)),
        help="namespace of the site ConfigMaps (default: $VHOST_OPERATOR_NGINX_NAMESPACE, else "
        "found in all namespaces)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubectl vhost", description="Inspect and operate vhost-operator VirtualHosts."
    )
    parser.add_argument("--version", action="version", version=__version__)
    _connection_options(parser, defaults=True)
    common = argparse.ArgumentParser(add_help=False)
    _connection_options(common, defaults=False)
    commands = parser.add_subparsers(dest="command", required=True)
    status = commands.add_parser(
        "status",
        parents=[common],
        help="chain, error and likely cause, certificate, what nginx serves",
    )
    status.add_argument("name")
    status.set_defaults(run=status_command)
    listing = commands.add_parser("list", parents=[common], help="every VirtualHost, one line each")
    listing.add_argument("--failed", action="store_true", help="Failed hosts only")
    listing.set_defaults(run=list_command)
    for verb, run, what in (
        ("retry", retry_command, "run the whole chain again on a Failed host"),
        ("renew", renew_command, "order a new certificate for a Ready host now"),
    ):
        sub = commands.add_parser(verb, parents=[common], help=what)
        sub.add_argument("name")
        sub.add_argument("--wait", action="store_true", help="wait until the operator is done")
        sub.add_argument("--timeout", type=float, default=300.0, help="seconds --wait waits")
        sub.set_defaults(run=run)
    return parser


def _now() -> datetime:
    return datetime.now(UTC)


async def _host(api: AdminApi, name: str) -> VirtualHost:
    body = await api.virtualhost(name)
    if body is None:
        raise Refused(f"VirtualHost {name} not found.\n")
    return VirtualHost.from_body(body)


async def _sites(api: AdminApi, namespace: str | None) -> dict[str, report.SiteReport]:
    """The agent's reports, by VirtualHost name."""
    sites = [report.SiteReport.of(c) for c in await api.site_configmaps(namespace)]
    return {site.virtualhost: site for site in sites if site.virtualhost}


async def status_command(api: AdminApi, arguments: argparse.Namespace) -> None:
    host = await _host(api, arguments.name)
    sites = await _sites(api, arguments.nginx_namespace)
    site = sites.get(host.name)
    if site is not None and site.name != site_configmap_name(host.name):
        site = None  # not this operator's ConfigMap for the host
    sys.stdout.write(report.status_text(host, site, now=_now()))


async def list_command(api: AdminApi, arguments: argparse.Namespace) -> None:
    hosts = [VirtualHost.from_body(body) for body in await api.virtualhosts()]
    sites = await _sites(api, arguments.nginx_namespace)
    sys.stdout.write(report.list_table(hosts, sites, now=_now(), failed_only=arguments.failed))


async def retry_command(api: AdminApi, arguments: argparse.Namespace) -> None:
    name = arguments.name
    host = await _host(api, name)
    value = _request_value()
    try:
        await api.annotate(name, RETRY_ANNOTATION, value)
    except Contended as conflict:
        current = await api.virtualhost(name)
        now = _now()
        known = VirtualHost.from_body(current) if current is not None else None
        raise Refused(report.explain_refused_retry(known, name, str(conflict), now)) from None
    if host.status.phase is not None and host.status.phase.value != "Failed":
        # The webhook was not there to refuse it (it is optional, failurePolicy Ignore).
        raise Refused(
            f"Retry requested, but {name} is {host.status.phase.value}, not Failed: the operator "
            "will refuse it (a RetryRefused Event) instead of fighting its chain.\n"
        )
    sys.stdout.write(f"Retry requested for {name} ({RETRY_ANNOTATION}={value}).\n")
    if arguments.wait:
        done = await _wait(api, name, lambda h: report.retry_observed(h, value), arguments.timeout)
        sys.stdout.write(report.outcome_line(done) + "\n")


async def renew_command(api: AdminApi, arguments: argparse.Namespace) -> None:
    name = arguments.name
    host = await _host(api, name)
    refusal = report.renew_refusal(host)
    if refusal is not None:
        raise Refused(refusal + "\n")
    value = _request_value()
    try:
        await api.annotate(name, RENEW_ANNOTATION, value)
    except Contended as conflict:
        raise Refused(
            f"The cluster refused the renewal of {name} (409 Conflict): {conflict}\n"
        ) from None
    sys.stdout.write(f"Renewal requested for {name} ({RENEW_ANNOTATION}={value}).\n")
    if arguments.wait:
        serial = host.status.certificate.serial if host.status.certificate else None
        done = await _wait(
            api, name, lambda h: report.renewal_observed(h, value), arguments.timeout
        )
        certificate = done.status.certificate
        if certificate is not None and certificate.serial != serial:
            sys.stdout.write(
                f"Renewed: serial {certificate.serial}, valid until "
                f"{report.timestamp(certificate.not_after)}.\n"
            )
        else:
            raise Refused(f"The renewal of {name} failed:\n" + report.outcome_line(done) + "\n")


def _request_value() -> str:
    # Any new value is a new request; a timestamp also tells when it was asked for.
    return _now().isoformat(timespec="microseconds")


async def _wait(api: AdminApi, name: str, done: report.HostTest, timeout: float) -> VirtualHost:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        host = await _host(api, name)
        if done(host):
            return host
        if asyncio.get_running_loop().time() >= deadline:
            raise Refused(
                f"Gave up waiting after {timeout:g}s; the operator has not finished yet "
                f"(is it running?). Now: {report.outcome_line(host)}\n"
            )
        await asyncio.sleep(POLL_SECONDS)
