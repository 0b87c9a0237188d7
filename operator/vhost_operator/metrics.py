"""The operator's Prometheus metrics. In-memory counters only; ``/metrics`` is served by
:func:`serve` (started with the operator, on ``settings.metrics_port``).

Per-host gauges (phase counts, certificate expiry) are not updated on events: a collector reads
them from the operator's catalog (``vhost_operator.catalog``) when Prometheus scrapes, so
thousands of hosts cost nothing between scrapes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

PREFIX = "vhost_operator"

STEP_DURATION = Histogram(
    f"{PREFIX}_step_duration_seconds",
    "Duration of provisioning steps, by step and result (succeeded, failed).",
    ["step", "result"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
ACME_ORDERS = Counter(
    f"{PREFIX}_acme_orders_total",
    "ACME issuances and renewals, by outcome (issued, or the error class that ended them).",
    ["outcome"],
)
ORDER_BUDGET_WAITING = Gauge(
    f"{PREFIX}_acme_order_budget_waiting",
    "Hosts (new or renewing) booked for a later slot of the account's order budget.",
)
RENEWAL_REQUESTS = Counter(
    f"{PREFIX}_renewal_requests_total",
    "Renewals the scanner asked for.",
)
RENEWAL_SCAN_SECONDS = Histogram(
    f"{PREFIX}_renewal_scan_seconds",
    "Time one renewal scan takes to pick the due hosts from memory (requests not included).",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)


@dataclasses.dataclass(frozen=True, slots=True)
class HostView:
    """One host as the scrape-time collector sees it."""

    name: str
    phase: str
    not_after_timestamp: float | None
    renewal_timestamp: float | None = None
    """When the certificate is due for renewal (``status.certificate.renewalTime``), for
    enabled hosts only: the scanner never renews a disabled one, so it is never overdue."""


class HostCollector(Collector):
    """Hosts by phase and each certificate's expiry, read from memory at scrape time."""

    def __init__(self, hosts: Callable[[], Iterable[HostView]]) -> None:
        self._hosts = hosts

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        phases = GaugeMetricFamily(
            f"{PREFIX}_virtualhosts", "VirtualHosts by phase.", labels=["phase"]
        )
        expiry = GaugeMetricFamily(
            f"{PREFIX}_certificate_expiry_timestamp_seconds",
            "When each host's certificate expires (Unix time).",
            labels=["virtualhost"],
        )
        # A renewal time that lies well in the past means renewals are failing (or not being
        # asked for): a renewed certificate moves it forward. The alerts rely on it.
        renewal = GaugeMetricFamily(
            f"{PREFIX}_certificate_renewal_timestamp_seconds",
            "When each enabled host's certificate is due for renewal (Unix time).",
            labels=["virtualhost"],
        )
        return phases, expiry, renewal

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """The metrics without samples: registering must not read the hosts (it happens on
        the event loop, which the reading itself waits for)."""
        yield from self._families()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        phases, expiry, renewal = self._families()
        counts = {"Pending": 0, "Ready": 0, "Failed": 0}
        for host in self._hosts():
            counts[host.phase] = counts.get(host.phase, 0) + 1
            if host.not_after_timestamp is not None:
                expiry.add_metric([host.name], host.not_after_timestamp)
            if host.renewal_timestamp is not None:
                renewal.add_metric([host.name], host.renewal_timestamp)
        for phase, count in sorted(counts.items()):
            phases.add_metric([phase], count)
        yield phases
        yield expiry
        yield renewal


def serve(port: int, hosts: Callable[[], Iterable[HostView]]) -> None:
    """Start the ``/metrics`` endpoint (a daemon thread) with the per-host collector."""
    REGISTRY.register(HostCollector(hosts))
    start_http_server(port)
