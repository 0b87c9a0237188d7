"""``ObjectWatch`` against a real API server: the SYNC list, then the event stream it reads and
parses itself."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest

from tests.harness import kube
from tests.harness.clusters import Cluster
from vhost_operator.kube.api import connect
from vhost_operator.kube.sites import SiteObjects
from vhost_operator.kube.watching import ObjectWatch
from vhost_operator.provisioning.serving import slim_site
from vhost_operator.resources import labels
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


def test_a_paged_list_is_whole_and_the_watch_goes_on_from_it(
    core: kubernetes.client.CoreV1Api,
) -> None:
    """Five objects in pages of two: three list requests, one SYNC with all five (slimmed),
    then the watch from the list's version brings the next change and nothing before it."""
    label = uuid.uuid4().hex[:12]
    namespace = kube.NAMESPACE
    names = [f"paged-{i}-{label}" for i in range(5)]
    for index, name in enumerate(names):
        core.create_namespaced_config_map(namespace, configmap(name, label, str(index)))
    pages: list[dict[str, Any]] = []

    def list_function(*arguments: Any, **keywords: Any) -> Any:
        if not keywords.get("watch"):
            pages.append(keywords)
        return core.list_namespaced_config_map(*arguments, **keywords)

    watch = ObjectWatch(
        list_function,
        namespace,
        what="paged configmaps",
        page_size=2,
        slim=lambda obj: {"metadata": {"name": obj["metadata"]["name"]}, "data": obj["data"]},
        label_selector=f"watch-test={label}",
    )

    async def scenario() -> list[WatchEvent]:
        events = aiter(watch.events())
        async with asyncio.timeout(TIMEOUT):
            sync = await anext(events)
            await asyncio.to_thread(
                core.patch_namespaced_config_map, names[0], namespace, {"data": {"value": "x"}}
            )
            modified = await anext(events)
        watch.stop()
        return [sync, modified]

    try:
        sync, modified = asyncio.run(scenario())
    finally:
        for name in names:
            core.delete_namespaced_config_map(name, namespace)
    assert [page.get("limit") for page in pages] == [2, 2, 2]
    assert [bool(page.get("_continue")) for page in pages] == [False, True, True]
    assert sorted(obj["metadata"]["name"] for obj in sync.objects) == sorted(names)
    assert all(set(obj) == {"metadata", "data"} for obj in sync.objects)
    assert modified.type == "MODIFIED" and modified.object is not None
    assert modified.object == {"metadata": {"name": names[0]}, "data": {"value": "x"}}


def test_the_operator_watches_site_configmaps_slim(cluster: Cluster) -> None:
    """What the operator keeps of a site ConfigMap from the real watch: the annotations it
    reads and its owner, not the config or the managed fields."""
    kube.ensure_namespace(cluster)
    name = f"vhost-slim-{uuid.uuid4().hex[:12]}"
    namespace = kube.NAMESPACE
    manifest = kubernetes.client.V1ConfigMap(
        metadata=kubernetes.client.V1ObjectMeta(
            name=name,
            labels={labels.COMPONENT: labels.SITE_COMPONENT},
            annotations={labels.CONFIG_HASH: "h1", labels.STAGE: "final"},
        ),
        data={"site.conf": "server {}\n" * 100},
    )
    with connect(kubeconfig=cluster.kubeconfig) as client:
        core = kubernetes.client.CoreV1Api(client)
        core.create_namespaced_config_map(namespace, manifest)
        watch = SiteObjects(client, namespace).watch_configmaps(slim_site)

        async def first() -> WatchEvent:
            async with asyncio.timeout(TIMEOUT):
                sync = await anext(aiter(watch.events()))
            watch.stop()
            return sync

        try:
            sync = asyncio.run(first())
        finally:
            core.delete_namespaced_config_map(name, namespace)
    [site] = [obj for obj in sync.objects if obj["metadata"]["name"] == name]
    assert site == {
        "metadata": {"name": name, "annotations": {labels.CONFIG_HASH: "h1"}, "ownerReferences": []}
    }
