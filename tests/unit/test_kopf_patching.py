"""kopf's ``Patch.as_json_patch`` with ``handlers.kopf_patching``: an empty patch gives no
operations without copying the object, any other patch the operations kopf's own method gives."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any, cast

import kopf
import pytest
from kopf._cogs.structs import patches

from vhost_operator.handlers import kopf_patching
from vhost_operator.handlers.kopf_patching import skip_empty_json_patches

BODY = cast(
    kopf.RawBody,
    {
        "metadata": {"name": "h", "resourceVersion": "7", "finalizers": ["a"]},
        "spec": {"hostname": "www.example.com"},
        "status": {"phase": "Ready"},
    },
)


@pytest.fixture
def original() -> Iterator[Any]:
    """kopf's own method, put back after the test."""
    method = patches.Patch.as_json_patch
    yield method
    patches.Patch.as_json_patch = method  # type: ignore[method-assign]


def _add_finalizer(body: kopf.RawBody) -> None:
    body["metadata"]["finalizers"].append("b")


def test_an_empty_patch_is_no_operation_and_copies_nothing(
    original: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert skip_empty_json_patches()
    copies: list[object] = []

    def deepcopy(value: object, *_: object) -> object:
        copies.append(value)
        return value

    monkeypatch.setattr(copy, "deepcopy", deepcopy)
    assert patches.Patch(fns=[]).as_json_patch(BODY) == []
    assert patches.Patch().as_json_patch(None) == []
    assert copies == []
    assert original(patches.Patch(), BODY) == []  # what kopf gives, after its copy


@pytest.mark.parametrize(
    "patch",
    [
        patches.Patch({"status": {"phase": "Issuing"}}),
        patches.Patch(fns=[_add_finalizer]),
        patches.Patch({"metadata": {"annotations": {"x": "y"}}}, fns=[_add_finalizer]),
    ],
    ids=["merge", "function", "both"],
)
def test_other_patches_give_kopfs_operations(original: Any, patch: patches.Patch) -> None:
    expected = original(patch, copy.deepcopy(BODY))
    assert skip_empty_json_patches()
    assert patch.as_json_patch(copy.deepcopy(BODY)) == expected
    assert expected


def test_wrapped_once(original: Any) -> None:
    assert skip_empty_json_patches()
    wrapped = patches.Patch.as_json_patch
    assert skip_empty_json_patches()
    assert patches.Patch.as_json_patch is wrapped


def test_without_the_method_kopf_is_left_as_it_is(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(kopf_patching, "METHOD", "no_such_method")
    assert not skip_empty_json_patches()
    assert "copies objects" in caplog.text
