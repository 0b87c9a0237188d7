"""``kubectl vhost``, the installed plugin, against the real control plane, operator, nginx agent,
nginx and pebble.

The command runs as an administrator would run it: the console script ``kubectl-vhost`` from the
virtualenv, and through the real ``kubectl`` (built with the control plane), which finds the
plugin on ``PATH``. Its credentials come from ``$KUBECONFIG``, as kubectl's do.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.harness import kube
from tests.harness.clusters import Cluster
from tests.harness.controlplane import control_plane_binaries
from tests.harness.operator import OperatorProcess
from tests.harness.processes import free_port
from tests.harness.waiting import get_object, phase_of, wait_for
from tests.integration.conftest import OperatorFactory

# The served stack of the end-to-end test: a pebble validating through nginx (nginx and the
# agent come from conftest), and the operator wired to them.
from tests.integration.test_end_to_end import (  # noqa: F401
    pebble,
    serving_operator,
)

pytestmark = pytest.mark.cluster

PLUGIN = Path(sys.executable).parent / "kubectl-vhost"


def plugin(
    cluster: Cluster, *args: str, via_kubectl: bool = False, kubeconfig_env: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run ``kubectl-vhost ARGS`` (or ``kubectl vhost ARGS``) and echo it as a console would."""
    kubectl_dir = control_plane_binaries()
    env = {key: value for key, value in os.environ.items() if not key.startswith("VHOST_OPERATOR_")}
    env.pop("KUBECONFIG", None)
    if kubeconfig_env:
        env["KUBECONFIG"] = str(cluster.kubeconfig)
    env["PATH"] = os.pathsep.join([str(PLUGIN.parent), str(kubectl_dir), env.get("PATH", "")])
    command = (
        [str(kubectl_dir / "kubectl"), "vhost", *args] if via_kubectl else [str(PLUGIN), *args]
    )
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=240)
    shown = "kubectl vhost" if via_kubectl else "kubectl-vhost"
    print(f"\n$ {shown} {' '.join(args)}\n{done.stdout}{done.stderr}", end="")
    return done


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A port that accepts connections and never answers: the self-check waits its full
    timeout there, which keeps the chain in flight for a while, and then fails."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield listener.getsockname()[1]


def start_with_webhook(
    start: OperatorFactory, cluster: Cluster, **overrides: str
) -> OperatorProcess:
    """Start an operator with its webhook and wait until the API server calls this one."""
    port = free_port()
    process = start(
        webhook_enabled="true", webhook_host="127.0.0.1", webhook_port=str(port), **overrides
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        urls = cluster.kubectl(
            "get",
            "validatingwebhookconfiguration",
            "vhost-operator.io",
            "--ignore-not-found",
            "-o",
            "jsonpath={.webhooks[*].clientConfig.url}",
        ).stdout
        if f":{port}/" in urls:
            return process
        time.sleep(0.2)
    raise AssertionError("the operator did not register its webhook")


def running_step(obj: dict[str, Any]) -> bool:
    chain = obj.get("status", {}).get("chain", [])
    return any(e["step"] == "certificate" and e["state"] == "Running" for e in chain)


def test_status_list_retry_and_renew(
    cluster: Cluster,
    serving_operator: OperatorFactory,  # noqa: F811 (the imported fixture)
    blackhole: int,
    tmp_path: Path,
) -> None:
    # 1. The self-check goes to a port that never answers: the chain stays in flight for the
    #    self-check's timeout (5 s, long enough to be refused a retry meanwhile), then fails.
    first = start_with_webhook(
        serving_operator,
        cluster,
        self_check_address=f"http://127.0.0.1:{blackhole}",
        self_check_timeout="5",
    )
    kube.apply_manifests(
        cluster,
        [kube.virtualhost("webmail", "webmail.example.org", domains=["example.org"])],
        tmp_path,
    )
    wait_for(cluster, "vh", "webmail", running_step, what="certificate step running", timeout=60)
    running = time.monotonic()

    refused = plugin(cluster, "retry", "webmail")
    assert refused.returncode == 1
    assert "refused the retry of webmail (409 Conflict)" in refused.stderr
    assert (
        "webmail is Pending: its provisioning chain is running: step certificate" in refused.stderr
    )
    assert "fights the one in flight" in " ".join(refused.stderr.split())

    failed = wait_for(
        cluster, "vh", "webmail", lambda o: phase_of(o) == "Failed", what="Failed", timeout=60
    )
    in_flight = time.monotonic() - running
    assert in_flight < 9.5, f"the self-check waited {in_flight:.1f}s, not its 5 s timeout"
    assert failed["status"]["error"]["step"] == "certificate"
    status = plugin(cluster, "status", "webmail")
    assert status.returncode == 0, status.stderr
    assert "VirtualHost webmail: webmail.example.org is Failed" in status.stdout
    assert "Error:        step certificate" in status.stdout
    assert "no answer in time" in status.stdout
    assert (
        "Likely cause: the hostname does not reach this cluster's nginx on port 80" in status.stdout
    )
    assert "kubectl vhost retry webmail" in status.stdout
    assert "the bootstrap config" in status.stdout and "nginx runs it" in status.stdout
    assert all(len(line) <= 100 for line in status.stdout.splitlines())

    listed = plugin(cluster, "list", "--failed", via_kubectl=True)
    assert listed.returncode == 0, listed.stderr
    rows = listed.stdout.splitlines()
    assert rows[0].split()[:3] == ["NAME", "HOSTNAME", "PHASE"]
    assert rows[1].split()[:4] == ["webmail", "webmail.example.org", "Failed", "certificate"]

    renew = plugin(cluster, "renew", "webmail")
    assert renew.returncode == 1 and "no certificate" in renew.stderr

    # 2. With the cause fixed (a self-check that reaches nginx), the retry goes through.
    first.stop()
    second = start_with_webhook(serving_operator, cluster)
    retried = plugin(cluster, "retry", "webmail", "--wait", "--timeout", "150", via_kubectl=True)
    assert retried.returncode == 0, retried.stderr
    assert "Retry requested for webmail" in retried.stdout
    assert "webmail is Ready" in retried.stdout

    ready = get_object(cluster, "vh", "webmail")
    assert ready is not None
    serial = ready["status"]["certificate"]["serial"]
    status = plugin(cluster, "status", "webmail", via_kubectl=True)
    assert status.returncode == 0, status.stderr
    assert "VirtualHost webmail: webmail.example.org is Ready" in status.stdout
    assert f"Certificate:  serial {serial}" in status.stdout
    for field in ("notBefore", "notAfter", "renewalTime"):
        assert f"  {field}" in status.stdout
    assert "the final config" in status.stdout and "nginx runs it" in status.stdout
    assert f"certificate: nginx serves serial {serial}" in status.stdout
    assert all(len(line) <= 100 for line in status.stdout.splitlines())

    # The alerts' renewal gauge, from the real process: the host's renewal time.
    renewal = datetime.fromisoformat(ready["status"]["certificate"]["renewalTime"])
    gauge = 'vhost_operator_certificate_renewal_timestamp_seconds{virtualhost="webmail"}'
    scraped = dict(
        line.rsplit(" ", 1) for line in second.metrics().splitlines() if line.startswith(gauge)
    )
    assert float(scraped[gauge]) == renewal.timestamp()

    again = plugin(cluster, "retry", "webmail")
    assert again.returncode == 1
    assert "webmail is Ready and serving: there is nothing to retry" in again.stderr

    renewed = plugin(cluster, "renew", "webmail", "--wait", "--timeout", "150")
    assert renewed.returncode == 0, renewed.stderr
    after = get_object(cluster, "vh", "webmail")
    assert after is not None
    new_serial = after["status"]["certificate"]["serial"]
    assert new_serial != serial
    assert f"Renewed: serial {new_serial}" in renewed.stdout

    status = plugin(cluster, "status", "webmail")
    assert "last renewal succeeded" in status.stdout
    assert f"Certificate:  serial {new_serial}" in status.stdout

    # Credentials from the flag, after the command, as kubectl users write it.
    listed = plugin(cluster, "list", "--kubeconfig", str(cluster.kubeconfig), kubeconfig_env=False)
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.startswith("webmail"))
    assert row.split()[2:] == ["Ready", "-", "in", row.split()[5], "final"]
    assert plugin(cluster, "list", "--failed").stdout == "No Failed VirtualHosts.\n"
    assert plugin(cluster, "status", "nothing-here").returncode == 1
