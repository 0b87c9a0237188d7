"""The VirtualHost calls of MailDomain linking: read a host's domains, create a host, rewrite
its ``spec.domains`` conditionally. RBAC: virtualhosts get/create/patch.

Every write of ``spec.domains`` carries the resourceVersion it was computed from: the API server
refuses it (409) when the host changed in between, so two MailDomains adding themselves to one
host at the same moment can never drop each other's domain.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import kubernetes

from vhost_operator.errors import ApiError
from vhost_operator.kube.api import call
from vhost_operator.kube.preconditions import conditional_call
from vhost_operator.resources.maildomains import HostDomains
from vhost_operator.resources.models import GROUP, VERSION, VIRTUALHOSTS

CREATED_FOR = f"{GROUP}/created-for"
"""Annotation on a VirtualHost the operator created: the MailDomain it was created for."""

MERGE_PATCH = "application/merge-patch+json"


class HostDomainsApi:
    """The calls linking makes on VirtualHosts, and nothing else."""

    def __init__(self, client: kubernetes.client.ApiClient) -> None:
        self._objects = kubernetes.client.CustomObjectsApi(client)

    async def get(self, name: str) -> HostDomains | None:
        def send() -> Any:
            return self._objects.get_cluster_custom_object(GROUP, VERSION, VIRTUALHOSTS, name)

        try:
            body = await call(send, what=f"reading VirtualHost {name}")
        except ApiError as error:
            if error.status == 404:
                return None
            raise
        return HostDomains.from_body(body)

    async def create(
        self, name: str, hostname: str, domains: Sequence[str], *, created_for: str
    ) -> HostDomains:
        """Create the host; raises ``NameTaken`` when the name exists already."""
        manifest = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "VirtualHost",
            "metadata": {"name": name, "annotations": {CREATED_FOR: created_for}},
            "spec": {"hostname": hostname, "domains": list(domains)},
        }

        def send() -> Any:
            return self._objects.create_cluster_custom_object(
                GROUP, VERSION, VIRTUALHOSTS, manifest
            )

        created = await conditional_call(send, what=f"creating VirtualHost {name}")
        return HostDomains.from_body(created)

    async def set_domains(self, host: HostDomains, domains: Sequence[str]) -> HostDomains | None:
        """Replace ``spec.domains`` if the host is still at ``host.resource_version``.

        Raises ``Contended`` when it changed since; ``None`` when it is gone.
        """
        # A merge patch that names a resourceVersion is a precondition: the API server answers
        # 409 Conflict unless the object is still at that version.
        patch = {
            "metadata": {"resourceVersion": host.resource_version},
            "spec": {"domains": list(domains)},
        }

        def send() -> Any:
            return self._objects.patch_cluster_custom_object(
                GROUP, VERSION, VIRTUALHOSTS, host.name, patch, _content_type=MERGE_PATCH
            )

        try:
            body = await conditional_call(
                send, what=f"writing the domains of VirtualHost {host.name}"
            )
        except ApiError as error:
            if error.status == 404:
                return None
            raise
        return HostDomains.from_body(body)
