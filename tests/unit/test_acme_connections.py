"""The connections to the CA outlive the sessions that use them (``SharedConnections``)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import ClassVar

import pytest
import requests

from vhost_operator.acme.transport import SharedConnections


class _Counting(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a CA answers
    connections: ClassVar[list[int]]

    def setup(self) -> None:
        super().setup()
        self.connections.append(1)

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, list[int]]]:
    """A local HTTP server that counts the connections opened to it."""
    connections: list[int] = []
    handler = type("Handler", (_Counting,), {"connections": connections})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", connections
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def _session(adapter: SharedConnections) -> requests.Session:
    session = requests.Session()
    session.mount("http://", adapter)
    return session


def test_sessions_one_after_another_reuse_one_connection(server: tuple[str, list[int]]) -> None:
    url, connections = server
    adapter = SharedConnections(None, connections=2)
    for _ in range(3):
        session = _session(adapter)
        assert session.get(url, timeout=5).text == "ok"
        session.close()  # what every issuance does at its end
    assert len(connections) == 1
    adapter.close_all()
    session = _session(adapter)
    assert session.get(url, timeout=5).text == "ok"
    assert len(connections) == 2  # closed for real: the next request connects again
    adapter.close_all()
