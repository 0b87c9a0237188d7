"""The agent's loop: watch → fold a burst → apply safely → reload → report. The I/O layer that
ties the others together (Kubernetes through ``kube.sites``, disk through ``files``, nginx
through ``nginx``).

One task per watch keeps an in-memory copy of the site ConfigMaps and TLS Secrets; a single
applier task waits for a burst of changes to go quiet (``quiet_window``, at most ``max_delay``
after its first change), then plans from the whole current state, applies everything in one
batch, reloads nginx once and annotates each ConfigMap with what nginx now runs. Being
level-based (always "make the disk match everything"), a missed or repeated event cannot leave
anything behind, and a failed batch is simply retried.

A batch's cost follows what changed, not the number of sites: ConfigMaps are parsed again only
when their objects change (``state.DesiredStates``), and the disk is known as digests
(``plan.DiskState``), read whole at start-up and after a failed batch, and otherwise only for
the hosts a batch touched. While nginx runs everything on disk, ``nginx -t`` tests only the
batch's sites (:class:`BatchTestingWorkspace`), the reload being the one parse of every site.
The agent owns its directory: a file changed behind its back is put right at the next start (or
after a failed batch), not at the next batch.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from vhost_operator import sidecar
from vhost_operator.agent import files
from vhost_operator.agent.apply import (
    BaselineRejected,
    Outcome,
    Undo,
    apply_batch,
    isolate_reload,
    quarantine,
)
from vhost_operator.agent.desired import (
    SharedHttp,
    SiteRequest,
    relevant_configmap,
    relevant_secret,
    slim_configmap,
    slim_secret,
)
from vhost_operator.agent.metrics import NOT_READY, AgentStats
from vhost_operator.agent.nginx import ConfigRejected, NginxControl, NginxError, ReloadFailed
from vhost_operator.agent.plan import (
    CERTS_DIR,
    DEFINITIONS_FILE,
    ENABLED_DIR,
    SHARED_SERVER_PREFIX,
    Change,
    DiskState,
    PlanInputs,
    enabled_path,
    enablings,
    key_access_problem,
    plan,
    report,
    report_patch,
    site_operations,
    stale_reports,
)
from vhost_operator.agent.settings import AgentSettings
from vhost_operator.agent.shared import SharedServers
from vhost_operator.agent.state import DesiredState, DesiredStates
from vhost_operator.agent.testconfig import CannotNarrow, narrowed_config
from vhost_operator.bursts import Burst
from vhost_operator.errors import VhostOperatorError
from vhost_operator.resources import labels
from vhost_operator.resources.watch import ObjectStore, WatchEvent

logger = logging.getLogger(__name__)

Object = dict[str, Any]
Slim = Callable[[Object], Object]

RETRY_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
"""Seconds before retrying a batch after consecutive failures (nginx down, API unreachable);
the last one repeats."""

REPORT_CONCURRENCY = 16
"""Annotation patches in flight at once: a burst of hundreds of hosts is reported in a second or
two without flooding the API server."""

BLOCKING_CALL_THREADS = REPORT_CONCURRENCY + 4
"""Threads for blocking calls (the reports, disk work), and connections kept to the API server.
asyncio's default on a 2-core node (6 threads) held the reports to 6 at a time."""


class EventSource(Protocol):
    def events(self) -> AsyncIterator[WatchEvent]: ...


class SiteApi(Protocol):
    """What the agent needs from the API (``kube.sites.SiteObjects``)."""

    def watch_configmaps(self, slim: Slim) -> EventSource: ...

    def watch_secrets(self, slim: Slim) -> EventSource: ...

    def watch_pods(self) -> EventSource: ...

    async def annotate_configmap(
        self, name: str, annotations: Mapping[str, str | None]
    ) -> bool: ...


@dataclasses.dataclass(frozen=True)
class _Settled:
    """A ConfigMap whose report needed no patch in the last batch."""

    inputs: tuple[object, ...]
    """``NginxAgent._report_inputs`` then: while they stay the same, so does the report."""
    error: bool
    """Whether its report carries an error."""


@dataclasses.dataclass(frozen=True)
class Rejection:
    fingerprint: str
    """The version of the site nginx refused: a new version is tried again, this one is not."""
    message: str


class DiskWorkspace:
    """The agent's directory and nginx, as :func:`apply.apply_batch` uses them. The hosts it
    writes (or undoes) are added to ``touched``: what the agent reads back after a batch."""

    def __init__(
        self,
        root: Path,
        nginx: NginxControl,
        stats: AgentStats,
        *,
        key_group: int | None = None,
        touched: set[str] | None = None,
    ) -> None:
        self._root = root
        self._nginx = nginx
        self._stats = stats
        self._key_group = key_group
        self.touched = touched if touched is not None else set()

    async def apply(self, changes: Sequence[Change]) -> Undo:
        self.touched.update(change.hostname for change in changes)
        groups = [change.operations for change in changes]
        started = time.monotonic()
        undo = await asyncio.to_thread(
            files.apply_changes, self._root, groups, key_group=self._key_group
        )
        logger.debug("wrote %d hosts (%.2fs)", len(groups), time.monotonic() - started)

        async def restore() -> None:
            await asyncio.to_thread(undo.restore)

        return restore

    async def test(self) -> str | None:
        self._stats.nginx_tests_total += 1
        return await self._nginx_test(None)

    async def _nginx_test(self, config: Path | None) -> str | None:
        """``nginx -t`` of the main config, or of ``config``: ``None`` or nginx's complaint."""
        started = time.monotonic()
        try:
            await self._nginx.test(config)
        except ConfigRejected as rejection:
            return str(rejection)
        finally:
            logger.debug(
                "nginx -t of %s (%.2fs)", config or "the whole config", time.monotonic() - started
            )
        return None


BATCH_TEST_CONFIG = "nginx-batch-test.conf"
"""The copy of nginx's main config narrowed to a batch's sites (``testconfig``), in the agent's
root directory: the main config's own directory is usually read-only."""


class BatchTestingWorkspace(DiskWorkspace):
    """A workspace whose test is ``nginx -t`` of nginx's main config narrowed to the hosts it
    wrote since the disk was last read (``touched``): for a batch on top of what nginx runs,
    whose other sites nginx has loaded already. A narrowed test that fails is no verdict: the
    whole config is tested then, and should nginx accept it, narrowing does not work with this
    main config (a relative path it names, say) and is given up, said in the log."""

    usable = True
    """Whether narrowing is on and works with this main config; if not, the whole config is
    tested, as :class:`DiskWorkspace` does."""

    async def test(self) -> str | None:
        if self.usable and await self._test_batch() is None:
            return None
        failure = await super().test()
        if self.usable and failure is None:
            logger.warning(
                "nginx accepts its whole config but not the copy narrowed to a batch's sites "
                "(%s); testing the whole config from now on",
                self._root / BATCH_TEST_CONFIG,
            )
            self.usable = False
        return failure

    async def _test_batch(self) -> str | None:
        try:
            config = await asyncio.to_thread(self._write_batch_config)
        except CannotNarrow as error:
            logger.info("testing nginx's whole config before every reload: %s", error)
            self.usable = False
            return str(error)
        except OSError as error:
            return f"cannot narrow nginx's config to the batch's sites: {error}"
        self._stats.nginx_batch_tests_total += 1
        return await self._nginx_test(config)

    def _write_batch_config(self) -> Path:
        enabled = PurePosixPath(self._root, ENABLED_DIR)
        # The shared HTTPS servers are included whole, every site listed in them with them:
        # parsing thousands of names costs nginx a few milliseconds.
        names = [DEFINITIONS_FILE.name, f"{SHARED_SERVER_PREFIX}*.conf"]
        names.extend(
            f"{hostname}.conf"
            for hostname in self.touched
            if os.path.lexists(self._root / enabled_path(hostname))
        )
        main = self._nginx.conf.read_text()
        config = narrowed_config(
            main,
            PurePosixPath(self._nginx.conf),
            enabled / "*.conf",
            [enabled / name for name in sorted(names)],  # in the order of the glob they replace
        )
        path = self._root / BATCH_TEST_CONFIG
        path.write_text(config)
        return path


RELOAD_FAILED = (
    "nginx -t accepts the config, but nginx could not load it (the reload failed, e.g. a listen "
    "port another process holds); nginx's error log says why"
)
"""Stable text (no pids, no timings) for a host whose reload fails: it lands in annotations."""


class ReloadingWorkspace(DiskWorkspace):
    """A workspace whose test is ``nginx -t`` and then a confirmed reload: for isolating the
    hosts of a batch that passed ``nginx -t`` but that nginx could not load."""

    async def test(self) -> str | None:
        failure = await super().test()
        if failure is not None:
            return failure
        try:
            await self._nginx.reload()
        except ReloadFailed as error:
            self._stats.reload_failures_total += 1
            logger.error("nginx reload failed: %s", error)
            return RELOAD_FAILED
        self._stats.reloads_total += 1
        return None


class NginxAgent:
    """Mirrors the site ConfigMaps and TLS Secrets of one namespace into nginx."""

    def __init__(
        self,
        settings: AgentSettings,
        api: SiteApi,
        nginx: NginxControl,
        stats: AgentStats | None = None,
    ) -> None:
        self._settings = settings
        self._api = api
        self._nginx = nginx
        self.stats = stats or AgentStats()
        key_group = files.group_id(settings.key_group) if settings.key_group else None
        self._key_group = key_group
        self._key_access_checked = False
        self._touched: set[str] = set()
        """Hosts written since the disk was last read: their entries in ``_disk`` may be stale."""
        self._disk: DiskState | None = None
        """What is on disk, as far as the agent knows; ``None``: to be read whole."""
        self._read_since_plan: set[str] | None = None
        """Hosts whose files were read again since the last plan; ``None``: the whole disk."""
        self._last_plan: PlanInputs | None = None
        self._shared = SharedServers(settings.root_dir)
        self._workspace = DiskWorkspace(
            settings.root_dir, nginx, self.stats, key_group=key_group, touched=self._touched
        )
        self._reloading = ReloadingWorkspace(
            settings.root_dir, nginx, self.stats, key_group=key_group, touched=self._touched
        )
        self._batch_testing = BatchTestingWorkspace(
            settings.root_dir, nginx, self.stats, key_group=key_group, touched=self._touched
        )
        self._batch_testing.usable = settings.test_batch_sites_only
        self._desired_states = DesiredStates(
            str(settings.root_dir / CERTS_DIR),
            settings.https_port,
            SharedHttp(settings.http_port),
        )
        self._configmaps = ObjectStore(relevant_configmap)
        self._secrets = ObjectStore(relevant_secret)
        self._burst = Burst(settings.quiet_window, settings.max_delay)
        self._rejections: dict[str, Rejection] = {}
        self._missing_since: dict[str, float] = {}
        self._recheck_scheduled: set[str] = set()
        self._reported: dict[str, dict[str, str | None]] = {}
        self._settled: dict[str, _Settled] = {}
        """ConfigMaps whose report needed no patch, by name, with what it depended on."""
        self._settled_errors = 0
        """How many of ``_settled`` report an error."""
        self._unsettled: set[str] = set()
        """ConfigMaps whose report was patched, or may still change by itself (a Secret's
        grace period), in the last report: looked at again in the next one."""
        self._to_report: set[str] | None = None
        """ConfigMaps whose report may have changed since the last report that went through
        (their objects or requests changed); ``None``: any may have."""
        self._hosts_to_report: set[str] = set()
        """Hosts whose files or rejection changed since the last report that went through."""
        self._keys = labels.report_keys(settings.replica)
        self._pods = ObjectStore(lambda _: None)
        """With several replicas: the pods of the namespace, whose names say which replicas'
        reports are still current."""
        self._live = False
        """nginx is confirmed to run exactly what is on disk."""
        self._failures = 0

    # -- the tasks -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until cancelled; an unexpected error in any task ends the whole agent."""
        settings = self._settings
        await asyncio.to_thread(
            files.prepare,
            settings.root_dir,
            settings.https_port,
            http_port=settings.http_port,
            challenge_upstream=settings.challenge_upstream,
        )
        async with asyncio.TaskGroup() as tasks:
            configmaps = self._api.watch_configmaps(slim_configmap)
            tasks.create_task(self._follow(configmaps, self._configmaps))
            tasks.create_task(self._follow(self._api.watch_secrets(slim_secret), self._secrets))
            tasks.create_task(self._apply_forever())
            if self._settings.replica:
                tasks.create_task(self._follow_pods(self._api.watch_pods()))

    async def _follow(self, source: EventSource, store: ObjectStore) -> None:
        async for event in source.events():
            if store is self._configmaps:
                self._forget_reports(event)
            if store.update(event):
                self._burst.note()

    async def _follow_pods(self, source: EventSource) -> None:
        async for event in source.events():
            self._pods.update(event)  # no batch of its own: read when reporting

    def _forget_reports(self, event: WatchEvent) -> None:
        """A new or deleted ConfigMap carries none of the annotations the agent once wrote."""
        if event.type == "SYNC":
            self._reported.clear()
        elif event.type in ("ADDED", "DELETED") and event.object is not None:
            self._reported.pop(event.object["metadata"]["name"], None)

    async def _apply_forever(self) -> None:
        while True:
            await self._burst.settled()
            if not (self._configmaps.synced and self._secrets.synced):
                # Never plan from half a picture: a kind not listed yet would look deleted.
                continue
            self.stats.synced = True
            try:
                await self.apply_once()
            except VhostOperatorError as error:
                self._retry_later(error)  # the API server: nginx still serves what it had
            except (NginxError, BaselineRejected, OSError) as error:
                # This replica may now serve stale config: out of the Service until it recovers.
                self.stats.failing, self.stats.failure = True, str(error)
                self._retry_later(error)
            else:
                self._failures = 0
                self.stats.failing, self.stats.failure = False, ""

    def _retry_later(self, error: Exception) -> None:
        delay = RETRY_DELAYS[min(self._failures, len(RETRY_DELAYS) - 1)]
        self._failures += 1
        self.stats.batch_failures_total += 1
        logger.error("applying site changes failed, retrying in %gs: %s", delay, error)
        self._burst.note_later(delay)

    # -- one batch -----------------------------------------------------------------------------

    async def apply_once(self) -> None:
        """Make disk and nginx match the current state of the watched objects, then report."""
        self.stats.batches_total += 1
        started = time.monotonic()
        unconfirmed_before = self._nginx.unconfirmed_seconds
        changed_configmaps = self._configmaps.take_changes()
        desired = self._desired_states(
            self._configmaps.objects,
            self._secrets.objects,
            changed_configmaps=changed_configmaps,
            changed_secrets=self._secrets.take_changes(),
        )
        if changed_configmaps is None:
            self._to_report = None
        elif self._to_report is not None:
            self._to_report |= changed_configmaps | desired.changed_requests
        self.stats.sites, self.stats.enabled_sites = len(desired.sites), desired.enabled_sites
        logger.debug(
            "desired state: %d sites (%.2fs)", self.stats.sites, time.monotonic() - started
        )
        try:
            try:
                outcome = await self._apply(desired)
            except BaselineRejected as error:
                logger.error("nginx rejects the files on disk as they are (%s); isolating", error)
                await self._quarantine(desired)
                outcome = await self._apply(desired)
        except BaseException:
            # Part of the batch (or the quarantine) may be on disk already: the next batch must
            # reload even if it finds nothing to write, and read the disk whole again.
            self._live = False
            self._forget_disk()
            raise
        if outcome.accepted:
            self._live = False
        self._record(desired, outcome)
        logger.debug("applied and tested (%.2fs)", time.monotonic() - started)
        if not self._live:
            try:
                outcome = await self._reload_or_isolate(desired, outcome, started)
            except BaseException:
                self._forget_disk()  # an isolation may have stopped half-way
                raise
            # Waiting out reloads nginx never confirmed kept the agent busy, not nginx: pacing
            # by it would hold the next batch back for nothing (reload_timeout several times).
            unconfirmed = self._nginx.unconfirmed_seconds - unconfirmed_before
            busy = time.monotonic() - started - unconfirmed
            self.stats.reload_pause_seconds = self._settings.reload_pacing * busy
            self._burst.pace(self.stats.reload_pause_seconds)
        disk = await self._read_disk()
        await self._shared.prune(desired.servers, disk)
        patched = await self._report(desired, disk)
        # Ready once the whole state is served and reported: a new replica takes traffic (and
        # the operator waits for it) only when it serves every host as the others do.
        self.stats.ready = True
        if patched:
            logger.info(
                "annotated %d site ConfigMaps, %.2fs after the batch started",
                patched,
                time.monotonic() - started,
            )

    async def _apply(self, desired: DesiredState) -> Outcome:
        """Apply what differs; ends with a tested disk state (or raises BaselineRejected)."""
        disk = await self._read_disk()
        sites, keep = desired.sites, frozenset(self._hosts_to_keep(desired))
        # Only while nginx runs the rest of the disk does testing the batch alone say enough.
        workspace = self._batch_testing if self._live else self._workspace
        servers = await self._shared.prepare(desired.servers, workspace)
        last, read = self._last_plan, self._read_since_plan
        hostnames = (
            None
            if last is None or read is None
            else last.hosts_to_plan(
                sites,
                keep,
                read,
                servers,
                since=desired.since,
                changed_sites=desired.changed_sites,
            )
        )
        changes = plan(sites, disk, keep=keep, hostnames=hostnames, shared_servers=servers)
        self._last_plan = PlanInputs(sites, keep, frozenset(c.hostname for c in changes), servers)
        self._read_since_plan = set()
        if changes:
            return await apply_batch(changes, workspace)
        if not self._live:
            # Nothing to write, but nginx is to be reloaded (start-up, or a reload that failed):
            # nginx -t comes before every reload all the same.
            failure = await self._workspace.test()
            if failure is not None:
                raise BaselineRejected(failure)
            return Outcome(tests=1)
        return Outcome()

    async def _quarantine(self, desired: DesiredState) -> None:
        """Unlink the enabled sites that break nginx (see ``apply.quarantine``); a site whose
        files are what its ConfigMap asks for is remembered as rejected, so it stays unlinked
        until its ConfigMap changes."""
        root = self._settings.root_dir
        await self._shared.withdraw()  # one nginx refuses now would break even no site
        disk = await self._read_disk()
        listings = await asyncio.to_thread(files.read_listings, root, disk)
        enabled = enablings(disk, listings)
        outcome = await quarantine(enabled, self._workspace)
        self._live = False  # unlinked sites: nginx must reload even if nothing else changes
        disk = await self._read_disk()
        sites = desired.sites
        for hostname, message in outcome.rejected.items():
            self.stats.hosts_rejected_total += 1
            logger.error("unlinked %s: nginx rejects it: %s", hostname, message)
            site = sites.get(hostname)
            operations = site_operations(site, disk, self._shared.keys) if site else None
            if site is not None and operations == enabled[hostname].restoral:
                self._reject(hostname, Rejection(site.fingerprint, message))

    def _forget_disk(self) -> None:
        self._disk = None
        self._shared.forget()

    async def _read_disk(self) -> DiskState:
        """What is on disk: read whole the first time (and after a failure), else only the hosts
        written since the last read."""
        root = self._settings.root_dir
        if self._disk is None:
            self._touched.clear()
            self._read_since_plan = None
            self._to_report = None
            self._disk = await asyncio.to_thread(files.read_disk, root)
        elif self._touched:
            touched = set(self._touched)
            self._touched.clear()
            self._hosts_to_report |= touched
            if self._read_since_plan is not None:
                self._read_since_plan |= touched
            fresh = await asyncio.to_thread(files.read_hosts, root, touched)
            self._disk = self._disk.updated(fresh, touched)
        return self._disk

    def _hosts_to_keep(self, desired: DesiredState) -> Collection[str]:
        """Held hosts (their ConfigMap cannot be applied now) and hosts whose current version
        nginx already refused: their last good files stay, and nobody re-tests a known failure."""
        sites = desired.sites
        for hostname in list(self._rejections):
            if hostname not in sites:
                self._forgive(hostname)
        refused = {
            hostname
            for hostname, rejection in self._rejections.items()
            if sites[hostname].fingerprint == rejection.fingerprint
        }
        return desired.held | refused

    def _reject(self, hostname: str, rejection: Rejection) -> None:
        self._rejections[hostname] = rejection
        self._hosts_to_report.add(hostname)

    def _forgive(self, hostname: str) -> None:
        if self._rejections.pop(hostname, None) is not None:
            self._hosts_to_report.add(hostname)

    def _record(self, desired: DesiredState, outcome: Outcome) -> None:
        sites = desired.sites
        for change in outcome.accepted:
            self._forgive(change.hostname)
        for hostname, message in outcome.rejected.items():
            self.stats.hosts_rejected_total += 1
            site = sites.get(hostname)
            if site is None:
                # A removal nginx refuses (another config uses this host's files): its files
                # stay, and it is tried again with every batch.
                logger.error("nginx refuses the removal of %s, keeping it: %s", hostname, message)
                continue
            self._reject(hostname, Rejection(site.fingerprint, message))
            logger.error(
                "nginx rejects %s (ConfigMap %s, config %s); keeping its last good config: %s",
                hostname,
                site.configmap,
                site.config_hash,
                message,
            )

    async def _reload_or_isolate(
        self, desired: DesiredState, outcome: Outcome, started: float
    ) -> Outcome:
        """Reload; if nginx cannot load what ``nginx -t`` accepted, find the hosts it cannot
        load (reloading as the test), report them like rejected ones and serve the others."""
        try:
            await self._reload(outcome, started)
        except ReloadFailed as error:
            if not outcome.accepted:
                raise  # nothing new to blame: nginx itself is the problem (retried)
            logger.error("nginx could not load the batch (%s); isolating the culprits", error)
            isolated = await isolate_reload(outcome, self._reloading)
            self._record(desired, isolated)
            # The isolation ends with nginx running what is on disk (its last attempt was
            # reloaded, or undone back to what was).
            self._live = True
            rejected = {**outcome.rejected, **isolated.rejected}
            return Outcome(isolated.accepted, rejected, outcome.tests + isolated.tests)
        return outcome

    async def _reload(self, outcome: Outcome, started: float) -> None:
        self._live = False
        try:
            await self._nginx.reload()
        except ReloadFailed:
            self.stats.reload_failures_total += 1
            raise
        self._live = True
        self._check_key_access()
        changed = len(outcome.accepted)
        self.stats.reloads_total += 1
        self.stats.hosts_changed_total += changed
        self.stats.last_reload_hosts = changed
        self.stats.last_reload_timestamp_seconds = time.time()
        logger.info(
            "nginx reloaded: %d hosts changed, %d rejected, %d nginx -t runs, %.2fs after the "
            "batch started",
            changed,
            len(outcome.rejected),
            outcome.tests,
            time.monotonic() - started,
        )

    def _check_key_access(self) -> None:
        """Once, after the first confirmed reload: nginx's workers load the keys per handshake,
        and a worker that cannot read them fails every TLS handshake (a deployment whose
        workers run as another user without VHOST_AGENT_KEY_GROUP). Said loudly in the log."""
        if self._key_access_checked:
            return
        self._key_access_checked = True
        try:
            workers = self._nginx.worker_credentials()
        except NginxError as error:
            logger.warning("cannot see nginx's workers to check they can read the keys: %s", error)
            return
        problem = key_access_problem(workers, owner=os.geteuid(), key_group=self._key_group)
        if problem is not None:
            logger.error("%s; every TLS handshake will fail", problem)

    # -- reporting -------------------------------------------------------------------------------

    async def _report(self, desired: DesiredState, disk: DiskState) -> int:
        """Annotate every ConfigMap whose report changed; raise if any patch failed (the batch
        is then retried, which reports again). Returns the number of patches.

        Only the ConfigMaps whose report may have changed are looked at: those whose objects,
        request, files or rejection changed since the last report that went through, and
        those not settled then. Looking at every ConfigMap's report each batch cost about 30
        ms of CPU at 10,000 sites."""
        waiting = desired.waiting
        self._missing_since = {k: v for k, v in self._missing_since.items() if k in waiting}
        names = self._configmaps_to_report(desired)
        unsettled = set()
        patches = []
        errors = 0
        for name in sorted(names):
            last = self._settled.pop(name, None)
            if last is not None:
                self._settled_errors -= last.error
            request = desired.by_configmap.get(name)
            if request is None:
                continue  # deleted
            inputs = self._report_inputs(request, disk)
            if last is not None and last.inputs == inputs:
                # Nothing its report depends on changed since it needed no patch.
                self._settle(name, last)
                continue
            error, known = self._error_for(request)
            wanted = report(request, disk, error, self._keys)
            if not known:
                del wanted[self._keys.error]  # not yet decided: leave it as it is
            has_error = wanted.get(self._keys.error) is not None
            patch = self._patch_for(name, wanted)
            if patch:
                patches.append((name, patch))
            elif not request.waiting_for_secret:  # that one's error depends on the time
                self._settle(name, _Settled(inputs, has_error))
                continue
            unsettled.add(name)
            errors += has_error
        self._unsettled = unsettled
        self.stats.hosts_with_errors = self._settled_errors + errors
        semaphore = asyncio.Semaphore(REPORT_CONCURRENCY)

        async def send(name: str, patch: dict[str, str | None]) -> None:
            async with semaphore:
                if await self._api.annotate_configmap(name, patch):
                    self._reported.setdefault(name, {}).update(patch)
                    self.stats.annotation_patches_total += 1

        results = await asyncio.gather(
            *(send(name, patch) for name, patch in patches), return_exceptions=True
        )
        failures = [result for result in results if isinstance(result, BaseException)]
        if failures:
            raise failures[0]
        self._to_report, self._hosts_to_report = set(), set()
        return len(patches)

    def _configmaps_to_report(self, desired: DesiredState) -> set[str]:
        """The ConfigMaps whose report may have changed since the last report that went
        through, and those it left unsettled (every one, when that is not known)."""
        if self._to_report is None:
            # Settled ones of ConfigMaps gone meanwhile are forgotten here.
            return set(desired.by_configmap) | set(self._settled) | self._unsettled
        names = self._to_report | self._unsettled
        configmap_of = desired.configmap_of
        names.update(
            configmap_of[hostname] for hostname in self._hosts_to_report if hostname in configmap_of
        )
        return names

    def _settle(self, name: str, settled: _Settled) -> None:
        self._settled[name] = settled
        self._settled_errors += settled.error

    def _report_inputs(self, request: SiteRequest, disk: DiskState) -> tuple[object, ...]:
        """What the patch of ``request``'s ConfigMap depends on, but the time (a missing
        Secret's grace period) and the annotations the agent sent (which are only sent in a
        patch, and come back with a new ConfigMap object): the request (a new object when its
        objects change), the ConfigMap as last seen, the host's rejection and its files."""
        hostname = request.hostname
        if hostname is None:
            return request, self._configmaps.objects.get(request.configmap)
        return (
            request,
            self._configmaps.objects.get(request.configmap),
            self._rejections.get(hostname),
            disk.configs.get(hostname),
            disk.serials.get(hostname),
        )

    def _error_for(self, request: SiteRequest) -> tuple[str | None, bool]:
        """Why this ConfigMap's config is not applied (``None``: it is), and whether that is
        known yet (``False`` while a missing Secret may just be late)."""
        if request.site is not None:
            rejection = self._rejections.get(request.site.hostname)
            if rejection and rejection.fingerprint == request.site.fingerprint:
                return rejection.message, True
            return None, True
        if request.waiting_for_secret:
            loop = asyncio.get_running_loop()
            since = self._missing_since.setdefault(request.configmap, loop.time())
            remaining = since + self._settings.missing_secret_grace - loop.time()
            if remaining > 0:
                self._recheck(request.configmap, remaining)
                return None, False
        return request.problem, True

    def _recheck(self, configmap: str, delay: float) -> None:
        if configmap not in self._recheck_scheduled:
            self._recheck_scheduled.add(configmap)

            def wake() -> None:
                self._recheck_scheduled.discard(configmap)
                self._burst.note()

            asyncio.get_running_loop().call_later(delay, wake)

    def _patch_for(self, name: str, wanted: dict[str, str | None]) -> dict[str, str | None]:
        """The annotations to send: those that differ from the ConfigMap as last seen, or from
        what the agent last wrote (the watch may not have shown that write yet)."""
        configmap = self._configmaps.objects.get(name)
        if configmap is None:
            return {}  # deleted meanwhile
        current: Mapping[str, str] = configmap["metadata"].get("annotations") or {}
        written = self._reported.get(name, {})
        patch = report_patch(current, wanted)
        for key, value in wanted.items():
            if key in written and written[key] != value:
                patch[key] = value
        if patch and self._pods.synced:
            # In a patch sent anyway (a new replica reports on every ConfigMap once): no write
            # of its own. A pod the watch has not shown yet has not started reporting either.
            patch |= stale_reports(current, self._pods.objects.keys(), self._settings.replica)
        return patch


# -- the process ---------------------------------------------------------------------------------


async def run_agent(settings: AgentSettings) -> None:
    """The ``nginx-agent`` command: connect, serve the health endpoint, run until SIGTERM."""
    from vhost_operator.kube.api import connect
    from vhost_operator.kube.sites import SiteObjects

    asyncio.get_running_loop().set_default_executor(
        concurrent.futures.ThreadPoolExecutor(BLOCKING_CALL_THREADS, thread_name_prefix="blocking")
    )
    api = SiteObjects(connect(connections=BLOCKING_CALL_THREADS), settings.namespace)
    nginx = NginxControl(
        settings.nginx_binary,
        settings.nginx_conf,
        settings.nginx_pid_file,
        reload_timeout=settings.reload_timeout,
    )
    agent = NginxAgent(settings, api, nginx)
    logger.info(
        "nginx agent watching namespace %s, writing %s, testing %s",
        settings.namespace,
        settings.root_dir,
        settings.nginx_conf,
    )
    await sidecar.run_until_stopped(
        agent.run,
        agent.stats,
        health_port=settings.health_port,
        not_ready=NOT_READY,
        name="nginx agent",
    )


def main(settings: AgentSettings, *, verbose: bool) -> None:
    """Entry point of ``vhost-operator nginx-agent``."""
    sidecar.main(lambda: run_agent(settings), verbose=verbose)
