"""The nginx agent's API calls: watch the site ConfigMaps and TLS Secrets of one namespace, and
annotate site ConfigMaps with what nginx applied.

RBAC (namespaced, in the nginx namespace): configmaps get/list/watch/patch, secrets
get/list/watch; with several nginx replicas also pods list/watch (which replicas exist). The
agent never creates or deletes objects. The operator also watches the nginx pods (pods
list/watch) to know which replicas are ready.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import kubernetes

from vhost_operator.errors import ApiError
from vhost_operator.kube.api import write
from vhost_operator.kube.core import CoreObjects
from vhost_operator.kube.watching import LIST_PAGE_SIZE, ObjectWatch
from vhost_operator.resources import labels
from vhost_operator.resources.watch import Object

FIELD_MANAGER = "vhost-operator-nginx-agent"
"""Field manager of the agent's annotations: distinct from the operator's, so the operator's
server-side apply of a site ConfigMap leaves them alone."""

Slim = Callable[[Object], Object]
"""What a consumer keeps of each watched object (``ObjectWatch``'s ``slim``)."""


def _selector(component: str) -> str:
    return f"{labels.COMPONENT}={component}"


class SiteObjects:
    """Site ConfigMaps and TLS Secrets in the agent's namespace."""

    def __init__(self, client: kubernetes.client.ApiClient, namespace: str) -> None:
        self._core = CoreObjects(client)
        self.namespace = namespace

    def watch_configmaps(self, slim: Slim | None = None) -> ObjectWatch:
        """The site ConfigMaps, listed in pages, then watched; each reduced by ``slim`` (the
        operator keeps a few annotations, the agent what it reads of each)."""
        return ObjectWatch(
            self._core.lister("configmaps"),
            self.namespace,
            label_selector=_selector(labels.SITE_COMPONENT),
            what=f"site ConfigMaps in {self.namespace}",
            page_size=LIST_PAGE_SIZE,
            slim=slim,
        )

    def watch_pods(self, label_selector: str | None = None) -> ObjectWatch:
        """The (nginx) pods of the namespace, keeping only their names and whether each is
        ready."""
        return ObjectWatch(
            self._core.lister("pods"),
            self.namespace,
            label_selector=label_selector,
            what=f"nginx pods in {self.namespace}",
            slim=_slim_pod,
        )

    def watch_secrets(self, slim: Slim | None = None) -> ObjectWatch:
        """The TLS Secrets, listed in pages, then watched; each reduced by ``slim``."""
        return ObjectWatch(
            self._core.lister("secrets"),
            self.namespace,
            label_selector=_selector(labels.TLS_COMPONENT),
            what=f"TLS Secrets in {self.namespace}",
            page_size=LIST_PAGE_SIZE,
            slim=slim,
        )

    async def annotate_configmap(self, name: str, annotations: Mapping[str, str | None]) -> bool:
        """Set (or, for ``None``, remove) annotations; ``False`` if the ConfigMap is gone."""
        body = {"metadata": {"annotations": dict(annotations)}}
        try:
            await write(
                lambda: self._core.merge_patch(
                    "configmaps", self.namespace, name, body, manager=FIELD_MANAGER
                ),
                what=f"annotating ConfigMap {self.namespace}/{name}",
            )
        except ApiError as error:
            if error.status == 404:
                return False
            raise
        return True


def _slim_pod(pod: Object) -> Object:
    metadata = pod.get("metadata") or {}
    return {
        "metadata": {
            "name": metadata.get("name"),
            "deletionTimestamp": metadata.get("deletionTimestamp"),
        },
        "status": {"conditions": (pod.get("status") or {}).get("conditions") or []},
    }
