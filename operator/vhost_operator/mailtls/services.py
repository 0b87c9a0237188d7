"""Postfix and Dovecot as the agent drives them: build a generation, check the configuration that
uses it, reload gracefully. Process I/O.

Both reloads are graceful: ``postfix reload`` has the master re-read its configuration and
replace idle server processes (a session in progress finishes on its old process and TLS
state), ``doveadm reload`` has Dovecot's master reload its config and start new login processes
while existing connections stay with the old ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from vhost_operator.mailtls.render import DOVECOT, DOVECOT_CONFIG, POSTFIX, POSTFIX_MAP
from vhost_operator.sidecar import CommandFailed, run_command

COMMAND_TIMEOUT_SECONDS = 120.0
"""A check or reload that takes longer is stuck (``postmap`` of 10,000 hosts takes seconds)."""


class ServiceError(Exception):
    """The service did not do what the agent asked; the message says what it said."""


class Refused(ServiceError):
    """The service refuses the new generation or its own configuration: the last good one stays."""


class ServiceControl(Protocol):
    name: str

    async def build(self, generation: Path) -> None:
        """Derived files of a written generation (Postfix's indexed map); raise Refused."""

    async def check(self, current: Path) -> None:
        """Validate the configuration now that ``current`` names the new generation; raise
        Refused."""

    async def reload(self) -> None:
        """Reload gracefully; raise ServiceError."""


class Postfix:
    """A Postfix instance whose ``main.cf`` has ``tls_server_sni_maps = <type>:<dir>/current/sni``
    (``<dir>``: the agent's ``<root_dir>/postfix``)."""

    name = POSTFIX

    def __init__(
        self,
        config_dir: Path,
        *,
        postfix: str = "postfix",
        postmap: str = "postmap",
        postconf: str = "postconf",
        map_type: str = "hash",
    ) -> None:
        self.config_dir = config_dir
        self._postfix = postfix
        self._postmap = postmap
        self._postconf = postconf
        self.map_type = map_type

    async def build(self, generation: Path) -> None:
        # -F: the map holds the files' contents, so smtpd needs no access to the key files.
        table = f"{self.map_type}:{generation / POSTFIX_MAP}"
        await _run(Refused, self._postmap, "-c", str(self.config_dir), "-F", table)

    async def check(self, current: Path) -> None:
        await _run(Refused, self._postfix, "-c", str(self.config_dir), "check")
        wanted = f"{self.map_type}:{current / POSTFIX_MAP}"
        used = await _run(
            Refused, self._postconf, "-c", str(self.config_dir), "-h", "tls_server_sni_maps"
        )
        if wanted not in used.split():
            raise Refused(
                f"main.cf in {self.config_dir} does not use the agent's map: set "
                f"tls_server_sni_maps = {wanted} (it is {used.strip() or 'empty'!r})"
            )

    async def reload(self) -> None:
        await _run(ServiceError, self._postfix, "-c", str(self.config_dir), "reload")


class Dovecot:
    """A Dovecot whose ``dovecot.conf`` has ``!include_try <dir>/current/local_names.conf``."""

    name = DOVECOT

    def __init__(
        self, config: Path, *, doveconf: str = "doveconf", doveadm: str = "doveadm"
    ) -> None:
        self.config = config
        self._doveconf = doveconf
        self._doveadm = doveadm

    async def build(self, generation: Path) -> None:
        pass  # Dovecot reads the certificate files themselves

    async def check(self, current: Path) -> None:
        shown = await _run(Refused, self._doveconf, "-c", str(self.config), "-n")
        # A config that lacks the include parses fine and serves none of the names: say so.
        names = (current / DOVECOT_CONFIG).read_text()
        if "local_name " in names and "local_name " not in shown:
            raise Refused(
                f"{self.config} does not include the agent's names: add "
                f"!include_try {current / DOVECOT_CONFIG}"
            )

    async def reload(self) -> None:
        await _run(ServiceError, self._doveadm, "-c", str(self.config), "reload")


async def _run(error: type[ServiceError], *argv: str) -> str:
    """Run ``argv``; its output, or ``error`` with what it said."""
    try:
        finished = await run_command(argv, timeout=COMMAND_TIMEOUT_SECONDS, what=" ".join(argv[:2]))
    except CommandFailed as failure:
        raise ServiceError(str(failure)) from failure
    if finished.returncode != 0:
        raise error(f"{' '.join(argv)} failed (exit {finished.returncode}): {finished.said}")
    return finished.stdout
