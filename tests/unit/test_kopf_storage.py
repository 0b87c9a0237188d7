"""kopf's record of the last handled configuration (``handlers.kopf_storage``): the essence
built from the slim view is the one kopf builds from the whole object."""

from __future__ import annotations

import copy
from typing import Any

import kopf
import pytest

from vhost_operator.handlers.kopf_storage import SlimAnnotationsDiffBaseStorage, essence_view
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


@pytest.mark.parametrize("name", sorted(BODIES))
@pytest.mark.parametrize("extra_fields", [set(), {"status.phase", "metadata.generation"}])
def test_the_essence_is_the_one_kopf_builds(name: str, extra_fields: set[str]) -> None:
    body = kopf.Body(copy.deepcopy(BODIES[name]))  # type: ignore[arg-type]
    kopfs = kopf.AnnotationsDiffBaseStorage(prefix=KOPF_PREFIX, key=KEY)
    ours = SlimAnnotationsDiffBaseStorage(prefix=KOPF_PREFIX, key=KEY)

    assert ours.build(body=body, extra_fields=extra_fields) == kopfs.build(
        body=body, extra_fields=extra_fields
    )
    assert body == BODIES[name], "the object is left as it was"


def test_the_view_leaves_out_status_and_bookkeeping_metadata() -> None:
    view = essence_view(BODIES["owned"])

    assert set(view) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(view["metadata"]) == {"labels", "annotations", "ownerReferences"}
    assert view["spec"] is BODIES["owned"]["spec"], "shared, not copied"
