"""``make demo-node``: the Helm quick start on a real node of this machine, without a cloud.

The local control plane (etcd + kube-apiserver + kube-controller-manager), a real node joined to
it (containerd, kubelet, kube-scheduler, kube-proxy, CoreDNS), the Dockerfile's images imported
into the node, then the chart installed by Helm with nginx and ACME on (against pebble on the
node's address: ``tests/harness/chart_release.py``, exactly what the chart's node test runs) and
``examples/`` applied. Shows the pods, ``kubectl get vh,md`` and the certificate the nginx pod
serves, prints how to use kubectl and helm yourself, and runs until Ctrl-C (or ``--seconds N``);
then the release, the node and the control plane are removed, whatever state they are in.
Needs root (the node's bridge, iptables rules and containerd).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from tests.harness.chart_release import HTTPS_NODE_PORT, NAMESPACE, ChartOnNode, chart_on_node
from tests.harness.controlplane import REPO, LocalControlPlane
from tests.harness.demo import run_demo, say
from tests.harness.node import LocalNode
from tests.harness.waiting import phase_of, wait_for

EXAMPLE_HOSTS = ("mail-example-com", "webmail-example-net")


def main() -> int:
    return run_demo(__doc__ or "", ".demo-node", run, "stopping: release, node, control plane...")


def run(workdir: Path, stop: contextlib.ExitStack, seconds: float | None) -> None:
    say("starting etcd + kube-apiserver + kube-controller-manager...")
    plane = LocalControlPlane(workdir / "cluster").start()
    stop.callback(plane.stop)
    say("starting the node (containerd, kubelet, kube-scheduler, kube-proxy, CoreDNS)...")
    node = LocalNode(plane, workdir / "node").start()
    stop.callback(node.stop)
    say(f"node Ready in {node.start_seconds:.0f} s; importing the images, starting pebble...")
    release = stop.enter_context(chart_on_node(node, workdir / "chart"))
    say("helm install (CRDs from the chart, nginx + agent, ACME against pebble, webhook)...")
    say(f"every pod Ready {release.install():.0f} s after helm install:")
    say(plane.kubectl("get", "pods", "-n", NAMESPACE, "-o", "wide").stdout)
    say(plane.kubectl("apply", "-f", str(REPO / "examples")).stdout)
    for name in EXAMPLE_HOSTS:
        wait_for(plane, "vh", name, lambda o: phase_of(o) in ("Ready", "Failed"), timeout=180)
    say(plane.kubectl("get", "vh,md").stdout)
    root = workdir / "pebble-root.pem"
    root.write_bytes(release.pebble.root_pem())
    show_certificate(release)
    say(
        f"Try it:  export KUBECONFIG={plane.kubeconfig} PATH={plane.bin}:$PATH\n"
        f"         kubectl get pods -n {NAMESPACE}; kubectl get vh; kubectl describe vh "
        "mail-example-com\n"
        f"         {release.helm.binary} status vhost-operator -n {NAMESPACE}\n"
        f"         curl --cacert {root} --resolve mail.example.com:{HTTPS_NODE_PORT}:"
        f"{node.address} https://mail.example.com:{HTTPS_NODE_PORT}/\n"
        "Stop:    Ctrl-C"
    )
    deadline = None if seconds is None else time.monotonic() + seconds
    while deadline is None or time.monotonic() < deadline:
        time.sleep(0.5)


def show_certificate(release: ChartOnNode) -> None:
    try:
        status, body, leaf = release.https_get("mail.example.com")
    except OSError as error:
        say(f"the nginx pod does not serve mail.example.com yet ({error}); see the VirtualHost")
        return
    say(
        f"the nginx pod serves mail.example.com (HTTP {status}, {body.strip()!r}) with certificate "
        f"{format(leaf.serial_number, 'x')} issued by {leaf.issuer.rfc4514_string()}, verified "
        "against pebble's root"
    )


if __name__ == "__main__":
    raise SystemExit(main())
