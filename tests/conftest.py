"""Shared fixtures: the cluster the tests run against, and the operator process."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

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


PARAMETER_ID_LENGTH = 60
"""Long enough to tell rows of a table apart, short enough to keep a test's name on one line."""


def pytest_make_parametrize_id(config: pytest.Config, val: object, argname: str) -> str | None:
    """Name a table's rows after their values, not their position: pytest calls a dict or a list
    ``argname0``, which says nothing when that row fails."""
    if isinstance(val, Mapping | list | tuple | datetime | BaseModel):
        return _describe(val)[:PARAMETER_ID_LENGTH]
    if isinstance(val, str) and len(val) > PARAMETER_ID_LENGTH:
        return f"{val[:20]}...({len(val)} characters)"
    return None


def _describe(value: Any) -> str:
    if isinstance(value, Mapping):
        return ",".join(f"{key}={_describe(item)}" for key, item in value.items()) or "{}"
    if isinstance(value, list | tuple):
        return "+".join(_describe(item) for item in value) or "[]"
    if isinstance(value, BaseModel):
        return _describe(value.model_dump(exclude_defaults=True))
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


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
