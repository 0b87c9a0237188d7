"""kopf's webhook server, with a Kubernetes ``reason`` added to refusals.

kopf answers a refusal with a status code and message only. The API server passes the status on
as is, so without a reason ``kubectl`` prints a bare "Error from server" where users expect
"Error from server (Conflict)" for the seed's 409 on a stray retry.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import kopf

REASONS = {400: "BadRequest", 403: "Forbidden", 409: "Conflict", 422: "Invalid"}
"""Kubernetes ``StatusReason`` values for the codes our admission rules use."""


def with_reason(response: Any) -> Any:
    status = response.get("response", {}).get("status")
    if status and "reason" not in status and status.get("code") in REASONS:
        status["reason"] = REASONS[status["code"]]
    return response


class ReasonedWebhookServer(kopf.WebhookServer):
    async def __call__(self, fn: Any) -> AsyncIterator[Any]:
        async def answer(request: Any, **kwargs: Any) -> Any:
            return with_reason(await fn(request, **kwargs))

        async for client_config in super().__call__(answer):
            yield client_config
