"""The ``vhost-operator`` command."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

import kopf

from vhost_operator import __version__
from vhost_operator.settings import Settings
from vhost_operator.wiring import build_context


def run(settings: Settings, *, verbose: bool) -> None:
    import vhost_operator.handlers  # registers the handlers with kopf

    if settings.webhook_enabled:
        vhost_operator.handlers.enable_admission()

    log_format = kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.FULL
    kopf.configure(verbose=verbose, log_format=log_format)
    if not verbose:
        # A line per webhook review, challenge request and probe: noise, and CPU under load.
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    context = build_context(settings)
    kopf.run(
        clusterwide=True,
        standalone=True,
        memo=context.as_memo(),
        liveness_endpoint=f"http://0.0.0.0:{settings.liveness_port}/healthz",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vhost-operator", description=__doc__)
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser(
        "run", help="run the operator (settings from VHOST_OPERATOR_*)"
    )
    run_parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    gate_parser = commands.add_parser(
        "tenancy-gate",
        help="run the login tenancy gate and theme service (settings from VHOST_GATE_*)",
    )
    gate_parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    agent_parser = commands.add_parser(
        "nginx-agent",
        help="run the nginx agent next to nginx (settings from VHOST_AGENT_*)",
    )
    agent_parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    arguments = parser.parse_args(argv)
    if arguments.command == "run":
        run(Settings(), verbose=arguments.verbose)
    elif arguments.command == "tenancy-gate":
        # Imported here: the operator's own command never needs the gate's server.
        from vhost_operator.tenancy import service
        from vhost_operator.tenancy.settings import GateSettings

        service.run(GateSettings(), verbose=arguments.verbose)
    elif arguments.command == "nginx-agent":
        # Imported here: the sidecar needs neither kopf's handlers nor ACME.
        from vhost_operator.agent.agent import main as agent_main
        from vhost_operator.agent.settings import AgentSettings

        agent_main(AgentSettings(), verbose=arguments.verbose)
    return 0
