"""``kube.core.send`` and ``ClusterObjects``: the same requests as the ``kubernetes`` client's own
request path (method, path and query, headers, body), and its ``ApiException`` for a failure.
Both are sent to a local server that records what arrives."""

from __future__ import annotations

import http.server
import json
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import kubernetes
import pytest
from kubernetes.client.exceptions import ApiException

from tests.harness.standin import StandIn
from vhost_operator.kube.core import APPLY, ClusterObjects, CoreObjects, send

Seen = dict[str, Any]


class _Recorder(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: ClassVar[list[Seen]]

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.seen.append(
            {
                "method": self.command,
                "path": self.path,
                "headers": {
                    key: self.headers.get(key)
                    for key in ("Authorization", "Content-Type", "Accept", "User-Agent")
                },
                "body": json.loads(body) if body else None,
            }
        )
        status = 404 if self.path.startswith("/missing") else 200
        answer = json.dumps({"kind": "Status", "code": status}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    do_GET = do_PATCH = do_POST = do_DELETE = _answer

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[kubernetes.client.ApiClient, list[Seen]]]:
    """An API client pointed at a local recording server, with a bearer token."""
    seen: list[Seen] = []
    handler = type("Handler", (_Recorder,), {"seen": seen})
    stand_in = StandIn(handler)
    configuration = kubernetes.client.Configuration()
    configuration.host = stand_in.url
    configuration.api_key = {"BearerToken": "secret-token"}
    configuration.api_key_prefix = {"BearerToken": "Bearer"}
    client = kubernetes.client.ApiClient(configuration)
    try:
        yield client, seen
    finally:
        client.rest_client.pool_manager.clear()
        stand_in.close()


PATCH = {"status": {"phase": "Ready", "conditions": [{"type": "Ready", "status": "True"}]}}
MANAGER = "vhost-operator"
"""The field manager our patches name (the client's calls are given it too)."""
JSON_PATCH = [{"op": "test", "path": "/status/certificate/serial", "value": "01"}]


def _pairs() -> list[tuple[str, Callable[[Any], Any], Callable[[Any], Any]]]:
    """(what, the client's own call, ours), each given the API client."""

    def custom(client: Any) -> Any:
        return kubernetes.client.CustomObjectsApi(client)

    g, v, p = "vhost-operator.io", "v1alpha1", "virtualhosts"
    return [
        (
            "read",
            lambda c: custom(c).get_cluster_custom_object(g, v, p, "a", _preload_content=False),
            lambda c: ClusterObjects(c, manager=MANAGER).get_cluster_custom_object(
                g, v, p, "a", _preload_content=False
            ),
        ),
        (
            "merge patch",
            lambda c: custom(c).patch_cluster_custom_object(
                g, v, p, "a", PATCH, field_manager=MANAGER, _preload_content=False
            ),
            lambda c: ClusterObjects(c, manager=MANAGER).patch_cluster_custom_object(
                g, v, p, "a", PATCH, _preload_content=False
            ),
        ),
        (
            "status merge patch",
            lambda c: custom(c).patch_cluster_custom_object_status(
                g, v, p, "a", PATCH, field_manager=MANAGER, _preload_content=False
            ),
            lambda c: ClusterObjects(c, manager=MANAGER).patch_cluster_custom_object_status(
                g, v, p, "a", PATCH, _preload_content=False
            ),
        ),
        (
            "status JSON patch",
            lambda c: custom(c).patch_cluster_custom_object_status(
                g,
                v,
                p,
                "a",
                JSON_PATCH,
                field_manager=MANAGER,
                _content_type="application/json-patch+json",
                _preload_content=False,
            ),
            lambda c: ClusterObjects(c, manager=MANAGER).patch_cluster_custom_object_status(
                g,
                v,
                p,
                "a",
                JSON_PATCH,
                _content_type="application/json-patch+json",
                _preload_content=False,
            ),
        ),
    ]


@pytest.mark.parametrize(("what", "theirs", "ours"), _pairs(), ids=lambda x: str(x))
def test_custom_object_calls_send_what_the_client_sends(
    server: tuple[kubernetes.client.ApiClient, list[Seen]],
    what: str,
    theirs: Callable[[Any], Any],
    ours: Callable[[Any], Any],
) -> None:
    client, seen = server
    assert json.loads(theirs(client).read()) == json.loads(ours(client).read())
    assert seen[0] == seen[1], what
    assert seen[1]["headers"]["Authorization"] == "Bearer secret-token"


def test_query_body_and_content_type(
    server: tuple[kubernetes.client.ApiClient, list[Seen]],
) -> None:
    client, seen = server
    manifest = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}
    CoreObjects(client).apply("configmaps", "ns", "c", manifest, manager="m").read()
    assert seen[0]["method"] == "PATCH"
    # Booleans as the client writes them (lowercase), absent values left out.
    assert seen[0]["path"] == "/api/v1/namespaces/ns/configmaps/c?fieldManager=m&force=true"
    assert seen[0]["headers"]["Content-Type"] == APPLY
    assert seen[0]["body"] == manifest
    send(client, "GET", "/api/v1/namespaces/ns/configmaps", query=[("limit", 5), ("x", None)])
    assert seen[1]["path"] == "/api/v1/namespaces/ns/configmaps?limit=5"
    assert seen[1]["body"] is None


def test_a_failure_is_the_clients_api_exception(
    server: tuple[kubernetes.client.ApiClient, list[Seen]],
) -> None:
    client, _ = server
    with pytest.raises(ApiException) as caught:
        send(client, "GET", "/missing")
    assert caught.value.status == 404
    assert json.loads(str(caught.value.body))["code"] == 404
