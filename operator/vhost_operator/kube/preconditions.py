"""API calls that may lose a race, and say so instead of retrying blindly.

``api.call`` retries a 409 as transient: right for a write that is idempotent, wrong for one
conditional on a resourceVersion (sending the same stale version again can only fail again) and
for a create (the name stays taken). These calls raise :class:`NameTaken` or :class:`Contended`
at once, and the caller reads the object again and decides anew.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TypeVar

from kubernetes.client.exceptions import ApiException

from vhost_operator.errors import VhostOperatorError
from vhost_operator.kube.api import call

T = TypeVar("T")


class NameTaken(VhostOperatorError):
    """A create found the name taken (409 AlreadyExists): someone else created it first."""


class Contended(VhostOperatorError):
    """A conditional write lost (409 Conflict: the object changed since it was read), or the
    admission webhook refused it as conflicting with another object (409 too). Read again."""


def _message(error: ApiException) -> tuple[str, str]:
    try:
        body = json.loads(error.body or "{}")
    except (TypeError, ValueError):
        body = {}
    # The API's own text, e.g. "the object has been modified" or the webhook's refusal: stable
    # across identical failures (no request ids), so it may end up in status.
    return str(body.get("reason") or error.reason or ""), str(body.get("message") or "")


async def conditional_call(function: Callable[[], T], *, what: str) -> T:
    """Like ``api.call``, but a 409 raises :class:`NameTaken` or :class:`Contended` at once."""

    def guarded() -> T:
        try:
            return function()
        except ApiException as error:
            if error.status != 409:
                raise
            reason, message = _message(error)
            failure = NameTaken if reason == "AlreadyExists" else Contended
            # Raised in the thread, outside ApiException: call() passes it through unretried.
            raise failure(f"{what}: {message or reason}") from None

    return await call(guarded, what=what)
