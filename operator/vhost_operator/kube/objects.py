"""ConfigMaps and Secrets the operator owns in the nginx and operator namespaces.

Writes use server-side apply under one field manager: idempotent, no read-modify-write races, and
a retried step writes the same object again without conflict.
RBAC: configmaps and secrets get/patch/delete in those namespaces.

Objects made for one VirtualHost are only written and deleted for that host: a manifest that
names its host (the ``vhost-operator.io/virtualhost`` annotation), and a deletion or annotation
given ``owner``, first read the object; if it belongs to another host, :class:`ForeignObjectError`
and nothing changes. A deletion is conditional on the uid read. A write is not conditional on the
version read: the nginx agent annotates site ConfigMaps all the time, and with names unique by
construction, another host's object appearing in between would need a 64-bit hash collision.

Fewer requests where the caller already knows (the busiest path, a new host, writes each object
without reading it first):

- a create (``create_configmap``, ``create_secret``) is a plain create, refused by the API server
  when any object of that name exists (the caller then goes the checked way);
- ``checked=True`` on an apply says the caller read the object (or saw it in a watch) during
  this step and found it to be the host's, or absent: the same reasoning as for the version
  above, over the seconds of one step;
- a deletion given the ``uid`` of an object the caller created or read (and checked) deletes
  exactly that incarnation, or, if it has been replaced meanwhile, goes the checked way.
"""

from __future__ import annotations

import base64
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

from vhost_operator.errors import ApiError, ForeignObjectError
from vhost_operator.kube.api import call, json_body, write
from vhost_operator.kube.core import CoreObjects, Kind
from vhost_operator.resources import labels
from vhost_operator.resources.naming import foreign_owner

FIELD_MANAGER = "vhost-operator"
"""The operator's name as the writer of every object it writes (``metadata.managedFields``):
its ConfigMaps, Secrets and the VirtualHosts' status and annotations."""
_KINDS: dict[Kind, str] = {"configmaps": "ConfigMap", "secrets": "Secret"}


class SecretData:
    """Decoded Secret contents and metadata, from the Secret's JSON."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.data = {k: base64.b64decode(v) for k, v in (body.get("data") or {}).items()}
        self.metadata: dict[str, Any] = dict(body.get("metadata") or {})
        """Its metadata as read (``annotations`` and ``uid`` below are parts of it)."""
        self.annotations: dict[str, str] = dict(self.metadata.get("annotations") or {})
        self.uid: str | None = self.metadata.get("uid")


class NamespacedObjects:
    """The calls the operator makes on ConfigMaps and Secrets, and nothing else."""

    def __init__(self, client: kubernetes.client.ApiClient) -> None:
        self._core = CoreObjects(client)

    async def apply_configmap(
        self, namespace: str, manifest: dict[str, Any], *, checked: bool = False
    ) -> None:
        """Server-side apply; ``checked``: see the module docstring."""
        name = manifest["metadata"]["name"]
        body = {"apiVersion": "v1", "kind": "ConfigMap", **manifest}
        if not checked:
            await self._check_claim("configmaps", namespace, manifest["metadata"])
        await write(
            lambda: self._core.apply("configmaps", namespace, name, body, manager=FIELD_MANAGER),
            what=f"writing ConfigMap {namespace}/{name}",
        )

    async def create_configmap(self, namespace: str, manifest: dict[str, Any]) -> bool:
        """Create the ConfigMap; ``False`` (and nothing changed) when one of that name exists."""
        body = {"apiVersion": "v1", "kind": "ConfigMap", **manifest}
        return await self._create("configmaps", namespace, body) is not None

    async def annotate_configmap(
        self, namespace: str, name: str, annotations: dict[str, str], *, owner: str
    ) -> bool:
        """Merge ``annotations`` into ``owner``'s ConfigMap; ``False`` when it does not exist."""
        if await self._owned("configmaps", namespace, name, owner) is None:
            return False
        patch = {"metadata": {"annotations": annotations}}
        try:
            await write(
                lambda: self._core.merge_patch(
                    "configmaps", namespace, name, patch, manager=FIELD_MANAGER
                ),
                what=f"annotating ConfigMap {namespace}/{name}",
            )
        except ApiError as error:
            if error.status == 404:
                return False
            raise
        return True

    async def read_configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The ConfigMap's JSON, or ``None`` when it does not exist."""
        return await self._read(
            lambda: json_body(self._core.read("configmaps", namespace, name)),
            what=f"reading ConfigMap {namespace}/{name}",
        )

    async def apply_secret(
        self,
        namespace: str,
        manifest: dict[str, Any],
        data: dict[str, bytes],
        *,
        checked: bool = False,
    ) -> None:
        """Server-side apply; ``checked``: see the module docstring."""
        name = manifest["metadata"]["name"]
        body = _secret_body(manifest, data)
        if not checked:
            await self._check_claim("secrets", namespace, manifest["metadata"])
        await write(
            lambda: self._core.apply("secrets", namespace, name, body, manager=FIELD_MANAGER),
            what=f"writing Secret {namespace}/{name}",
        )

    async def create_secret(
        self, namespace: str, manifest: dict[str, Any], data: dict[str, bytes]
    ) -> str | None:
        """Create the Secret and return its uid; ``None`` (and nothing changed) when one of
        that name exists."""
        created = await self._create("secrets", namespace, _secret_body(manifest, data))
        return None if created is None else str(created["metadata"]["uid"])

    async def read_secret(self, namespace: str, name: str) -> SecretData | None:
        body = await self._read(
            lambda: json_body(self._core.read("secrets", namespace, name)),
            what=f"reading Secret {namespace}/{name}",
        )
        return None if body is None else SecretData(body)

    async def annotate_secret(self, namespace: str, name: str, annotations: dict[str, str]) -> None:
        """Merge ``annotations`` into a Secret of the operator's own (the ACME account's): a
        merge patch, which leaves the data and every other annotation as they are."""
        patch = {"metadata": {"annotations": annotations}}
        await write(
            lambda: self._core.merge_patch(
                "secrets", namespace, name, patch, manager=FIELD_MANAGER
            ),
            what=f"annotating Secret {namespace}/{name}",
        )

    async def delete_secret(
        self, namespace: str, name: str, *, owner: str, uid: str | None = None
    ) -> None:
        """Delete ``owner``'s Secret; nothing if it does not exist. ``uid``: see the module
        docstring."""
        if uid is not None and await self._delete_incarnation("secrets", namespace, name, uid):
            return
        await self._delete_owned("secrets", namespace, name, owner)

    async def delete_configmap(self, namespace: str, name: str, *, owner: str) -> None:
        """Delete ``owner``'s ConfigMap; nothing if it does not exist."""
        await self._delete_owned("configmaps", namespace, name, owner)

    async def _delete_owned(self, kind: Kind, namespace: str, name: str, owner: str) -> None:
        current = await self._owned(kind, namespace, name, owner)
        if current is None:
            return
        uid = current["metadata"]["uid"]
        await self._delete(
            lambda: self._core.delete(kind, namespace, name, uid=uid),
            what=f"deleting {_KINDS[kind]} {namespace}/{name}",
        )

    async def _delete_incarnation(self, kind: Kind, namespace: str, name: str, uid: str) -> bool:
        """Delete the object if it is still incarnation ``uid`` (or gone); ``False`` if another
        object has taken the name meanwhile."""

        def send() -> bool:
            try:
                self._core.delete(kind, namespace, name, uid=uid).read()
            except ApiException as error:
                if error.status == 404:
                    return True
                if error.status == 409:  # the uid precondition failed: not the one we knew
                    return False
                raise
            return True

        return await call(send, what=f"deleting {_KINDS[kind]} {namespace}/{name}")

    async def _create(self, kind: Kind, namespace: str, body: dict[str, Any]) -> Any | None:
        """The created object's JSON; ``None`` when an object of that name exists."""
        name = body["metadata"]["name"]

        def send() -> Any | None:
            try:
                return json_body(self._core.create(kind, namespace, body, manager=FIELD_MANAGER))
            except ApiException as error:
                if error.status == 409:  # AlreadyExists: a create's only conflict
                    return None
                raise

        return await call(send, what=f"creating {_KINDS[kind]} {namespace}/{name}")

    async def _owned(
        self, kind: Kind, namespace: str, name: str, owner: str
    ) -> dict[str, Any] | None:
        """The object's JSON if it exists and is ``owner``'s; ForeignObjectError if another's."""
        current: dict[str, Any] | None = await self._read(
            lambda: json_body(self._core.read(kind, namespace, name)),
            what=f"reading {_KINDS[kind]} {namespace}/{name}",
        )
        if current is not None:
            problem = foreign_owner(current.get("metadata") or {}, owner)
            if problem is not None:
                raise ForeignObjectError(
                    f"{_KINDS[kind]} {namespace}/{name} is not VirtualHost {owner}'s: {problem}; "
                    "left as it is"
                )
        return current

    async def _check_claim(self, kind: Kind, namespace: str, metadata: dict[str, Any]) -> None:
        """If the manifest names its VirtualHost, the object there must be that host's."""
        owner = (metadata.get("annotations") or {}).get(labels.VIRTUALHOST)
        if owner is not None:
            await self._owned(kind, namespace, metadata["name"], owner)

    @staticmethod
    async def _read(function: Any, *, what: str) -> Any | None:
        try:
            return await call(function, what=what)
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    @staticmethod
    async def _delete(function: Any, *, what: str) -> None:
        try:
            await write(function, what=what)
        except ApiError as error:
            if error.status != 404:
                raise


def _secret_body(manifest: dict[str, Any], data: dict[str, bytes]) -> dict[str, Any]:
    encoded = {k: base64.b64encode(v).decode() for k, v in data.items()}
    return {"apiVersion": "v1", "kind": "Secret", **manifest, "data": encoded}
