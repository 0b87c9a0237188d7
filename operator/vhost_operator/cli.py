"""The ``vhost-operator`` command.

Its four subcommands are four different processes, and each imports only what it runs: the
operator (``run``: kopf, the handlers, the ACME library, via ``wiring``), the tenancy gate
(``tenancy.service``), the nginx agent (``agent.agent``) and the mail TLS agent
(``mailtls.agent``). The gate and the agents never load kopf or the ACME library
(``tests/unit/test_cli_imports.py``), so this module imports none of them at the top.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from vhost_operator import __version__


def main(argv: Sequence[str] | None = None) -> int:
    summary = (__doc__ or "").split("\n\n")[0]  # the rest is for readers of this file
    parser = argparse.ArgumentParser(prog="vhost-operator", description=summary)
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
    mail_parser = commands.add_parser(
        "mail-tls-agent",
        help="run the mail TLS agent next to Postfix/Dovecot (settings from VHOST_MAILTLS_*)",
    )
    mail_parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    arguments = parser.parse_args(argv)
    if arguments.command == "run":
        from vhost_operator import wiring
        from vhost_operator.memory import limit_malloc_arenas, limit_tls_read_buffers
        from vhost_operator.settings import Settings

        limit_malloc_arenas()  # before any thread: see its docstring
        limit_tls_read_buffers()
        wiring.run(Settings(), verbose=arguments.verbose)
    elif arguments.command == "tenancy-gate":
        from vhost_operator.tenancy import service
        from vhost_operator.tenancy.settings import GateSettings

        service.run(GateSettings(), verbose=arguments.verbose)
    elif arguments.command == "nginx-agent":
        from vhost_operator.agent import agent
        from vhost_operator.agent.settings import AgentSettings

        agent.main(AgentSettings(), verbose=arguments.verbose)
    elif arguments.command == "mail-tls-agent":
        from vhost_operator.mailtls import agent as mail_agent
        from vhost_operator.mailtls.settings import MailTlsSettings

        mail_agent.main(MailTlsSettings(), verbose=arguments.verbose)
    return 0
