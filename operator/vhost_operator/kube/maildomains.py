"""Reading and writing MailDomain objects. RBAC: maildomains get/list/watch/patch,
maildomains/status patch, events create."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import kubernetes

from vhost_operator.errors import ApiError
from vhost_operator.kube.api import call, drained, write
from vhost_operator.kube.core import ClusterObjects
from vhost_operator.kube.objects import FIELD_MANAGER
from vhost_operator.kube.preconditions import conditional_call
from vhost_operator.kube.watching import ObjectWatch, watch_cluster_objects
from vhost_operator.resources.maildomains import MailDomain, MailDomainStatus
from vhost_operator.resources.models import GROUP, MAILDOMAINS, VERSION
from vhost_operator.resources.watch import Object


class MailDomainApi:
    """The calls the operator makes on MailDomains, and nothing else."""

    def __init__(self, client: kubernetes.client.ApiClient) -> None:
        self._objects = kubernetes.client.CustomObjectsApi(client)
        # Writes name the operator as their field manager (see ClusterObjects).
        self._writes = ClusterObjects(client, manager=FIELD_MANAGER)

    def watch_all(self, slim: Callable[[Object], Object]) -> ObjectWatch:
        """Every MailDomain, listed in pages, then watched; each reduced by ``slim``."""
        return watch_cluster_objects(self._objects, MAILDOMAINS, what="MailDomains", slim=slim)

    async def list_all(self) -> list[MailDomain]:
        def send() -> Any:
            return self._objects.list_cluster_custom_object(GROUP, VERSION, MAILDOMAINS)

        body = await call(send, what="listing MailDomains")
        return [MailDomain.from_body(item) for item in body.get("items") or ()]

    async def get(self, name: str) -> MailDomain | None:
        def send() -> Any:
            return self._objects.get_cluster_custom_object(GROUP, VERSION, MAILDOMAINS, name)

        try:
            body = await call(send, what=f"reading MailDomain {name}")
        except ApiError as error:
            if error.status == 404:
                return None
            raise
        return MailDomain.from_body(body)

    async def clear_virtual_host(self, domain: MailDomain) -> bool:
        """Remove ``spec.virtualHost`` if the object is still at ``domain.resource_version``.

        Raises ``Contended`` when it changed since (a user may just have pointed it elsewhere);
        ``False`` when it is gone.
        """
        patch = {
            "metadata": {"resourceVersion": domain.resource_version},
            "spec": {"virtualHost": None},
        }

        def send() -> None:
            drained(
                self._writes.patch_cluster_custom_object(
                    GROUP, VERSION, MAILDOMAINS, domain.name, patch
                )
            )

        try:
            await conditional_call(
                send, what=f"clearing spec.virtualHost of MailDomain {domain.name}"
            )
        except ApiError as error:
            if error.status == 404:
                return False
            raise
        return True

    async def write_status(self, name: str, status: MailDomainStatus) -> None:
        """Merge ``status`` into the object's status; a MailDomain deleted meanwhile is fine."""
        patch = {"status": status.to_merge_patch()}

        def send() -> Any:
            return self._writes.patch_cluster_custom_object_status(
                GROUP, VERSION, MAILDOMAINS, name, patch
            )

        try:
            await write(send, what=f"writing status of MailDomain {name}")
        except ApiError as error:
            if error.status != 404:
                raise
