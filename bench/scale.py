"""Items 3 and 4 at scale: the operator's resident memory with 1,000 and 10,000 VirtualHosts
(ACME and nginx off, so hosts go Ready directly), and the renewal scan over 10,000 hosts —
in-process (CPU time of ``scan_once`` over 10,000 candidates) and in the running operator (API
writes while it scans 10,000 hosts holding certificates that are not due: must be 0)."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bench.cluster import AuditLog, Client, Tracker, breakdown, identity, phase, user_of
from bench.cluster import virtualhost as virtualhost_manifest
from bench.measure import cpu_seconds, rss_mib, wait_idle
from bench.report import Figure, say
from tests.harness.audit import AuditedControlPlane
from tests.harness.operator import OperatorProcess
from tests.harness.processes import free_port
from vhost_operator.provisioning.chain import utc_now
from vhost_operator.provisioning.renewal import RenewalCandidate, scan_once
from vhost_operator.resources.models import GROUP, VERSION, VIRTUALHOSTS, VirtualHost

LABEL = "bench.vhost-operator.io/scale"
SCAN_INTERVAL = 5.0
"""Seconds between the operator's renewal scans in the in-operator measurement."""
STEADY_AFTER_IDLE = 15.0
"""Seconds after the operator went idle at which its memory counts as steady (it hands memory
freed after a burst back to the kernel every 10 s)."""
RESTART_TIMEOUT = 300.0
"""Seconds the restarted operator gets to list and resume every host before the scans are
counted (they are counted anyway: the scanner reads whatever the index holds by then)."""


def _operator_settings(**overrides: str) -> dict[str, str]:
    settings = {"NGINX_NAMESPACE": "bench", "OPERATOR_NAMESPACE": "bench", **overrides}
    return {f"VHOST_OPERATOR_{key}": value for key, value in settings.items()}


class ScaleRun:
    """One operator (ACME and nginx off) and the hosts created so far."""

    def __init__(self, plane: AuditedControlPlane, client: Client, workdir: Path) -> None:
        self.plane = plane
        self.client = client
        self.workdir = workdir
        self.names: list[str] = []
        self.kubeconfig = identity(plane, "operator")
        self.tracker = Tracker(
            client.custom.list_cluster_custom_object,
            GROUP,
            VERSION,
            VIRTUALHOSTS,
            done=lambda obj: phase(obj) == "Ready",
            label_selector=LABEL,
        )
        self.operator: OperatorProcess | None = None

    def start_operator(self, **overrides: str) -> OperatorProcess:
        directory = self.workdir / f"operator-{time.monotonic_ns()}"
        directory.mkdir(parents=True)
        # Kept before it starts: a start that fails still leaves a process to stop.
        self.operator = OperatorProcess(
            self.kubeconfig, directory, _operator_settings(**overrides), verbose=False
        )
        return self.operator.start()

    def stop(self) -> None:
        self.tracker.stop()
        if self.operator is not None:
            self.operator.stop()
            self.operator = None

    # -- 4. memory -------------------------------------------------------------------------

    def grow_to(self, count: int, *, timeout: float) -> list[Figure]:
        assert self.operator is not None
        item = f"4. operator memory, {count} hosts"
        say(f"\n== {item} (ACME and nginx off) ==")
        fresh = [f"scale-{i}" for i in range(len(self.names), count)]
        self.names += fresh
        audit = AuditLog(self.plane)
        mark, cpu = audit.mark(), cpu_seconds(self.operator.pid)
        started = time.monotonic()
        manifests = [virtualhost_manifest(name, {LABEL: "yes"}) for name in fresh]
        create_seconds = self.client.create_virtualhosts(manifests)
        finished = self.tracker.wait(self.names, timeout=timeout)
        elapsed = (finished or time.monotonic()) - started
        ready = self.tracker.count(self.names, lambda obj: phase(obj) == "Ready")
        idle_after = wait_idle(self.operator.pid)
        time.sleep(STEADY_AFTER_IDLE)
        rss, peak = rss_mib(self.operator.pid)
        requests = breakdown(audit.since(mark), user_of("operator"))
        used = cpu_seconds(self.operator.pid) - cpu
        say(
            f"created {len(fresh)} in {create_seconds:.1f}s; {ready}/{count} Ready "
            + (f"after {elapsed:.1f}s" if finished else f"at the {timeout:.0f}s timeout")
            + f"; idle {idle_after:.0f}s later; operator CPU {used:.1f}s"
        )
        say(
            f"operator RSS {rss:.0f} MiB (peak {peak:.0f} MiB); API requests "
            f"{sum(requests.values())} ({sum(requests.values()) / len(fresh):.1f} per new host): "
            + ", ".join(f"{k} {v}" for k, v in requests.most_common(6))
        )
        target = count >= 10_000
        return [
            Figure(
                item,
                "RSS (steady)",
                f"{rss:.0f} MiB",
                "< 200 MB" if target else "",
                rss * 1.048576 < 200 if target else None,
            ),
            Figure(item, "RSS peak", f"{peak:.0f} MiB"),
            Figure(
                item,
                f"{len(fresh)} new hosts Ready after",
                f"{elapsed:.1f} s" if finished else f"{ready}/{count} in {timeout:.0f} s",
            ),
            Figure(item, "API requests/new host", f"{sum(requests.values()) / len(fresh):.1f}"),
        ]

    # -- 3. the renewal scan in the running operator ----------------------------------------

    def renewal_scan(self) -> list[Figure]:
        """Give every host a certificate that is not due, restart the operator with ACME on
        and a short scan interval, and count its API writes over a few scans."""
        assert self.operator is not None
        item = f"3. renewal scan, operator with {len(self.names)} hosts"
        say(f"\n== {item} ==")
        self.operator.stop()
        now = utc_now()
        status = {
            "certificate": {
                "secretName": "unused",
                "notBefore": (now - timedelta(days=30)).isoformat(),
                "notAfter": (now + timedelta(days=60)).isoformat(),
                "serial": "1",
                "renewalTime": (now + timedelta(days=30)).isoformat(),
            }
        }
        seconds = self.client.parallel(
            functools.partial(self.client.patch_virtualhost_status, n, status) for n in self.names
        )
        say(f"gave {len(self.names)} hosts a certificate (status) in {seconds:.1f}s")
        operator = self.start_operator(
            ACME_ENABLED="true",
            ACME_DIRECTORY_URL="https://127.0.0.1:9/directory",  # never called: nothing is due
            CHALLENGE_LISTEN_PORT=str(free_port()),
            RENEWAL_INTERVAL=str(SCAN_INTERVAL),
        )
        started = time.monotonic()
        audit = AuditLog(self.plane)
        startup_mark = audit.mark()
        wait_idle(operator.pid, timeout=RESTART_TIMEOUT)
        restart = time.monotonic() - started
        time.sleep(STEADY_AFTER_IDLE)
        say(f"operator restarted, idle after {restart:.0f}s (at most {RESTART_TIMEOUT:.0f}s)")
        scans_before = _metrics(operator).get("vhost_operator_renewal_scan_seconds_count", 0.0)
        mark, cpu = audit.mark(), cpu_seconds(operator.pid)
        window = 3 * SCAN_INTERVAL + 1
        time.sleep(window)
        used = cpu_seconds(operator.pid) - cpu
        requests = [r for r in audit.since(mark) if r.user == user_of("operator")]
        writes = [r for r in requests if r.write]
        metrics = _metrics(operator)
        scans = metrics.get("vhost_operator_renewal_scan_seconds_count", 0.0) - scans_before
        scan_sum = metrics.get("vhost_operator_renewal_scan_seconds_sum", 0.0)
        scan_count = metrics.get("vhost_operator_renewal_scan_seconds_count", 0.0)
        startup = [r for r in audit.since(startup_mark) if r.user == user_of("operator")]
        rss, peak = rss_mib(operator.pid)
        say(
            f"{window:.0f}s window, {scans:.0f} scans: {len(writes)} API writes, "
            f"{len(requests)} requests in all; operator CPU {used:.2f}s over the window; "
            f"mean scan {1000 * scan_sum / max(scan_count, 1):.1f} ms; "
            f"RSS {rss:.0f} MiB (peak {peak:.0f}) with certificates in status"
        )
        say(f"(requests between the restart's first list and idle: {len(startup)})")
        return [
            Figure(item, "API writes while scanning", str(len(writes)), "0", not writes),
            Figure(item, "restart until idle", f"{restart:.0f} s"),
            Figure(
                item,
                "scan duration (operator metric)",
                f"{1000 * scan_sum / max(scan_count, 1):.1f} ms" if scan_count else "no scan seen",
            ),
            Figure(item, f"operator CPU over {window:.0f} s", f"{used:.2f} s"),
            Figure(item, "RSS with certificates", f"{rss:.0f} MiB"),
        ]


def _metrics(operator: OperatorProcess) -> dict[str, float]:
    values = {}
    for line in operator.metrics().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                values[name] = float(value)
            except ValueError:
                continue
    return values


# -- 3. the renewal scan in-process ------------------------------------------------------------


def _host_body(index: int, now: datetime, *, due: bool) -> dict[str, Any]:
    renewal = now - timedelta(hours=1) if due else now + timedelta(days=30)
    return {
        "metadata": {"name": f"host-{index}", "uid": f"uid-{index}", "generation": 1},
        "spec": {"hostname": f"host-{index}.example.com", "domains": ["example.com"]},
        "status": {
            "phase": "Ready",
            "observedGeneration": 1,
            "certificate": {
                "secretName": f"host-{index}-tls",
                "notBefore": (now - timedelta(days=30)).isoformat(),
                "notAfter": (now + timedelta(days=60)).isoformat(),
                "serial": f"{index:x}",
                "renewalTime": renewal.isoformat(),
            },
        },
    }


def scan_in_process(count: int, *, due: int = 0, repeats: int = 5) -> list[Figure]:
    item = f"3. renewal scan, {count} hosts in-process"
    say(f"\n== {item} ==")
    now = utc_now()
    bodies = [_host_body(i, now, due=i < due) for i in range(count)]
    cpu = time.process_time()
    candidates: Sequence[RenewalCandidate] = [
        c for c in (RenewalCandidate.of(VirtualHost.from_body(b)) for b in bodies) if c
    ]
    index_cpu = time.process_time() - cpu
    requested: list[str] = []

    async def request(name: str, _: datetime) -> None:
        requested.append(name)

    samples = []
    for _ in range(repeats):
        requested.clear()
        cpu = time.process_time()
        asyncio.run(scan_once(candidates, request, now=now, spacing=0))
        samples.append(time.process_time() - cpu)
    scan_cpu = sorted(samples)[len(samples) // 2]
    say(
        f"index entries built in {1000 * index_cpu:.0f} ms CPU "
        f"({1e6 * index_cpu / count:.0f} us/host, paid once per watch event); "
        f"one scan: {1000 * scan_cpu:.2f} ms CPU; renewal requests {len(requested)} "
        f"({due} due)"
    )
    return [
        Figure(item, "scan CPU time", f"{1000 * scan_cpu:.2f} ms"),
        Figure(
            item,
            f"API writes for hosts not due ({due} due)",
            str(len(requested) - due),
            "0",
            len(requested) == due,
        ),
    ]
