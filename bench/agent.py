"""Item 5: the nginx agent with a real nginx, fed site ConfigMaps and TLS Secrets directly (as
``tests/integration/test_nginx_agent.py`` does): N new TLS sites at once, then all N changed at
once. Figures: nginx reloads and the time until every ConfigMap reports its config applied."""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

from bench.cluster import BENCH_NAMESPACE, Client, Tracker, ensure_namespace, identity
from bench.measure import rss_mib
from bench.report import Figure, say
from tests.harness.agent import AgentProcess
from tests.harness.audit import AuditedControlPlane
from tests.harness.nginx import NginxServer, self_signed_certificate
from tests.harness.processes import free_port
from vhost_operator.nginx import SiteConfig, config_hash, render_final
from vhost_operator.resources import labels

NAMESPACE = f"{BENCH_NAMESPACE}-agent"
"""The agent's own namespace: no operator writes site ConfigMaps into it."""


def _site(nginx: NginxServer, name: str, hostname: str, *, body_size: int) -> dict[str, Any]:
    certificates = nginx.root / "certs" / hostname
    config = render_final(
        SiteConfig(
            hostname=hostname,
            challenge_upstream="127.0.0.1:9",
            upstream="http://127.0.0.1:9",
            http_port=nginx.http_port,
            https_port=nginx.https_port,
            certificate_path=str(certificates / "tls.crt"),
            key_path=str(certificates / "tls.key"),
            max_body_size_mib=body_size,
        )
    )
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
    ensure_namespace(plane, NAMESPACE)
    (workdir / "nginx").mkdir(parents=True, exist_ok=True)
    (workdir / "agent").mkdir(parents=True, exist_ok=True)
    nginx = NginxServer(workdir / "nginx", free_port(), free_port()).start()
    agent = AgentProcess(
        identity(plane, "nginx-agent"), workdir / "agent", nginx, NAMESPACE, verbose=False
    )
    figures = []
    try:
        agent.start()
        names = [f"site-{i}" for i in range(count)]
        hostnames = {name: f"{name}.example.org" for name in names}
        tracker = Tracker(
            client.core.list_namespaced_config_map,
            NAMESPACE,
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
            started = time.monotonic()
            write_seconds = client.parallel(
                functools.partial(client.apply, NAMESPACE, m) for m in [*objects, *configmaps]
            )
            if phase == "changed":
                _wait_until_pending(tracker, names, configmaps)
            finished = tracker.wait(names, timeout=timeout)
            elapsed = (finished or time.monotonic()) - started
            reloaded = agent.reloads() - reloads
            done = finished is not None
            say(
                f"{count} sites {phase}: written in {write_seconds:.1f}s, "
                + (f"all applied after {elapsed:.1f}s" if done else "NOT all applied")
                + f", {reloaded} nginx reloads"
            )
            label = f"{count} sites {phase}"
            figures += [
                Figure(
                    item,
                    f"{label}: all applied after",
                    f"{elapsed:.1f} s" if done else f"> {timeout:.0f} s",
                ),
                Figure(item, f"{label}: reloads", str(reloaded), "<= 5", reloaded <= 5),
            ]
        rss, peak = rss_mib(agent.pid)
        say(f"agent RSS {rss:.0f} MiB (peak {peak:.0f} MiB)")
        figures.append(Figure(item, "agent RSS", f"{rss:.0f} MiB"))
        tracker.stop()
    finally:
        agent.stop()
        nginx.stop()
    return figures


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
