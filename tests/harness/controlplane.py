"""A real Kubernetes control plane as local processes: etcd, kube-apiserver and (for garbage
collection and namespace deletion) kube-controller-manager, in the manner of envtest.

Binaries come from ``KUBEBUILDER_ASSETS`` when set, else from ``hack/build-control-plane.sh``,
which builds them from their Go modules once and caches them outside the work tree.
"""

from __future__ import annotations

import base64
import os
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from tests.harness.pki import CertificateAuthority, KeyPair, service_account_key_pem
from tests.harness.processes import (
    ManagedProcess,
    StartupError,
    checked,
    free_port,
    http_ok,
    unverified_tls,
)

REPO = Path(__file__).resolve().parents[2]

SERVICE_RANGE = "198.18.128.0/24"
"""ClusterIPs: part of the benchmarking range (RFC 2544), which nothing on these machines uses; a
real node (tests/harness/node.py) routes it onto its pod bridge so that no Service packet leaves
the machine."""

KUBERNETES_SERVICE_IP = "198.18.128.1"
"""The first address of the range: the API server's own ``kubernetes`` Service."""

CONTROLLERS = (
    # GC and namespace deletion, default ServiceAccounts and their tokens: what the suite needs
    # without a node.
    "garbagecollector,namespace,serviceaccount,serviceaccount-token,"
    # What a real node needs to be a cluster: the kube-root-ca.crt ConfigMap every pod mounts,
    # the node's not-ready taint lifted, Service endpoints (EndpointSlices for kube-proxy, v1
    # Endpoints for the API server's services proxy), and workloads turned into pods.
    "root-ca-cert-publisher,nodelifecycle,podgc,endpointslice,endpoint,"
    "deployment,replicaset,daemonset,statefulset,job"
)


def control_plane_binaries() -> Path:
    """The directory with etcd, kube-apiserver, kube-controller-manager and kubectl."""
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets:
        return Path(assets)
    built = subprocess.run(
        ["bash", str(REPO / "hack" / "build-control-plane.sh")],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    return Path(built.stdout.strip().splitlines()[-1])


class LocalControlPlane:
    """Start with :meth:`start`, stop with :meth:`stop`; ``kubeconfig`` is an admin kubeconfig."""

    def __init__(self, workdir: Path | None = None, *, controller_manager: bool = True) -> None:
        self.bin = control_plane_binaries()
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="vhost-cp-"))
        self.kubeconfig = self.workdir / "kubeconfig"
        self.kubectl_path = self.bin / "kubectl"
        # envtest's KUBEBUILDER_ASSETS has no kube-controller-manager: run without GC then.
        self._with_controller_manager = (
            controller_manager and (self.bin / "kube-controller-manager").exists()
        )
        self._processes: list[ManagedProcess] = []
        self._launchers: dict[str, Callable[[], ManagedProcess]] = {}
        """How to start each component again, on the same ports and data directory."""
        self.api_port = 0
        self.etcd_port = 0

    # -- start ------------------------------------------------------------------------------

    def start(self) -> LocalControlPlane:
        try:
            certs = self._write_certificates()
            etcd_url = self._start_etcd()
            self._start_apiserver(etcd_url, certs)
            if self._with_controller_manager:
                self._start_controller_manager(certs)
        except BaseException:
            self.stop()
            raise
        return self

    def _write_certificates(self) -> dict[str, Path]:
        pki = self.workdir / "pki"
        pki.mkdir(parents=True, exist_ok=True)
        ca = CertificateAuthority("vhost-operator-test-ca")
        paths: dict[str, Path] = {}
        paths["ca"], paths["ca_key"] = ca.pair.write(pki, "ca")
        serving = ca.issue(
            "kube-apiserver",
            dns_names=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
            # Pods' in-cluster clients dial the `kubernetes` Service's ClusterIP.
            ip_addresses=("127.0.0.1", KUBERNETES_SERVICE_IP),
        )
        paths["serving"], paths["serving_key"] = serving.write(pki, "apiserver")
        admin = ca.issue("admin", organizations=("system:masters",), client=True)
        paths["admin"], paths["admin_key"] = admin.write(pki, "admin")
        signing_key, public_key = service_account_key_pem()
        paths["sa_key"], paths["sa_pub"] = pki / "sa.key", pki / "sa.pub"
        paths["sa_key"].write_bytes(signing_key)
        paths["sa_pub"].write_bytes(public_key)
        self.ca_pem = ca.pair.certificate_pem
        self._admin = admin
        self.ca = ca
        self.ca_path = paths["ca"]
        # The API server's identity towards kubelets (logs, exec), as kubeadm sets it up.
        kubelet_client = ca.issue(
            "kube-apiserver-kubelet-client", organizations=("system:masters",), client=True
        )
        paths["kubelet_client"], paths["kubelet_client_key"] = kubelet_client.write(
            pki, "kubelet-client"
        )
        return paths

    def _start_etcd(self) -> str:
        self.etcd_port, peer_port = free_port(), free_port()
        url = f"http://127.0.0.1:{self.etcd_port}"
        argv = [
            str(self.bin / "etcd"),
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={url}",
            f"--advertise-client-urls={url}",
            f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-cluster=default=http://127.0.0.1:{peer_port}",
            "--unsafe-no-fsync=true",  # test data: durability is not worth the fsync cost
            "--log-level=warn",
        ]

        def launch() -> ManagedProcess:
            etcd = self._spawn("etcd", argv)
            etcd.wait_until(lambda: http_ok(f"{url}/health"), timeout=30, what="healthy etcd")
            return etcd

        self._launch("etcd", launch)
        return url

    def _start_apiserver(self, etcd_url: str, certs: dict[str, Path]) -> None:
        self.api_port = free_port()
        argv = [
            str(self.bin / "kube-apiserver"),
            f"--etcd-servers={etcd_url}",
            f"--secure-port={self.api_port}",
            "--bind-address=127.0.0.1",
            # No default route in a sandbox: without this the apiserver cannot pick an address.
            "--advertise-address=127.0.0.1",
            f"--tls-cert-file={certs['serving']}",
            f"--tls-private-key-file={certs['serving_key']}",
            f"--client-ca-file={certs['ca']}",
            f"--service-cluster-ip-range={SERVICE_RANGE}",
            # Node: kubelets act on their own node and pods only, as in any cluster.
            "--authorization-mode=Node,RBAC",
            # Node names do not resolve here: reach kubelets (logs, exec) at their address.
            "--kubelet-preferred-address-types=InternalIP",
            f"--kubelet-client-certificate={certs['kubelet_client']}",
            f"--kubelet-client-key={certs['kubelet_client_key']}",
            # The `kubernetes` Service's endpoint would be 127.0.0.1, which is invalid (the
            # apiserver retries and logs it every 10 s) and unreachable from pods; a real
            # node (tests/harness/node.py) writes one at its own address instead.
            "--endpoint-reconciler-type=none",
            "--allow-privileged=true",
            f"--service-account-issuer=https://127.0.0.1:{self.api_port}",
            f"--service-account-key-file={certs['sa_pub']}",
            f"--service-account-signing-key-file={certs['sa_key']}",
            f"--cert-dir={self.workdir / 'apiserver-certs'}",
            "--v=1",
        ]
        context = ssl.create_default_context(cadata=self.ca_pem.decode())
        context.load_cert_chain(certs["admin"], certs["admin_key"])

        def launch() -> ManagedProcess:
            apiserver = self._spawn(
                "kube-apiserver",
                argv,
                # The apiserver calls webhooks on 127.0.0.1: never through a proxy.
                env={"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"},
            )
            apiserver.wait_until(
                lambda: http_ok(f"{self.server}/readyz", context),
                timeout=90,
                what="ready kube-apiserver",
            )
            return apiserver

        self._launch("kube-apiserver", launch)
        self._write_kubeconfig(self.kubeconfig, self._admin)

    def _start_controller_manager(self, certs: dict[str, Path]) -> None:
        port = free_port()
        argv = [
            str(self.bin / "kube-controller-manager"),
            f"--kubeconfig={self.kubeconfig}",
            f"--authentication-kubeconfig={self.kubeconfig}",
            f"--authorization-kubeconfig={self.kubeconfig}",
            f"--controllers={CONTROLLERS}",
            f"--service-account-private-key-file={certs['sa_key']}",
            f"--root-ca-file={certs['ca']}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            "--leader-elect=false",
            f"--cert-dir={self.workdir / 'controller-manager-certs'}",
        ]

        def launch() -> ManagedProcess:
            controller_manager = self._spawn("kube-controller-manager", argv)
            controller_manager.wait_until(
                lambda: http_ok(f"https://127.0.0.1:{port}/healthz", unverified_tls()),
                timeout=60,
                what="healthy kube-controller-manager",
            )
            return controller_manager

        self._launch("kube-controller-manager", launch)

    def _launch(self, name: str, launch: Callable[[], ManagedProcess]) -> None:
        self._launchers[name] = launch
        launch()

    def _spawn(
        self, name: str, argv: list[str], env: dict[str, str] | None = None
    ) -> ManagedProcess:
        process = ManagedProcess(name, argv, self.workdir / f"{name}.log", env)
        self._processes.append(process)
        return process

    def client_kubeconfig(self, path: Path, user: str, groups: tuple[str, ...] = ()) -> Path:
        """A kubeconfig at ``path`` with a client certificate for ``user`` in ``groups``, signed by
        the API server's client CA: how node components and CoreDNS authenticate."""
        return self._write_kubeconfig(path, self.ca.issue(user, organizations=groups, client=True))

    def _write_kubeconfig(self, path: Path, identity: KeyPair) -> Path:
        def b64(data: bytes) -> str:
            return base64.b64encode(data).decode()

        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "local",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority-data": b64(self.ca_pem),
                    },
                }
            ],
            "users": [
                {
                    "name": "admin",
                    "user": {
                        "client-certificate-data": b64(identity.certificate_pem),
                        "client-key-data": b64(identity.key_pem),
                    },
                }
            ],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": "admin"}}],
            "current-context": "local",
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    # -- use --------------------------------------------------------------------------------

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the real kubectl (built with the control plane) against this cluster."""
        completed = subprocess.run(
            [str(self.kubectl_path), f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
        return checked(completed, check=check)

    def logs(self) -> str:
        return "\n".join(f"== {p.name} ==\n{p.log_path}" for p in self._processes)

    # -- faults -----------------------------------------------------------------------------

    def restart(self, name: str, *, kill: bool = False, down_for: float = 0.0) -> float:
        """Stop component ``name`` (``etcd``, ``kube-apiserver``, ``kube-controller-manager``)
        with SIGTERM, or SIGKILL if ``kill``, keep it down ``down_for`` seconds, then start it
        again on the same ports and data directory and wait until it is ready. Clients keep
        their kubeconfig. Returns how long it was down, in seconds."""
        index = next(i for i, process in enumerate(self._processes) if process.name == name)
        process = self._processes.pop(index)
        started = time.monotonic()
        if kill:
            process.kill()
        process.stop()
        time.sleep(down_for)
        self._launchers[name]()
        # Back in its place: stop() stops components in the reverse order of their start.
        self._processes.insert(index, self._processes.pop())
        return time.monotonic() - started

    # -- stop -------------------------------------------------------------------------------

    def stop(self) -> None:
        for process in reversed(self._processes):
            process.stop()
        self._processes.clear()


__all__ = ["LocalControlPlane", "StartupError", "control_plane_binaries"]
