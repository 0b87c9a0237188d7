"""``kube.objects.NamespacedObjects`` against a real API server: the one-request writes (a create
refused when the name is taken, a deletion by uid of that incarnation only) and the server-side
apply behaviour the site ConfigMap's create relies on."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness import kube
from tests.harness.clusters import Cluster
from vhost_operator.errors import ForeignObjectError
from vhost_operator.kube.api import connect
from vhost_operator.kube.objects import NamespacedObjects
from vhost_operator.resources import labels

pytestmark = pytest.mark.cluster
NAMESPACE = kube.NAMESPACE


@pytest.fixture
def objects(cluster: Cluster) -> Iterator[NamespacedObjects]:
    kube.ensure_namespace(cluster)
    with connect(kubeconfig=cluster.kubeconfig) as client:
        yield NamespacedObjects(client)


def manifest(name: str, owner: str, **annotations: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "annotations": {labels.VIRTUALHOST: owner, **annotations}}}


def get(cluster: Cluster, kind: str, name: str) -> dict[str, Any] | None:
    found = cluster.kubectl(
        "get", kind, name, "-n", NAMESPACE, "-o", "json", "--ignore-not-found"
    ).stdout
    return json.loads(found) if found.strip() else None


def test_a_create_gives_the_uid_and_is_refused_when_the_name_is_taken(
    cluster: Cluster, objects: NamespacedObjects
) -> None:
    name = f"create-{uuid.uuid4().hex[:8]}"
    first = asyncio.run(objects.create_secret(NAMESPACE, manifest(name, "a"), {"k": b"one"}))
    again = asyncio.run(objects.create_secret(NAMESPACE, manifest(name, "b"), {"k": b"two"}))
    stored = get(cluster, "secret", name)
    assert stored is not None and first == stored["metadata"]["uid"]
    assert again is None
    assert stored["metadata"]["annotations"][labels.VIRTUALHOST] == "a", "overwritten"
    assert asyncio.run(objects.create_configmap(NAMESPACE, manifest(name, "a"))) is True
    assert asyncio.run(objects.create_configmap(NAMESPACE, manifest(name, "b"))) is False
    cluster.kubectl("delete", "secret,configmap", name, "-n", NAMESPACE)


def test_a_deletion_by_uid_deletes_only_that_incarnation(
    cluster: Cluster, objects: NamespacedObjects
) -> None:
    """A Secret replaced meanwhile by another host's under the same name is left alone; one
    replaced by the host's own is deleted the checked way."""
    name = f"incarnation-{uuid.uuid4().hex[:8]}"
    uid = asyncio.run(objects.create_secret(NAMESPACE, manifest(name, "mine"), {"k": b"1"}))
    assert uid is not None
    cluster.kubectl("delete", "secret", name, "-n", NAMESPACE)
    asyncio.run(objects.create_secret(NAMESPACE, manifest(name, "other"), {"k": b"2"}))
    with pytest.raises(ForeignObjectError):
        asyncio.run(objects.delete_secret(NAMESPACE, name, owner="mine", uid=uid))
    assert get(cluster, "secret", name) is not None

    cluster.kubectl("delete", "secret", name, "-n", NAMESPACE)
    asyncio.run(objects.create_secret(NAMESPACE, manifest(name, "mine"), {"k": b"3"}))
    asyncio.run(objects.delete_secret(NAMESPACE, name, owner="mine", uid=uid))
    assert get(cluster, "secret", name) is None

    # Gone already: nothing to do, no error.
    asyncio.run(objects.delete_secret(NAMESPACE, name, owner="mine", uid=uid))


def test_a_checked_apply_writes_without_reading_and_an_unchecked_one_refuses_another_hosts(
    cluster: Cluster, objects: NamespacedObjects
) -> None:
    name = f"apply-{uuid.uuid4().hex[:8]}"
    asyncio.run(objects.create_secret(NAMESPACE, manifest(name, "other"), {"k": b"theirs"}))
    with pytest.raises(ForeignObjectError):
        asyncio.run(objects.apply_secret(NAMESPACE, manifest(name, "mine"), {"k": b"mine"}))
    assert kube.secret_data(cluster, name) == {"k": b"theirs"}
    cluster.kubectl("delete", "secret", name, "-n", NAMESPACE)

    asyncio.run(objects.create_secret(NAMESPACE, manifest(name, "mine"), {"k": b"1"}))
    asyncio.run(objects.apply_secret(NAMESPACE, manifest(name, "mine"), {"k": b"2"}, checked=True))
    assert kube.secret_data(cluster, name) == {"k": b"2"}
    cluster.kubectl("delete", "secret", name, "-n", NAMESPACE)


def test_an_apply_after_a_create_removes_only_what_applies_set(
    cluster: Cluster, objects: NamespacedObjects
) -> None:
    """Why a site ConfigMap is created only with the fields every later apply has: a field the
    create set stays when an apply leaves it out; one only applies set goes."""
    name = f"managed-{uuid.uuid4().hex[:8]}"
    created = manifest(name, "mine", **{"created-only": "x"})
    assert asyncio.run(objects.create_configmap(NAMESPACE, created))
    applied = manifest(name, "mine", **{"applied-only": "y"})
    asyncio.run(objects.apply_configmap(NAMESPACE, applied, checked=True))
    asyncio.run(objects.apply_configmap(NAMESPACE, manifest(name, "mine"), checked=True))
    stored = get(cluster, "configmap", name)
    assert stored is not None
    annotations = stored["metadata"]["annotations"]
    assert annotations == {labels.VIRTUALHOST: "mine", "created-only": "x"}
    cluster.kubectl("delete", "configmap", name, "-n", NAMESPACE)
