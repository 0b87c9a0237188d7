"""kopf's record of the last handled configuration (``handlers.kopf_storage``): in the status,
read from the annotation of earlier releases where the status has none, and the essence built
from the slim view is the one kopf builds from the whole object."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

import kopf
import pytest

from vhost_operator.handlers.kopf_storage import (
    STATUS_FIELD,
    SlimStatusDiffBaseStorage,
    essence_view,
)
from vhost_operator.handlers.lifecycle import KOPF_PREFIX

KEY = "last-handled-configuration"


def provisioned_host(**metadata: Any) -> dict[str, Any]:
    """A VirtualHost as the watch brings it once provisioned: kopf's and our annotations,
    managedFields of several writers, a full status."""
    return {
        "apiVersion": "vhost-operator.io/v1alpha1",
        "kind": "VirtualHost",
        "metadata": {
            "name": "mail-example-com",
            "uid": "9c1d",
            "resourceVersion": "4711",
            "generation": 2,
            "creationTimestamp": "2026-11-27T23:00:00Z",
            "finalizers": ["vhost-operator.io/finalizer"],
            "labels": {"team": "blue"},
            "annotations": {
                f"{KOPF_PREFIX}/{KEY}": '{"spec":{"hostname":"mail.example.com"}}\n',
                f"{KOPF_PREFIX}/reconcile": '{"started":"2026-11-27T23:00:01Z"}',
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
                "vhost-operator.io/retry": "2",
                "vhost-operator.io/wake": "2026-11-27T23:00:09Z",
            },
            "managedFields": [
                {"manager": "kubectl", "operation": "Update", "fieldsV1": {"f:spec": {}}},
                {"manager": "kopf", "operation": "Update", "fieldsV1": {"f:metadata": {}}},
            ],
            **metadata,
        },
        "spec": {"hostname": "mail.example.com", "domains": ["example.com"], "enabled": True},
        "status": {
            "phase": "Ready",
            "conditions": [{"type": "Ready", "status": "True", "reason": "Serving"}],
            "certificate": {"notAfter": "2027-02-25T23:00:00Z", "names": ["mail.example.com"]},
        },
    }


BODIES = {
    "provisioned": provisioned_host(),
    "owned": provisioned_host(ownerReferences=[{"kind": "MailDomain", "name": "d", "uid": "7"}]),
    "new": {
        "apiVersion": "vhost-operator.io/v1alpha1",
        "kind": "VirtualHost",
        "metadata": {"name": "n", "uid": "1"},
        "spec": {"hostname": "n.example.com"},
    },
}


def body_of(raw: dict[str, Any]) -> kopf.Body:
    return kopf.Body(copy.deepcopy(raw))  # type: ignore[arg-type]


@pytest.mark.parametrize("name", sorted(BODIES))
@pytest.mark.parametrize("extra_fields", [set(), {"status.phase", "metadata.generation"}])
def test_the_essence_is_the_one_kopf_builds(name: str, extra_fields: set[str]) -> None:
    """The one of kopf's annotation storage (what earlier releases recorded): an upgrade sees
    no change of an object whose spec did not change; and, as kopf compares them (without its
    progress records), the one of kopf's status storage."""
    body = body_of(BODIES[name])
    status = kopf.StatusDiffBaseStorage(field=f"status.{STATUS_FIELD}")
    annotations = kopf.AnnotationsDiffBaseStorage(prefix=KOPF_PREFIX, key=KEY)
    progress = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    ours = SlimStatusDiffBaseStorage(prefix=KOPF_PREFIX)

    essence = ours.build(body=body, extra_fields=extra_fields)

    assert essence == annotations.build(body=body, extra_fields=extra_fields)
    assert progress.clear(essence=essence) == progress.clear(
        essence=status.build(body=body, extra_fields=extra_fields)
    )
    assert body == BODIES[name], "the object is left as it was"


RECORD: dict[str, Any] = {"spec": {"hostname": "mail.example.com", "enabled": True}}
"""A record of this release, in ``status.lastHandledConfiguration``."""


def recorded(essence: Mapping[str, Any], *, annotation: bool) -> dict[str, Any]:
    """The provisioned host with its record in the status, and the annotation of earlier
    releases kept or not."""
    raw = provisioned_host()
    raw["status"][STATUS_FIELD] = json.dumps(essence)
    if not annotation:
        del raw["metadata"]["annotations"][f"{KOPF_PREFIX}/{KEY}"]
    return raw


def test_the_record_is_read_from_the_status() -> None:
    ours = SlimStatusDiffBaseStorage(prefix=KOPF_PREFIX)

    only_status = ours.fetch(body=body_of(recorded(RECORD, annotation=False)))
    both = ours.fetch(body=body_of(recorded(RECORD, annotation=True)))

    assert only_status == RECORD
    assert both == RECORD, "the status wins over a stale annotation"


def test_a_record_of_an_earlier_release_is_read_from_its_annotation() -> None:
    ours = SlimStatusDiffBaseStorage(prefix=KOPF_PREFIX)

    assert ours.fetch(body=body_of(provisioned_host())) == {
        "spec": {"hostname": "mail.example.com"}
    }
    assert ours.fetch(body=body_of(BODIES["new"])) is None, "a new object has no record"


def test_the_record_is_stored_in_the_status_only() -> None:
    ours = SlimStatusDiffBaseStorage(prefix=KOPF_PREFIX)
    body = body_of(recorded(RECORD, annotation=False))
    patch = kopf.Patch()

    ours.store(body=body, patch=patch, essence=ours.build(body=body))

    assert patch == {
        "status": {STATUS_FIELD: json.dumps(ours.build(body=body), separators=(",", ":"))}
    }
    raw = recorded(RECORD, annotation=False)
    raw["status"].update(patch["status"])
    assert ours.fetch(body=body_of(raw)) == ours.build(body=body), "read back as stored"


def test_storing_removes_the_annotation_of_an_earlier_release() -> None:
    ours = SlimStatusDiffBaseStorage(prefix=KOPF_PREFIX)
    body = body_of(provisioned_host())
    patch = kopf.Patch()

    ours.store(body=body, patch=patch, essence=ours.build(body=body))

    assert patch["metadata"] == {"annotations": {f"{KOPF_PREFIX}/{KEY}": None}}
    assert set(patch["status"]) == {STATUS_FIELD}


@pytest.mark.parametrize("extra_fields", [set(), {f"status.{STATUS_FIELD}", "status.phase"}])
def test_the_record_is_no_part_of_the_essence(extra_fields: set[str]) -> None:
    """Else each record would look like a change of the object to the next event."""
    ours = SlimStatusDiffBaseStorage(prefix=KOPF_PREFIX)
    body = body_of(recorded(RECORD, annotation=False))

    essence = ours.build(body=body, extra_fields=extra_fields)

    assert STATUS_FIELD not in essence.get("status", {})
    assert f"{KOPF_PREFIX}/{KEY}" not in essence.get("metadata", {}).get("annotations", {})


def test_the_view_leaves_out_status_and_bookkeeping_metadata() -> None:
    view = essence_view(BODIES["owned"])

    assert set(view) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(view["metadata"]) == {"labels", "annotations", "ownerReferences"}
    assert view["spec"] is BODIES["owned"]["spec"], "shared, not copied"
