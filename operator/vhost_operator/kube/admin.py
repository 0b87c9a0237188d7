"""The API calls of the ``kubectl vhost`` plugin, made with the administrator's own credentials:
read VirtualHosts and the nginx agent's reports on their site ConfigMaps, and set the retry and
renew annotations.

Credentials are found as ``kubectl`` finds them: ``--kubeconfig``, else ``$KUBECONFIG`` (a list
of files, merged), else ``~/.kube/config``, else the Pod's service account.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import kubernetes

from vhost_operator.errors import ApiError
from vhost_operator.kube.api import ApiClient, call, drained, json_body
from vhost_operator.kube.core import CoreObjects
from vhost_operator.kube.preconditions import conditional_call
from vhost_operator.resources import labels
from vhost_operator.resources.models import GROUP, VERSION, VIRTUALHOSTS

FIELD_MANAGER = "kubectl-vhost"
NO_RETRIES = ()
"""A person waits for each call: one attempt, and the error at once, no silent retries."""


def kubeconfig_files(flag: str | None, environment: str | None, home: Path) -> str | None:
    """The kubeconfig file(s) ``kubectl`` would use, ``os.pathsep``-separated; ``None`` means
    in-cluster (no flag, no ``$KUBECONFIG``, no ``~/.kube/config``)."""
    if flag:
        return flag
    if environment:
        return environment
    default = home / ".kube" / "config"
    return str(default) if default.exists() else None


def connect_as_user(kubeconfig: str | None, context: str | None = None) -> ApiClient:
    """An API client the way ``kubectl`` makes one (see the module's docstring)."""
    files = kubeconfig_files(kubeconfig, os.environ.get("KUBECONFIG"), Path.home())
    configuration = kubernetes.client.Configuration()
    if files is None:
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    else:
        # The client merges a path list the way kubectl does (first file wins per entry).
        kubernetes.config.load_kube_config(
            config_file=files, context=context, client_configuration=configuration
        )
    return kubernetes.client.ApiClient(configuration)


class AdminApi:
    """What the plugin reads and writes, and nothing else."""

    def __init__(self, client: ApiClient) -> None:
        self._objects = kubernetes.client.CustomObjectsApi(client)
        self._core = CoreObjects(client)

    async def virtualhost(self, name: str) -> dict[str, Any] | None:
        def send() -> Any:
            return json_body(
                self._objects.get_cluster_custom_object(
                    GROUP, VERSION, VIRTUALHOSTS, name, _preload_content=False
                )
            )

        try:
            found: dict[str, Any] = await call(
                send, what=f"reading VirtualHost {name}", delays=NO_RETRIES
            )
        except ApiError as error:
            if error.status == 404:
                return None
            raise
        return found

    async def virtualhosts(self) -> list[dict[str, Any]]:
        def send() -> Any:
            return json_body(
                self._objects.list_cluster_custom_object(
                    GROUP, VERSION, VIRTUALHOSTS, _preload_content=False
                )
            )

        body = await call(send, what="listing VirtualHosts", delays=NO_RETRIES)
        return list(body.get("items") or ())

    async def site_configmaps(self, namespace: str | None) -> list[dict[str, Any]]:
        """The site ConfigMaps (which carry the nginx agent's reports) of ``namespace``, or of
        every namespace when it is ``None``."""
        path = f"/api/v1/namespaces/{namespace}/configmaps" if namespace else "/api/v1/configmaps"
        selector = f"{labels.COMPONENT}={labels.SITE_COMPONENT}"

        def send() -> Any:
            return json_body(self._core.request("GET", path, query=[("labelSelector", selector)]))

        where = f"in {namespace}" if namespace else "in all namespaces"
        body = await call(send, what=f"listing site ConfigMaps {where}", delays=NO_RETRIES)
        return list(body.get("items") or ())

    async def annotate(self, name: str, key: str, value: str) -> None:
        """Set one annotation. The webhook may refuse it: a 409 raises ``Contended`` with the
        webhook's message, at once (``conditional_call``)."""
        patch = {"metadata": {"annotations": {key: value}}}

        def send() -> None:
            response = self._objects.patch_cluster_custom_object(
                GROUP,
                VERSION,
                VIRTUALHOSTS,
                name,
                patch,
                field_manager=FIELD_MANAGER,
                _content_type="application/merge-patch+json",
                _preload_content=False,
            )
            drained(response)

        await conditional_call(send, what=f"annotating VirtualHost {name}")
