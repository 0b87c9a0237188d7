"""kopf's webhook server, with a Kubernetes ``reason`` added to refusals.

kopf answers a refusal with a status code and message only. The API server passes the status on
as is, so without a reason ``kubectl`` prints a bare "Error from server" where users expect
"Error from server (Conflict)" for the seed's 409 on a stray retry.

kopf's server writes a URL into the webhook configuration. Given a Service, this one names the
Service instead: the API server resolves a Service reference itself (to its ClusterIP), while a
URL's host name goes through the API server's own resolver, which on most clusters (the API
server on the host network) does not know ``.svc`` names.

An update the rules have nothing to say about (``admission.rules.review_needed``) is allowed
here, before kopf builds its review (a diff and a deep copy of both objects, the handler). The
configuration the server's client config goes to (``configure``) tells the API server not to
send those at all (``admission.configuration``); this answers them where it still does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import kopf

from vhost_operator.admission.rules import review_needed

REASONS = {400: "BadRequest", 403: "Forbidden", 409: "Conflict", 422: "Invalid"}
"""Kubernetes ``StatusReason`` values for the codes our admission rules use."""


def with_reason(response: Any) -> Any:
    status = response.get("response", {}).get("status")
    if status and "reason" not in status and status.get("code") in REASONS:
        status["reason"] = REASONS[status["code"]]
    return response


def allowed(request: Any) -> Any:
    """The answer kopf gives when every handler accepts and none changes the object."""
    return {
        "apiVersion": request.get("apiVersion", "admission.k8s.io/v1"),
        "kind": request.get("kind", "AdmissionReview"),
        "response": {"uid": (request.get("request") or {}).get("uid", ""), "allowed": True},
    }


def answering(fn: Any) -> Any:
    """kopf's webhook function ``fn``, skipped for an update the rules have nothing to say
    about, and with a reason added to its refusals."""

    async def answer(request: Any, **kwargs: Any) -> Any:
        if not review_needed(request):
            return allowed(request)
        return with_reason(await fn(request, **kwargs))

    return answer


def through_service(client_config: Any, namespace: str, name: str, port: int) -> Any:
    """kopf's URL client config turned into a reference to the Service (same CA bundle)."""
    service = {"namespace": namespace, "name": name, "port": port, "path": ""}
    return {key: value for key, value in client_config.items() if key != "url"} | {
        "service": service
    }


Configure = Callable[[Any | None], Awaitable[None]]
"""Writes the webhook configuration for a client config; ``None``: the server stops."""


class ReasonedWebhookServer(kopf.WebhookServer):
    """``service``: ``(namespace, name)`` of the Service in front of the webhook, whose port is
    the listening port; ``None`` registers kopf's URL. ``configure`` is called with every
    client config the server has, before kopf gets it (kopf's managed mode is off: it would
    write the configuration without match conditions)."""

    def __init__(
        self,
        *,
        service: tuple[str, str] | None = None,
        configure: Configure | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.service = service
        self.configure = configure

    async def __call__(self, fn: Any) -> AsyncIterator[Any]:
        try:
            async for client_config in super().__call__(answering(fn)):
                if self.service is not None and self.port is not None:
                    client_config = through_service(client_config, *self.service, self.port)
                if self.configure is not None:
                    await self.configure(client_config)
                yield client_config
        finally:
            if self.configure is not None:
                await self.configure(None)
