"""The clusters a test run can use: ``--cluster=local`` (default), ``existing`` or ``kind``."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from tests.harness.controlplane import REPO, LocalControlPlane
from tests.harness.processes import checked

CLUSTER_KINDS = ("local", "existing", "kind")
CRDS = REPO / "crds"


class Cluster(Protocol):
    kubeconfig: Path

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]: ...


class KubeconfigCluster:
    """A cluster reached through a kubeconfig and the ``kubectl`` on PATH."""

    def __init__(self, kubeconfig: Path, kubectl_path: str | None = None) -> None:
        self.kubeconfig = kubeconfig
        self._kubectl = kubectl_path or shutil.which("kubectl") or "kubectl"

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [self._kubectl, f"--kubeconfig={self.kubeconfig}", *args]
        completed = subprocess.run(command, capture_output=True, text=True, timeout=120)
        return checked(completed, check=check)


def install_crds(cluster: Cluster) -> None:
    cluster.kubectl("apply", "--server-side", "-f", str(CRDS))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")


@contextmanager
def local_cluster(workdir: Path) -> Iterator[Cluster]:
    plane = LocalControlPlane(workdir).start()
    try:
        install_crds(plane)
        yield plane
    finally:
        plane.stop()


@contextmanager
def existing_cluster() -> Iterator[Cluster]:
    kubeconfig = Path.home() / ".kube" / "config"
    cluster = KubeconfigCluster(kubeconfig)
    install_crds(cluster)
    yield cluster


@contextmanager
def kind_cluster(workdir: Path) -> Iterator[Cluster]:
    """A kind cluster through pytest-kind; needs a Docker engine (absent on our CI machines)."""
    from pytest_kind import KindCluster

    kind = KindCluster("vhost-operator-tests", kubeconfig=workdir / "kind-kubeconfig")
    kind.create()
    try:
        cluster = KubeconfigCluster(Path(kind.kubeconfig_path), str(kind.kubectl_path))
        install_crds(cluster)
        yield cluster
    finally:
        kind.delete()
