"""What deleting a VirtualHost removes: its site ConfigMap (the nginx agent then drops the site
and reloads), its pending key, and its TLS Secret unless settings retain it.

Done by the finalizer's handler, not left to garbage collection: a cluster without the garbage
collector, or a deletion with ``--cascade=orphan``, must still leave nothing behind.
"""

from __future__ import annotations

from typing import Protocol

from vhost_operator.resources.models import VirtualHost
from vhost_operator.resources.naming import (
    next_key_secret_name,
    site_configmap_name,
    tls_secret_name,
)
from vhost_operator.settings import Settings


class ObjectRemover(Protocol):
    async def delete_configmap(self, namespace: str, name: str) -> None: ...

    async def delete_secret(self, namespace: str, name: str) -> None: ...


async def release(host: VirtualHost, objects: ObjectRemover, settings: Settings) -> list[str]:
    """Delete what the host owns; returns what was removed (for the log). Idempotent."""
    namespace = settings.nginx_namespace
    removed = [f"ConfigMap {site_configmap_name(host.name)}"]
    await objects.delete_configmap(namespace, site_configmap_name(host.name))
    await objects.delete_secret(namespace, next_key_secret_name(host.name))
    if not settings.retain_certificate_secret:
        await objects.delete_secret(namespace, tls_secret_name(host.name))
        removed.append(f"Secret {tls_secret_name(host.name)}")
    return removed
