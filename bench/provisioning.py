"""Items 1 and 2: N VirtualHosts applied at once through the whole product (operator with its
webhook, pebble, the nginx agent, a real nginx), and the webhook's latency at a fixed rate.

The operator runs as in the end-to-end test: pebble validates HTTP-01 through nginx, the chain
waits for the agent to load each config and ends with a TLS handshake showing the new
certificate. Requests are counted per component from the API server's audit log, ACME requests
from pebble's log (one "calling handler" line per request it served).
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

from bench.cluster import (
    AuditLog,
    Client,
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
    at_fixed_rate,
    cpu_seconds,
    cpu_used_since,
    descendants_cpu,
    rss_mib,
    wait_idle,
)
from bench.report import Figure, say
from tests.harness.agent import AgentProcess
from tests.harness.audit import AuditedControlPlane
from tests.harness.kube import NAMESPACE
from tests.harness.nginx import NginxServer
from tests.harness.operator import OperatorProcess
from tests.harness.pebble import Pebble
from tests.harness.processes import free_port
from vhost_operator.resources.models import GROUP, VERSION, VIRTUALHOSTS

LABEL = "bench.vhost-operator.io/scenario"
WEBHOOK = f"{VIRTUALHOSTS}.vhost-operator.io"


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
        self.operator: OperatorProcess | None = None

    def start(self) -> ServingStack:
        (self.workdir / "nginx").mkdir(exist_ok=True)
        self.nginx.start()
        self.pebble.start()
        agent_dir = self.workdir / "agent"
        agent_dir.mkdir(exist_ok=True)
        # Each kept before it starts: a start that fails still leaves a process to stop.
        self.agent = AgentProcess(
            identity(self.plane, "agent"), agent_dir, self.nginx, NAMESPACE, verbose=False
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
        responder = free_port()
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
                return
            except LookupError:
                time.sleep(0.2)
        raise RuntimeError("the operator did not register its webhook")

    def acme_requests(self) -> int:
        log = self.workdir / "pebble" / "pebble.log"
        return log.read_text(errors="replace").count("-> calling handler") if log.exists() else 0

    def stop(self) -> None:
        for process in (self.operator, self.agent):
            if process is not None:
                process.stop()
        self.pebble.stop()
        self.nginx.stop()


def provision(
    stack: ServingStack, client: Client, count: int, *, round_name: str, timeout: float
) -> list[Figure]:
    """Create ``count`` VirtualHosts at once and wait until every one is Ready."""
    assert stack.operator is not None and stack.agent is not None
    item = f"1. provision {count} hosts"
    say(f"\n== {item} (ACME via pebble, nginx agent, webhook) ==")
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
    reloads_before = stack.agent.reloads()
    cpu_before = cpu_seconds(stack.operator.pid)
    all_cpu_before = descendants_cpu()
    started = time.monotonic()
    apply_seconds = client.create_virtualhosts(manifests)
    say(f"created {count} VirtualHosts in {apply_seconds:.1f}s ({client.threads} threads)")
    finished = tracker.wait(names, timeout=timeout)
    elapsed = (finished or time.monotonic()) - started
    tracker.stop()
    intake = sorted(at - started for at in tracker.started_at.values())
    ready = tracker.count(names, lambda obj: phase(obj) == "Ready")
    failed = tracker.count(names, lambda obj: phase(obj) == "Failed")
    operator_cpu = cpu_seconds(stack.operator.pid) - cpu_before
    all_cpu = cpu_used_since(all_cpu_before)
    time.sleep(1)  # the last requests reach the audit log
    requests = audit.since(mark)
    acme = stack.acme_requests() - acme_before
    reloads = stack.agent.reloads() - reloads_before
    operator_requests = breakdown(requests, user_of("operator"))
    agent_requests = breakdown(requests, user_of("agent"))
    per_host = sum(operator_requests.values()) / count
    rss, _ = rss_mib(stack.operator.pid)
    done = finished is not None
    say(
        f"{ready} Ready, {failed} Failed of {count} "
        + (f"after {elapsed:.1f}s" if done else f"when the {timeout:.0f}s timeout ended")
        + f"; {ready / elapsed:.1f} hosts/s; operator CPU {operator_cpu:.1f}s, RSS {rss:.0f} MiB"
    )
    if intake:  # how fast the operator starts new hosts' chains (their first status)
        half = intake[len(intake) // 2]
        say(f"intake: a status on {len(intake)} hosts after {intake[-1]:.1f}s (half {half:.1f}s)")
    say(
        f"API requests: operator {sum(operator_requests.values())} ({per_host:.1f}/host), "
        f"nginx agent {sum(agent_requests.values())} "
        f"({sum(agent_requests.values()) / count:.1f}/host); nginx reloads {reloads}"
    )
    say("  operator: " + ", ".join(f"{k} {v}" for k, v in operator_requests.most_common(12)))
    say("  agent:    " + ", ".join(f"{k} {v}" for k, v in agent_requests.most_common(6)))
    say(f"ACME requests (pebble): {acme} ({acme / count:.1f}/host)")
    cores = os.cpu_count() or 1
    say(
        f"CPU seconds in those {elapsed:.0f}s ({cores} cores = {cores * elapsed:.0f} CPU-s; "
        "the agent's include its nginx -t runs): "
        + ", ".join(f"{name} {seconds:.1f}" for name, seconds in all_cpu.items() if seconds >= 0.5)
    )
    if failed:
        say("  first failure: " + _first_failure(tracker, names))
    figures = [
        Figure(
            item,
            "all Ready after" if done else "Ready when timed out",
            f"{elapsed:.1f} s" if done else f"{ready}/{count} in {timeout:.0f} s",
            "< 60 s" if count == 1000 else "",
            (done and ready == count and elapsed < 60) if count == 1000 else None,
            seconds=elapsed if done and ready == count else None,
        ),
        Figure(item, "hosts/s", f"{ready / elapsed:.1f}"),
        Figure(item, "API requests/host (operator)", f"{per_host:.1f}"),
        Figure(item, "API requests/host (agent)", f"{sum(agent_requests.values()) / count:.1f}"),
        Figure(item, "ACME requests/host", f"{acme / count:.1f}"),
        Figure(item, "nginx reloads", str(reloads)),
        Figure(item, "operator CPU", f"{operator_cpu:.1f} s"),
    ]
    if failed:
        figures.append(Figure(item, "Failed hosts", str(failed)))
    return figures


def _first_failure(tracker: Tracker, names: list[str]) -> str:
    for name in names:
        obj = tracker.objects.get(name)
        if obj is not None and phase(obj) == "Failed":
            return f"{name}: {json.dumps(obj['status'].get('error'))}"
    return "?"


def delete_round(plane: AuditedControlPlane, round_name: str) -> None:
    """Delete a round's hosts (the operator's finalizer cleans up nginx) before the next."""
    started = time.monotonic()
    plane.kubectl(
        "delete", "vh", "-l", f"{LABEL}={round_name}", "--wait=true", "--timeout=300s",
        check=False,
    )  # fmt: skip
    say(f"deleted round {round_name} in {time.monotonic() - started:.1f}s")


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
