"""The tenancy gate's Prometheus metrics, served at ``GET /metrics`` on its port.

Every login answer is counted by endpoint, verdict and reason, and timed; the labels take only
the gate's fixed reason codes, never a hostname or a user, so the series stay a few dozen
however many hosts and people there are. The directory's size and whether it has loaded are
read at scrape time. Each app has a registry of its own (not the process-wide one), so that two
gates in one process count apart.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from vhost_operator.tenancy.directory import HostDirectory

PREFIX = "vhost_gate"

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
"""Seconds. An answer is computed in memory (tens of microseconds; about 0.5 ms over HTTP):
the buckets resolve that, and show when the process falls behind."""


class GateMetrics:
    """The counters of one gate app, and their text exposition."""

    def __init__(self, directory: HostDirectory) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._answers = Counter(
            f"{PREFIX}_answers_total",
            "Answers to login checks, by endpoint (login-check, auth), allowed (true, false) and "
            "reason (a decision's reason, or no-identity, invalid-request, not-ready).",
            ["endpoint", "allowed", "reason"],
            registry=self.registry,
        )
        self._durations = Histogram(
            f"{PREFIX}_answer_duration_seconds",
            "Time from a login check's arrival in the handler to its answer, by endpoint.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_DirectoryCollector(directory))

    def answered(self, endpoint: str, *, allowed: bool, reason: str, seconds: float) -> None:
        self._answers.labels(endpoint, "true" if allowed else "false", reason).inc()
        self._durations.labels(endpoint).observe(seconds)

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)


class _DirectoryCollector(Collector):
    def __init__(self, directory: HostDirectory) -> None:
        self._directory = directory

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            f"{PREFIX}_virtualhosts",
            "VirtualHosts the gate knows (from its watch).",
            value=len(self._directory),
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_synced",
            "1 once the VirtualHosts have been listed (before, logins are answered not-ready).",
            value=1 if self._directory.synced else 0,
        )
