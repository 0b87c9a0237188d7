"""Reading and writing VirtualHost objects. RBAC: virtualhosts get/list/watch/patch,
virtualhosts/status patch, events create."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import kubernetes

from vhost_operator.errors import ApiError
from vhost_operator.kube.api import ApiClient, call, drained, json_body, write
from vhost_operator.kube.core import ClusterObjects
from vhost_operator.kube.objects import FIELD_MANAGER
from vhost_operator.kube.watching import ObjectWatch, watch_cluster_objects
from vhost_operator.resources.models import (
    GROUP,
    VERSION,
    VIRTUALHOSTS,
    Condition,
    RenewalWindowStatus,
    VirtualHost,
    VirtualHostStatus,
    challenge_status,
    published_challenge,
)
from vhost_operator.resources.watch import Object


class VirtualHostApi:
    """The calls the operator makes on VirtualHosts, and nothing else."""

    def __init__(self, client: ApiClient) -> None:
        self._client = client
        # The calls below go the lean way; the watch goes through the client's own list.
        self._objects = ClusterObjects(client, manager=FIELD_MANAGER)

    def watch_all(self, slim: Callable[[Object], Object]) -> ObjectWatch:
        """Every VirtualHost, listed in pages, then watched; each reduced by ``slim``."""
        objects = kubernetes.client.CustomObjectsApi(self._client)
        return watch_cluster_objects(objects, VIRTUALHOSTS, what="VirtualHosts", slim=slim)

    async def read(self, name: str) -> tuple[VirtualHost, str] | None:
        """The VirtualHost as the API server has it now, with its resourceVersion (for a
        conditional write); ``None`` once it is gone."""

        def send() -> Any:
            response = self._objects.get_cluster_custom_object(
                GROUP, VERSION, VIRTUALHOSTS, name, _preload_content=False
            )
            return json_body(response)

        try:
            found = await call(send, what=f"reading VirtualHost {name}")
        except ApiError as error:
            if error.status == 404:
                return None
            raise
        return VirtualHost.from_body(found), str(found["metadata"]["resourceVersion"])

    async def write_conditions(
        self, name: str, conditions: list[Condition], resource_version: str
    ) -> None:
        """Replace ``status.conditions`` only, and only if the object is still at
        ``resource_version``: a chain writing the host's status meanwhile wins (409)."""
        patch = {
            "metadata": {"resourceVersion": resource_version},
            "status": {"conditions": [condition.to_wire() for condition in conditions]},
        }

        def send() -> Any:
            return self._objects.patch_cluster_custom_object_status(
                GROUP, VERSION, VIRTUALHOSTS, name, patch, _preload_content=False
            )

        await call(
            lambda: drained(send()), what=f"writing conditions of VirtualHost {name}", delays=()
        )

    async def write_status(self, name: str, status: VirtualHostStatus) -> None:
        patch = {"status": status.to_merge_patch()}

        def send() -> Any:
            return self._objects.patch_cluster_custom_object_status(
                GROUP, VERSION, VIRTUALHOSTS, name, patch, _preload_content=False
            )

        await write(send, what=f"writing status of VirtualHost {name}")

    async def write_renewal_window(
        self, name: str, serial: str, window: RenewalWindowStatus, renewal_time: str
    ) -> bool:
        """Replace the certificate's renewal window and time, only while ``status.certificate``
        still names ``serial`` (a JSON patch ``test``): a renewal that replaced the certificate
        meanwhile wins. Returns whether it was written."""
        base = "/status/certificate"
        patch: list[dict[str, Any]] = [
            {"op": "test", "path": f"{base}/serial", "value": serial},
            {"op": "add", "path": f"{base}/renewalWindow", "value": window.to_wire()},
            {"op": "replace", "path": f"{base}/renewalTime", "value": renewal_time},
        ]

        def send() -> Any:
            return self._objects.patch_cluster_custom_object_status(
                GROUP,
                VERSION,
                VIRTUALHOSTS,
                name,
                patch,
                _content_type="application/json-patch+json",
                _preload_content=False,
            )

        try:
            await write(send, what=f"writing the renewal window of VirtualHost {name}")
        except ApiError as error:
            if error.status in (404, 422):  # gone, or the certificate changed (failed test)
                return False
            raise
        return True

    async def publish_challenge(self, name: str, token: str, key_authorization: str) -> None:
        """Put an HTTP-01 challenge into the host's status, for every replica's responder."""
        patch = {"status": challenge_status(token, key_authorization)}

        def send() -> Any:
            return self._objects.patch_cluster_custom_object_status(
                GROUP, VERSION, VIRTUALHOSTS, name, patch, _preload_content=False
            )

        await write(send, what=f"publishing the challenge of VirtualHost {name}")

    async def read_challenge(self, name: str) -> tuple[str, str] | None:
        """The host's published challenge; ``None`` when it has none (or is gone)."""

        def send() -> Any:
            return json_body(
                self._objects.get_cluster_custom_object(
                    GROUP, VERSION, VIRTUALHOSTS, name, _preload_content=False
                )
            )

        try:
            found = await call(send, what=f"reading VirtualHost {name}", delays=())
        except ApiError as error:
            if error.status == 404:
                return None
            raise
        return published_challenge(found)

    async def annotate(self, name: str, annotations: dict[str, str]) -> None:
        patch = {"metadata": {"annotations": annotations}}

        def send() -> Any:
            return self._objects.patch_cluster_custom_object(
                GROUP, VERSION, VIRTUALHOSTS, name, patch, _preload_content=False
            )

        await write(send, what=f"annotating VirtualHost {name}")


def watch_virtualhosts(client: ApiClient) -> ObjectWatch:
    """Every VirtualHost, whole, listed in one response, then watched: the tenancy gate's feed
    (RBAC: virtualhosts list and watch)."""
    objects = kubernetes.client.CustomObjectsApi(client)
    return ObjectWatch(
        objects.list_cluster_custom_object, GROUP, VERSION, VIRTUALHOSTS, what="virtualhosts"
    )
