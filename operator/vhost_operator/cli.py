"""The ``vhost-operator`` command."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from typing import Any

import kopf

from vhost_operator import __version__
from vhost_operator.handlers.context import OperatorContext
from vhost_operator.kube.api import connect
from vhost_operator.kube.virtualhosts import VirtualHostApi
from vhost_operator.provisioning.steps import plan_steps
from vhost_operator.resources.models import GROUP
from vhost_operator.settings import Settings


def configure_kopf(settings: kopf.OperatorSettings) -> None:
    """Keep kopf's bookkeeping out of ``.status`` (annotations under our own prefix), and keep
    kopf's own Events to warnings: our steps post theirs, and each post is an API call."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = "vhost-operator"


def run(settings: Settings, *, verbose: bool) -> None:
    import vhost_operator.handlers  # noqa: F401  # registers the handlers with kopf

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    context = OperatorContext(
        settings=settings,
        virtualhosts=VirtualHostApi(connect()),
        steps=plan_steps(settings),
    )

    @kopf.on.startup()
    def _configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure_kopf(settings)

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
    arguments = parser.parse_args(argv)
    if arguments.command == "run":
        run(Settings(), verbose=arguments.verbose)
    return 0
