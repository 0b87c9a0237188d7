"""The mail TLS agent's loop: watch → fold a burst → per service: write a generation, check,
switch, reload → report. The I/O layer that ties the others together.

One task follows the TLS Secrets into memory; the applier waits for a burst to go quiet
(``bursts``), then, per service, writes a generation of what every Secret asks for, has the
service build and check it, makes it current and reloads the service once. A service that
refuses a generation gets the previous one back and keeps serving it (no reload); the other
service goes on with the new one; the refusal is reported and retried with backoff. Being
level-based, a missed or repeated event cannot leave anything behind.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import ClassVar, Protocol

from vhost_operator import sidecar
from vhost_operator.bursts import Burst
from vhost_operator.errors import VhostOperatorError
from vhost_operator.mailtls.desired import MailState, mail_state, relevant_secret
from vhost_operator.mailtls.generations import CURRENT, Generations
from vhost_operator.mailtls.render import (
    generation_files,
    report,
    report_patch,
    served,
)
from vhost_operator.mailtls.services import (
    Dovecot,
    Postfix,
    Refused,
    ServiceControl,
    ServiceError,
)
from vhost_operator.mailtls.settings import MailTlsSettings
from vhost_operator.resources.mailtls import decode
from vhost_operator.resources.watch import ObjectStore, WatchEvent
from vhost_operator.sidecar import Counters

logger = logging.getLogger(__name__)

RETRY_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
"""Seconds before trying again after consecutive failures (a refused config, a service down,
the API unreachable); the last one repeats."""


class EventSource(Protocol):
    def events(self) -> AsyncIterator[WatchEvent]: ...


class MailTlsApi(Protocol):
    """What the agent needs from the API (``kube.mailtls.MailTlsObjects``)."""

    def watch_secrets(self) -> EventSource: ...

    async def read_report(self) -> dict[str, str]: ...

    async def patch_report(self, data: Mapping[str, str | None]) -> None: ...


@dataclasses.dataclass
class MailTlsStats(Counters):
    """Counters and gauges of one agent. ``ready``: synced, and every service reloaded with a
    generation once (it stays true: the services keep serving their last good one)."""

    PREFIX: ClassVar[str] = "vhost_mail_tls"
    batches_total: int = 0
    postfix_reloads_total: int = 0
    dovecot_reloads_total: int = 0
    postfix_refusals_total: int = 0
    """Generations Postfix refused (``postmap -F`` or ``postfix check`` failed)."""
    dovecot_refusals_total: int = 0
    """Generations Dovecot refused (``doveconf -n`` failed)."""
    failures_total: int = 0
    """Batches that failed and are retried: a refusal, a reload or report that failed."""
    report_patches_total: int = 0
    hosts: int = 0
    names: int = 0
    hosts_with_errors: int = 0
    synced: bool = False


class MailTlsAgent:
    """Gives the configured mail services every TLS Secret's certificate for its names."""

    def __init__(
        self,
        settings: MailTlsSettings,
        api: MailTlsApi,
        services: Sequence[ServiceControl],
        stats: MailTlsStats | None = None,
    ) -> None:
        self._settings = settings
        self._api = api
        self._services = list(services)
        self._generations = {
            service.name: Generations(settings.root_dir / service.name) for service in services
        }
        self.stats = stats or MailTlsStats()
        self._secrets = ObjectStore(relevant_secret)
        self._burst = Burst(settings.quiet_window, settings.max_delay)
        self._running: dict[str, dict[str, list[str]]] = {}
        """Service → what it was last reloaded with (``render.served``). Empty at start: the
        first batch reloads each service, even if its current generation is what the Secrets
        ask for, so the report never claims what a service may not run."""
        self._refusals: dict[str, str] = {}
        self._reported: dict[str, str] | None = None
        self._failures = 0

    async def run(self) -> None:
        for generations in self._generations.values():
            await asyncio.to_thread(generations.prepare)
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._follow())
            tasks.create_task(self._apply_forever())

    async def _follow(self) -> None:
        async for event in self._api.watch_secrets().events():
            if self._secrets.update(event):
                self._burst.note()

    async def _apply_forever(self) -> None:
        while True:
            await self._burst.settled()
            if not self._secrets.synced:
                continue
            self.stats.synced = True
            try:
                await self.apply_once()
            except (ServiceError, VhostOperatorError, OSError) as error:
                self._retry_later(error)
            else:
                self._failures = 0

    def _retry_later(self, error: Exception) -> None:
        delay = RETRY_DELAYS[min(self._failures, len(RETRY_DELAYS) - 1)]
        self._failures += 1
        self.stats.failures_total += 1
        logger.error("applying certificates failed, retrying in %gs: %s", delay, error)
        self._burst.note_later(delay)

    async def apply_once(self) -> None:
        """Bring every service to the current Secrets (or keep its last good generation), then
        report. Raises if anything is left to retry."""
        self.stats.batches_total += 1
        state = mail_state(self._secrets.objects.values())
        self.stats.hosts = len(state.hosts)
        self.stats.names = sum(len(host.names) for host in state.hosts)
        failures: list[Exception] = []
        for service in self._services:
            try:
                await self._apply_service(service, state)
            except ServiceError as error:
                failures.append(error)
        if set(self._running) == set(self.service_names):
            self.stats.ready = True
        await self._report(state)
        if failures:
            raise failures[0]

    async def _apply_service(self, service: ServiceControl, state: MailState) -> None:
        generations = self._generations[service.name]
        wanted = served(state.hosts)
        if self._running.get(service.name) == wanted:
            self._refusals.pop(service.name, None)
            return
        started = time.monotonic()
        previous = await asyncio.to_thread(generations.current)
        current = generations.directory / CURRENT
        try:
            if previous is None or await asyncio.to_thread(generations.served) != wanted:
                await self._switch(service, generations, state, previous)
            else:
                await service.check(current)  # start-up or a failed reload: checked once more
            await service.reload()
        except ServiceError as error:
            # Refused: the last good generation is current again. A failed reload (the service
            # is down): the new one is current and is reloaded with the retry. Either way the
            # report keeps what the service last loaded, with this as the reason.
            if isinstance(error, Refused):
                self._count(f"{service.name}_refusals_total")
            self._refusals[service.name] = str(error)
            logger.error("%s keeps its last good certificates: %s", service.name, error)
            raise
        self._running[service.name] = wanted
        self._refusals.pop(service.name, None)
        self._count(f"{service.name}_reloads_total")
        await asyncio.to_thread(generations.prune, previous)
        logger.info(
            "%s reloaded: %d hosts, %d names (%.2fs)",
            service.name,
            self.stats.hosts,
            self.stats.names,
            time.monotonic() - started,
        )

    async def _switch(
        self,
        service: ServiceControl,
        generations: Generations,
        state: MailState,
        previous: Path | None,
    ) -> None:
        """Write, build, switch to and check a new generation; on a refusal, switch back."""
        generation = await asyncio.to_thread(
            generations.write,
            lambda directory: generation_files(service.name, state.hosts, directory),
        )
        try:
            await service.build(generation)
            await asyncio.to_thread(generations.sync, generation)
            await asyncio.to_thread(generations.switch, generation)
            await service.check(generations.directory / CURRENT)
        except BaseException:
            await asyncio.to_thread(generations.switch, previous)
            await asyncio.to_thread(generations.discard, generation)
            raise

    def _count(self, counter: str) -> None:
        setattr(self.stats, counter, getattr(self.stats, counter) + 1)

    @property
    def service_names(self) -> list[str]:
        return [service.name for service in self._services]

    async def _report(self, state: MailState) -> None:
        running = {
            service: {secret: value[0] for secret, value in self._running.get(service, {}).items()}
            for service in self.service_names
        }
        wanted = report(state, running, self._refusals)
        self.stats.hosts_with_errors = sum(
            bool((decoded := decode(value)) and decoded.errors) for value in wanted.values()
        )
        if self._reported is None:
            self._reported = await self._api.read_report()
        patch = report_patch(self._reported, wanted)
        if patch:
            await self._api.patch_report(patch)
            self._reported = wanted
            self.stats.report_patches_total += 1


# -- the process ---------------------------------------------------------------------------------


def services_of(settings: MailTlsSettings) -> list[ServiceControl]:
    services: list[ServiceControl] = []
    if settings.postfix_config_dir is not None:
        services.append(
            Postfix(
                settings.postfix_config_dir,
                postfix=settings.postfix_binary,
                postmap=settings.postmap_binary,
                postconf=settings.postconf_binary,
                map_type=settings.postfix_map_type,
            )
        )
    if settings.dovecot_config is not None:
        services.append(
            Dovecot(
                settings.dovecot_config,
                doveconf=settings.doveconf_binary,
                doveadm=settings.doveadm_binary,
            )
        )
    return services


NOT_READY = "waiting for the first sync and a reload of every service"


async def run_agent(settings: MailTlsSettings) -> None:
    """The ``mail-tls-agent`` command: connect, serve the health endpoint, run until SIGTERM."""
    from vhost_operator.kube.api import connect
    from vhost_operator.kube.mailtls import MailTlsObjects

    api = MailTlsObjects(connect(), settings.namespace, settings.report_configmap)
    agent = MailTlsAgent(settings, api, services_of(settings))
    logger.info(
        "mail TLS agent watching TLS Secrets in %s for %s, writing %s",
        settings.namespace,
        ", ".join(agent.service_names),
        settings.root_dir,
    )
    await sidecar.run_until_stopped(
        agent.run,
        agent.stats,
        health_port=settings.health_port,
        not_ready=NOT_READY,
        name="mail TLS agent",
    )


def main(settings: MailTlsSettings, *, verbose: bool) -> None:
    """Entry point of ``vhost-operator mail-tls-agent``."""
    sidecar.main(lambda: run_agent(settings), verbose=verbose)
