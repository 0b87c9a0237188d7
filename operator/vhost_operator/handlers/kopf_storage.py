"""kopf's record of the last handled configuration: in the host's status, built without copying
what it drops.

Where. kopf compares every watch event's object with the configuration it last handled, to see
whether a create, update or resume handler is due, and records the configuration after each
handled change. In an annotation (kopf's default, and ours before) that record is a write of the
object itself after the handler returned, on top of the chain's last status write: two
VirtualHost writes, the most expensive kind for the API server, each coming back as a watch
event. In ``status.lastHandledConfiguration`` (:data:`STATUS_FIELD`) it goes into the same
status patch as the chain's last status, which the handler leaves to kopf's patch
(``handlers.virtualhosts``): kopf sends a patch's ``status`` to the status subresource and
the rest to the object, each only when not empty, so a new host's record costs no request of
its own. Objects written by earlier releases carry the annotation only: :meth:`fetch` falls
back to it, so an upgrade runs no create handler again (and writes nothing); the annotation is
removed with the next record (one write of the object, once).

How. To build the object's "essence" kopf deep-copies the whole object and then deletes
``status`` and all metadata but labels and annotations. A VirtualHost's status (conditions,
the certificate's summary, the challenge while one is open) and its ``managedFields`` (an
entry per writer) are most of it, and each host brings several events: that copy was the
largest single cost of kopf's event processing (about 5 % of the operator's CPU in a 300-host
run). :func:`essence_view` hands kopf a view without those parts, from which kopf builds exactly
the same essence. The status, the record with it, is never part of the essence.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, cast

import kopf

ESSENCE_METADATA = ("labels", "annotations", "ownerReferences")
"""The metadata kopf reads to build the essence: labels and annotations (kept in it), and the
owner references (its annotation keys for owned objects depend on them)."""

DROPPED = frozenset({"status", "metadata"})
"""Top-level parts kopf leaves out of the essence (metadata is replaced by the view above)."""

STATUS_FIELD = "lastHandledConfiguration"
"""``status.lastHandledConfiguration``: kopf's record, a JSON string (declared in the CRD)."""

ANNOTATION_KEY = "last-handled-configuration"
"""The key (under kopf's prefix) of the annotation that held the record before."""


def essence_view(body: Mapping[str, Any]) -> kopf.Body:
    """``body`` without what kopf's essence leaves out; nothing is copied."""
    view = {key: value for key, value in body.items() if key not in DROPPED}
    metadata = body.get("metadata") or {}
    view["metadata"] = {key: metadata[key] for key in ESSENCE_METADATA if key in metadata}
    return kopf.Body(cast(kopf.RawBody, view))


class SlimStatusDiffBaseStorage(kopf.StatusDiffBaseStorage):
    """kopf's status storage of the last handled configuration in ``status.<field>``, reading
    the annotation of earlier releases (``prefix``/:data:`ANNOTATION_KEY`) where the status has
    none. It builds the essence from :func:`essence_view`, unless a handler asks for fields out
    of ``status`` or metadata (``extra_fields``: none of ours does), which only the whole object
    has."""

    def __init__(self, *, prefix: str, field: str = STATUS_FIELD) -> None:
        super().__init__(field=f"status.{field}")
        self._legacy = kopf.AnnotationsDiffBaseStorage(prefix=prefix, key=ANNOTATION_KEY)

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        source = body if extra_fields else essence_view(body)
        essence = super().build(body=source, extra_fields=extra_fields)
        # The essence the annotation storage built, should a release go back to it.
        self.remove_annotations(essence, self._legacy_keys(body))
        self.remove_empty_stanzas(essence)
        return essence

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        found = super().fetch(body=body)
        return found if found is not None else self._legacy.fetch(body=body)

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        super().store(body=body, patch=patch, essence=essence)
        annotations = body.metadata.annotations
        for key in self._legacy_keys(body):
            if key in annotations:  # stale from now on; a write of the object, once per host
                patch.metadata.annotations[key] = None

    def _legacy_keys(self, body: kopf.Body) -> set[str]:
        return set(self._legacy.make_keys(ANNOTATION_KEY, body=body))
