"""The agent's loop (``NginxAgent.run``) on a real directory, with stand-ins for the API server
and for nginx (which accepts everything): what one batch costs when one site of many changes.
The real thing, with nginx and an API server, is tests/integration/test_nginx_agent.py."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.harness.nginx import self_signed_certificate
from vhost_operator.agent import agent as agent_module
from vhost_operator.agent import desired, plan, state
from vhost_operator.agent.agent import EventSource, NginxAgent, Slim
from vhost_operator.agent.nginx import NginxControl, NginxError, ReloadFailed
from vhost_operator.agent.plan import Credentials
from vhost_operator.agent.settings import AgentSettings
from vhost_operator.nginx import SiteConfig, config_hash, render_final
from vhost_operator.resources import labels
from vhost_operator.resources.watch import WatchEvent

SITES = 60


class AcceptingNginx(NginxControl):
    """``nginx -t`` passes and reloads succeed: no nginx process."""

    def __init__(self) -> None:
        super().__init__("nginx", Path("/nonexistent/nginx.conf"), Path("/nonexistent/nginx.pid"))
        self.reloads = 0
        self.unreachable = False
        """``nginx -t`` cannot run: the batch fails."""

    async def test(self, conf: Path | None = None) -> None:
        if self.unreachable:
            raise NginxError("nginx -t could not run")

    async def reload(self) -> None:
        self.reloads += 1

    def worker_credentials(self) -> list[Credentials]:
        return []


class Events:
    """A watch whose events the test sends, each object reduced by the watcher's ``slim``."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[WatchEvent] = asyncio.Queue()
        self.slim: Slim = lambda obj: obj

    async def events(self) -> AsyncIterator[WatchEvent]:
        while True:
            event = await self.queue.get()
            slimmed = tuple(map(self.slim, event.objects))
            single = self.slim(event.object) if event.object is not None else None
            yield WatchEvent(event.type, single, slimmed)


class SiteApi:
    """The site ConfigMaps and Secrets the test sends, and the annotations the agent writes,
    which come back through the watch as the API server's would."""

    def __init__(self) -> None:
        self.configmaps, self.secrets = Events(), Events()
        self.patches: dict[str, dict[str, str | None]] = {}
        self.objects: dict[str, dict[str, Any]] = {}

    async def sync(self, configmaps: list[dict[str, Any]], secrets: list[dict[str, Any]]) -> None:
        self.objects = {configmap["metadata"]["name"]: configmap for configmap in configmaps}
        await self.configmaps.queue.put(WatchEvent("SYNC", objects=tuple(configmaps)))
        await self.secrets.queue.put(WatchEvent("SYNC", objects=tuple(secrets)))

    async def modify(self, configmap: dict[str, Any]) -> None:
        self.objects[configmap["metadata"]["name"]] = configmap
        await self.configmaps.queue.put(WatchEvent("MODIFIED", object=configmap))

    def watch_configmaps(self, slim: Slim) -> EventSource:
        self.configmaps.slim = slim
        return self.configmaps

    def watch_secrets(self, slim: Slim) -> EventSource:
        self.secrets.slim = slim
        return self.secrets

    def watch_pods(self) -> EventSource:
        return Events()

    async def annotate_configmap(self, name: str, annotations: Mapping[str, str | None]) -> bool:
        self.patches.setdefault(name, {}).update(annotations)
        current = self.objects[name]
        merged = {**current["metadata"]["annotations"], **annotations}
        metadata = {**current["metadata"], "annotations": {k: v for k, v in merged.items() if v}}
        await self.modify({**current, "metadata": metadata})
        return True


def site_configmap(root: Path, index: int, *, body_size: int = 50) -> dict[str, Any]:
    hostname = f"site-{index}.example.org"
    certificates = root / "certs" / hostname
    config = render_final(
        SiteConfig(
            hostname=hostname,
            challenge_upstream="127.0.0.1:9",
            upstream="http://127.0.0.1:9",
            certificate_path=str(certificates / "tls.crt"),
            key_path=str(certificates / "tls.key"),
            max_body_size_mib=body_size,
        )
    )
    annotations = {
        labels.HOSTNAME: hostname,
        labels.CONFIG_HASH: config_hash(config),
        labels.TLS_SECRET: f"site-{index}-tls",
    }
    return {
        "metadata": {"name": f"site-{index}", "annotations": annotations},
        "data": {f"{hostname}.conf": config},
    }


def site_secret(index: int) -> dict[str, Any]:
    chain, key = self_signed_certificate([f"site-{index}.example.org"])
    data = {"tls.crt": base64.b64encode(chain).decode(), "tls.key": base64.b64encode(key).decode()}
    return {"metadata": {"name": f"site-{index}-tls"}, "data": data}


@contextlib.contextmanager
def files_read(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Path]]:
    """Every file read with ``Path.read_bytes`` meanwhile (how the agent reads its files)."""
    read: list[Path] = []
    original = Path.read_bytes

    def read_bytes(path: Path) -> bytes:
        read.append(path)
        return original(path)

    with monkeypatch.context() as patch:
        patch.setattr(Path, "read_bytes", read_bytes)
        yield read


@contextlib.contextmanager
def configmaps_parsed(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The names of the site ConfigMaps parsed meanwhile."""
    parsed: list[str] = []
    original = desired.site_request

    def site_request(
        configmap: desired.Object,
        secrets: Mapping[str, desired.Object],
        *,
        certificate_dir: str,
        https_port: int | None = None,
        shared_http: desired.SharedHttp | None = None,
    ) -> desired.SiteRequest:
        parsed.append(configmap["metadata"]["name"])
        return original(
            configmap,
            secrets,
            certificate_dir=certificate_dir,
            https_port=https_port,
            shared_http=shared_http,
        )

    with monkeypatch.context() as patch:
        patch.setattr(state, "site_request", site_request)
        yield parsed


async def applied(api: SiteApi, configmap: dict[str, Any]) -> None:
    wanted = configmap["metadata"]["annotations"][labels.CONFIG_HASH]
    name = configmap["metadata"]["name"]
    async with asyncio.timeout(30):
        while api.patches.get(name, {}).get(labels.APPLIED_CONFIG_HASH) != wanted:
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running(agent: NginxAgent, api: SiteApi, root: Path, sites: int) -> AsyncIterator[None]:
    """The agent (writing under ``root``) running, ``sites`` sites applied."""
    configmaps = [site_configmap(root, i) for i in range(sites)]
    secrets = [site_secret(i) for i in range(sites)]
    task = asyncio.create_task(agent.run())
    try:
        await api.sync(configmaps, secrets)
        await asyncio.gather(*(applied(api, configmap) for configmap in configmaps))
        api.patches.clear()
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_a_batch_reads_and_parses_only_the_site_that_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, every batch read every site's files back and parsed every ConfigMap again: its
    cost grew with all the sites (at 10,000 sites, seconds of CPU per batch)."""
    settings = AgentSettings(root_dir=tmp_path, quiet_window=0.01, max_delay=0.05)
    api, nginx = SiteApi(), AcceptingNginx()
    agent = NginxAgent(settings, api, nginx)

    async def scenario() -> tuple[list[Path], list[str]]:
        async with running(agent, api, tmp_path, SITES):
            changed = site_configmap(tmp_path, 7, body_size=100)
            with files_read(monkeypatch) as read, configmaps_parsed(monkeypatch) as parsed:
                await api.modify(changed)
                await applied(api, changed)
            return read, parsed

    read, parsed = asyncio.run(scenario())

    assert parsed == ["site-7"]
    host = "site-7.example.org"
    assert read, "the changed host's files are read back, to report what is on disk"
    # Besides, the files of entries it moved between (the shared HTTPS servers' names, one
    # file each, and the certificate map), which a batch rewrites whole as nginx reads them.
    entries = [
        path
        for path in read
        if path.parent.name == "https-names" or path.name in ("http-names.conf", "https-map.conf")
    ]
    read = [path for path in read if path not in entries]
    assert len(entries) <= 4 * 2, "each read once to change it, once to read it back"
    assert {path.name for path in read} <= {f"{host}.conf", "tls.crt", "tls.key"}
    assert all(host in path.parts or path.name == f"{host}.conf" for path in read), read
    assert list(api.patches) == ["site-7"], "the other sites' reports stay as they are"
    config = (tmp_path / "sites-available" / f"{host}.conf").read_text()
    assert "client_max_body_size 100m" in config
    assert nginx.reloads == 2


def test_a_batch_plans_and_reports_only_the_site_that_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, every batch compared every site with its files and every ConfigMap's report
    with its annotations: at 10,000 sites, most of a batch's CPU when one site changed. Then
    every batch still went through every ConfigMap to find those whose report could have
    changed (about 30 ms of CPU at 10,000 sites)."""
    settings = AgentSettings(root_dir=tmp_path, quiet_window=0.01, max_delay=0.05)
    api, nginx = SiteApi(), AcceptingNginx()
    agent = NginxAgent(settings, api, nginx)
    planned: list[str] = []
    reported: list[str] = []
    looked_at: list[str] = []

    def site_operations(
        site: desired.Site, disk: plan.DiskState, servers: Collection[str]
    ) -> tuple[plan.Operation, ...]:
        planned.append(site.hostname)
        return original_operations(site, disk, servers)

    def report(request: desired.SiteRequest, *arguments: Any) -> plan.Report:
        reported.append(request.configmap)
        return original_report(request, *arguments)

    def report_inputs(request: desired.SiteRequest, disk: plan.DiskState) -> tuple[object, ...]:
        looked_at.append(request.configmap)
        return original_inputs(request, disk)

    original_operations, original_report = plan.site_operations, plan.report
    original_inputs = agent._report_inputs
    monkeypatch.setattr(plan, "site_operations", site_operations)
    monkeypatch.setattr(agent_module, "report", report)
    monkeypatch.setattr(agent, "_report_inputs", report_inputs)

    async def scenario() -> None:
        async with running(agent, api, tmp_path, SITES):
            assert len(set(planned)) == SITES
            for index in (3, 7):
                planned.clear()
                reported.clear()
                looked_at.clear()
                changed = site_configmap(tmp_path, index, body_size=100)
                await api.modify(changed)
                await applied(api, changed)
                await asyncio.sleep(0.2)  # the batch its own report's echo starts, if any

    asyncio.run(scenario())

    # The site of the batch before is looked at once more: its files were read back after
    # that plan, and its report came back as a new ConfigMap object.
    assert set(planned) == {"site-3.example.org", "site-7.example.org"}
    assert set(reported) == {"site-3", "site-7"}
    assert set(looked_at) == {"site-3", "site-7"}, "no other ConfigMap's report is looked at"
    config = (tmp_path / "sites-available" / "site-7.example.org.conf").read_text()
    assert "client_max_body_size 100m" in config


def test_after_a_failed_batch_the_whole_disk_is_read_and_put_right(tmp_path: Path) -> None:
    """The agent knows its files without reading them back each batch; a failed batch may
    have left anything behind, so the next one reads everything again (as a restart does)."""
    settings = AgentSettings(root_dir=tmp_path, quiet_window=0.01, max_delay=0.05)
    api, nginx = SiteApi(), AcceptingNginx()
    agent = NginxAgent(settings, api, nginx)
    tampered = tmp_path / "sites-available" / "site-3.example.org.conf"

    async def scenario() -> None:
        async with running(agent, api, tmp_path, 5):
            original = tampered.read_text()
            tampered.write_text("# changed behind the agent's back\n")
            nginx.unreachable = True
            changed = site_configmap(tmp_path, 1, body_size=100)
            await api.modify(changed)
            async with asyncio.timeout(30):
                while not agent.stats.batch_failures_total:
                    await asyncio.sleep(0.01)
            nginx.unreachable = False
            await applied(api, changed)
            assert tampered.read_text() == original

    asyncio.run(scenario())


class RefusingNginx(AcceptingNginx):
    """Its next ``refusals`` reloads go unconfirmed: the agent waits ``wait`` seconds for each
    in vain (as :meth:`NginxControl.reload` does for ``reload_timeout``), then they fail."""

    def __init__(self, wait: float) -> None:
        super().__init__()
        self.wait = wait
        self.refusals = 0

    async def reload(self) -> None:
        if self.refusals:
            self.refusals -= 1
            await asyncio.sleep(self.wait)
            self.unconfirmed_seconds += self.wait
            raise ReloadFailed("started no new workers")
        await super().reload()


def test_waiting_for_a_reload_nginx_never_confirmed_does_not_pace_the_next_batch(
    tmp_path: Path,
) -> None:
    """The next batch waits ``reload_pacing`` times the time nginx was busy. Before, that was
    the whole batch, so a reload that failed (and the isolation's, each waiting out
    ``reload_timeout`` while nginx sat idle on its old config) held the next one back for as
    long again: 30 s with the chart's settings."""
    wait = 1.0
    settings = AgentSettings(
        root_dir=tmp_path, quiet_window=0.01, max_delay=0.05, reload_pacing=1.0
    )
    api, nginx = SiteApi(), RefusingNginx(wait)
    agent = NginxAgent(settings, api, nginx)

    async def scenario() -> None:
        async with running(agent, api, tmp_path, 3):
            nginx.refusals = 1  # the batch's reload; the isolation's retry is confirmed
            changed = site_configmap(tmp_path, 1, body_size=100)
            await api.modify(changed)
            await applied(api, changed)

    asyncio.run(scenario())

    assert agent.stats.reload_failures_total == 1
    assert nginx.unconfirmed_seconds == wait
    assert agent.stats.reload_pause_seconds < wait / 2, "the wait in vain is not nginx's work"
    assert agent.stats.reload_pause_seconds > 0


def test_a_reload_nginx_never_confirms_is_counted_as_waited_in_vain(tmp_path: Path) -> None:
    """A master that ignores SIGHUP (a real process): the reload fails after
    ``reload_timeout``, and that time is what ``unconfirmed_seconds`` adds up."""
    master = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, time; signal.signal(signal.SIGHUP, signal.SIG_IGN); time.sleep(60)",
        ]
    )
    try:
        pid_file = tmp_path / "nginx.pid"
        pid_file.write_text(f"{master.pid}\n")
        nginx = NginxControl("nginx", tmp_path / "nginx.conf", pid_file, reload_timeout=0.3)
        time.sleep(0.2)  # the child has installed its handler
        with pytest.raises(ReloadFailed, match=r"started no new workers within 0\.3s"):
            asyncio.run(nginx.reload())
        assert 0.3 <= nginx.unconfirmed_seconds < 5
        assert master.poll() is None, "the signal was ignored, not fatal"
    finally:
        master.kill()
        master.wait()


def test_the_agents_http_and_https_ports_differ_and_its_responder_is_host_port() -> None:
    """Its plain HTTP server and its TLS default server cannot share a port (nginx applies
    ``ssl`` to every server on a port), and the responder is pasted into nginx's config."""
    with pytest.raises(ValueError, match="http_port and https_port must differ"):
        AgentSettings(http_port=8443, https_port=8443)
    with pytest.raises(ValueError, match="challenge_upstream"):
        AgentSettings(challenge_upstream="http://responder")
    assert AgentSettings(http_port=8080, https_port=8443).challenge_upstream == (
        "vhost-operator-challenges.vhost-operator.svc:8089"
    )
