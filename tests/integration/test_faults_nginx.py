"""Faults around nginx and its agent, on a real nginx, the real agent and the real control plane:
nginx killed right after the agent's reload signal, the agent killed in the middle of a batch,
and the agent's disk full. Each time the last good configuration keeps serving, the cause is
reported, nothing is reported as applied that nginx did not load, and everything recovers once
the fault clears.

The site ConfigMaps and Secrets are written the way the operator writes them (see
``test_nginx_agent``, whose helpers these tests share); ``faults`` marks them as part of the
fault-injection suite.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import kube
from tests.harness.agent import AgentProcess
from tests.harness.clusters import Cluster
from tests.harness.nginx import NginxServer, http_request, https_request
from tests.harness.processes import free_port
from tests.integration.test_nginx_agent import (
    NAMESPACE,
    Sites,
    eventually,
    serial_of,
    serves_certificate,
)
from vhost_operator.agent.files import TEMP_PREFIX
from vhost_operator.nginx import config_hash
from vhost_operator.resources import labels

pytestmark = [pytest.mark.cluster, pytest.mark.faults]

STEADY = ("vhost-fault-steady", "steady.faults.test")
FRESH = ("vhost-fault-fresh", "fresh.faults.test")
AGENT_ROOT_SIZE = "1m"
"""The agent's tmpfs in the disk-full case: room for a few hosts, filled up by the test."""


# -- fixtures and helpers ------------------------------------------------------------------------


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path / "nginx"


@pytest.fixture
def nginx(workdir: Path) -> Iterator[NginxServer]:
    server = NginxServer(workdir, free_port(), free_port())
    yield server.start()
    server.stop()


@pytest.fixture
def agent(cluster: Cluster, nginx: NginxServer, tmp_path: Path) -> Iterator[AgentProcess]:
    kube.ensure_namespace(cluster, NAMESPACE)
    process = AgentProcess(cluster.kubeconfig, tmp_path, nginx, NAMESPACE)
    yield process.start()
    process.stop()
    cluster.kubectl("delete", "configmaps,secrets", "-n", NAMESPACE, "-l", labels.COMPONENT)


@pytest.fixture
def sites(cluster: Cluster, nginx: NginxServer, upstream: int, tmp_path: Path) -> Sites:
    return Sites(cluster, nginx, upstream, tmp_path)


def site_with_body_size(sites: Sites, name: str, hostname: str, size: int) -> dict[str, Any]:
    """The TLS site's ConfigMap with another config (a new ``client_max_body_size``)."""
    config = sites.config(hostname, tls=True, body_size=size)
    return sites.configmap(name, hostname, config, tls_secret=f"{name}-tls")


def applied_hash(sites: Sites, name: str) -> str | None:
    return sites.annotations().get(name, {}).get(labels.APPLIED_CONFIG_HASH)


def sighup_pending(pid: int) -> bool:
    """A SIGHUP was sent to ``pid`` and not yet acted on (the process is stopped)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("ShdPnd:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGHUP - 1)))
    return False


def serves_body_size(nginx: NginxServer, hostname: str, mib: int) -> bool:
    """Whether nginx's running config for ``hostname`` accepts a body of ``mib`` MiB (its
    ``client_max_body_size``): asked with ``Expect: 100-continue``, nginx answers 413 or
    100 Continue from the headers alone, before any body is sent."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # only asking about the config
    request = (
        f"POST / HTTP/1.1\r\nHost: {hostname}\r\nContent-Length: {mib * 1024 * 1024}\r\n"
        "Expect: 100-continue\r\n\r\n"
    )
    with (
        socket.create_connection(("127.0.0.1", nginx.https_port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=hostname) as tls,
    ):
        tls.sendall(request.encode())
        status_line = tls.recv(64).split(b"\r\n", 1)[0]
    return status_line.split()[1] == b"100"


def layout(root: Path) -> dict[str, bytes | str]:
    """Every file (content) and symlink (target) under the agent's root, by relative path."""
    found: dict[str, bytes | str] = {}
    for path in sorted(root.rglob("*")):
        relative = str(path.relative_to(root))
        if path.is_symlink():
            found[relative] = os.readlink(path)
        elif path.is_file():
            found[relative] = path.read_bytes()
    return found


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A small tmpfs mounted over ``path`` (needs root), unmounted at the end whatever happens."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)], check=True
    )
    try:
        yield path
    finally:
        # Lazy: a process still holding a file there must not keep the mount (and the test) alive.
        subprocess.run(["umount", "--lazy", str(path)], check=True)


def fill(directory: Path, leave: int = 0) -> Path:
    """Fill the file system of ``directory`` to the last byte but ``leave``; returns the filler
    file."""
    filler = directory / "filler"  # not a name of the agent's layout: it never touches it
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for size in (65536, 4096, 1):  # big writes, then the last partial blocks
            with contextlib.suppress(OSError):
                while os.write(descriptor, b"\0" * size):
                    pass
        os.ftruncate(descriptor, max(os.fstat(descriptor).st_size - leave, 0))
    finally:
        os.close(descriptor)
    return filler


# -- nginx killed --------------------------------------------------------------------------------


def test_nginx_killed_right_after_the_reload_signal(
    sites: Sites, nginx: NginxServer, agent: AgentProcess
) -> None:
    name, hostname = STEADY
    manifests, chain = sites.tls_site(name, hostname)
    sites.apply(manifests)
    good = sites.wait_applied(name)[name][labels.APPLIED_CONFIG_HASH]
    assert not serves_body_size(nginx, hostname, 99)  # 50 MiB: the config before the change
    failures = agent.metrics()["vhost_agent_reload_failures_total"]

    # Stopped, nginx cannot act on the agent's SIGHUP: it is killed with the signal pending,
    # exactly between the agent's signal and nginx loading anything.
    os.kill(nginx.master_pid, signal.SIGSTOP)
    try:
        changed = site_with_body_size(sites, name, hostname, 100)
        fresh = sites.http_site(*FRESH)
        sites.apply([changed, fresh])
        eventually(lambda: sighup_pending(nginx.master_pid), timeout=60, what="the agent's SIGHUP")
    finally:
        nginx.kill()

    # The agent sees the reload fail and says so; it reports nothing nginx did not load.
    eventually(
        lambda: agent.metrics()["vhost_agent_reload_failures_total"] > failures,
        timeout=45,
        what="a failed reload counted",
    )
    assert "nginx (pid" in agent.log() and "exited during the reload" in agent.log()
    assert applied_hash(sites, name) == good
    assert applied_hash(sites, FRESH[0]) is None

    # nginx comes back (as the kubelet restarts it): on the tested files, and the agent's retry
    # reloads and reports it.
    nginx.start()
    found = sites.wait_applied(name, FRESH[0], timeout=90)
    assert found[name][labels.APPLIED_CONFIG_HASH] == config_hash(
        changed["data"][f"{hostname}.conf"]
    )
    assert https_request(nginx.https_port, hostname, chain) == (200, f"upstream for {hostname}\n")
    assert serves_body_size(nginx, hostname, 99)
    assert http_request(nginx.http_port, FRESH[1])[:2] == (200, f"upstream for {FRESH[1]}\n")


# -- the agent killed ----------------------------------------------------------------------------


def test_agent_killed_mid_batch_then_restarted(
    sites: Sites, nginx: NginxServer, agent: AgentProcess
) -> None:
    name, hostname = STEADY
    manifests, chain = sites.tls_site(name, hostname)
    sites.apply(manifests)
    good = sites.wait_applied(name)[name][labels.APPLIED_CONFIG_HASH]

    os.kill(nginx.master_pid, signal.SIGSTOP)
    try:
        changed = site_with_body_size(sites, name, hostname, 100)
        fresh = sites.http_site(*FRESH)
        sites.apply([changed, fresh])
        # Written, tested, signalled: the agent now waits for nginx to confirm. Killed there.
        eventually(lambda: sighup_pending(nginx.master_pid), timeout=60, what="the agent's SIGHUP")
        agent.kill()
    finally:
        os.kill(nginx.master_pid, signal.SIGCONT)

    # Without its agent nginx keeps serving (now the tested batch it was told to load); nothing
    # was reported that the agent did not see nginx load.
    assert https_request(nginx.https_port, hostname, chain) == (200, f"upstream for {hostname}\n")
    assert applied_hash(sites, name) == good
    assert applied_hash(sites, FRESH[0]) is None

    agent.start()  # ready: it tested what is on disk and saw nginx reload it
    found = sites.wait_applied(name, FRESH[0])
    assert found[name][labels.APPLIED_CONFIG_HASH] == config_hash(
        changed["data"][f"{hostname}.conf"]
    )
    metrics = agent.metrics()
    assert metrics["vhost_agent_hosts_changed_total"] == 0, "the files were right: none rewritten"
    assert metrics["vhost_agent_reloads_total"] == 1
    assert serves_body_size(nginx, hostname, 99)
    assert http_request(nginx.http_port, FRESH[1])[:2] == (200, f"upstream for {FRESH[1]}\n")


# -- the agent's disk full -----------------------------------------------------------------------


@pytest.mark.parametrize("free", [0, 8192], ids=lambda free: f"{free}B-free")
def test_disk_full_keeps_the_last_good_files_and_recovers(
    cluster: Cluster, workdir: Path, upstream: int, tmp_path: Path, free: int
) -> None:
    kube.ensure_namespace(cluster, NAMESPACE)
    root = workdir / "agent-root"  # NginxServer's root: nginx includes its sites from there
    with tmpfs(root, AGENT_ROOT_SIZE), NginxServer(workdir, free_port(), free_port()) as nginx:
        agent = AgentProcess(cluster.kubeconfig, tmp_path, nginx, NAMESPACE).start()
        try:
            sites = Sites(cluster, nginx, upstream, tmp_path)
            disk_full_scenario(sites, nginx, agent, root, free)
        finally:
            agent.stop()
            cluster.kubectl("delete", "configmaps,secrets", "-n", NAMESPACE, "-l", labels.COMPONENT)


def disk_full_scenario(
    sites: Sites, nginx: NginxServer, agent: AgentProcess, root: Path, free: int
) -> None:
    name, hostname = STEADY
    manifests, chain = sites.tls_site(name, hostname)
    sites.apply(manifests)
    good = sites.wait_applied(name)[name]
    assert not serves_body_size(nginx, hostname, 99)
    before = layout(root)

    assert agent.metrics()["vhost_agent_batch_failures_total"] == 0
    filler = fill(root, leave=free)
    # A renewal with a new config for the steady host, and a new TLS host, in one burst.
    renewed, _ = sites.tls_site(name, hostname, body_size=100)
    fresh, fresh_chain = sites.tls_site(*FRESH)
    sites.apply(renewed + fresh)
    eventually(
        lambda: agent.metrics()["vhost_agent_batch_failures_total"] >= 2,
        timeout=60,
        what="two failed batches counted",
    )
    assert "No space left on device" in agent.log()

    # The last good files, whole and alone, and nginx serving them; nothing reported applied.
    after = {path: content for path, content in layout(root).items() if path != filler.name}
    # With room for it, the shared HTTPS server the renewed config needs may be in place: nginx
    # tested and accepted it before the batch, and it lists no host (its names file is empty).
    servers = {path for path in after.keys() - before.keys() if "_vhost-shared-" in path}
    names = {
        f"https-names/{Path(path).stem.removeprefix('_vhost-shared-')}.conf" for path in servers
    }
    assert all(after[path] == b"" for path in names), "no host listed in a new shared server"
    after = {path: content for path, content in after.items() if path not in servers | names}
    assert after == before, "the disk holds exactly the last good files"
    assert not [path for path in after if Path(path).name.startswith(TEMP_PREFIX)]
    assert https_request(nginx.https_port, hostname, chain) == (200, f"upstream for {hostname}\n")
    assert not serves_body_size(nginx, hostname, 99)
    annotations = sites.annotations()
    assert annotations[name][labels.APPLIED_CONFIG_HASH] == good[labels.APPLIED_CONFIG_HASH]
    assert annotations[name][labels.APPLIED_CERTIFICATE_SERIAL] == serial_of(chain)
    assert labels.APPLIED_CONFIG_HASH not in annotations[FRESH[0]]

    filler.unlink()  # the fault clears
    renewed_chain = renewed[0]["stringData"]["tls.crt"].encode()
    found = sites.wait_applied(name, FRESH[0], timeout=90)
    assert found[name][labels.APPLIED_CERTIFICATE_SERIAL] == serial_of(renewed_chain)
    assert serves_certificate(nginx, hostname, renewed_chain)
    assert serves_certificate(nginx, FRESH[1], fresh_chain)
    assert serves_body_size(nginx, hostname, 99)
