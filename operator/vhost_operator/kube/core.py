"""ConfigMaps and Secrets through the ``kubernetes`` client's HTTP layer, without ``CoreV1Api``.

``kubernetes.client.CoreV1Api`` brings the model classes of the whole core API group along:
importing it costs about 20 MB in every process that does (62 → 84 MB measured), for the few
calls the operator and the nginx agent make on two kinds, whose answers they read as JSON
anyway. The requests themselves use the client's configuration, authentication, connection pool
and error (``ApiException``), but not its request path (:func:`send`), and
:class:`ClusterObjects` does the same for the calls on our cluster-scoped custom objects.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, Literal

import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException
from kubernetes.client.rest import RESTResponse

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
        return send(
            self._client,
            method,
            path,
            query=query,
            body=body,
            content_type=content_type,
            timeout=timeout,
        )

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

    def merge_patch(self, kind: Kind, namespace: str, name: str, body: Any, *, manager: str) -> Any:
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


def send(
    client: kubernetes.client.ApiClient,
    method: str,
    path: str,
    *,
    query: Sequence[tuple[str, Any]] = (),
    body: Any = None,
    content_type: str | None = None,
    timeout: float | None = None,
) -> Any:
    """One request with ``client``'s configuration, authentication and connection pool; the raw
    ``urllib3`` response (read it to its end), or ``ApiException`` for a status other than 2xx.

    The generated API classes and the client's request path validate every argument with
    pydantic, walk the body to sanitize it and match content types with regular expressions
    before the same JSON goes out: 0.1-0.2 ms of CPU per request (a status patch 0.22 ms,
    a read 0.08 ms, measured without the network), a few % of the operator's CPU while it
    provisions. Bodies here are plain JSON already; an apply's YAML is sent as JSON, as the
    client does.
    """
    headers = {**client.default_headers, "Accept": "application/json"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    elif body is not None:
        headers["Content-Type"] = "application/json"
    # The bearer token (re-read by the configuration's refresh hook, see api.connect).
    client.update_params_for_auth(headers, None, ["BearerToken"], path, method, body)
    parameters = [(key, value) for key, value in query if value is not None]
    url = client.configuration.host + path
    if parameters:
        url += "?" + client.parameters_to_url_query(parameters, None)
    response = client.rest_client.pool_manager.urlopen(
        method,
        url,
        body=None if body is None else json.dumps(body),
        headers=headers,
        timeout=None if timeout is None else urllib3.Timeout(total=timeout),
        preload_content=False,
    )
    if not 200 <= response.status <= 299:
        failed = RESTResponse(response)
        failed.read()
        raise ApiException.from_response(http_resp=failed, body=None, data=None)
    return response


class ClusterObjects:
    """The calls of ``kubernetes.client.CustomObjectsApi`` on one cluster-scoped object that the
    operator makes on its hot path, with the same arguments, through :func:`send`. They return
    the raw response (as the client's with ``_preload_content=False``). Patches are made as
    field manager ``manager``: without one the API server names the writer after the client's
    user agent (``OpenAPI-Generator``), which every program on the Python client shares."""

    def __init__(self, client: kubernetes.client.ApiClient, *, manager: str) -> None:
        self._client = client
        self._manager = manager

    def get_cluster_custom_object(
        self, group: str, version: str, plural: str, name: str, **_: Any
    ) -> Any:
        return send(self._client, "GET", _cluster_path(group, version, plural, name))

    def patch_cluster_custom_object(
        self,
        group: str,
        version: str,
        plural: str,
        name: str,
        body: Any,
        *,
        _content_type: str = MERGE_PATCH,
        **_: Any,
    ) -> Any:
        return self._patch(_cluster_path(group, version, plural, name), body, _content_type)

    def patch_cluster_custom_object_status(
        self,
        group: str,
        version: str,
        plural: str,
        name: str,
        body: Any,
        *,
        _content_type: str = MERGE_PATCH,
        **_: Any,
    ) -> Any:
        path = _cluster_path(group, version, plural, name) + "/status"
        return self._patch(path, body, _content_type)

    def _patch(self, path: str, body: Any, content_type: str) -> Any:
        query = [("fieldManager", self._manager)]
        return send(self._client, "PATCH", path, query=query, body=body, content_type=content_type)


def _cluster_path(group: str, version: str, plural: str, name: str) -> str:
    return f"/apis/{group}/{version}/{plural}/{name}"


def _path(kind: Kind, namespace: str, name: str | None = None) -> str:
    path = f"/api/v1/namespaces/{namespace}/{kind}"
    return f"{path}/{name}" if name is not None else path
