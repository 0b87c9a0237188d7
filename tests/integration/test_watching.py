"""``ObjectWatch`` against a real API server: the SYNC list, then the event stream it reads and
parses itself."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import kubernetes
import pytest

from tests.harness import kube
from tests.harness.clusters import Cluster
from vhost_operator.kube.api import connect
from vhost_operator.kube.watching import ObjectWatch
from vhost_operator.resources.watch import WatchEvent

TIMEOUT = 20.0


@pytest.fixture
def core(cluster: Cluster) -> Iterator[kubernetes.client.CoreV1Api]:
    kube.ensure_namespace(cluster)
    with connect(kubeconfig=cluster.kubeconfig) as client:
        yield kubernetes.client.CoreV1Api(client)


def configmap(name: str, label: str, value: str) -> kubernetes.client.V1ConfigMap:
    return kubernetes.client.V1ConfigMap(
        metadata=kubernetes.client.V1ObjectMeta(name=name, labels={"watch-test": label}),
        data={"value": value},
    )


def test_a_watch_lists_then_streams_every_change(core: kubernetes.client.CoreV1Api) -> None:
    label = uuid.uuid4().hex[:12]
    namespace = kube.NAMESPACE
    core.create_namespaced_config_map(namespace, configmap(f"first-{label}", label, "1"))
    watch = ObjectWatch(
        core.list_namespaced_config_map,
        namespace,
        what="test configmaps",
        label_selector=f"watch-test={label}",
    )

    async def scenario() -> list[WatchEvent]:
        seen: list[WatchEvent] = []
        events = aiter(watch.events())
        async with asyncio.timeout(TIMEOUT):
            seen.append(await anext(events))
            await asyncio.to_thread(
                core.create_namespaced_config_map,
                namespace,
                configmap(f"second-{label}", label, "2"),
            )
            seen.append(await anext(events))
            await asyncio.to_thread(
                core.patch_namespaced_config_map,
                f"second-{label}",
                namespace,
                {"data": {"value": "3"}},
            )
            seen.append(await anext(events))
            await asyncio.to_thread(core.delete_namespaced_config_map, f"second-{label}", namespace)
            seen.append(await anext(events))
        watch.stop()
        return seen

    try:
        sync, added, modified, deleted = asyncio.run(scenario())
    finally:
        core.delete_namespaced_config_map(f"first-{label}", namespace)
    assert sync.type == "SYNC"
    assert [obj["metadata"]["name"] for obj in sync.objects] == [f"first-{label}"]
    assert added.type == "ADDED" and added.object is not None
    assert added.object["metadata"]["name"] == f"second-{label}"
    assert modified.type == "MODIFIED" and modified.object is not None
    assert modified.object["data"] == {"value": "3"}
    assert deleted.type == "DELETED"
