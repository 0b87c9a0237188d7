"""Fixtures for tests that run the operator with ACME (a real pebble) and nginx steps on."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness import kube
from tests.harness.clusters import Cluster
from tests.harness.operator import OperatorProcess
from tests.harness.pebble import Pebble
from tests.harness.processes import free_port

OperatorFactory = Callable[..., OperatorProcess]


@pytest.fixture(scope="module")
def upstream() -> Iterator[int]:
    """The mail web app stand-in: answers every request with the Host it was asked for."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = f"upstream for {self.headers['Host']}\n".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


@pytest.fixture(scope="module")
def responder_port() -> int:
    """Where the operator's HTTP-01 responder listens, and where pebble validates."""
    return free_port()


@pytest.fixture(scope="module")
def pebble(responder_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pebble]:
    with Pebble(http_port=responder_port, workdir=tmp_path_factory.mktemp("pebble")) as ca:
        yield ca


def operator_settings(pebble: Pebble, responder_port: int, **overrides: str) -> dict[str, str]:
    """ACME against ``pebble`` and nginx steps on; keyword arguments override settings."""
    settings = {
        "ACME_ENABLED": "true",
        "NGINX_ENABLED": "true",
        "NGINX_NAMESPACE": kube.NAMESPACE,
        "OPERATOR_NAMESPACE": kube.NAMESPACE,
        "ACME_DIRECTORY_URL": pebble.directory_url,
        "ACME_CA_BUNDLE": str(pebble.ca_bundle_path),
        "ACME_EMAIL": "hostmaster@example.com",
        "ACME_ORDER_TIMEOUT": "30",
        "CHALLENGE_LISTEN_PORT": str(responder_port),
        "CHALLENGE_UPSTREAM": f"127.0.0.1:{responder_port}",
        "SELF_CHECK_ADDRESS": f"http://127.0.0.1:{responder_port}",
        "UPSTREAM": "http://127.0.0.1:8000",
        # No nginx agent in these tests unless one overrides this: publishing is enough.
        "NGINX_WAIT_FOR_AGENT": "false",
        **{key.upper(): value for key, value in overrides.items()},
    }
    return {f"VHOST_OPERATOR_{key}": value for key, value in settings.items()}


@pytest.fixture
def start_operator(
    cluster: Cluster, pebble: Pebble, responder_port: int, tmp_path: Path
) -> Iterator[OperatorFactory]:
    """Start operators (one at a time); all VirtualHosts are deleted and the operators stopped
    when the test ends."""
    kube.ensure_namespace(cluster)
    started: list[OperatorProcess] = []

    def start(**overrides: str) -> OperatorProcess:
        workdir = tmp_path / f"operator-{len(started)}"
        workdir.mkdir()
        settings = operator_settings(pebble, responder_port, **overrides)
        process = OperatorProcess(cluster.kubeconfig, workdir, settings)
        started.append(process.start())
        return process

    yield start
    kube.delete_all_virtualhosts(cluster)
    for process in started:
        process.stop()
