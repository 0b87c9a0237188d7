"""Items 1 and 2: N VirtualHosts applied at once through the whole product (operator with its
webhook, pebble, the nginx agent, a real nginx), and the webhook's latency at a fixed rate.

The operator runs as in the end-to-end test: pebble validates HTTP-01 through nginx, the chain
waits for the agent to load each config and ends with a TLS handshake showing the new
certificate. The headline rounds run against an API server without an audit log (auditing costs
it CPU on every request) and measure time, memory and nginx's reload at that many sites; one
attribution round on an audited plane counts the API requests per component from the audit
log. ACME requests come from pebble's log (one "calling handler" line per request it served).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import ssl
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from bench.cluster import (
    AuditLog,
    Client,
    Request,
    Tracker,
    breakdown,
    drained,
    ensure_namespace,
    identity,
    phase,
    settled,
    user_of,
    virtualhost,
    webhook_client_config,
)
from bench.measure import (
    MIB_IN_MB,
    at_fixed_rate,
    cpu_seconds,
    cpu_used_since,
    descendants_cpu,
    group_memory,
    reset_peak_rss,
    rss_mib,
    stolen_cpu_seconds,
    wait_idle,
    wait_quiet,
)
from bench.report import Figure, say
from tests.harness.agent import AgentProcess
from tests.harness.audit import AuditedControlPlane
from tests.harness.kube import NAMESPACE, webhook_calls
from tests.harness.nginx import NginxServer
from tests.harness.operator import OperatorProcess
from tests.harness.pebble import Pebble
from tests.harness.processes import free_port
from vhost_operator.agent.nginx import NginxControl, children
from vhost_operator.resources.models import GROUP, VERSION, VIRTUALHOSTS

LABEL = "bench.vhost-operator.io/scenario"
WEBHOOK = f"{VIRTUALHOSTS}.vhost-operator.io"
FINALIZING_WEBHOOK = "finalizer.vhost-operator.io"
"""The mutating webhook (kopf's finalizer on a new host), registered right after WEBHOOK."""


class ServingStack:
    """nginx, pebble, the nginx agent and the operator with ACME, nginx and its webhook on."""

    def __init__(self, plane: AuditedControlPlane, workdir: Path) -> None:
        self.plane = plane
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        ensure_namespace(plane, NAMESPACE)
        self.nginx = NginxServer(workdir / "nginx", free_port(), free_port())
        self.pebble = Pebble(http_port=self.nginx.http_port, workdir=workdir / "pebble")
        self.agent: AgentProcess | None = None
        self._responder = free_port()
        """The operator's challenge responder, where the agent sends the TLS sites' challenges."""
        self.operator: OperatorProcess | None = None

    def start(self) -> ServingStack:
        (self.workdir / "nginx").mkdir(exist_ok=True)
        self.nginx.start()
        self.pebble.start()
        agent_dir = self.workdir / "agent"
        agent_dir.mkdir(exist_ok=True)
        # Each kept before it starts: a start that fails still leaves a process to stop.
        self.agent = AgentProcess(
            identity(self.plane, "agent"),
            agent_dir,
            self.nginx,
            NAMESPACE,
            challenge_upstream=f"127.0.0.1:{self._responder}",
            verbose=False,
        )
        self.agent.start()
        operator_dir = self.workdir / "operator"
        operator_dir.mkdir(exist_ok=True)
        self.operator = OperatorProcess(
            identity(self.plane, "operator"), operator_dir, self._settings(), verbose=False
        )
        self.operator.start()
        self._wait_for_webhook()
        return self

    def _settings(self) -> dict[str, str]:
        responder = self._responder
        nginx = self.nginx
        settings = {
            "ACME_ENABLED": "true",
            "NGINX_ENABLED": "true",
            "WEBHOOK_ENABLED": "true",
            "WEBHOOK_HOST": "127.0.0.1",
            "WEBHOOK_PORT": str(free_port()),
            "NGINX_NAMESPACE": NAMESPACE,
            "OPERATOR_NAMESPACE": NAMESPACE,
            "ACME_DIRECTORY_URL": self.pebble.directory_url,
            "ACME_CA_BUNDLE": str(self.pebble.ca_bundle_path),
            "ACME_EMAIL": "hostmaster@example.com",
            # pebble has no order limit: the bench measures the operator, and prints what the
            # production CA's budget would make of it separately (report.py).
            "ACME_ORDER_LIMIT": "0",
            "CHALLENGE_LISTEN_PORT": str(responder),
            "CHALLENGE_UPSTREAM": f"127.0.0.1:{responder}",
            "SELF_CHECK_ADDRESS": f"http://127.0.0.1:{nginx.http_port}",
            "UPSTREAM": "http://127.0.0.1:9",
            "NGINX_HTTP_PORT": str(nginx.http_port),
            "NGINX_HTTPS_PORT": str(nginx.https_port),
            "NGINX_CERTIFICATE_DIR": str(nginx.root / "certs"),
            "NGINX_WAIT_FOR_AGENT": "true",
            "NGINX_PROBE_ADDRESS": f"127.0.0.1:{nginx.https_port}",
        }
        return {f"VHOST_OPERATOR_{key}": value for key, value in settings.items()}

    def _wait_for_webhook(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                webhook_client_config(self.plane, WEBHOOK)
                # Registered after the validating one; hosts created before it would each cost
                # kopf's finalizer patch.
                webhook_client_config(
                    self.plane, FINALIZING_WEBHOOK, "mutatingwebhookconfigurations"
                )
                return
            except LookupError:
                time.sleep(0.2)
        raise RuntimeError("the operator did not register its webhook")

    def acme_requests(self) -> int:
        log = self.workdir / "pebble" / "pebble.log"
        # bytes, not text: at 10,000 hosts the log is large, and decoding it would cost more
        return log.read_bytes().count(b"-> calling handler") if log.exists() else 0

    def stop(self) -> None:
        for process in (self.operator, self.agent):
            if process is not None:
                process.stop()
        self.pebble.stop()
        self.nginx.stop()


LARGE = 10_000
"""Rounds of this size and more have the 10,000-host goals (time, memory, reload)."""
OPERATOR_MEMORY_TARGET_MB = 200
RELOAD_TARGET_SECONDS = 1.0
EVENT_DROPPED = "Failed to post an event"
"""The operator's log line for an Event it gave up on (``kube.events``, kopf's wording)."""
_BATCH = re.compile(r"nginx reloaded: (\d+) hosts changed.*?([\d.]+)s after the batch started")


def round_item(count: int, *, audited: bool) -> str:
    """The summary table's name for a round: the headline, or the attribution round."""
    return (
        f"1. attribution, {count} hosts (audit log on)"
        if audited
        else f"1. provision {count} hosts"
    )


def ready_target(count: int) -> tuple[str, float] | None:
    """The target for the time until all of ``count`` hosts are Ready on this 2-core machine
    (issue goals): 1,000 in under 40 s, 10,000 in under 10 minutes; none for other sizes."""
    if count == 1000:
        return "< 40 s", 40.0
    if count >= LARGE:
        return "< 10 min", 600.0
    return None


def batch_seconds(agent_log: str) -> list[float]:
    """Seconds each nginx agent batch took until its confirmed reload (write, ``nginx -t``,
    reload), from the agent's "nginx reloaded: ..." log lines."""
    return [float(match[2]) for match in _BATCH.finditer(agent_log)]


def round_timeout(count: int) -> float:
    """How long a round of ``count`` hosts may take before it counts as timed out: 0.6 s a
    host (ten times the pace of 1,000 hosts on an idle machine: the bench shares its cores)."""
    return max(120.0, count * 0.6)


@dataclass(frozen=True)
class Outcome:
    """What a round measured while it ran."""

    count: int
    elapsed: float
    done: bool
    ready: int
    failed: int
    timeout: float
    operator_cpu: float

    @property
    def all_ready(self) -> bool:
        return self.done and self.ready == self.count


def provision(
    stack: ServingStack, client: Client, count: int, *, round_name: str, timeout: float
) -> list[Figure]:
    """Create ``count`` VirtualHosts at once and wait until every one is Ready. On a plane
    without an audit log (the headline): time, memory and nginx's reload at this many sites;
    on an audited one (attribution): the API requests per host of each component."""
    assert stack.operator is not None and stack.agent is not None
    audited = stack.plane.audited
    item = round_item(count, audited=audited)
    plane = "with an audit log: attribution" if audited else "without an audit log: headline"
    say(f"\n== {item}: ACME via pebble, nginx agent, webhook; API server {plane} ==")
    names = [f"{round_name}-{i}" for i in range(count)]
    manifests = [virtualhost(name, {LABEL: round_name}) for name in names]
    tracker = Tracker(
        client.custom.list_cluster_custom_object,
        GROUP,
        VERSION,
        VIRTUALHOSTS,
        done=lambda obj: settled(phase(obj)),
        label_selector=f"{LABEL}={round_name}",
        started=lambda obj: phase(obj) is not None,
    )
    audit = AuditLog(stack.plane)
    mark, acme_before = audit.mark(), stack.acme_requests()
    webhook_before = webhook_calls(stack.plane)
    reloads_before = stack.agent.reloads()
    tests_before = stack.agent.metrics()
    agent_log_mark = _size(stack.agent.log_path)
    operator_log_mark = _size(stack.operator.log_path)
    reset_peak_rss(stack.operator.pid)
    cpu_before = cpu_seconds(stack.operator.pid)
    all_cpu_before, bench_cpu_before = descendants_cpu(), time.process_time()
    stolen_before = stolen_cpu_seconds()
    started = time.monotonic()
    apply_seconds = client.create_virtualhosts(manifests)
    say(f"created {count} VirtualHosts in {apply_seconds:.1f}s ({client.threads} threads)")
    finished = tracker.wait(names, timeout=timeout)
    elapsed = (finished or time.monotonic()) - started
    tracker.stop()
    intake = sorted(at - started for at in tracker.started_at.values())
    outcome = Outcome(
        count,
        elapsed,
        finished is not None,
        tracker.count(names, lambda obj: phase(obj) == "Ready"),
        tracker.count(names, lambda obj: phase(obj) == "Failed"),
        timeout,
        cpu_seconds(stack.operator.pid) - cpu_before,
    )
    all_cpu = cpu_used_since(all_cpu_before)
    bench_cpu = time.process_time() - bench_cpu_before
    stolen = stolen_cpu_seconds() - stolen_before
    acme = stack.acme_requests() - acme_before
    webhook = _calls_since(webhook_before, webhook_calls(stack.plane))
    reloads = stack.agent.reloads() - reloads_before
    tests = _nginx_tests(stack.agent.metrics(), tests_before)
    rss, peak = rss_mib(stack.operator.pid)
    say(
        f"{outcome.ready} Ready, {outcome.failed} Failed of {count} "
        + (f"after {elapsed:.1f}s" if outcome.done else f"when the {timeout:.0f}s timeout ended")
        + f"; {outcome.ready / elapsed:.1f} hosts/s; operator CPU {outcome.operator_cpu:.1f}s "
        f"({1000 * outcome.operator_cpu / count:.0f} ms/host), RSS {rss:.0f} MiB "
        f"(peak in this round {peak:.0f} MiB)"
    )
    if intake:  # how fast the operator starts new hosts' chains (their first status)
        half = intake[len(intake) // 2]
        say(f"intake: a status on {len(intake)} hosts after {intake[-1]:.1f}s (half {half:.1f}s)")
    say(
        f"ACME requests (pebble): {acme} ({acme / count:.1f}/host); nginx reloads {reloads}; "
        f"nginx -t of the batch's sites {tests[0]}, of the whole config {tests[1]}"
    )
    say(
        f"webhook calls (API server's metrics): {sum(webhook.values())} "
        f"({sum(webhook.values()) / count:.1f}/host: "
        + ", ".join(f"{operation} {calls}" for operation, calls in sorted(webhook.items()))
        + ")"
    )
    cores = os.cpu_count() or 1
    say(
        f"CPU seconds in those {elapsed:.0f}s ({cores} cores = {cores * elapsed:.0f} CPU-s; "
        "the agent's include its nginx -t runs): "
        + ", ".join(f"{name} {seconds:.1f}" for name, seconds in all_cpu.items() if seconds >= 0.5)
        + f"; the bench itself (creates, watch) {bench_cpu:.1f}; stolen by the hypervisor "
        f"{stolen:.1f} ({100 * stolen / (cores * elapsed):.0f} % of the CPU-s)"
    )
    if outcome.failed:
        say("  first failure: " + _first_failure(tracker, names))
    dropped = _read_from(stack.operator.log_path, operator_log_mark).count(EVENT_DROPPED)
    say(f"Events the operator dropped (its log): {dropped}")
    figures = _round_figures(item, outcome, acme=acme, reloads=reloads, audited=audited)
    figures.append(Figure(item, "webhook calls/host", f"{sum(webhook.values()) / count:.1f}"))
    figures.append(Figure(item, "Events dropped", str(dropped), "0", dropped == 0))
    if audited:
        time.sleep(1)  # the last requests reach the audit log
        return figures + _attribution(item, count, audit.since(mark))
    figures += _operator_memory(item, count, rss, peak)
    agent_log = _read_from(stack.agent.log_path, agent_log_mark)
    return figures + _serving_footprint(stack, item, count, batch_seconds(agent_log))


def _calls_since(
    before: dict[tuple[str, str], int], now: dict[tuple[str, str], int]
) -> dict[str, int]:
    """Our webhooks' calls between two readings, by operation."""
    calls: dict[str, int] = {}
    for (name, operation), count in now.items():
        if name.endswith(f".{GROUP}") and count > before.get((name, operation), 0):
            calls[operation] = calls.get(operation, 0) + count - before.get((name, operation), 0)
    return calls


def _round_figures(
    item: str, outcome: Outcome, *, acme: int, reloads: int, audited: bool
) -> list[Figure]:
    count, elapsed = outcome.count, outcome.elapsed
    target = None if audited else ready_target(count)
    ok = outcome.all_ready
    figures = [
        Figure(
            item,
            ("all Ready after" if ok else "Ready when timed out")
            + (" (not the headline)" if audited else ""),
            f"{elapsed:.1f} s" if ok else f"{outcome.ready}/{count} in {outcome.timeout:.0f} s",
            target[0] if target else "",
            (ok and elapsed < target[1]) if target else None,
            # Peers' ratios are taken from the headline only.
            seconds=elapsed if ok and not audited else None,
        ),
        Figure(item, "hosts/s", f"{outcome.ready / elapsed:.1f}"),
        Figure(item, "ACME requests/host", f"{acme / count:.1f}"),
        Figure(item, "nginx reloads", str(reloads)),
        Figure(
            item,
            "operator CPU",
            f"{outcome.operator_cpu:.1f} s ({1000 * outcome.operator_cpu / count:.0f} ms/host)",
        ),
    ]
    if outcome.failed:
        figures.append(Figure(item, "Failed hosts", str(outcome.failed)))
    return figures


def _attribution(item: str, count: int, requests: list[Request]) -> list[Figure]:
    """API requests per host of each component, by verb and resource (from the audit log)."""
    operator = breakdown(requests, user_of("operator"))
    agent = breakdown(requests, user_of("agent"))
    writes = sum(1 for r in requests if r.user == user_of("operator") and r.write)
    per_host = sum(operator.values()) / count
    say(
        f"API requests: operator {sum(operator.values())} ({per_host:.1f}/host, "
        f"{writes / count:.1f} writes/host), nginx agent {sum(agent.values())} "
        f"({sum(agent.values()) / count:.1f}/host)"
    )
    say("  operator: " + ", ".join(f"{k} {v}" for k, v in operator.most_common(12)))
    say("  agent:    " + ", ".join(f"{k} {v}" for k, v in agent.most_common(6)))
    return [
        Figure(item, "API requests/host (operator)", f"{per_host:.1f}"),
        Figure(item, "API writes/host (operator)", f"{writes / count:.1f}"),
        Figure(item, "API requests/host (agent)", f"{sum(agent.values()) / count:.1f}"),
    ]


def _operator_memory(item: str, count: int, rss: float, peak: float) -> list[Figure]:
    large = count >= LARGE
    return [
        Figure(
            item,
            "operator RSS, peak during the round",
            f"{peak:.0f} MiB",
            f"< {OPERATOR_MEMORY_TARGET_MB} MB" if large else "",
            peak * MIB_IN_MB < OPERATOR_MEMORY_TARGET_MB if large else None,
        ),
        Figure(item, "operator RSS, all Ready", f"{rss:.0f} MiB"),
    ]


def _serving_footprint(
    stack: ServingStack, item: str, count: int, batches: list[float]
) -> list[Figure]:
    """Once the agent is idle: nginx's and the agent's memory with this many sites, and what
    one ``nginx -t`` and one confirmed reload of the running nginx cost now."""
    assert stack.agent is not None
    waited = wait_idle(stack.agent.pid)
    master = stack.nginx.master_pid
    memory = group_memory(master, children(master))
    agent_rss, agent_peak = rss_mib(stack.agent.pid)
    busy = wait_quiet()  # the API server may still be busy with the round's last writes
    tested, reloaded = timed_reload(stack.nginx)
    large = count >= LARGE
    longest = max(batches, default=0.0)
    say(
        f"agent idle {waited:.0f}s after, the CPUs {busy:.0%} busy in the second before the "
        f"timing; at {count} TLS sites: nginx -t {tested:.2f}s, "
        f"a reload (SIGHUP until new workers run and the old ones stopped accepting) "
        f"{reloaded:.2f}s; nginx {memory.describe()}; agent RSS {agent_rss:.0f} MiB "
        f"(peak {agent_peak:.0f}); agent batches until their reload: {len(batches)}, "
        f"longest {longest:.2f}s"
    )
    return [
        Figure(item, f"nginx -t at {count} sites", f"{tested:.2f} s"),
        Figure(
            item,
            f"nginx reload at {count} sites",
            f"{reloaded:.2f} s",
            f"< {RELOAD_TARGET_SECONDS:g} s" if large else "",
            reloaded < RELOAD_TARGET_SECONDS if large else None,
        ),
        Figure(item, "agent batch until reload, longest", f"{longest:.2f} s"),
        Figure(
            item,
            "nginx RSS master + workers",
            f"{memory.master_rss + memory.children_rss:.0f} MiB (PSS {memory.pss:.0f})",
        ),
        Figure(item, "agent RSS", f"{agent_rss:.0f} MiB (peak {agent_peak:.0f})"),
    ]


def timed_reload(nginx: NginxServer) -> tuple[float, float]:
    """Seconds of an ``nginx -t`` and of a confirmed reload of the running nginx, as the agent
    does them for every batch (the same ``NginxControl``): the reload counts from the SIGHUP
    until the master runs new workers and every old one stopped accepting; nginx parses its
    configuration and loads every site's certificate and key meanwhile."""
    control = NginxControl(nginx.binary, nginx.conf, nginx.pid_file, reload_timeout=300)
    started = time.perf_counter()
    asyncio.run(control.test())
    tested = time.perf_counter() - started
    started = time.perf_counter()
    asyncio.run(control.reload())
    return tested, time.perf_counter() - started


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _read_from(path: Path, offset: int) -> str:
    with path.open("rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")


_TEST_COUNTERS = ("vhost_agent_nginx_batch_tests_total", "vhost_agent_nginx_tests_total")


def _nginx_tests(metrics: dict[str, float], before: dict[str, float]) -> tuple[int, int]:
    """The agent's ``nginx -t`` runs since ``before`` (its metrics then): of a batch's sites
    only, and of the whole config."""
    batch, whole = (int(metrics[name] - before[name]) for name in _TEST_COUNTERS)
    return batch, whole


def _first_failure(tracker: Tracker, names: list[str]) -> str:
    for name in names:
        obj = tracker.objects.get(name)
        if obj is not None and phase(obj) == "Failed":
            return f"{name}: {json.dumps(obj['status'].get('error'))}"
    return "?"


def delete_round(client: Client, round_name: str, count: int) -> None:
    """Delete a round's hosts (the operator's finalizer cleans up nginx) and wait until they
    are gone, before the next round: one delete-collection, one watch."""
    started = time.monotonic()
    selector = f"{LABEL}={round_name}"
    tracker = Tracker(
        client.custom.list_cluster_custom_object,
        GROUP,
        VERSION,
        VIRTUALHOSTS,
        done=lambda obj: False,
        label_selector=selector,
    )
    try:
        drained(
            client.custom.delete_collection_cluster_custom_object(
                GROUP, VERSION, VIRTUALHOSTS, label_selector=selector, _preload_content=False
            )
        )
        gone = tracker.wait_gone(timeout=round_timeout(count))
    finally:
        tracker.stop()
    state = "deleted" if gone else "NOT all deleted (going on)"
    say(f"{state} round {round_name} in {time.monotonic() - started:.1f}s")


# -- 2. the webhook --------------------------------------------------------------------------


def admission_review(number: int) -> bytes:
    name = f"webhook-probe-{number}"
    obj = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "VirtualHost",
        "metadata": {"name": name, "uid": str(uuid.uuid4()), "generation": 1},
        "spec": {"hostname": f"{name}.example.net", "domains": [], "enabled": True},
    }
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": GROUP, "version": VERSION, "kind": "VirtualHost"},
            "resource": {"group": GROUP, "version": VERSION, "resource": VIRTUALHOSTS},
            "requestKind": {"group": GROUP, "version": VERSION, "kind": "VirtualHost"},
            "requestResource": {"group": GROUP, "version": VERSION, "resource": VIRTUALHOSTS},
            "name": name,
            "operation": "CREATE",
            "userInfo": {"username": "bench", "groups": ["system:authenticated"]},
            "object": obj,
            "oldObject": None,
            "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }
    return json.dumps(review).encode()


def webhook_latency(
    stack: ServingStack, client: Client, *, rate: float, seconds: float
) -> list[Figure]:
    item = "2. webhook"
    say(f"\n== {item}: {rate:g} requests/s for {seconds:g}s ==")
    # Measured in steady state: the last batch of item 1 (a reload of 1,000 sites, reports)
    # would otherwise share the two cores with the first seconds of this item.
    assert stack.operator is not None and stack.agent is not None, "the stack is not started"
    pids = (stack.operator.pid, stack.agent.pid, int(stack.nginx.pid_file.read_text()))
    waited = sum(wait_idle(pid) for pid in pids)
    say(f"operator, agent and nginx idle after {waited:.0f}s")
    url, ca_bundle = webhook_client_config(stack.plane, WEBHOOK)
    parts = urlsplit(url)
    context = ssl.create_default_context(cadata=ca_bundle.decode())
    connection = http.client.HTTPSConnection(
        parts.hostname or "127.0.0.1", parts.port, context=context, timeout=10
    )

    def post(number: int) -> None:
        connection.request(
            "POST", parts.path, admission_review(number), {"Content-Type": "application/json"}
        )
        answer = json.loads(connection.getresponse().read())
        assert answer["response"]["allowed"] is True, answer

    for number in range(20):  # warm-up: TLS session, first-call imports
        post(number)
    direct = at_fixed_rate(rate, seconds, post)
    connection.close()
    say(f"AdmissionReview POSTed to the webhook over TLS (keep-alive): {direct.describe()}")

    def dry_run(number: int) -> None:
        manifest = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "VirtualHost",
            "metadata": {"name": f"dry-run-{number}"},
            "spec": {"hostname": f"dry-run-{number}.example.net"},
        }
        drained(
            client.custom.create_cluster_custom_object(
                GROUP, VERSION, VIRTUALHOSTS, manifest, dry_run="All", _preload_content=False
            )
        )

    for number in range(10):
        dry_run(number)
    through_api = at_fixed_rate(rate, seconds, dry_run)
    say(f"server-side dry-run create through the API server: {through_api.describe()}")
    return [
        Figure(item, "p50 (direct)", f"{direct.p50_ms:.2f} ms"),
        Figure(item, "p99 (direct)", f"{direct.p99_ms:.2f} ms", "< 10 ms", direct.p99_ms < 10),
        Figure(item, "p50 (dry-run via API)", f"{through_api.p50_ms:.2f} ms"),
        Figure(item, "p99 (dry-run via API)", f"{through_api.p99_ms:.2f} ms"),
    ]
