"""The gate's ``/metrics``: its answers counted by endpoint, verdict and reason, through the
aiohttp app itself (in-process, no Kubernetes: the directory is fed as the watch feeds it).
The real process behind a real API server: tests/integration/test_tenancy_gate.py."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from tests.harness.processes import parse_metrics, series_value
from tests.unit.builders import virtualhost_body
from vhost_operator.resources.models import Theme
from vhost_operator.resources.watch import WatchEvent
from vhost_operator.tenancy.directory import HostDirectory
from vhost_operator.tenancy.server import GateApi, create_app


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one series of the exposition, 0 if absent."""
    return series_value(parse_metrics(text), name, **labels)


async def scenario(directory: HostDirectory) -> tuple[str, str]:
    """Scrapes before the hosts are listed and after a few answers of each kind."""
    api = GateApi(directory, ("webmail.example.net",), Theme(), lambda: True)
    async with TestClient(TestServer(create_app(api))) as client:
        login = {"hostname": "mail.a.com", "email": "ann@a.com"}
        await client.post("/v1/login-check", json=login)  # not ready yet
        before = await (await client.get("/metrics")).text()
        directory.apply(WatchEvent("SYNC", objects=(body(),)))
        for email in ("ann@a.com", "bob@a.com", "eve@b.com"):
            await client.post("/v1/login-check", json={**login, "email": email})
        await client.post("/v1/login-check", data=b"not json")
        headers = {"X-Original-Host": "mail.a.com", "X-User-Email": "eve@b.com"}
        await client.get("/v1/auth", headers=headers)
        await client.get("/v1/auth", headers={"X-Original-Host": "mail.a.com"})
        await client.get("/v1/auth", headers={**headers, "X-Original-Host": "other.b.com"})
        response = await client.get("/metrics")
        assert response.status == 200
        assert response.content_type == "text/plain"
        return before, await response.text()


def body() -> Any:
    metadata = {"name": "a", "creationTimestamp": "2026-01-01T00:00:00Z"}
    return virtualhost_body("mail.a.com", metadata=metadata, domains=["a.com"])


def test_answers_are_counted_by_endpoint_verdict_and_reason() -> None:
    before, after = asyncio.run(scenario(HostDirectory()))

    answers = "vhost_gate_answers_total"
    assert sample(before, "vhost_gate_synced") == 0
    assert sample(before, answers, endpoint="login-check", allowed="false", reason="not-ready") == 1
    assert sample(after, "vhost_gate_synced") == 1
    assert sample(after, "vhost_gate_virtualhosts") == 1
    counted = {
        ("login-check", "true", "mailbox-domain"): 2,
        ("login-check", "false", "not-a-tenant"): 1,
        ("login-check", "false", "invalid-request"): 1,
        ("login-check", "false", "not-ready"): 1,
        ("auth", "false", "not-a-tenant"): 1,
        ("auth", "false", "no-identity"): 1,
        ("auth", "false", "unknown-host"): 1,
    }
    for (endpoint, allowed, reason), count in counted.items():
        value = sample(after, answers, endpoint=endpoint, allowed=allowed, reason=reason)
        assert value == count, (endpoint, allowed, reason)
    durations = "vhost_gate_answer_duration_seconds_count"
    assert sample(after, durations, endpoint="login-check") == 5
    assert sample(after, durations, endpoint="auth") == 3
    assert "mail.a.com" not in after and "a.com" not in after, "no hostnames or users as labels"


def test_two_gates_in_one_process_count_apart() -> None:
    first = asyncio.run(scenario(HostDirectory()))[1]
    second = asyncio.run(scenario(HostDirectory()))[1]
    assert first.count("vhost_gate_answers_total{") == second.count("vhost_gate_answers_total{")
    answers = "vhost_gate_answers_total"
    labels = {"endpoint": "auth", "allowed": "false", "reason": "no-identity"}
    assert sample(first, answers, **labels) == sample(second, answers, **labels) == 1
