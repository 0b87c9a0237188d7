"""ConfigMaps and Secrets the operator owns in the nginx and operator namespaces.

Writes use server-side apply under one field manager: idempotent, no read-modify-write races, and
a retried step writes the same object again without conflict.
RBAC: configmaps and secrets get/patch/delete in those namespaces.
"""

from __future__ import annotations

import base64
from typing import Any

import kubernetes

from vhost_operator.errors import ApiError
from vhost_operator.kube.api import call, json_body, write
from vhost_operator.kube.core import CoreObjects

FIELD_MANAGER = "vhost-operator"


class SecretData:
    """Decoded Secret contents and metadata, from the Secret's JSON."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.data = {k: base64.b64decode(v) for k, v in (body.get("data") or {}).items()}
        metadata = body.get("metadata") or {}
        self.annotations: dict[str, str] = dict(metadata.get("annotations") or {})


class NamespacedObjects:
    """The calls the operator makes on ConfigMaps and Secrets, and nothing else."""

    def __init__(self, client: kubernetes.client.ApiClient) -> None:
        self._core = CoreObjects(client)

    async def apply_configmap(self, namespace: str, manifest: dict[str, Any]) -> None:
        name = manifest["metadata"]["name"]
        body = {"apiVersion": "v1", "kind": "ConfigMap", **manifest}
        await write(
            lambda: self._core.apply("configmaps", namespace, name, body, manager=FIELD_MANAGER),
            what=f"writing ConfigMap {namespace}/{name}",
        )

    async def annotate_configmap(
        self, namespace: str, name: str, annotations: dict[str, str]
    ) -> bool:
        """Merge ``annotations`` into a ConfigMap; ``False`` when it does not exist."""
        patch = {"metadata": {"annotations": annotations}}
        try:
            await write(
                lambda: self._core.merge_patch("configmaps", namespace, name, patch),
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
        self, namespace: str, manifest: dict[str, Any], data: dict[str, bytes]
    ) -> None:
        name = manifest["metadata"]["name"]
        encoded = {k: base64.b64encode(v).decode() for k, v in data.items()}
        body = {"apiVersion": "v1", "kind": "Secret", **manifest, "data": encoded}
        await write(
            lambda: self._core.apply("secrets", namespace, name, body, manager=FIELD_MANAGER),
            what=f"writing Secret {namespace}/{name}",
        )

    async def read_secret(self, namespace: str, name: str) -> SecretData | None:
        body = await self._read(
            lambda: json_body(self._core.read("secrets", namespace, name)),
            what=f"reading Secret {namespace}/{name}",
        )
        return None if body is None else SecretData(body)

    async def delete_secret(self, namespace: str, name: str) -> None:
        await self._delete(
            lambda: self._core.delete("secrets", namespace, name),
            what=f"deleting Secret {namespace}/{name}",
        )

    async def delete_configmap(self, namespace: str, name: str) -> None:
        await self._delete(
            lambda: self._core.delete("configmaps", namespace, name),
            what=f"deleting ConfigMap {namespace}/{name}",
        )

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
