"""Each subcommand of ``vhost-operator`` loads only what its process runs (``vhost_operator.cli``).

The nginx agent is a sidecar in every nginx pod and the tenancy gate a small service: neither
may pay for kopf, the operator's handlers or the ACME library. Each case starts a fresh
interpreter, replaces the subcommand's body (the function ``cli`` hands over to) with a no-op,
dispatches the subcommand through ``cli.main`` and reports which heavy modules got imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HEAVY = (
    "kopf",
    "acme",
    "josepy",
    "vhost_operator.acme",
    "vhost_operator.handlers",
    "vhost_operator.provisioning",
)

PROBE = """
import importlib, json, sys
subcommand, module_name, body = sys.argv[1:]
module = importlib.import_module(module_name)
setattr(module, body, lambda *args, **kwargs: None)  # the process itself is not run here
from vhost_operator.cli import main
main([subcommand])
print(json.dumps([name for name in json.loads(sys.stdin.read()) if name in sys.modules]))
"""


def loaded_heavy_modules(
    subcommand: str, module: str, body: str, settings: dict[str, str] | None = None
) -> list[str]:
    # No VHOST_* variable of the calling shell may change what the settings classes accept.
    env = {name: value for name, value in os.environ.items() if not name.startswith("VHOST_")}
    env.update(settings or {})
    result = subprocess.run(
        [sys.executable, "-c", PROBE, subcommand, module, body],
        input=json.dumps(HEAVY),
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    loaded: list[str] = json.loads(result.stdout)
    return loaded


@pytest.mark.parametrize(
    ("subcommand", "module", "body", "settings"),
    [
        pytest.param("nginx-agent", "vhost_operator.agent.agent", "main", {}, id="nginx-agent"),
        pytest.param(
            "mail-tls-agent",
            "vhost_operator.mailtls.agent",
            "main",
            {"VHOST_MAILTLS_DOVECOT_CONFIG": "/etc/dovecot/dovecot.conf"},
            id="mail-tls-agent",
        ),
        pytest.param(
            "tenancy-gate", "vhost_operator.tenancy.service", "run", {}, id="tenancy-gate"
        ),
    ],
)
def test_sidecar_processes_load_neither_kopf_nor_acme(
    subcommand: str, module: str, body: str, settings: dict[str, str]
) -> None:
    assert loaded_heavy_modules(subcommand, module, body, settings) == []


def test_the_operator_process_loads_them() -> None:
    # The probe's own check: where they are needed, it sees them.
    assert loaded_heavy_modules("run", "vhost_operator.wiring", "run") == list(HEAVY)
