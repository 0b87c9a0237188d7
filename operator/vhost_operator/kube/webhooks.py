"""The operator's webhook configurations (``admission.configuration`` builds their webhooks),
through the same HTTP layer as ConfigMaps and Secrets (``kube.core``).

RBAC: patch of the configured name, and create (the chart's guard policy checks the rest), for
both kinds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import kubernetes

from vhost_operator.errors import ApiError
from vhost_operator.kube.api import write
from vhost_operator.kube.core import MERGE_PATCH, CoreObjects

Kind = Literal["ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"]
API = "/apis/admissionregistration.k8s.io/v1"
PLURALS: dict[Kind, str] = {
    "ValidatingWebhookConfiguration": "validatingwebhookconfigurations",
    "MutatingWebhookConfiguration": "mutatingwebhookconfigurations",
}
NOT_FOUND = 404


class WebhookConfigurations:
    def __init__(self, client: kubernetes.client.ApiClient) -> None:
        self._core = CoreObjects(client)

    async def put(self, kind: Kind, name: str, webhooks: Sequence[Any]) -> None:
        """Replace the webhooks of the configuration ``name`` (a merge patch replaces the whole
        list, as kopf's did), creating it if it is missing (the first start)."""
        collection = f"{API}/{PLURALS[kind]}"
        try:
            await write(
                lambda: self._core.request(
                    "PATCH",
                    f"{collection}/{name}",
                    body={"webhooks": list(webhooks)},
                    content_type=MERGE_PATCH,
                ),
                what=f"updating {kind} {name}",
            )
        except ApiError as error:
            if error.status != NOT_FOUND:
                raise
            body = {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": kind,
                "metadata": {"name": name},
                "webhooks": list(webhooks),
            }
            await write(
                lambda: self._core.request("POST", collection, body=body),
                what=f"creating {kind} {name}",
            )
