"""Names of the objects derived from a VirtualHost (ConfigMap, Secrets).

Pure. A VirtualHost name may be 253 characters; a derived name must stay a valid DNS subdomain
(at most 253) and a valid label value (at most 63) for use in selectors, so long names are cut
and given a short hash of the full name to stay unique.
"""

from __future__ import annotations

import hashlib

_MAX_NAME = 63


def derived_name(virtualhost: str, suffix: str = "") -> str:
    """``vhost-<virtualhost><suffix>``, cut to 63 characters with a hash when too long."""
    name = f"vhost-{virtualhost}{suffix}"
    if len(name) <= _MAX_NAME:
        return name
    digest = hashlib.sha256(virtualhost.encode()).hexdigest()[:10]
    keep = _MAX_NAME - len(suffix) - len(digest) - len("vhost--")
    return f"vhost-{virtualhost[:keep].rstrip('-.')}-{digest}{suffix}"


def site_configmap_name(virtualhost: str) -> str:
    return derived_name(virtualhost)


def tls_secret_name(virtualhost: str) -> str:
    return derived_name(virtualhost, "-tls")


def next_key_secret_name(virtualhost: str) -> str:
    """The Secret holding the private key of a certificate being ordered (and its order URL)."""
    return derived_name(virtualhost, "-next-key")
