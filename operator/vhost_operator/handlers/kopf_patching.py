"""kopf's patches without a deep copy of the object when nothing is left to diff.

After each merge patch of an object, kopf turns what remains of the patch (its JSON-patch
functions: a finalizer to add or remove, usually nothing) into JSON-patch operations with
``Patch.as_json_patch``, which deep-copies the object the API server answered with, and only
then returns ``[]`` for an empty patch. That object is whole (status, ``managedFields``), so the
copy was most of what kopf's own patching cost the operator in CPU (27 of 64 samples of
``patch_and_check`` in a profile of a 300-host round, about 2 % of the operator's CPU).

kopf has no hook for it, so :func:`skip_empty_json_patches` wraps the method of
``kopf._cogs.structs.patches.Patch``, a private module (kopf >= 1.45, < 2, as pinned): an empty
patch gives ``[]`` at once, what kopf's own method returns for it after the copy; any other
patch goes to kopf's method. Should a kopf release move it, a warning is logged and kopf keeps
copying: more CPU, the same behaviour.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from kopf._cogs.structs import patches as kopf_patches

logger = logging.getLogger(__name__)

METHOD = "as_json_patch"
"""The method of ``kopf._cogs.structs.patches.Patch`` that builds JSON-patch operations."""

_WRAPPED = "_vhost_operator_skips_empty"
"""Marks the wrapper, so a second start-up in the same process wraps nothing twice."""


def skip_empty_json_patches() -> bool:
    """Make kopf's ``Patch.as_json_patch`` return ``[]`` for an empty patch without copying the
    object, once per process; whether it does now."""
    patch_class: Any = getattr(kopf_patches, "Patch", None)
    original: Callable[..., list[Any]] | None = getattr(patch_class, METHOD, None)
    if original is None:
        logger.warning("kopf has no Patch.%s: it copies objects for empty patches", METHOD)
        return False
    if getattr(original, _WRAPPED, False):
        return True

    @functools.wraps(original)
    def as_json_patch(self: Any, body: Any = None) -> list[Any]:
        # kopf's own test, after its copy: a patch with neither fields nor functions.
        if not self:
            return []
        return original(self, body)

    setattr(as_json_patch, _WRAPPED, True)
    setattr(patch_class, METHOD, as_json_patch)
    return True
