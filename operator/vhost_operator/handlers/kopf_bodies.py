"""kopf's bodies and patches freed as soon as nobody uses them, not by the garbage collector.

kopf wraps every object it handles in a ``Body`` that keeps its ``meta``, ``spec`` and
``status`` views, each a view of the body itself: a reference cycle (``Meta`` keeps its
``labels`` and ``annotations`` views of itself, and kopf's ``Patch`` and ``MetaPatch`` do the
same; a patch also holds the body it patches). Reference counting never frees a cycle, so each
event kopf handles left its whole object (the event's parsed body) to Python's cyclic garbage
collector; and as a handler awaits API calls while its body lives, the cycle has usually been
moved to the oldest generation by then, which only a full collection looks at. In a 2,000-host
round (ACME and nginx off) that was 10,000 to 17,000 objects for each full collection, one
about every 10 s, each holding the event loop (webhook answers included) for 40 to 80 ms of CPU
on the loaded 2-core machine; after this, under 120 objects, one about every 20 s, 27 to 45 ms.

:func:`unlink_kopf_views` makes those attributes properties that build the view when read (a
view is two attributes; reads see the body as it is then, also after kopf replaces a daemon's
body, as before) and drop what kopf's constructors store there. Nothing else holds a body, so
it goes with its last reference. kopf's classes are in the private ``kopf._cogs.structs``
(kopf >= 1.45, < 2, as pinned); should a release move them, a warning is logged and kopf keeps
its cycles: full collections, the same behaviour.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from kopf._cogs.structs import bodies, dicts, patches

logger = logging.getLogger(__name__)

View = Callable[[Any], Any]
"""Builds a view of the object it is given."""

_UNLINKED = "_vhost_operator_unlinked"
"""Marks a class whose views are properties already (a second start-up changes nothing)."""


def _labels_of(view_class: Any) -> dict[str, View]:
    return {
        "_labels": lambda meta: view_class(meta, "labels"),
        "_annotations": lambda meta: view_class(meta, "annotations"),
    }


def kopf_views() -> dict[type, dict[str, View]] | None:
    """kopf's classes -> their attributes that hold a view of the instance, and how to build
    each; ``None`` if kopf has not got them where this expects them."""
    try:
        return {
            bodies.Body: {"_meta": bodies.Meta, "_spec": bodies.Spec, "_status": bodies.Status},
            bodies.Meta: _labels_of(dicts.MappingView),
            patches.Patch: {
                "_meta": patches.MetaPatch,
                "_spec": patches.SpecPatch,
                "_status": patches.StatusPatch,
            },
            patches.MetaPatch: _labels_of(dicts.MutableMappingView),
        }
    except AttributeError:
        return None


def _built_when_read(view: View) -> property:
    def drop(_owner: Any, _stored: Any) -> None:
        """kopf's constructor stores the view it built: it goes (nothing else refers to it)."""

    return property(view, drop)


def unlink_kopf_views() -> bool:
    """Make kopf's bodies and patches build their views when read instead of keeping them,
    once per process; whether they do now."""
    views = kopf_views()
    if views is None:
        logger.warning("kopf's bodies are not where expected: they stay reference cycles")
        return False
    for owner, attributes in views.items():
        if owner.__dict__.get(_UNLINKED, False):
            continue
        for attribute, view in attributes.items():
            setattr(owner, attribute, _built_when_read(view))
        setattr(owner, _UNLINKED, True)
    return True
