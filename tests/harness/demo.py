"""``make demo``: the whole product on this machine, with nothing but local processes.

A local control plane (etcd + kube-apiserver), a real ACME CA (pebble), a real nginx with the
nginx agent, the operator (with its webhook) and the tenancy gate; then ``examples/`` is applied
and the demo shows ``kubectl get vh,md``, the certificate nginx serves, and a gate decision.
Runs until Ctrl-C (or ``--seconds N``), then stops every process it started.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from tests.harness import kube
from tests.harness.agent import AgentProcess
from tests.harness.clusters import install_crds
from tests.harness.controlplane import REPO, LocalControlPlane
from tests.harness.gate import GateProcess
from tests.harness.nginx import NginxServer, served_certificate
from tests.harness.operator import OperatorProcess
from tests.harness.pebble import Pebble
from tests.harness.processes import free_port
from tests.harness.waiting import phase_of, wait_for
from tests.integration.conftest import operator_settings


def say(text: str) -> None:
    print(text, flush=True)


DemoRun = Callable[[Path, contextlib.ExitStack, float | None], None]


def run_demo(description: str, folder: str, demo: DemoRun, stopping: str = "stopping...") -> int:
    """Parse ``--seconds``, give ``demo`` a fresh ``REPO/folder`` and an exit stack for what it
    starts, and unwind that stack on Ctrl-C, SIGTERM or the demo's own end."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long")
    arguments = parser.parse_args()
    workdir = REPO / folder
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with contextlib.ExitStack() as stop:
        with contextlib.suppress(KeyboardInterrupt):
            demo(workdir, stop, arguments.seconds)
        say(stopping)
    return 0


def main() -> int:
    return run_demo(__doc__ or "", ".demo", run)


def run(workdir: Path, stop: contextlib.ExitStack, seconds: float | None) -> None:
    say("starting etcd + kube-apiserver (built from Go modules on first use)...")
    plane = LocalControlPlane(workdir / "cluster").start()
    stop.callback(plane.stop)
    install_crds(plane)
    kube.ensure_namespace(plane)

    nginx = NginxServer(workdir / "nginx", free_port(), free_port()).start()
    stop.callback(nginx.stop)
    pebble = Pebble(http_port=nginx.http_port, workdir=workdir / "pebble")
    pebble.start()
    stop.callback(pebble.stop)
    agent = AgentProcess(plane.kubeconfig, workdir, nginx, kube.NAMESPACE).start()
    stop.callback(agent.stop)
    settings = operator_settings(
        pebble,
        free_port(),
        nginx_http_port=str(nginx.http_port),
        nginx_https_port=str(nginx.https_port),
        nginx_certificate_dir=str(nginx.root / "certs"),
        self_check_address=f"http://127.0.0.1:{nginx.http_port}",
        nginx_wait_for_agent="true",
        nginx_probe_address=f"127.0.0.1:{nginx.https_port}",
        webhook_enabled="true",
        webhook_host="127.0.0.1",
        webhook_port=str(free_port()),
    )
    operator = OperatorProcess(plane.kubeconfig, workdir, settings).start()
    stop.callback(operator.stop)
    gate = GateProcess(plane.kubeconfig, workdir, {"VHOST_GATE_PRIMARY_HOSTNAMES": "[]"}).start()
    stop.callback(gate.stop)
    say(f"operator, nginx agent and tenancy gate running; logs in {workdir}")

    say(plane.kubectl("apply", "-f", str(REPO / "examples")).stdout)
    for name in ("mail-example-com", "webmail-example-net"):
        wait_for(plane, "vh", name, lambda o: phase_of(o) in ("Ready", "Failed"), timeout=120)
    say(plane.kubectl("get", "vh,md").stdout)
    show_certificate(nginx, pebble)
    show_gate_decision(gate.url)
    say(
        f"Try it:  export KUBECONFIG={plane.kubeconfig} PATH={plane.bin}:$PATH\n"
        "         kubectl get vh; kubectl describe vh mail-example-com\n"
        f"         curl -k --resolve mail.example.com:{nginx.https_port}:127.0.0.1 "
        f"https://mail.example.com:{nginx.https_port}/\n"
        "Stop:    Ctrl-C"
    )
    deadline = None if seconds is None else time.monotonic() + seconds
    while deadline is None or time.monotonic() < deadline:
        time.sleep(0.5)


def show_certificate(nginx: NginxServer, pebble: Pebble) -> None:
    leaf = served_certificate(nginx.https_port, "mail.example.com")
    if leaf is None:
        say("nginx does not serve mail.example.com over HTTPS (see the VirtualHost's status)")
        return
    say(
        f"nginx serves mail.example.com with certificate {format(leaf.serial_number, 'x')} "
        f"issued by {leaf.issuer.rfc4514_string()}, valid until {leaf.not_valid_after_utc:%Y-%m-%d}"
    )


def show_gate_decision(url: str) -> None:
    request = {
        "hostname": "mail.example.com",
        "email": "alice@example.org",
        "administeredDomains": [],
        "superuser": False,
    }
    body = json.dumps(request).encode()
    call = urllib.request.Request(
        f"{url}/v1/login-check", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(call, timeout=5) as response:
        say(f"tenancy gate, alice@example.org through mail.example.com: {response.read().decode()}")


if __name__ == "__main__":
    raise SystemExit(main())
