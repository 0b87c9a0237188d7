"""The tenancy gate as a real process (``python -m vhost_operator tenancy-gate``), and a small
keep-alive HTTP client for it (stdlib ``http.client``: one connection, sequential requests)."""

from __future__ import annotations

import http.client
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.harness.processes import ComponentProcess, free_port


class GateProcess(ComponentProcess):
    """Starts the gate against a kubeconfig with ``VHOST_GATE_*`` settings; ready once it has
    listed the VirtualHosts (``/readyz``)."""

    command = "tenancy-gate"

    def __init__(self, kubeconfig: Path, workdir: Path, settings: Mapping[str, str]) -> None:
        super().__init__(kubeconfig, workdir / "tenancy-gate.log")
        self.settings = dict(settings)
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> GateProcess:
        env = {
            "VHOST_GATE_LISTEN_ADDRESS": "127.0.0.1",
            "VHOST_GATE_LISTEN_PORT": str(self.port),
            # Straight to the local apiserver, never through a proxy the environment may set.
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            **self.settings,
        }
        self._launch(env, f"{self.url}/readyz", what="ready tenancy gate")
        return self

    def client(self) -> GateClient:
        return GateClient(self.port)


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class GateClient:
    """One keep-alive connection to the gate; requests go one after another."""

    def __init__(self, port: int) -> None:
        self._connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def close(self) -> None:
        self._connection.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        # A "Host" among the headers replaces http.client's own (tests send odd Hosts on purpose).
        self._connection.request(method, path, body=body, headers=dict(headers or {}))
        response = self._connection.getresponse()
        payload = response.read()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, payload)

    def login_check(
        self,
        hostname: str,
        email: str,
        administered: Sequence[str] = (),
        *,
        superuser: bool = False,
    ) -> Answer:
        document = {
            "hostname": hostname,
            "email": email,
            "administeredDomains": list(administered),
            "superuser": superuser,
        }
        return self.post_json("/v1/login-check", document)

    def post_json(self, path: str, document: object) -> Answer:
        body = json.dumps(document).encode()
        return self.request("POST", path, body=body, headers={"Content-Type": "application/json"})

    def auth(
        self,
        host: str,
        email: str | None,
        administered: Sequence[str] = (),
        *,
        superuser: bool = False,
        original_host: bool = True,
    ) -> Answer:
        """``/v1/auth`` as nginx's ``auth_request`` calls it: the host in X-Original-Host (or,
        with ``original_host=False``, as the Host header itself)."""
        headers = {"X-Original-Host" if original_host else "Host": host}
        if email is not None:
            headers["X-User-Email"] = email
        if administered:
            headers["X-User-Domains"] = ",".join(administered)
        headers["X-User-Superuser"] = "true" if superuser else "false"
        return self.request("GET", "/v1/auth", headers=headers)

    def theme(self, hostname: str) -> Answer:
        return self.request("GET", f"/v1/themes/{hostname}")
