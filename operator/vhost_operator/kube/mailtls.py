"""The mail TLS agent's API calls: watch the TLS Secrets of one namespace, read and patch its
report ConfigMap; and the operator's watch of those reports.

RBAC (namespaced, in the TLS Secrets' namespace): secrets get/list/watch; configmaps get/patch
on the report ConfigMap only (``resourceNames``). The agent never creates or deletes objects.
"""

from __future__ import annotations

from collections.abc import Mapping

import kubernetes

from vhost_operator.kube.api import call, json_body, write
from vhost_operator.kube.core import CoreObjects
from vhost_operator.kube.sites import SiteObjects
from vhost_operator.kube.watching import ObjectWatch
from vhost_operator.resources import labels
from vhost_operator.resources.mailtls import REPORT_COMPONENT

FIELD_MANAGER = "vhost-operator-mail-tls-agent"


class MailTlsObjects:
    """TLS Secrets and one report ConfigMap in ``namespace``."""

    def __init__(self, client: kubernetes.client.ApiClient, namespace: str, report: str) -> None:
        self._core = CoreObjects(client)
        self._sites = SiteObjects(client, namespace)
        self.namespace = namespace
        self.report = report

    def watch_secrets(self) -> ObjectWatch:
        return self._sites.watch_secrets()

    async def read_report(self) -> dict[str, str]:
        """The report ConfigMap's data (raises ``ApiError`` 404 if it does not exist)."""
        configmap = await call(
            lambda: json_body(self._core.read("configmaps", self.namespace, self.report)),
            what=f"reading ConfigMap {self.namespace}/{self.report}",
        )
        data: dict[str, str] = configmap.get("data") or {}
        return data

    async def patch_report(self, data: Mapping[str, str | None]) -> None:
        """Set (or, for ``None``, remove) data keys, and the label the operator selects on."""
        body = {
            "metadata": {"labels": {labels.COMPONENT: REPORT_COMPONENT}},
            "data": dict(data),
        }
        await write(
            lambda: self._core.merge_patch(
                "configmaps", self.namespace, self.report, body, manager=FIELD_MANAGER
            ),
            what=f"patching ConfigMap {self.namespace}/{self.report}",
        )


def watch_mail_reports(client: kubernetes.client.ApiClient, namespace: str) -> ObjectWatch:
    """The mail TLS agents' report ConfigMaps in ``namespace`` (for the operator: its
    configmaps list/watch there covers them)."""
    return ObjectWatch(
        CoreObjects(client).lister("configmaps"),
        namespace,
        label_selector=f"{labels.COMPONENT}={REPORT_COMPONENT}",
        what=f"mail TLS reports in {namespace}",
    )
