"""Item 6: the tenancy gate's latency, measured as ``tests/integration/test_tenancy_gate.py``
does (sequential requests on one keep-alive connection), with every VirtualHost of the run in
its directory."""

from __future__ import annotations

import json
from pathlib import Path

from bench.cluster import Client, identity, virtualhost
from bench.measure import Latencies, sequential
from bench.report import Figure, say
from tests.harness.audit import AuditedControlPlane
from tests.harness.gate import Answer, GateProcess

PRIMARY = "webmail.provider.test"


def gate_latency(
    plane: AuditedControlPlane, client: Client, workdir: Path, count: int
) -> list[Figure]:
    item = "6. tenancy gate"
    say(f"\n== {item}: {count} sequential keep-alive requests per endpoint ==")
    workdir.mkdir(parents=True, exist_ok=True)
    client.create_virtualhosts(
        [
            {**virtualhost(name, {}), "spec": {"hostname": f"mail.{domain}", "domains": [domain]}}
            for name, domain in (("gate-acme", "acme.test"), ("gate-globex", "globex.test"))
        ]
    )
    gate = GateProcess(
        identity(plane, "gate"), workdir, {"VHOST_GATE_PRIMARY_HOSTNAMES": json.dumps([PRIMARY])}
    )
    try:
        gate.start()
        connection = gate.client()
        emails = ["alice@acme.test", "gina@globex.test"]

        def check(answer: Answer) -> None:
            assert answer.status in (200, 403), answer

        for _ in range(100):  # warm-up
            check(connection.login_check("mail.acme.test", emails[0]))
        results: dict[str, Latencies] = {
            "POST /v1/login-check": sequential(
                count,
                lambda n: check(
                    connection.login_check("mail.acme.test", emails[n % 2], ("agency.test",))
                ),
            ),
            "GET /v1/auth": sequential(
                count,
                lambda n: check(connection.auth("mail.acme.test", emails[n % 2], ("agency.test",))),
            ),
            "GET /v1/themes/{host}": sequential(
                count, lambda n: check(connection.theme("mail.acme.test"))
            ),
        }
        connection.close()
    finally:
        gate.stop()
    figures = []
    for route, latencies in results.items():
        say(f"{route}: {latencies.describe()}")
        p99 = latencies.p99_ms
        figures.append(Figure(item, f"p99 {route}", f"{p99:.2f} ms", "< 5 ms", p99 < 5))
    return figures
