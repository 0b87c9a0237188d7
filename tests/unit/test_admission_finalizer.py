"""The mutating webhook's change to a new VirtualHost: kopf's finalizer (``admission.finalizer``),
and the JSON patch kopf answers with for it (``handlers.admission.add_finalizer``)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import kopf

from vhost_operator.admission.finalizer import finalizers_with
from vhost_operator.handlers.admission import add_finalizer
from vhost_operator.resources.models import FINALIZER


def host(*finalizers: str) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "new"}
    if finalizers:
        metadata["finalizers"] = list(finalizers)
    return {"apiVersion": "vhost-operator.io/v1alpha1", "kind": "VirtualHost", "metadata": metadata}


def json_patch(raw: dict[str, Any]) -> list[Any]:
    """What kopf sends back for the handler's change (kopf's own Patch and body)."""
    body = kopf.Body(cast(Any, raw))
    patch = kopf.Patch(body=body)
    handler: Any = add_finalizer  # typed by kopf's decorator as a callback of all its kwargs
    asyncio.run(handler(body=body, patch=patch))
    return list(patch.as_json_patch())


def test_a_host_without_finalizers_gets_kopfs() -> None:
    assert finalizers_with(host()) == [FINALIZER]
    assert finalizers_with({"metadata": {"finalizers": None}}) == [FINALIZER]
    assert json_patch(host()) == [
        {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]}
    ]


def test_other_finalizers_are_kept_and_kopfs_appended() -> None:
    assert finalizers_with(host("example.com/backup")) == ["example.com/backup", FINALIZER]
    assert json_patch(host("example.com/backup")) == [
        {"op": "add", "path": "/metadata/finalizers/1", "value": FINALIZER}
    ]


def test_a_host_with_kopfs_finalizer_is_left_as_it_is() -> None:
    assert finalizers_with(host(FINALIZER)) is None
    assert finalizers_with(host("example.com/backup", FINALIZER)) is None
    assert json_patch(host("example.com/backup", FINALIZER)) == []
