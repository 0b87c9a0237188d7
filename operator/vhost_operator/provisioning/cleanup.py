"""What deleting a VirtualHost removes: its site ConfigMap (the nginx agent then drops the site
and reloads), its pending key, and its TLS Secret unless settings retain it.

Done by the finalizer's handler, not left to garbage collection: a cluster without the garbage
collector, or a deletion with ``--cascade=orphan``, must still leave nothing behind.

Retaining the TLS Secret retains a certificate: a host deleted before its first certificate was
stored has only its pending key there (``provisioning.certificates``), which goes like any
pending key.

Only the host's own objects go: the names of earlier releases too (``legacy_derived_name``:
hosts Ready before the upgrade still run from them), each only if it carries this host's name.
An object at one of those names that belongs to another host stays, and is logged.
"""

from __future__ import annotations

import logging
from typing import Protocol

from vhost_operator.errors import ForeignObjectError
from vhost_operator.kube.objects import SecretData
from vhost_operator.resources.models import VirtualHost
from vhost_operator.resources.naming import (
    NEXT_KEY_SUFFIX,
    SITE_SUFFIX,
    TLS_SUFFIX,
    derived_name,
    foreign_owner,
    legacy_derived_name,
)
from vhost_operator.settings import Settings

logger = logging.getLogger(__name__)


class ObjectRemover(Protocol):
    async def delete_configmap(self, namespace: str, name: str, *, owner: str) -> None: ...

    async def delete_secret(
        self, namespace: str, name: str, *, owner: str, uid: str | None = None
    ) -> None: ...

    async def read_secret(self, namespace: str, name: str) -> SecretData | None: ...


async def release(host: VirtualHost, objects: ObjectRemover, settings: Settings) -> list[str]:
    """Delete what the host owns; returns what was removed (for the log). Idempotent."""
    namespace = settings.nginx_namespace
    removed = []
    targets = [(objects.delete_configmap, "ConfigMap", SITE_SUFFIX)]
    targets.append((objects.delete_secret, "Secret", NEXT_KEY_SUFFIX))
    if not settings.retain_certificate_secret:
        targets.append((objects.delete_secret, "Secret", TLS_SUFFIX))
    for delete, kind, suffix in targets:
        for name in dict.fromkeys(
            (derived_name(host.name, suffix), legacy_derived_name(host.name, suffix))
        ):
            try:
                await delete(namespace, name, owner=host.name)
            except ForeignObjectError as refused:
                logger.warning("%s", refused)
                continue
            if suffix != NEXT_KEY_SUFFIX:
                removed.append(f"{kind} {name}")
    if settings.retain_certificate_secret:
        await _remove_pending_key(host, objects, namespace)
    return removed


async def _remove_pending_key(host: VirtualHost, objects: ObjectRemover, namespace: str) -> None:
    """Delete the host's TLS Secret if it holds a pending key and no certificate (only ever
    under the current name: earlier releases kept pending keys in next-key Secrets)."""
    name = derived_name(host.name, TLS_SUFFIX)
    secret = await objects.read_secret(namespace, name)
    if secret is None or secret.data.get("tls.crt"):
        return
    problem = foreign_owner(secret.metadata, host.name)
    if problem is not None:
        logger.warning(
            "Secret %s/%s is not VirtualHost %s's: %s", namespace, name, host.name, problem
        )
        return
    await objects.delete_secret(namespace, name, owner=host.name, uid=secret.uid)
