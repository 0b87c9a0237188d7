"""ConfigMaps and Secrets through the ``kubernetes`` client's HTTP layer, without ``CoreV1Api``.

``kubernetes.client.CoreV1Api`` brings the model classes of the whole core API group along:
importing it costs about 20 MB in every process that does (62 → 84 MB measured), for the few
calls the operator and the nginx agent make on two kinds, whose answers they read as JSON
anyway. The requests themselves go the same way as ``CoreV1Api``'s: the same configuration,
authentication, connection pool and error (``ApiException``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import kubernetes
from kubernetes.client.exceptions import ApiException

Kind = Literal["configmaps", "secrets", "pods"]
MERGE_PATCH = "application/merge-patch+json"
APPLY = "application/apply-patch+yaml"


class CoreObjects:
    """Namespaced ConfigMaps and Secrets. Every call blocks (run it in a thread) and returns the
    raw ``urllib3`` response: read it to its end (``json_body``, ``drained``), or stream it."""

    def __init__(self, client: kubernetes.client.ApiClient) -> None:
        self._client = client

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, Any]] = (),
        body: Any = None,
        content_type: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        """``timeout``: seconds for the whole request (connect and read); ``None``: no limit."""
        headers = {"Accept": "application/json"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        serialized = self._client.param_serialize(
            method=method,
            resource_path=path,
            query_params=[(key, value) for key, value in query if value is not None],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self._client.call_api(*serialized, _request_timeout=timeout)
        if not 200 <= response.status <= 299:
            response.read()
            raise ApiException.from_response(http_resp=response, body=None, data=None)
        return response.response

    def read(self, kind: Kind, namespace: str, name: str) -> Any:
        return self.request("GET", _path(kind, namespace, name))

    def create(self, kind: Kind, namespace: str, body: Any, *, manager: str) -> Any:
        """Create; ``409`` AlreadyExists if an object of that name exists."""
        query = [("fieldManager", manager)]
        return self.request("POST", _path(kind, namespace), query=query, body=body)

    def delete(self, kind: Kind, namespace: str, name: str, *, uid: str | None = None) -> Any:
        """Delete; with ``uid``, only that incarnation of the object (else 409 Conflict)."""
        body = None if uid is None else {"preconditions": {"uid": uid}}
        return self.request("DELETE", _path(kind, namespace, name), body=body)

    def apply(self, kind: Kind, namespace: str, name: str, body: Any, *, manager: str) -> Any:
        """Server-side apply of ``body`` as field manager ``manager`` (forcing conflicts)."""
        query = [("fieldManager", manager), ("force", True)]
        return self.request(
            "PATCH", _path(kind, namespace, name), query=query, body=body, content_type=APPLY
        )

    def merge_patch(
        self, kind: Kind, namespace: str, name: str, body: Any, *, manager: str | None = None
    ) -> Any:
        query = [("fieldManager", manager)]
        return self.request(
            "PATCH", _path(kind, namespace, name), query=query, body=body, content_type=MERGE_PATCH
        )

    def lister(self, kind: Kind) -> Callable[..., Any]:
        """A list function of ``kind`` for ``kube.watching.ObjectWatch`` and the client's
        ``Watch.stream``, with their keyword arguments. It declares no return type, so the
        client's watch hands over each event's JSON without building model objects from it."""

        # No return annotation, on purpose: see above.
        def list_objects(  # type: ignore[no-untyped-def]
            namespace: str,
            *,
            label_selector: str | None = None,
            limit: int | None = None,
            _continue: str | None = None,
            resource_version: str | None = None,
            timeout_seconds: int | None = None,
            allow_watch_bookmarks: bool | None = None,
            watch: bool | None = None,
            **_: Any,
        ):
            query = [
                ("labelSelector", label_selector),
                ("limit", limit),
                ("continue", _continue),
                ("resourceVersion", resource_version),
                ("timeoutSeconds", timeout_seconds),
                ("allowWatchBookmarks", allow_watch_bookmarks),
                ("watch", watch),
            ]
            return self.request("GET", _path(kind, namespace), query=query)

        return list_objects


def _path(kind: Kind, namespace: str, name: str | None = None) -> str:
    path = f"/api/v1/namespaces/{namespace}/{kind}"
    return f"{path}/{name}" if name is not None else path
