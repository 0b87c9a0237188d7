"""Shared fixtures: the cluster the tests run against, and the operator process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.clusters import (
    CLUSTER_KINDS,
    Cluster,
    existing_cluster,
    kind_cluster,
    local_cluster,
)
from tests.harness.controlplane import LocalControlPlane
from tests.harness.node import LocalNode


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--cluster",
        choices=CLUSTER_KINDS,
        default="local",
        help="local: etcd + kube-apiserver built from source (default); "
        "existing: the current kubeconfig; kind: pytest-kind (needs Docker)",
    )


@pytest.fixture(scope="session")
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    kind = request.config.getoption("--cluster")
    workdir = tmp_path_factory.mktemp("cluster")
    if kind == "local":
        with local_cluster(workdir) as local:
            yield local
    elif kind == "existing":
        with existing_cluster() as existing:
            yield existing
    else:
        with kind_cluster(workdir) as created:
            yield created


@pytest.fixture(scope="session")
def node(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNode]:
    """A Ready node (containerd, kubelet, kube-scheduler, kube-proxy, CoreDNS) on the local
    control plane; everything it made is removed at the end of the session."""
    if not isinstance(cluster, LocalControlPlane):
        pytest.skip("the harness's node joins the local control plane only (--cluster=local)")
    with LocalNode(cluster, tmp_path_factory.mktemp("node")) as started:
        yield started


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
