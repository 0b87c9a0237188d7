"""Item 5: the nginx agent with a real nginx, fed site ConfigMaps and TLS Secrets directly (as
``tests/integration/test_nginx_agent.py`` does): N new TLS sites at once, then all N changed at
once. Figures: nginx reloads and the time until every ConfigMap reports its config applied; then,
at N sites, what one ``nginx -t`` of the whole config and one reload take, one ``nginx -t`` of a
batch's 100 sites (as the agent tests a batch while nginx runs the rest), nginx's and the
agent's memory, and the TLS handshake latency of one site (every site listed in the agent's
shared HTTPS server, plain HTTP the agent's one shared server, all sharing the default server's
one TLS context, which loads certificates per handshake); and the same for the layouts of earlier
releases, for comparison: the same configs as one server block per site on the HTTPS port (the
previous release, before shared HTTPS servers), one server block per site for both ports
(``FinalLayout.ONE_SERVER``), two server blocks per site with proxy headers in each location
(``SHARED_CONTEXT``), and also each site its own TLS context (``PER_HANDSHAKE`` and
``AT_RELOAD``)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import resource
import socket
import ssl
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench.cluster import BENCH_NAMESPACE, Client, Tracker, ensure_namespace, identity
from bench.measure import Latencies, cpu_seconds, rss_mib, sequential, wait_quiet
from bench.report import Figure, say
from tests.harness.agent import AgentProcess
from tests.harness.audit import AuditedControlPlane
from tests.harness.nginx import NginxServer, self_signed_certificate
from tests.harness.processes import free_port
from vhost_operator.agent.agent import BatchTestingWorkspace
from vhost_operator.agent.metrics import AgentStats
from vhost_operator.agent.nginx import NginxControl, children
from vhost_operator.nginx import FinalLayout, SiteConfig, config_hash, render_final
from vhost_operator.resources import labels

NAMESPACE = f"{BENCH_NAMESPACE}-agent"
"""The agent's own namespace (one per round: ``-<N>``): no operator writes site ConfigMaps
into it."""

HANDSHAKES = 300
"""TLS handshakes timed against one site, one after another, each a full handshake."""

RELOAD_TARGET_SECONDS = 1.0

BATCH_SITES = 100
"""Sites of the batch whose ``nginx -t`` is timed: about what a batch of the 10,000-host round
changes (two changes per host, 150 to 190 batches)."""


def _config(
    nginx: NginxServer,
    hostname: str,
    *,
    body_size: int,
    layout: FinalLayout = FinalLayout.TLS_ONLY,
) -> str:
    certificates = nginx.root / "certs" / hostname
    site = SiteConfig(
        hostname=hostname,
        challenge_upstream="127.0.0.1:9",
        upstream="http://127.0.0.1:9",
        http_port=nginx.http_port,
        https_port=nginx.https_port,
        certificate_path=str(certificates / "tls.crt"),
        key_path=str(certificates / "tls.key"),
        max_body_size_mib=body_size,
    )
    return render_final(site, layout=layout)


def _site(nginx: NginxServer, name: str, hostname: str, *, body_size: int) -> dict[str, Any]:
    config = _config(nginx, hostname, body_size=body_size)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "labels": labels.component_labels(labels.SITE_COMPONENT),
            "annotations": {
                labels.HOSTNAME: hostname,
                labels.ENABLED: "true",
                labels.STAGE: "final",
                labels.CONFIG_HASH: config_hash(config),
                labels.TLS_SECRET: f"{name}-tls",
            },
        },
        "data": {f"{hostname}.conf": config},
    }


def _secret(name: str, hostname: str) -> dict[str, Any]:
    chain, key = self_signed_certificate([hostname])
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {
            "name": f"{name}-tls",
            "labels": labels.component_labels(labels.TLS_COMPONENT),
        },
        "stringData": {"tls.crt": chain.decode(), "tls.key": key.decode()},
    }


def _applied(obj: dict[str, Any]) -> bool:
    annotations = obj["metadata"].get("annotations") or {}
    return annotations.get(labels.APPLIED_CONFIG_HASH) == annotations.get(labels.CONFIG_HASH)


def agent_burst(
    plane: AuditedControlPlane, client: Client, workdir: Path, count: int, *, timeout: float
) -> list[Figure]:
    item = f"5. nginx agent, {count} sites"
    say(f"\n== {item} ==")
    namespace = f"{NAMESPACE}-{count}"
    ensure_namespace(plane, namespace)
    (workdir / "nginx").mkdir(parents=True, exist_ok=True)
    (workdir / "agent").mkdir(parents=True, exist_ok=True)
    nginx = NginxServer(workdir / "nginx", free_port(), free_port()).start()
    agent = AgentProcess(
        identity(plane, "nginx-agent"), workdir / "agent", nginx, namespace, verbose=False
    )
    figures = []
    try:
        agent.start()
        names = [f"site-{i}" for i in range(count)]
        hostnames = {name: f"{name}.example.org" for name in names}
        tracker = Tracker(
            client.core.list_namespaced_config_map,
            namespace,
            done=_applied,
            label_selector=f"{labels.COMPONENT}={labels.SITE_COMPONENT}",
        )
        secrets = [_secret(name, hostnames[name]) for name in names]
        for phase, body_size, objects in (
            ("new", 50, secrets),
            ("changed", 100, []),
        ):
            configmaps = [_site(nginx, n, hostnames[n], body_size=body_size) for n in names]
            reloads = agent.reloads()
            cpu_before = cpu_seconds(agent.pid)
            started = time.monotonic()
            write_seconds = client.parallel(
                functools.partial(client.apply, namespace, m) for m in [*objects, *configmaps]
            )
            if phase == "changed":
                _wait_until_pending(tracker, names, configmaps)
            finished = tracker.wait(names, timeout=timeout)
            elapsed = (finished or time.monotonic()) - started
            reloaded = agent.reloads() - reloads
            agent_ms = 1000 * (cpu_seconds(agent.pid) - cpu_before) / count
            done = finished is not None
            say(
                f"{count} sites {phase}: written in {write_seconds:.1f}s, "
                + (f"all applied after {elapsed:.1f}s" if done else "NOT all applied")
                + f", {reloaded} nginx reloads, agent {agent_ms:.1f} ms of CPU per site"
            )
            label = f"{count} sites {phase}"
            figures += [
                Figure(
                    item,
                    f"{label}: all applied after",
                    f"{elapsed:.1f} s" if done else f"> {timeout:.0f} s",
                ),
                Figure(item, f"{label}: reloads", str(reloaded), "<= 5", reloaded <= 5),
                Figure(item, f"{label}: agent CPU per site", f"{agent_ms:.1f} ms"),
            ]
        rss, peak = rss_mib(agent.pid)
        say(f"agent RSS {rss:.0f} MiB (peak {peak:.0f} MiB)")
        figures.append(Figure(item, "agent RSS", f"{rss:.0f} MiB"))
        tracker.stop()
        first = hostnames[names[0]]
        costs, current = _nginx_costs(item, nginx, first, _LISTED, target=True)
        figures += costs
        agent.stop()  # the files are the bench's now: the same sites, in the earlier layouts
        figures.append(_batch_test(item, nginx, list(hostnames.values())[:BATCH_SITES]))
        _link_instead_of_listing(nginx.root, hostnames.values())
        earlier_layouts = (
            FinalLayout.TLS_ONLY,
            FinalLayout.ONE_SERVER,
            FinalLayout.SHARED_CONTEXT,
            FinalLayout.PER_HANDSHAKE,
            FinalLayout.AT_RELOAD,
        )
        for layout in earlier_layouts:
            if layout is FinalLayout.ONE_SERVER:
                # Which have port-80 servers of their own: none listed in the agent's shared one.
                (nginx.root / "http-names.conf").write_text("")
            for hostname in hostnames.values():
                config = _config(nginx, hostname, body_size=100, layout=layout)
                (nginx.root / "sites-available" / f"{hostname}.conf").write_text(config)
            costs, earlier = _nginx_costs(item, nginx, first, _LABELS[layout])
            ratios = [new / old for new, old in zip(current, earlier, strict=True)]
            ratio_text = f"p50 {ratios[0]:.2f}, nginx CPU {ratios[1]:.2f}"
            compared = f"TLS handshake, {_LISTED} / {_LABELS[layout]}"
            say(f"{compared}: {ratio_text}")
            figures += [*costs, Figure(item, compared, ratio_text)]
    finally:
        agent.stop()
        nginx.stop()
    return figures


def _batch_test(item: str, nginx: NginxServer, hostnames: list[str]) -> Figure:
    """One ``nginx -t`` as the agent runs it before a reload while nginx runs the other sites:
    of nginx's main config narrowed to a batch, ``hostnames`` (``agent.BatchTestingWorkspace``)."""
    control = NginxControl(nginx.binary, nginx.conf, nginx.pid_file)
    batch = BatchTestingWorkspace(nginx.root, control, AgentStats(), touched=set(hostnames))
    busy = wait_quiet()
    started, children_before = time.monotonic(), _children_cpu()
    failure = asyncio.run(batch.test())
    seconds, cpu = time.monotonic() - started, _children_cpu() - children_before
    if failure is not None or not batch.usable:
        raise RuntimeError(f"nginx -t of a batch's sites did not pass: {failure}")
    say(
        f"nginx -t of a batch of {len(hostnames)} sites (the rest loaded already): "
        f"{seconds:.2f}s ({cpu:.2f} CPU-s); the CPUs {busy:.0%} busy in the second before"
    )
    return Figure(
        item, f"nginx -t of a batch of {len(hostnames)} sites", f"{seconds:.2f} s ({cpu:.2f} CPU-s)"
    )


def _wait_until_pending(tracker: Tracker, names: list[str], configmaps: list[Any]) -> None:
    """After a rewrite, wait until the tracker has seen every new hash, so that an old
    "applied" does not end the wait early (bounded: the writes have returned already)."""
    wanted = {
        m["metadata"]["name"]: m["metadata"]["annotations"][labels.CONFIG_HASH] for m in configmaps
    }
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        seen = tracker.count(
            names,
            lambda obj: (
                obj["metadata"]["annotations"].get(labels.CONFIG_HASH)
                == wanted[obj["metadata"]["name"]]
            ),
        )
        if seen == len(names):
            return
        time.sleep(0.05)


def _link_instead_of_listing(root: Path, hostnames: Iterable[str]) -> None:
    """The agent's files as the previous release left them: each site linked, a server of its
    own, instead of listed in a shared HTTPS server."""
    for path in [*root.glob("https-names/*/*.conf"), *root.glob("https-map/*.conf")]:
        path.unlink()
    for path in (root / "sites-enabled").glob("_vhost-shared-*.conf"):
        path.unlink()
    for hostname in hostnames:
        (root / "sites-enabled" / f"{hostname}.conf").symlink_to(
            f"../sites-available/{hostname}.conf"
        )


_LISTED = "sites listed in one shared HTTPS server, one shared HTTP server"
_LABELS = {
    FinalLayout.TLS_ONLY: "one HTTPS-only server per site, one shared HTTP server",
    FinalLayout.ONE_SERVER: "one server per site for both ports, one shared TLS context",
    FinalLayout.SHARED_CONTEXT: "two servers per site, one shared TLS context",
    FinalLayout.PER_HANDSHAKE: "a context per site, certificates per handshake",
    FinalLayout.AT_RELOAD: "a context per site, certificates at reload",
}


def _nginx_costs(
    item: str, nginx: NginxServer, hostname: str, label: str, *, target: bool = False
) -> tuple[list[Figure], tuple[float, float]]:
    """One ``nginx -t`` and one confirmed reload of what is on disk (the agent's way), nginx's
    memory after it, and the handshake latency of ``hostname``, for the sites' layout
    (``label``); ``target``: the reload's target applies to it."""
    control = NginxControl(nginx.binary, nginx.conf, nginx.pid_file, reload_timeout=300)
    master = int(nginx.pid_file.read_text())
    # The first layout is timed right after the agent's last batch: the agent, the API server
    # and the bench's watch may still be busy with its reports, and a timing then measured them.
    busy = wait_quiet()
    started, cpu_before = time.monotonic(), cpu_seconds(master)
    asyncio.run(control.reload())
    reload_seconds = time.monotonic() - started
    reload_cpu = cpu_seconds(master) - cpu_before  # the master parses and loads the config
    started, children_before = time.monotonic(), _children_cpu()
    asyncio.run(control.test())
    test_seconds = time.monotonic() - started
    test_cpu = _children_cpu() - children_before
    time.sleep(1)  # the old workers finish exiting
    memory = _nginx_rss_mib(nginx)
    workers_before = _cpu_of(children(master))
    handshakes = _handshakes(nginx.https_port, hostname)
    # The workers' CPU per handshake: what the server spends, whatever the client costs.
    workers_after = _cpu_of(children(master))
    used = sum(workers_after[pid] - workers_before.get(pid, 0.0) for pid in workers_after)
    per_handshake_ms = 1000 * used / (HANDSHAKES + 1)
    rate = len(handshakes.samples) / sum(handshakes.samples)
    say(
        f"{label}: reload {reload_seconds:.2f}s ({reload_cpu:.2f} CPU-s of "
        f"the master), nginx -t {test_seconds:.2f}s ({test_cpu:.2f} CPU-s), nginx RSS "
        f"{memory:.0f} MiB (master + workers), TLS handshake {handshakes.describe()}, "
        f"{rate:.0f}/s one after another, {per_handshake_ms:.2f} ms of nginx CPU each; the "
        f"CPUs {busy:.0%} busy in the second before"
    )
    met = reload_seconds < RELOAD_TARGET_SECONDS if target else None
    return [
        Figure(
            item,
            f"reload, {label}",
            f"{reload_seconds:.2f} s ({reload_cpu:.2f} CPU-s)",
            f"< {RELOAD_TARGET_SECONDS:g} s" if target else "",
            met,
        ),
        Figure(
            item,
            f"nginx -t, {label}",
            f"{test_seconds:.2f} s ({test_cpu:.2f} CPU-s)",
        ),
        Figure(item, f"nginx RSS, {label}", f"{memory:.0f} MiB"),
        Figure(
            item,
            f"TLS handshake, {label}",
            f"p50 {handshakes.p50_ms:.2f} ms, nginx CPU {per_handshake_ms:.2f} ms",
        ),
    ], (handshakes.p50_ms, per_handshake_ms)


def _cpu_of(pids: set[int]) -> dict[int, float]:
    """CPU seconds of each process of ``pids`` still running."""
    found = {}
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            found[pid] = cpu_seconds(pid)
    return found


def _children_cpu() -> float:
    """CPU seconds of this process's children it has waited for (the ``nginx -t`` runs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _nginx_rss_mib(nginx: NginxServer) -> float:
    """Resident memory of nginx's master and its workers, summed (pages they share after the
    fork count in each: an upper bound)."""
    master = int(nginx.pid_file.read_text())
    return sum(rss_mib(pid)[0] for pid in {master, *children(master)})


def _handshakes(port: int, hostname: str) -> Latencies:
    """Full TLS handshakes with SNI ``hostname``, one after another (no session resumption:
    a new session each time, as a new visitor's)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # timing the server's work, not verifying it

    def handshake(_: int) -> None:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname=hostname),
        ):
            pass

    handshake(0)  # warm up: connection set-up in the client
    return sequential(HANDSHAKES, handshake)
