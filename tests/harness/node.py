"""A real Kubernetes node on the local control plane, as local processes: containerd (Debian's),
kubelet, kube-scheduler and kube-proxy (built from the pinned Kubernetes module) and CoreDNS
(from its Go module) on the host, answering for a ``kube-dns`` Service.

Addresses: pods get 198.18.0.0/24 on a bridge of the node's own, whose gateway 198.18.0.1 is the
node's address (kubelet serves there; hostPorts and NodePorts answer there). Services get
198.18.128.0/24 (the control plane's range), routed onto the bridge, so a packet that no
kube-proxy rule rewrites stays on the machine. A guard chain drops anything pods would send out
through another interface: no traffic leaves the machine.

One node per machine (the bridge, the ranges and the iptables chains are machine-wide): a lock
file serialises test sessions, and a state file lets the next one clean up after a session that
was killed before its teardown.

    with LocalNode(plane, workdir) as node:
        node.import_image(archive)
        ... pods with ``imagePullPolicy: Never`` ...
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml
from pydantic import BaseModel

from tests.harness import node_cleanup
from tests.harness.controlplane import REPO, SERVICE_RANGE, LocalControlPlane
from tests.harness.node_images import pause_image
from tests.harness.processes import (
    ManagedProcess,
    StartupError,
    free_port,
    http_ok,
    log_tail,
    unverified_tls,
)

log = logging.getLogger(__name__)

BUILD_SCRIPT = REPO / "hack" / "build-node.sh"
BRIDGE = "vhost-node0"
POD_RANGE = "198.18.0.0/24"
NODE_ADDRESS = "198.18.0.1"
DNS_SERVICE_IP = "198.18.128.10"
CLUSTER_DOMAIN = "cluster.local"
CNI_NETWORK = "vhost-node"
GUARD_CHAIN = "VHOST-NODE-GUARD"
LOCK_PATH = Path("/run/vhost-operator-node.lock")
STATE_PATH = Path("/run/vhost-operator-node.json")
CNI_RESULTS = Path("/var/lib/cni/results")
CONTAINER_LOG_LINKS = Path("/var/log/containers")
FIXED_DIRECTORIES = (
    Path("/run/containerd/s"),  # shim sockets: containerd 1.6 puts them there whatever its state
    Path("/run/containerd"),
    CNI_RESULTS,
    CNI_RESULTS.parent,
    CONTAINER_LOG_LINKS,
)
NO_PROXY_ANYWHERE = "http://127.0.0.1:9"
"""A closed local port as containerd's proxy: an image that is not imported fails at once
instead of being pulled from the Internet."""


def node_binaries() -> Path:
    """The directory with kubelet, kube-scheduler, kube-proxy and coredns (built on first use)."""
    built = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], check=True, stdout=subprocess.PIPE, text=True
    )
    return Path(built.stdout.strip().splitlines()[-1])


class NodeState(BaseModel):
    """What a running node changed on the machine, on disk so that a later session can undo it
    if this one dies before its teardown."""

    workdir: Path


class LocalNode:
    """Start with :meth:`start` (or ``with``), stop with :meth:`stop` (idempotent)."""

    def __init__(self, plane: LocalControlPlane, workdir: Path, name: str = "vhost-node") -> None:
        self.plane = plane
        self.workdir = workdir
        self.name = name
        self.address = NODE_ADDRESS
        """Where hostPorts and NodePorts answer, from the host and from pods."""
        self.dns_service_ip = DNS_SERVICE_IP
        self.bin = node_binaries()
        self.containerd_socket = workdir / "containerd" / "containerd.sock"
        self._processes: dict[str, ManagedProcess] = {}
        self._lock_fd: int | None = None
        self._api_relay_port = 0
        self.start_seconds = 0.0
        """Start to Ready, measured by :meth:`start`."""
        self.stop_seconds = 0.0

    # -- start ------------------------------------------------------------------------------

    def __enter__(self) -> LocalNode:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self, *, timeout: float = 180) -> LocalNode:
        self._acquire_lock(timeout=600)
        # Timed from here: waiting for another session's node is not starting this one.
        started = time.monotonic()
        atexit.register(self.stop)
        try:
            self._clean_up_after_dead_session()
            STATE_PATH.write_text(NodeState(workdir=self.workdir).model_dump_json())
            self._create_network()
            self._start_api_relay()
            self._start_containerd()
            self.import_image(pause_image().path)
            self._start_kubelet()
            self._start_scheduler()
            self._start_proxy()
            self._start_dns()
            self._wait_until_ready(deadline=started + timeout)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - started
        return self

    def _acquire_lock(self, *, timeout: float) -> None:
        descriptor = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(descriptor)
                    raise StartupError(f"another test node holds {LOCK_PATH}") from None
                time.sleep(1)
        self._lock_fd = descriptor

    def _clean_up_after_dead_session(self) -> None:
        """Holding the lock, any node state on the machine is stale: a session killed before
        its teardown. Its state file says where its work directory was."""
        if STATE_PATH.exists():
            state = NodeState.model_validate_json(STATE_PATH.read_text())
            log.warning("cleaning up after a node that was not stopped: %s", state.workdir)
        else:
            state = NodeState(workdir=self.workdir)
        _clean_host(state)

    def _create_network(self) -> None:
        ip = ["ip"]
        subprocess.run([*ip, "link", "add", BRIDGE, "type", "bridge"], check=True)
        subprocess.run([*ip, "addr", "add", f"{NODE_ADDRESS}/24", "dev", BRIDGE], check=True)
        subprocess.run([*ip, "link", "set", BRIDGE, "up"], check=True)
        # Forwarding for what enters through the bridge only (pod -> ClusterIP -> pod is routed
        # back onto it); the setting goes with the bridge.
        Path(f"/proc/sys/net/ipv4/conf/{BRIDGE}/forwarding").write_text("1")
        # Services: a packet to a ClusterIP no rule rewrote stays here (a blackhole route would
        # make local connects fail with EINVAL before kube-proxy's OUTPUT rules see them).
        subprocess.run([*ip, "route", "add", SERVICE_RANGE, "dev", BRIDGE], check=True)
        iptables = ["iptables", "-w"]
        subprocess.run([*iptables, "-N", GUARD_CHAIN], check=True)
        subprocess.run(
            [*iptables, "-A", GUARD_CHAIN, "-i", BRIDGE, "!", "-o", BRIDGE, "-j", "DROP"],
            check=True,
        )
        subprocess.run([*iptables, "-I", "FORWARD", "1", "-j", GUARD_CHAIN], check=True)
        cni = self.workdir / "cni"
        (cni / "net.d").mkdir(parents=True, exist_ok=True)
        conflist = {
            "cniVersion": "1.0.0",
            "name": CNI_NETWORK,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    # The gateway address is ours (above); as gateway the plugin would also turn
                    # on forwarding machine-wide, which podman's networks on this machine
                    # depend on too, so that no teardown could safely turn it off again.
                    "isGateway": False,
                    "ipMasq": False,  # nothing is to leave the machine, so nothing to masquerade
                    "hairpinMode": True,  # a pod reaching itself through its Service
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_RANGE, "gateway": NODE_ADDRESS}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(cni / "ipam"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }
        (cni / "net.d" / "10-vhost-node.conflist").write_text(json.dumps(conflist, indent=2))

    def _start_api_relay(self) -> None:
        """The API server listens on 127.0.0.1, which pods cannot reach (and which an endpoint
        may not name): the ``kubernetes`` Service's endpoint is a relay at the node's address."""
        self._api_relay_port = free_port()
        listen = f"{NODE_ADDRESS}:{self._api_relay_port}"
        target = f"127.0.0.1:{self.plane.api_port}"
        relay = self._spawn(
            "api-relay",
            [sys.executable, "-m", "tests.harness.relay", listen, target, str(self.workdir)],
            env={"PYTHONPATH": str(REPO)},
        )
        relay.wait_until(
            lambda: _accepts(NODE_ADDRESS, self._api_relay_port), timeout=30, what="relay listening"
        )

    def _start_containerd(self) -> None:
        root = self.workdir / "containerd"
        root.mkdir(parents=True, exist_ok=True)
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        config = f"""
version = 2
root = "{root / "root"}"
state = "{root / "state"}"
[grpc]
  address = "{self.containerd_socket}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{root / "opt"}"
[{cri}]
  sandbox_image = "{pause_image().reference}"
  # Without it every sandbox fails in runc: "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
[{cri}.cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "{self.workdir / "cni" / "net.d"}"
[{cri}.containerd]
  default_runtime_name = "runc"
[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[{cri}.containerd.runtimes.runc.options]
  BinaryName = "runc"
  Root = "{root / "runc"}"
"""
        (root / "config.toml").write_text(config)
        containerd = self._spawn(
            "containerd",
            ["containerd", f"--config={root / 'config.toml'}"],
            env={"HTTP_PROXY": NO_PROXY_ANYWHERE, "HTTPS_PROXY": NO_PROXY_ANYWHERE, "NO_PROXY": ""},
        )
        containerd.wait_until(
            lambda: self._ctr("version", check=False).returncode == 0,
            timeout=60,
            what="containerd answering",
        )

    def _client_kubeconfig(self, component: str, user: str, *groups: str) -> Path:
        return self.plane.client_kubeconfig(
            self.workdir / f"{component}.kubeconfig", user, tuple(groups)
        )

    def _start_kubelet(self) -> None:
        root = self.workdir / "kubelet"
        root.mkdir(parents=True, exist_ok=True)
        kubeconfig = self._client_kubeconfig("kubelet", f"system:node:{self.name}", "system:nodes")
        resolv = self.workdir / "resolv.conf"
        resolv.write_text("")  # pods get the cluster DNS only: no host resolver, no way out
        self._kubelet_healthz = free_port()
        config: dict[str, Any] = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "cgroupDriver": "cgroupfs",
            "failCgroupV1": False,  # these machines run cgroup v1
            "failSwapOn": False,
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "address": NODE_ADDRESS,
            "port": free_port(),
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": self._kubelet_healthz,
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(self.plane.ca_path)},
            },
            "authorization": {"mode": "Webhook"},
            "clusterDNS": [DNS_SERVICE_IP],
            "clusterDomain": CLUSTER_DOMAIN,
            "resolvConf": str(resolv),
            "podLogsDir": str(root / "pod-logs"),
            "volumePluginDir": str(root / "volume-plugins"),
            # A test machine's disk may well be 90 % full: no eviction, no image GC for that.
            "evictionHard": {
                "memory.available": "50Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": False,
        }
        config_path = root / "config.yaml"
        config_path.write_text(yaml.safe_dump(config))
        kubelet = self._spawn(
            "kubelet",
            [
                str(self.bin / "kubelet"),
                f"--config={config_path}",
                f"--kubeconfig={kubeconfig}",
                f"--root-dir={root}",
                f"--cert-dir={root / 'pki'}",
                f"--hostname-override={self.name}",
                f"--node-ip={NODE_ADDRESS}",
            ],
        )
        kubelet.wait_until(
            lambda: http_ok(f"http://127.0.0.1:{self._kubelet_healthz}/healthz"),
            timeout=90,
            what="healthy kubelet",
        )

    def _start_scheduler(self) -> None:
        kubeconfig = self._client_kubeconfig("kube-scheduler", "system:kube-scheduler")
        port = free_port()
        scheduler = self._spawn(
            "kube-scheduler",
            [
                str(self.bin / "kube-scheduler"),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                "--leader-elect=false",
            ],
        )
        scheduler.wait_until(
            lambda: http_ok(f"https://127.0.0.1:{port}/healthz", unverified_tls()),
            timeout=60,
            what="healthy kube-scheduler",
        )

    def _start_proxy(self) -> None:
        # system:kube-proxy is bound to system:node-proxier by the default RBAC policy.
        kubeconfig = self._client_kubeconfig("kube-proxy", "system:kube-proxy")
        healthz = free_port()
        proxy = self._spawn(
            "kube-proxy",
            [
                str(self.bin / "kube-proxy"),
                f"--kubeconfig={kubeconfig}",
                f"--hostname-override={self.name}",
                "--proxy-mode=iptables",
                f"--cluster-cidr={POD_RANGE}",
                f"--nodeport-addresses={NODE_ADDRESS}/32",  # never on the machine's own NIC
                "--iptables-localhost-nodeports=false",  # leaves the host's route_localnet alone
                # Zeros: leave the host's conntrack sysctls as they are.
                "--conntrack-max-per-core=0",
                "--conntrack-tcp-timeout-established=0",
                "--conntrack-tcp-timeout-close-wait=0",
                f"--healthz-bind-address=127.0.0.1:{healthz}",
                f"--metrics-bind-address=127.0.0.1:{free_port()}",
            ],
        )
        proxy.wait_until(
            lambda: http_ok(f"http://127.0.0.1:{healthz}/healthz"),
            timeout=90,
            what="healthy kube-proxy",
        )

    def _start_dns(self) -> None:
        """CoreDNS on the host at the node's address, behind a ``kube-dns`` Service."""
        kubeconfig = self._client_kubeconfig("coredns", "system:vhost-test-coredns")
        port, ready = free_port(), free_port()
        self.plane.kubectl("apply", "-f", str(self._write_cluster_objects(port)))
        corefile = self.workdir / "Corefile"
        # No `forward`: names outside the cluster get no answer rather than a query off the host.
        corefile.write_text(
            f""".:{port} {{
    bind {NODE_ADDRESS}
    errors
    ready 127.0.0.1:{ready}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig} local
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 5
}}
"""
        )
        coredns = self._spawn("coredns", [str(self.bin / "coredns"), "-conf", str(corefile)])
        coredns.wait_until(
            lambda: http_ok(f"http://127.0.0.1:{ready}/ready"), timeout=60, what="ready CoreDNS"
        )

    def _write_cluster_objects(self, dns_port: int) -> Path:
        """CoreDNS's permissions, the ``kube-dns`` Service and the endpoints of it and of the
        ``kubernetes`` Service (the API server writes none: --endpoint-reconciler-type=none)."""
        rule = {"apiGroups": [""], "resources": ["services", "namespaces", "pods"]}
        slices = {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"]}
        role_name = "vhost-test:coredns"
        objects: list[dict[str, Any]] = [
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": role_name},
                "rules": [{**r, "verbs": ["list", "watch"]} for r in (rule, slices)],
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": role_name},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": role_name,
                },
                "subjects": [
                    {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "User",
                        "name": "system:vhost-test-coredns",
                    }
                ],
            },
            {
                # No selector: the endpoints are ours (the host's CoreDNS), not a controller's.
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "kube-dns", "namespace": "kube-system"},
                "spec": {
                    "clusterIP": DNS_SERVICE_IP,
                    "ports": [
                        {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": dns_port},
                        {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": dns_port},
                    ],
                },
            },
            _host_endpoints(
                "kube-system",
                "kube-dns",
                {"dns": (dns_port, "UDP"), "dns-tcp": (dns_port, "TCP")},
            ),
            _host_endpoints("default", "kubernetes", {"https": (self._api_relay_port, "TCP")}),
        ]
        path = self.workdir / "kube-dns.yaml"
        path.write_text(yaml.safe_dump_all(objects))
        return path

    def _wait_until_ready(self, *, deadline: float) -> None:
        while time.monotonic() < deadline:
            for process in self._processes.values():
                if process.process.poll() is not None:
                    raise StartupError(
                        f"{process.name} exited before the node was Ready:\n"
                        + log_tail(process.log_path)
                    )
            if self._node_ready():
                return
            time.sleep(0.5)
        raise StartupError(
            f"node {self.name} not Ready in time; kubelet's log ends:\n"
            + log_tail(self.workdir / "kubelet.log")
        )

    def _node_ready(self) -> bool:
        found = self.plane.kubectl("get", "node", self.name, "-o", "json", check=False)
        if found.returncode != 0:
            return False
        node = json.loads(found.stdout)
        ready = any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in node.get("status", {}).get("conditions", [])
        )
        tainted = any(
            t["key"] == "node.kubernetes.io/not-ready" for t in node["spec"].get("taints", [])
        )
        return ready and not tainted

    def _spawn(
        self, name: str, argv: list[str], env: dict[str, str] | None = None
    ) -> ManagedProcess:
        process = ManagedProcess(name, argv, self.workdir / f"{name}.log", env)
        self._processes[name] = process
        return process

    # -- use --------------------------------------------------------------------------------

    def _ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ctr", f"--address={self.containerd_socket}", "--namespace=k8s.io", *args],
            capture_output=True,
            text=True,
            timeout=300,
            check=check,
        )

    def kill_container(self, container_id: str) -> None:
        """SIGKILL a container's processes (``containerd://<id>`` or ``<id>``), as a crash or
        the OOM killer would: kubelet then restarts it in the same pod."""
        self._ctr(
            "tasks", "kill", "--signal", "SIGKILL", container_id.removeprefix("containerd://")
        )

    def import_image(self, archive: Path) -> None:
        """Load a docker/OCI archive (``podman save``) into containerd's k8s.io namespace,
        where kubelet finds it: pods then run it with ``imagePullPolicy: Never``."""
        self._ctr("images", "import", str(archive))

    # -- stop -------------------------------------------------------------------------------

    def stop(self) -> None:
        """Remove everything the node made, whatever state it is in. Each step runs even if
        one before it failed."""
        if self._lock_fd is None:
            return  # never started, or stopped already: nothing of ours exists
        started = time.monotonic()
        steps: list[Callable[[], None]] = [
            lambda: self._stop_process("kube-scheduler"),  # no new pods bound while we delete
            self._delete_pods,
            lambda: self._stop_process("kubelet"),
            lambda: self._stop_process("kube-proxy"),
            lambda: self._stop_process("coredns"),
            self._delete_api_objects,
            self._remove_containers,
            lambda: self._stop_process("containerd"),
        ]
        for step in steps:
            try:
                step()
            except Exception:
                log.exception("node teardown step failed; going on")
        for process in self._processes.values():
            process.stop()
        self._processes.clear()
        try:
            _clean_host(NodeState(workdir=self.workdir))
            STATE_PATH.unlink(missing_ok=True)
        finally:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None
            atexit.unregister(self.stop)
        self.stop_seconds = time.monotonic() - started

    def _stop_process(self, name: str) -> None:
        process = self._processes.pop(name, None)
        if process is not None:
            process.stop()

    def _delete_pods(self) -> None:
        """Pods go through the API, so kubelet stops them the proper way (CNI DEL included)."""
        if "kubelet" not in self._processes:
            return
        on_node = ["--all-namespaces", f"--field-selector=spec.nodeName={self.name}"]
        self.plane.kubectl(
            "delete", "pods", *on_node, "--grace-period=5", "--wait=false", check=False
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            left = self.plane.kubectl("get", "pods", *on_node, "-o", "name", check=False)
            if left.returncode == 0 and not left.stdout.strip():
                return
            time.sleep(0.5)
        log.warning("pods still on %s after 60 s; removing their containers directly", self.name)

    def _delete_api_objects(self) -> None:
        for kind, name, namespace in (
            ("node", self.name, ""),
            ("service", "kube-dns", "kube-system"),
            ("endpointslice", "kube-dns-host", "kube-system"),
            ("endpointslice", "kubernetes-host", "default"),
        ):
            self.plane.kubectl(
                "delete", kind, name, f"--namespace={namespace or 'default'}",
                "--ignore-not-found", "--wait=false", check=False,
            )  # fmt: skip
        # Pods the API still lists on the node (kubelet gone): nothing will ever confirm them.
        self.plane.kubectl(
            "delete", "pods", "--all-namespaces", f"--field-selector=spec.nodeName={self.name}",
            "--force", "--grace-period=0", check=False,
        )  # fmt: skip

    def _remove_containers(self) -> None:
        if "containerd" not in self._processes:
            return
        tasks = self._ctr("tasks", "list", "--quiet", check=False).stdout.split()
        for task in tasks:
            self._ctr("tasks", "kill", "--signal=SIGKILL", task, check=False)
            self._ctr("tasks", "delete", "--force", task, check=False)
        for container in self._ctr("containers", "list", "--quiet", check=False).stdout.split():
            self._ctr("containers", "delete", container, check=False)


def _host_endpoints(
    namespace: str, service: str, ports: dict[str, tuple[int, str]]
) -> dict[str, Any]:
    """An EndpointSlice putting ``service``'s endpoint on the host, at the node's address. The
    Service has no selector, so no controller manages (or removes) it."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{service}-host",
            "namespace": namespace,
            "labels": {
                "kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": "vhost-operator-tests",
            },
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [NODE_ADDRESS], "conditions": {"ready": True}}],
        "ports": [
            {"name": name, "port": port, "protocol": protocol}
            for name, (port, protocol) in ports.items()
        ],
    }


def _accepts(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
        return True
    return False


def _clean_host(state: NodeState) -> None:
    """Machine-wide leftovers of a node, whether it stopped cleanly or not."""
    node_cleanup.kill_leftovers(state.workdir)
    node_cleanup.unmount_all(state.workdir)
    # Images and their unpacked layers (hundreds of MB with the product's images): the logs in
    # the work directory are worth keeping, these are not.
    shutil.rmtree(state.workdir / "containerd" / "root", ignore_errors=True)
    node_cleanup.remove_iptables_chains()
    node_cleanup.delete_link(BRIDGE)  # its address and routes (the Service range) go with it
    node_cleanup.remove_kubepods_cgroups()
    node_cleanup.remove_links_into(
        state.workdir,
        CONTAINER_LOG_LINKS.iterdir() if CONTAINER_LOG_LINKS.is_dir() else [],
    )
    for result in CNI_RESULTS.glob(f"{CNI_NETWORK}-*") if CNI_RESULTS.is_dir() else []:
        result.unlink(missing_ok=True)
    # Directories containerd, the CNI plugins and kubelet create at fixed places, once empty.
    node_cleanup.remove_empty_directories(FIXED_DIRECTORIES)


def leftovers(workdir: Path) -> dict[str, object]:
    """What a stopped node left behind, by kind: all empty (falsy) after a clean teardown."""
    routes = subprocess.run(["ip", "route", "show", SERVICE_RANGE], capture_output=True, text=True)
    return {
        "bridge": node_cleanup.link_exists(BRIDGE),
        "service route": routes.stdout.strip(),
        "iptables rules and chains": node_cleanup.count_iptables_chains(),
        "mounts": node_cleanup.mounts_under(workdir),
        "processes": node_cleanup.pids_with_argument(str(workdir)),
        "container processes": sorted(node_cleanup.pids_in_kubepods()),
        "kubepods cgroups": node_cleanup.remaining_kubepods_cgroups(),
    }
