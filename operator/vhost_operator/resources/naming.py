"""Names of the objects derived from a VirtualHost (ConfigMap, Secrets), and whose they are.

Pure. A VirtualHost name may be 253 characters; a derived name must stay a valid DNS subdomain
(at most 253) and a valid label value (at most 63) for use in selectors. Every derived name
carries a hash of the full VirtualHost name, short names too: were short names kept as they
are, one host's name could be spelt exactly like another's shortened one, and the forced
server-side applies and deletions by name would then hit the other host's objects. As a second
line, the operator only writes or deletes an object that carries its own host's name
(:func:`foreign_owner`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from vhost_operator.resources import labels

_MAX_NAME = 63
_DIGEST_LENGTH = 16
"""Hex digits of sha256: 64 bits, far out of reach of a search for a second name with the same
digest (the 40 bits names used to carry could be matched in minutes)."""


def derived_name(virtualhost: str, suffix: str = "") -> str:
    """``vhost-<virtualhost, cut to fit>-<digest of the whole name><suffix>``, at most 63."""
    digest = hashlib.sha256(virtualhost.encode()).hexdigest()[:_DIGEST_LENGTH]
    keep = _MAX_NAME - len("vhost--") - len(digest) - len(suffix)
    return f"vhost-{virtualhost[:keep].rstrip('-.')}-{digest}{suffix}"


def legacy_derived_name(virtualhost: str, suffix: str = "") -> str:
    """The names of earlier releases (hash only when too long): still read and removed, for
    hosts whose objects were written under them, but never written again."""
    name = f"vhost-{virtualhost}{suffix}"
    if len(name) <= _MAX_NAME:
        return name
    digest = hashlib.sha256(virtualhost.encode()).hexdigest()[:10]
    keep = _MAX_NAME - len(suffix) - len(digest) - len("vhost--")
    return f"vhost-{virtualhost[:keep].rstrip('-.')}-{digest}{suffix}"


SITE_SUFFIX = ""
TLS_SUFFIX = "-tls"
NEXT_KEY_SUFFIX = "-next-key"


def site_configmap_name(virtualhost: str) -> str:
    return derived_name(virtualhost, SITE_SUFFIX)


def tls_secret_name(virtualhost: str) -> str:
    return derived_name(virtualhost, TLS_SUFFIX)


def next_key_secret_name(virtualhost: str) -> str:
    """The Secret holding the private key of a certificate being ordered (and its order URL)."""
    return derived_name(virtualhost, NEXT_KEY_SUFFIX)


def foreign_owner(metadata: Mapping[str, Any], virtualhost: str) -> str | None:
    """Why an existing object is not ``virtualhost``'s to overwrite or delete, or ``None``.

    Ours: its ``vhost-operator.io/virtualhost`` annotation names the host, and no owner
    reference names another VirtualHost. The annotation, not the owner's uid, decides, so a
    host deleted with its TLS Secret retained and created again under its name takes the
    Secret back.
    """
    annotations = metadata.get("annotations") or {}
    claimed = annotations.get(labels.VIRTUALHOST)
    if claimed is None:
        return "it was not written for any VirtualHost"
    if claimed != virtualhost:
        return f"it belongs to VirtualHost {claimed}"
    for reference in metadata.get("ownerReferences") or []:
        if reference.get("kind") == "VirtualHost" and reference.get("name") != virtualhost:
            return f"it is owned by VirtualHost {reference.get('name')}"
    return None
