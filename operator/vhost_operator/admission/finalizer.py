"""What the mutating webhook does to a new VirtualHost or MailDomain: add kopf's finalizer.
Pure: no I/O, no kopf.

kopf adds its finalizer itself, but in a processing cycle of its own: on the first event of an
object it patches the finalizer in and runs no handler, and the handlers (a host's chain, a
MailDomain's linking) start with the event of that patch. Added at admission, the finalizer is
there in the first event, and kopf goes straight to the handlers: one write of the object (for
a VirtualHost the most expensive kind for the API server) and one watch event fewer per object.
Should the webhook not answer (operator down, timeout), the create goes through without it and
kopf adds it as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vhost_operator.resources.models import FINALIZER


def finalizers_with(body: Mapping[str, Any], finalizer: str = FINALIZER) -> list[str] | None:
    """The object's finalizers with ``finalizer`` appended, the others kept in their order;
    ``None`` when it is there already (nothing to patch)."""
    finalizers = list((body.get("metadata") or {}).get("finalizers") or [])
    if finalizer in finalizers:
        return None
    return [*finalizers, finalizer]
