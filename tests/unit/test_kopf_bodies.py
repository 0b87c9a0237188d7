"""kopf's bodies and patches with ``handlers.kopf_bodies``: freed by reference counting alone,
their views reading and writing what kopf's own views do."""

from __future__ import annotations

import copy
import gc
import weakref
from collections.abc import Iterator
from typing import Any, cast

import kopf
import pytest
from kopf._cogs.structs import bodies, patches

from vhost_operator.handlers import kopf_bodies
from vhost_operator.handlers.kopf_bodies import kopf_views, unlink_kopf_views


def _raw() -> kopf.RawBody:
    return cast(
        kopf.RawBody,
        {
            "metadata": {"name": "h", "labels": {"team": "a"}, "annotations": {"x": "1"}},
            "spec": {"hostname": "www.example.com"},
            "status": {"phase": "Ready"},
        },
    )


@pytest.fixture
def kopfs_own() -> Iterator[None]:
    """kopf's classes as they were, put back after the test."""
    views = kopf_views()
    assert views is not None
    names = {owner: [*attributes, kopf_bodies._UNLINKED] for owner, attributes in views.items()}
    saved = {
        owner: {n: owner.__dict__[n] for n in names[owner] if n in owner.__dict__}
        for owner in views
    }
    yield
    for owner in views:
        for name in names[owner]:
            if name in owner.__dict__:
                delattr(owner, name)
        for name, value in saved[owner].items():
            setattr(owner, name, value)


@pytest.fixture
def collector_off() -> Iterator[None]:
    """Only reference counting frees anything during the test."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _used_body_and_patch() -> tuple[weakref.ref[Any], weakref.ref[Any]]:
    """A body and its patch used as handlers and kopf use them, gone after the call."""
    body = kopf.Body(_raw())
    assert body.meta.labels["team"] == "a" and body.meta.annotations["x"] == "1"
    assert body.spec["hostname"] == "www.example.com" and body.status["phase"] == "Ready"
    patch = patches.Patch(body=body)
    patch.status["phase"] = "Issuing"
    patch.meta.labels["team"] = "b"
    patch.metadata.annotations["y"] = "2"
    return weakref.ref(body), weakref.ref(patch)


def test_bodies_and_patches_go_with_their_last_reference(
    kopfs_own: None, collector_off: None
) -> None:
    assert unlink_kopf_views()
    body, patch = _used_body_and_patch()
    assert body() is None and patch() is None


def test_kopfs_own_keep_them_for_the_collector(kopfs_own: None, collector_off: None) -> None:
    """What the change is for: without it both outlive their last reference."""
    body, patch = _used_body_and_patch()
    assert body() is not None and patch() is not None


def test_views_read_the_body_as_it_is_now(kopfs_own: None) -> None:
    assert unlink_kopf_views()
    body = kopf.Body(_raw())
    spec, labels = body.spec, body.meta.labels
    replacement = _raw()
    replacement["spec"]["hostname"] = "other.example.com"
    replacement["metadata"]["labels"] = {"team": "c"}
    body._replace_with(replacement)  # what kopf does to a daemon's body
    assert spec["hostname"] == body.spec["hostname"] == "other.example.com"
    assert dict(labels) == dict(body.metadata.labels) == {"team": "c"}
    assert body.meta.name == "h" and body.meta.uid is None
    assert isinstance(body.meta, bodies.Meta) and isinstance(body.status, bodies.Status)


def test_patches_write_what_kopfs_do(kopfs_own: None) -> None:
    def finalizer(raw: kopf.RawBody) -> None:
        raw["metadata"].setdefault("finalizers", []).append("f")

    def written() -> tuple[dict[str, Any], list[Any]]:
        patch = patches.Patch(fns=[finalizer])
        patch.spec["hostname"] = "new.example.com"
        patch.status["phase"] = "Issuing"
        patch.meta.labels["team"] = None
        patch.meta.annotations["y"] = "2"
        copied = patches.Patch(patch)
        return dict(copied), copied.as_json_patch(copy.deepcopy(_raw()))

    kopfs = written()
    assert unlink_kopf_views()
    assert written() == kopfs
    assert kopfs[0]["metadata"] == {"labels": {"team": None}, "annotations": {"y": "2"}}


def test_unlinked_once(kopfs_own: None) -> None:
    assert unlink_kopf_views()
    views = kopf.Body.__dict__["_meta"]
    assert unlink_kopf_views()
    assert kopf.Body.__dict__["_meta"] is views


def test_without_kopfs_classes_kopf_is_left_as_it_is(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delattr(bodies, "Meta")
    assert not unlink_kopf_views()
    assert "reference cycles" in caplog.text
