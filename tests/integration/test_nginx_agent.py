"""The nginx agent with a real nginx and the real control plane.

The tests play the operator's part by writing site ConfigMaps and TLS Secrets with kubectl
(configs rendered by ``vhost_operator.nginx``, self-signed certificates), then check what
matters: what nginx serves to a client (HTTP with ``Host``, TLS with SNI), what the agent left on
disk and what it reported in the ConfigMaps' annotations.
"""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cryptography import x509

from tests.harness import kube
from tests.harness.agent import AgentProcess
from tests.harness.clusters import Cluster
from tests.harness.nginx import (
    NginxServer,
    http_request,
    http_status,
    https_request,
    self_signed_certificate,
    served_certificate,
)
from vhost_operator.agent.nginx import NginxControl, children
from vhost_operator.agent.plan import key_access_problem, parse_entries
from vhost_operator.certs import inspect_certificate
from vhost_operator.nginx import (
    CERTIFICATE_NAME_VARIABLE,
    FinalLayout,
    SiteConfig,
    config_hash,
    render_final,
)
from vhost_operator.resources import labels

pytestmark = pytest.mark.cluster

T = TypeVar("T")

NAMESPACE = "nginx-agent-test"
"""The agent's own namespace here: no operator of another test writes site ConfigMaps into it."""
SECRET_GRACE = 2.0
"""Seconds before a Secret the agent has not seen counts as missing (10 by default)."""
RELOAD_TIMEOUT = 5.0
"""Seconds the agent waits for nginx to run a reload (30 by default): a reload nginx cannot do
costs this much, and isolating its culprit costs it a few times. Reloads of this module's few
hundred sites are confirmed within a fraction of a second."""


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def agent(
    cluster: Cluster, nginx: NginxServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AgentProcess]:
    kube.ensure_namespace(cluster, NAMESPACE)
    process = AgentProcess(
        cluster.kubeconfig,
        tmp_path_factory.mktemp("agent"),
        nginx,
        NAMESPACE,
        {
            "VHOST_AGENT_MISSING_SECRET_GRACE": str(SECRET_GRACE),
            "VHOST_AGENT_RELOAD_TIMEOUT": str(RELOAD_TIMEOUT),
        },
    ).start()
    yield process
    process.stop()
    for kind in ("configmaps", "secrets"):
        cluster.kubectl("delete", kind, "-n", NAMESPACE, "-l", labels.COMPONENT, "--wait=false")


class Sites:
    """Writes what the operator would write, and reads what the agent reported."""

    def __init__(self, cluster: Cluster, nginx: NginxServer, upstream: int, tmp_path: Path) -> None:
        self.cluster = cluster
        self.nginx = nginx
        self.upstream = upstream
        self.tmp_path = tmp_path

    def config(
        self,
        hostname: str,
        *,
        tls: bool,
        body_size: int = 50,
        additional_names: tuple[str, ...] = (),
        layout: FinalLayout = FinalLayout.TLS_ONLY,
        upstream: str | None = None,
    ) -> str:
        certificates = self.nginx.root / "certs" / hostname
        site = SiteConfig(
            hostname=hostname,
            additional_names=additional_names,
            challenge_upstream=f"127.0.0.1:{self.upstream}",
            upstream=upstream or f"http://127.0.0.1:{self.upstream}",
            http_port=self.nginx.http_port,
            https_port=self.nginx.https_port,
            certificate_path=str(certificates / "tls.crt") if tls else None,
            key_path=str(certificates / "tls.key") if tls else None,
            max_body_size_mib=body_size,
        )
        return render_final(site, layout=layout)

    @staticmethod
    def configmap(
        name: str,
        hostname: str,
        config: str,
        *,
        enabled: bool = True,
        tls_secret: str | None = None,
    ) -> dict[str, Any]:
        annotations = {
            labels.HOSTNAME: hostname,
            labels.ENABLED: "true" if enabled else "false",
            labels.STAGE: "final",
            labels.CONFIG_HASH: config_hash(config),
        }
        if tls_secret:
            annotations[labels.TLS_SECRET] = tls_secret
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": name,
                "namespace": NAMESPACE,
                "labels": labels.component_labels(labels.SITE_COMPONENT),
                "annotations": annotations,
            },
            "data": {f"{hostname}.conf": config},
        }

    @staticmethod
    def secret(name: str, chain: bytes, key: bytes) -> dict[str, Any]:
        return kube.tls_secret(name, chain, key, NAMESPACE)

    def tls_site(
        self, name: str, hostname: str, *, body_size: int = 50, **options: Any
    ) -> tuple[list[dict[str, Any]], bytes]:
        """ConfigMap and Secret of a host served over HTTPS, and its certificate (for all its
        names); ``options``: those of :meth:`config`."""
        chain, key = self_signed_certificate([hostname, *options.get("additional_names", ())])
        config = self.config(hostname, tls=True, body_size=body_size, **options)
        secret = f"{name}-tls"
        manifests = [self.secret(secret, chain, key), self.configmap(name, hostname, config)]
        manifests[1]["metadata"]["annotations"][labels.TLS_SECRET] = secret
        return manifests, chain

    def http_site(self, name: str, hostname: str, **options: Any) -> dict[str, Any]:
        return self.configmap(name, hostname, self.config(hostname, tls=False), **options)

    def apply(self, manifests: list[dict[str, Any]]) -> None:
        path = self.tmp_path / f"apply-{time.monotonic_ns()}.json"
        path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests}))
        self.cluster.kubectl("apply", "--server-side", "-f", str(path))

    def annotations(self) -> dict[str, dict[str, str]]:
        """Every site ConfigMap's annotations, by name."""
        listed = self.cluster.kubectl(
            "get", "configmaps", "-n", NAMESPACE, "-l", labels.COMPONENT, "-o", "json"
        )
        return {
            item["metadata"]["name"]: item["metadata"].get("annotations") or {}
            for item in json.loads(listed.stdout)["items"]
        }

    def wait_applied(self, *names: str, timeout: float = 60) -> dict[str, dict[str, str]]:
        """Until each ConfigMap's applied-config-hash equals its config-hash."""

        def applied() -> dict[str, dict[str, str]] | None:
            found = self.annotations()
            done = all(
                name in found
                and found[name].get(labels.APPLIED_CONFIG_HASH) == found[name][labels.CONFIG_HASH]
                for name in names
            )
            return found if done else None

        return eventually(applied, timeout=timeout, what=f"applied {names[:3]}...")

    def wait_error(self, name: str, timeout: float = 60) -> str:
        """Until the ConfigMap carries an apply-error about its current config."""

        def error() -> str | None:
            found = self.annotations().get(name, {})
            message = found.get(labels.APPLY_ERROR)
            current = found.get(labels.CONFIG_HASH)
            return message if message and message.startswith(f"{current}: ") else None

        return eventually(error, timeout=timeout, what=f"apply-error on {name}")


@pytest.fixture
def sites(
    cluster: Cluster, nginx: NginxServer, upstream: int, agent: AgentProcess, tmp_path: Path
) -> Sites:
    return Sites(cluster, nginx, upstream, tmp_path)


def eventually(probe: Callable[[], T | None], *, timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value is not None and value is not False:
            return value
        time.sleep(0.05)
    raise AssertionError(f"no {what} within {timeout}s")


def serial_of(chain: bytes) -> str:
    return inspect_certificate(chain).serial


def serves_certificate(nginx: NginxServer, hostname: str, chain: bytes) -> bool:
    served = served_certificate(nginx.https_port, hostname)
    return served is not None and served == x509.load_pem_x509_certificate(chain)


# -- a site appears, is disabled, comes back, goes away --------------------------------------


def test_new_site_is_served_over_https_with_its_certificate(
    sites: Sites, nginx: NginxServer
) -> None:
    hostname = "one.example.com"
    manifests, chain = sites.tls_site("vhost-one", hostname)
    started = time.monotonic()
    sites.apply(manifests)
    written = time.monotonic()
    eventually(
        lambda: serves_certificate(nginx, hostname, chain),
        timeout=45,
        what="the certificate over TLS with SNI",
    )
    served = time.monotonic()
    annotations = sites.wait_applied("vhost-one")["vhost-one"]
    print(
        f"\napply -> served (TLS with SNI shows the new certificate) for one host: "
        f"{served - started:.2f}s from running kubectl apply, {served - written:.2f}s from its "
        f"return; applied annotations seen after {time.monotonic() - started:.2f}s"
    )

    assert annotations[labels.APPLIED_CERTIFICATE_SERIAL] == serial_of(chain)
    assert labels.APPLY_ERROR not in annotations
    # A browser's view: the chain verifies for the hostname, the request reaches the web app.
    assert https_request(nginx.https_port, hostname, chain) == (200, f"upstream for {hostname}\n")
    status, _, headers = http_request(nginx.http_port, hostname, "/inbox")
    assert status == 301
    assert headers["Location"] == f"https://{hostname}:{nginx.https_port}/inbox"

    root = nginx.root
    config = sites.config(hostname, tls=True)
    assert (root / "sites-available" / f"{hostname}.conf").read_text() == config
    assert (root / "certs" / hostname / "tls.crt").read_bytes() == chain
    assert (root / "certs" / hostname / "tls.key").stat().st_mode & 0o777 == 0o600
    # Its plain HTTP is the agent's shared server, which lists its name; so is its HTTPS (its
    # config is that server but for its names): listed, not linked.
    listed = parse_entries((root / "http-names.conf").read_text())[hostname]
    assert listed == f"server_name {hostname};\n"
    assert not os.path.lexists(root / "sites-enabled" / f"{hostname}.conf")
    [(_, names)] = https_listings(root, hostname).items()
    assert names == f"server_name {hostname};\n"
    assert map_entries(root)[hostname] == f"{hostname} {hostname};\n"


def test_tls_sites_share_one_context_that_serves_each_its_own_certificate(
    sites: Sites, nginx: NginxServer
) -> None:
    """The sites name no certificate, so nginx builds one TLS context (the agent's default
    server) instead of one per site; that context loads, per handshake, the files of the site
    the client's SNI selected: its own, for any of its names, and nothing for a name without a
    site or a client without SNI. A ConfigMap of the previous release (a context of its own)
    is served next to them, as after an upgrade."""
    first, second, previous = "a.shared.example.com", "b.shared.example.com", "c.shared.example.com"
    alias = "webmail.shared.example.com"
    first_manifests, first_chain = sites.tls_site(
        "vhost-shared-a", first, additional_names=(alias,)
    )
    second_manifests, second_chain = sites.tls_site("vhost-shared-b", second)
    previous_manifests, previous_chain = sites.tls_site(
        "vhost-shared-c", previous, layout=FinalLayout.PER_HANDSHAKE
    )
    sites.apply(first_manifests + second_manifests + previous_manifests)
    annotations = sites.wait_applied("vhost-shared-a", "vhost-shared-b", "vhost-shared-c")
    assert not any(labels.APPLY_ERROR in annotations[name] for name in annotations), annotations

    for hostname, chain in (
        (first, first_chain),
        (alias, first_chain),
        (first.upper(), first_chain),  # nginx matches server names case-insensitively
        (second, second_chain),
        (previous, previous_chain),
    ):
        assert serves_certificate(nginx, hostname, chain), hostname
    assert https_request(nginx.https_port, alias, first_chain) == (200, f"upstream for {alias}\n")
    assert https_request(nginx.https_port, second, second_chain)[0] == 200
    assert served_certificate(nginx.https_port, "unknown.shared.example.com") is None
    assert served_certificate(nginx.https_port, None) is None, "no SNI: no site, refused"

    # One context: only the agent's default server, and the previous release's site, name
    # certificates (as paths built from the selected server's name, or fixed).
    dumped = subprocess.run(
        [nginx.binary, "-T", "-c", str(nginx.conf), "-p", f"{nginx.workdir}/", "-e", "stderr"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    certificates = re.findall(r"^\s*ssl_certificate\s+([^;]*);", dumped, flags=re.MULTILINE)
    assert sorted(certificates) == sorted(
        [
            f"{nginx.root}/certs/${CERTIFICATE_NAME_VARIABLE}/tls.crt",
            f"{nginx.root}/certs/{previous}/tls.crt$vhost_operator_per_handshake",
        ]
    ), certificates


def set_enabled(cluster: Cluster, configmap: str, value: str) -> None:
    cluster.kubectl(
        "annotate", "configmap", configmap, "-n", NAMESPACE,
        f"{labels.ENABLED}={value}", "--overwrite",
    )  # fmt: skip


def https_listings(root: Path, hostname: str) -> dict[Path, str]:
    """``hostname``'s entries in the shared HTTPS servers' names files (one at most)."""
    entries = {path: parse_entries(path.read_text()) for path in root.glob("https-names/*.conf")}
    return {path: found[hostname] for path, found in entries.items() if hostname in found}


def map_entries(root: Path) -> dict[str, str]:
    return parse_entries((root / "https-map.conf").read_text())


def test_tls_sites_are_listed_in_one_shared_https_server_per_upstream_and_body_size(
    sites: Sites, cluster: Cluster, nginx: NginxServer
) -> None:
    """A TLS site of this release without an MTA-STS policy is a server block like every other
    such site but for its names: the agent lists its names in one shared HTTPS server per
    upstream and body size instead (nginx's cost of a reload then grows with the shared servers,
    not with every site), and each listed name gets its own site's certificate. A shared server
    nginx refuses (its upstream does not resolve) is not put in place: its site gets a server of
    its own, which nginx refuses by name, and the others are served."""
    first, second, large = "a.listed.example.com", "b.listed.example.com", "big.listed.example.com"
    alias = "webmail.listed.example.com"
    first_manifests, first_chain = sites.tls_site(
        "vhost-listed-a", first, additional_names=(alias,)
    )
    second_manifests, second_chain = sites.tls_site("vhost-listed-b", second)
    large_manifests, large_chain = sites.tls_site("vhost-listed-big", large, body_size=100)
    hostname = "unresolvable.listed.example.com"
    bad_manifests, _ = sites.tls_site(
        "vhost-listed-bad", hostname, body_size=77, upstream="http://upstream.example.invalid"
    )
    sites.apply(first_manifests + second_manifests + large_manifests + bad_manifests)
    sites.wait_applied("vhost-listed-a", "vhost-listed-b", "vhost-listed-big")
    error = sites.wait_error("vhost-listed-bad")
    print(f"\napply-error (a TLS site whose shared server nginx refuses): {error}")
    assert 'host not found in upstream "upstream.example.invalid"' in error
    assert f"sites-enabled/{hostname}.conf" in error, "refused as a server of its own"

    root = nginx.root
    for served, chain in (
        (first, first_chain),
        (alias, first_chain),
        (alias.upper(), first_chain),  # the map, too, ignores case
        (second, second_chain),
        (large, large_chain),
    ):
        assert serves_certificate(nginx, served, chain), served
        assert https_request(nginx.https_port, served.lower(), chain)[0] == 200, served
    [first_listing], [second_listing] = https_listings(root, first), https_listings(root, second)
    [large_listing] = https_listings(root, large)
    assert first_listing == second_listing != large_listing
    assert map_entries(root)[first] == f"{first} {first};\n{alias} {first};\n"
    for listing in (first_listing, large_listing):
        server = root / "sites-enabled" / f"_vhost-shared-{listing.stem}.conf"
        assert f"include {listing};" in server.read_text()
    assert not https_listings(root, hostname) and hostname not in map_entries(root)
    shared = sorted(path.name for path in (root / "sites-enabled").glob("_vhost-shared-*.conf"))
    assert len(shared) == len(list(root.glob("https-names/*.conf")))

    # Disabled: its listing goes (the config stays); enabled again: listed again.
    set_enabled(cluster, "vhost-listed-b", "false")
    eventually(
        lambda: served_certificate(nginx.https_port, second) is None,
        timeout=45,
        what="the handshake of a disabled listed site refused",
    )
    assert (
        not https_listings(root, second) and (root / "sites-available" / f"{second}.conf").exists()
    )
    assert serves_certificate(nginx, first, first_chain), "its neighbour is served on"
    set_enabled(cluster, "vhost-listed-b", "true")
    eventually(
        lambda: serves_certificate(nginx, second, second_chain),
        timeout=45,
        what="the certificate of the site enabled again",
    )
    sites.cluster.kubectl(
        "delete", "configmap", "-n", NAMESPACE, "vhost-listed-bad", "vhost-listed-big"
    )
    # The last site listed in a shared server gone, the server goes once nginx runs without it.
    large_server = root / "sites-enabled" / f"_vhost-shared-{large_listing.stem}.conf"
    eventually(
        lambda: not large_server.exists(), timeout=45, what="the unused shared server removed"
    )
    assert not large_listing.exists(), "with its names file"


def test_disabled_site_falls_to_the_default_server_and_comes_back(
    sites: Sites, cluster: Cluster, nginx: NginxServer
) -> None:
    hostname = "toggle.example.com"
    sites.apply([sites.http_site("vhost-toggle", hostname)])
    sites.wait_applied("vhost-toggle")
    assert http_request(nginx.http_port, hostname)[:2] == (200, f"upstream for {hostname}\n")

    set_enabled(cluster, "vhost-toggle", "false")
    eventually(
        lambda: http_request(nginx.http_port, hostname)[:2] == (404, "no such site\n"),
        timeout=45,
        what="the default server's 404",
    )
    assert (nginx.root / "sites-available" / f"{hostname}.conf").exists(), "the config stays"
    assert not (nginx.root / "sites-enabled" / f"{hostname}.conf").exists()

    set_enabled(cluster, "vhost-toggle", "true")
    # Both, together: under load a reload can outlast the agent's timeout, so the agent puts the
    # last good files back and applies again, while nginx already answers from the new config.
    enabled = nginx.root / "sites-enabled" / f"{hostname}.conf"
    eventually(
        lambda: http_status(nginx.http_port, hostname) == 200 and enabled.is_symlink(),
        timeout=45,
        what="200 from an enabled site",
    )


def test_deleted_site_is_removed_from_disk_and_nginx(
    sites: Sites, cluster: Cluster, nginx: NginxServer
) -> None:
    hostname = "gone.example.com"
    manifests, chain = sites.tls_site("vhost-gone", hostname)
    sites.apply(manifests)
    sites.wait_applied("vhost-gone")
    assert serves_certificate(nginx, hostname, chain)

    cluster.kubectl("delete", "configmap/vhost-gone", "secret/vhost-gone-tls", "-n", NAMESPACE)
    # No annotation to wait for (the ConfigMap is gone): poll until nginx stops serving.
    eventually(
        lambda: (
            served_certificate(nginx.https_port, hostname) is None
            and http_status(nginx.http_port, hostname) == 404
        ),
        timeout=45,
        what="the TLS handshake refused and HTTP answered by the default server",
    )
    root = nginx.root
    assert not (root / "sites-available" / f"{hostname}.conf").exists()
    assert not (root / "sites-enabled" / f"{hostname}.conf").exists()
    assert not (root / "certs" / hostname).exists()
    assert hostname not in parse_entries((root / "http-names.conf").read_text())
    assert not https_listings(root, hostname) and hostname not in map_entries(root)


def test_renewed_certificate_is_served_and_reported(sites: Sites, nginx: NginxServer) -> None:
    hostname = "renew.example.com"
    manifests, chain = sites.tls_site("vhost-renew", hostname)
    sites.apply(manifests)
    before = sites.wait_applied("vhost-renew")["vhost-renew"]
    assert before[labels.APPLIED_CERTIFICATE_SERIAL] == serial_of(chain)

    renewed, key = self_signed_certificate([hostname])
    sites.apply([sites.secret("vhost-renew-tls", renewed, key)])  # same config, new certificate
    eventually(lambda: serves_certificate(nginx, hostname, renewed), timeout=45, what="the renewal")

    def reported() -> dict[str, str] | None:
        found = sites.annotations()["vhost-renew"]
        return found if found[labels.APPLIED_CERTIFICATE_SERIAL] == serial_of(renewed) else None

    after = eventually(reported, timeout=45, what="the new serial reported")
    assert after[labels.APPLIED_CONFIG_HASH] == before[labels.APPLIED_CONFIG_HASH]


def test_a_secret_the_agent_cannot_see_is_reported_then_picked_up(
    sites: Sites, cluster: Cluster, nginx: NginxServer
) -> None:
    hostname = "late.example.com"
    manifests, chain = sites.tls_site("vhost-late", hostname)
    del manifests[0]["metadata"]["labels"]  # the mistake: a Secret without the agent's label
    sites.apply(manifests)
    error = sites.wait_error("vhost-late", timeout=SECRET_GRACE + 10)
    assert "TLS Secret vhost-late-tls not found" in error
    assert f"{labels.COMPONENT}={labels.TLS_COMPONENT}" in error
    assert not (nginx.root / "sites-available" / f"{hostname}.conf").exists()

    cluster.kubectl(
        "label", "secret", "vhost-late-tls", "-n", NAMESPACE,
        f"{labels.COMPONENT}={labels.TLS_COMPONENT}",
    )  # fmt: skip
    applied = sites.wait_applied("vhost-late")["vhost-late"]
    assert labels.APPLY_ERROR not in applied
    assert serves_certificate(nginx, hostname, chain)


# -- nginx refuses a config -------------------------------------------------------------------


def test_rejected_configs_never_take_the_other_sites_down(sites: Sites, nginx: NginxServer) -> None:
    steady = "steady.example.com"
    sites.apply([sites.http_site("vhost-steady", steady)])
    sites.wait_applied("vhost-steady")

    # One burst: a config whose certificate the agent never got, a hand-written config with a
    # typo (the agent applies only what the operator renders), and a good host. Only the good
    # one may reach nginx.
    no_certificate = sites.configmap(
        "vhost-nocert", "nocert.example.com", sites.config("nocert.example.com", tls=True)
    )
    typo = sites.configmap(
        "vhost-typo",
        "typo.example.com",
        f"server {{\n    listen {nginx.http_port};\n    server_name typo.example.com;\n"
        "    retrun 200;\n}\n",
    )
    fresh = sites.http_site("vhost-fresh", "fresh.example.com")
    sites.apply([no_certificate, typo, fresh])
    sites.wait_applied("vhost-fresh")
    nocert_error = sites.wait_error("vhost-nocert")
    typo_error = sites.wait_error("vhost-typo")
    print(f"\napply-error (missing certificate): {nocert_error}\napply-error (typo): {typo_error}")
    assert "names no TLS Secret" in nocert_error
    assert "is not one the operator renders for typo.example.com" in typo_error
    for hostname in (steady, "fresh.example.com"):
        assert http_request(nginx.http_port, hostname)[:2] == (200, f"upstream for {hostname}\n")
    for hostname in ("nocert.example.com", "typo.example.com"):
        assert not (nginx.root / "sites-enabled" / f"{hostname}.conf").exists()
        assert http_status(nginx.http_port, hostname) == 404
    annotations = sites.annotations()
    assert labels.APPLIED_CONFIG_HASH not in annotations["vhost-typo"], "nothing applied"

    # A working site receiving a broken config keeps serving its last good one.
    good_hash = annotations["vhost-steady"][labels.APPLIED_CONFIG_HASH]
    broken = sites.http_site("vhost-steady", steady)
    broken["data"][f"{steady}.conf"] += "bogus_directive on;\n"
    broken["metadata"]["annotations"][labels.CONFIG_HASH] = config_hash(
        broken["data"][f"{steady}.conf"]
    )
    sites.apply([broken])
    assert "is not one the operator renders" in sites.wait_error("vhost-steady")
    assert sites.annotations()["vhost-steady"][labels.APPLIED_CONFIG_HASH] == good_hash
    assert http_request(nginx.http_port, steady)[:2] == (200, f"upstream for {steady}\n")

    # Fixing the typo applies it and clears its error.
    sites.apply([sites.http_site("vhost-typo", "typo.example.com")])
    fixed = sites.wait_applied("vhost-typo")["vhost-typo"]
    assert labels.APPLY_ERROR not in fixed
    assert http_status(nginx.http_port, "typo.example.com") == 200


def test_a_site_nginx_cannot_load_is_isolated_and_the_others_are_served(
    sites: Sites, nginx: NginxServer, upstream: int
) -> None:
    """``nginx -t`` accepts a ``listen`` on a port another process holds; the reload then fails.
    That host must be reported and the rest of its batch served, not the batch retried forever."""
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        hostname = "busyport.example.com"
        config = render_final(
            SiteConfig(
                hostname=hostname,
                challenge_upstream=f"127.0.0.1:{upstream}",
                upstream=f"http://127.0.0.1:{upstream}",
                http_port=port,
                https_port=nginx.https_port,
            )
        )
        culprit = sites.configmap("vhost-busyport", hostname, config)
        bystander = sites.http_site("vhost-bystander", "bystander.example.com")
        sites.apply([culprit, bystander])
        sites.wait_applied("vhost-bystander", timeout=120)
        error = sites.wait_error("vhost-busyport", timeout=60)
        print(f"\napply-error (busy port): {error}")
        assert "could not load it" in error
        assert http_request(nginx.http_port, "bystander.example.com")[:2] == (
            200,
            "upstream for bystander.example.com\n",
        )
        assert not (nginx.root / "sites-enabled" / f"{hostname}.conf").exists()
        annotations = sites.annotations()["vhost-busyport"]
        assert labels.APPLIED_CONFIG_HASH not in annotations, "nginx never ran it"
    sites.cluster.kubectl("delete", "configmap", "-n", NAMESPACE, "vhost-busyport")


def test_a_batch_on_a_running_nginx_is_tested_alone_and_a_refused_site_is_named(
    sites: Sites, nginx: NginxServer, agent: AgentProcess, upstream: int
) -> None:
    """While nginx runs every other site on disk, ``nginx -t`` tests a copy of nginx.conf that
    includes only the batch's sites: a good batch costs that one test and no test of the whole
    config. A site nginx refuses (its upstream does not resolve: nginx resolves it when it
    loads the config) is refused by the copy, named by the whole config's test and isolated."""
    sites.apply([sites.http_site("vhost-alone-1", "alone-1.example.com")])
    sites.wait_applied("vhost-alone-1")  # nginx now runs what is on disk
    before = agent.metrics()
    sites.apply([sites.http_site("vhost-alone-2", "alone-2.example.com")])
    sites.wait_applied("vhost-alone-2")
    after = agent.metrics()
    assert (
        after["vhost_agent_nginx_batch_tests_total"] > before["vhost_agent_nginx_batch_tests_total"]
    )
    assert after["vhost_agent_nginx_tests_total"] == before["vhost_agent_nginx_tests_total"]
    narrowed = (nginx.root / "nginx-batch-test.conf").read_text()
    assert f"{nginx.root}/sites-enabled/alone-2.example.com.conf" in narrowed
    assert "alone-1.example.com" not in narrowed and "sites-enabled/*.conf" not in narrowed

    hostname = "unresolvable.example.com"
    unresolvable = render_final(
        SiteConfig(
            hostname=hostname,
            challenge_upstream=f"127.0.0.1:{upstream}",
            upstream="http://upstream.example.invalid",  # never resolves (RFC 6761)
            http_port=nginx.http_port,
            https_port=nginx.https_port,
        )
    )
    sites.apply(
        [
            sites.configmap("vhost-unresolvable", hostname, unresolvable),
            sites.http_site("vhost-alone-3", "alone-3.example.com"),
        ]
    )
    sites.wait_applied("vhost-alone-3")
    error = sites.wait_error("vhost-unresolvable")
    print(f"\napply-error (upstream not found): {error}")
    assert 'host not found in upstream "upstream.example.invalid"' in error
    assert f"{hostname}.conf" in error
    assert not (nginx.root / "sites-enabled" / f"{hostname}.conf").exists()
    for served in ("alone-1.example.com", "alone-3.example.com"):
        assert http_request(nginx.http_port, served)[:2] == (200, f"upstream for {served}\n")
    assert agent.metrics()["vhost_agent_nginx_tests_total"] > after["vhost_agent_nginx_tests_total"]
    sites.cluster.kubectl("delete", "configmap", "-n", NAMESPACE, "vhost-unresolvable")


def test_a_site_broken_behind_the_agents_back_is_caught_by_the_reload_and_put_right(
    sites: Sites, nginx: NginxServer, agent: AgentProcess
) -> None:
    """A batch tested alone trusts that nginx runs the rest of the disk. A site file broken by
    hand since (the agent owns its directory) passes that test, but the reload, which loads
    everything, fails: the agent then tests and loads the whole config, puts the file right and
    serves the batch."""
    hostname = "tampered.example.com"
    sites.apply([sites.http_site("vhost-tampered", hostname)])
    sites.wait_applied("vhost-tampered")
    path = nginx.root / "sites-available" / f"{hostname}.conf"
    good = path.read_text()
    path.write_text(good + "bogus_directive on;\n")
    before = agent.metrics()

    sites.apply([sites.http_site("vhost-after-tamper", "after-tamper.example.com")])
    sites.wait_applied("vhost-after-tamper", timeout=120)
    after = agent.metrics()
    assert after["vhost_agent_reload_failures_total"] > before["vhost_agent_reload_failures_total"]
    assert path.read_text() == good
    for served in (hostname, "after-tamper.example.com"):
        assert http_request(nginx.http_port, served)[:2] == (200, f"upstream for {served}\n")


def test_a_broken_certificate_pair_is_refused_for_its_host_only(
    sites: Sites, nginx: NginxServer
) -> None:
    """nginx loads certificates per handshake, so ``nginx -t`` cannot refuse a broken pair any
    more: the agent checks each pair before writing it. In one batch, a served host renewed
    with a key of another certificate keeps its last good certificate and reports why, a new
    host with an RSA key nginx's OpenSSL refuses is not served, and a good new host is."""
    renewed = "brokenpair.example.com"
    manifests, chain = sites.tls_site("vhost-brokenpair", renewed)
    sites.apply(manifests)
    sites.wait_applied("vhost-brokenpair")
    key_before = (nginx.root / "certs" / renewed / "tls.key").read_bytes()

    new_chain, _ = self_signed_certificate([renewed])
    _, other_key = self_signed_certificate([renewed])
    weak = "weakkey.example.com"
    weak_chain, weak_key = self_signed_certificate([weak], rsa_bits=1024)
    weak_site = sites.configmap(
        "vhost-weakkey", weak, sites.config(weak, tls=True), tls_secret="vhost-weakkey-tls"
    )
    good = "goodpair.example.com"
    good_manifests, good_chain = sites.tls_site("vhost-goodpair", good)
    sites.apply(
        [
            sites.secret("vhost-brokenpair-tls", new_chain, other_key),
            sites.secret("vhost-weakkey-tls", weak_chain, weak_key),
            weak_site,
            *good_manifests,
        ]
    )
    sites.wait_applied("vhost-goodpair")
    assert https_request(nginx.https_port, good, good_chain) == (200, f"upstream for {good}\n")

    error = sites.wait_error("vhost-brokenpair")
    print(f"\napply-error (key of another certificate): {error}")
    assert "TLS Secret vhost-brokenpair-tls: tls.key does not belong to the certificate" in error
    assert serves_certificate(nginx, renewed, chain), "the last good certificate keeps serving"
    assert (nginx.root / "certs" / renewed / "tls.key").read_bytes() == key_before
    assert sites.annotations()["vhost-brokenpair"][labels.APPLIED_CERTIFICATE_SERIAL] == serial_of(
        chain
    )

    weak_error = sites.wait_error("vhost-weakkey")
    print(f"apply-error (RSA-1024): {weak_error}")
    assert "1024-bit RSA key" in weak_error
    assert not (nginx.root / "certs" / weak).exists()
    assert served_certificate(nginx.https_port, weak) is None
    sites.cluster.kubectl(
        "delete", "configmap", "-n", NAMESPACE, "vhost-brokenpair", "vhost-weakkey",
        "vhost-goodpair",
    )  # fmt: skip


def test_two_configmaps_for_one_hostname_serve_the_oldest_virtualhost(
    sites: Sites, nginx: NginxServer
) -> None:
    """Without the webhook two VirtualHosts may claim one hostname; the agent serves the
    oldest one's config (the operator's rule), whatever the ConfigMaps' names."""
    hostname = "contested.example.com"
    claims = {
        "vhost-aaa-younger": "2026-01-02T00:00:00Z",
        "vhost-zzz-older": "2026-01-01T00:00:00Z",
    }
    manifests = []
    for body_size, (name, created) in enumerate(claims.items(), start=60):
        manifest = sites.configmap(
            name, hostname, sites.config(hostname, tls=False, body_size=body_size)
        )
        manifest["metadata"]["annotations"][labels.VIRTUALHOST] = name.removeprefix("vhost-")
        manifest["metadata"]["annotations"][labels.VIRTUALHOST_CREATED] = created
        manifests.append(manifest)
    sites.apply(manifests)
    sites.wait_applied("vhost-zzz-older")
    error = sites.wait_error("vhost-aaa-younger")
    assert "already served from ConfigMap vhost-zzz-older" in error
    served = (nginx.root / "sites-available" / f"{hostname}.conf").read_text()
    assert "client_max_body_size 61m;" in served
    sites.cluster.kubectl("delete", "configmap", "-n", NAMESPACE, *claims)


def test_a_config_hijacking_another_host_is_refused_and_keys_stay_private(
    sites: Sites, nginx: NginxServer
) -> None:
    """The attack of issue 13: a site ConfigMap whose text names another host's server_name
    and serves the certificate directory. The agent applies only what the operator renders
    for the ConfigMap's own hostname; and the keys it writes can be read by nginx's workers,
    which load them per handshake, and by no other user."""
    victim = "victim.example.com"
    manifests, chain = sites.tls_site("vhost-victim", victim)
    sites.apply(manifests)
    sites.wait_applied("vhost-victim")

    certificates = nginx.root / "certs"
    hijack = sites.config("attacker.example.com", tls=False).replace(
        "server_name attacker.example.com;",
        f"server_name {victim};\n    location /k/ {{ alias {certificates}/{victim}/; }}",
    )
    sites.apply([sites.configmap("vhost-attacker", "attacker.example.com", hijack)])
    error = sites.wait_error("vhost-attacker")
    print(f"\napply-error (hijack): {error}")
    assert "is not one the operator renders for attacker.example.com" in error
    assert not (nginx.root / "sites-available" / "attacker.example.com.conf").exists()
    assert http_status(nginx.http_port, victim, "/k/tls.key") != 200
    assert serves_certificate(nginx, victim, chain)

    # The workers load the key per handshake: they run as its owner here (as in the chart, one
    # UID for nginx and the agent; see the agent's key_group otherwise), and nobody else can
    # read it.
    key = certificates / victim / "tls.key"
    master = int(nginx.pid_file.read_text())
    workers = [pid for pid in children(master) if b"worker process" in process_title(pid)]
    assert workers
    info = key.stat()
    assert stat.S_IMODE(info.st_mode) == 0o600
    for worker in workers:
        assert process_ids(worker)[0] == info.st_uid
    # What the agent checks after its first reload (and would log as an error otherwise).
    seen = NginxControl(nginx.binary, nginx.conf, nginx.pid_file).worker_credentials()
    assert {worker.uid for worker in seen} == {info.st_uid}
    assert key_access_problem(seen, owner=info.st_uid, key_group=None) is None
    nobody = subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "cat", str(key)],
        capture_output=True,
        check=False,
    )
    assert nobody.returncode != 0 and b"PRIVATE KEY" not in nobody.stdout
    sites.cluster.kubectl("delete", "configmap", "-n", NAMESPACE, "vhost-attacker", "vhost-victim")


def process_ids(pid: int) -> tuple[int, int]:
    """The real uid and gid of a process."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["Uid"].split()[0]), int(fields["Gid"].split()[0])


def process_title(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


# -- a burst ----------------------------------------------------------------------------------

BURST = 200


def test_two_hundred_sites_at_once_take_a_handful_of_reloads(
    sites: Sites, nginx: NginxServer, agent: AgentProcess
) -> None:
    names = [f"vhost-burst-{i}" for i in range(BURST)]
    hostnames = [f"burst-{i}.example.com" for i in range(BURST)]
    created: list[dict[str, Any]] = []
    chains = {}
    for name, hostname in zip(names, hostnames, strict=True):
        manifests, chains[hostname] = sites.tls_site(name, hostname)
        created += manifests

    reloads, started = agent.reloads(), time.monotonic()
    sites.apply(created)
    applied_after = time.monotonic() - started
    found = sites.wait_applied(*names, timeout=45)
    create_time, create_reloads = time.monotonic() - started, agent.reloads() - reloads
    for name, hostname in zip(names, hostnames, strict=True):
        assert found[name][labels.APPLIED_CERTIFICATE_SERIAL] == serial_of(chains[hostname])
    assert serves_certificate(nginx, hostnames[-1], chains[hostnames[-1]])

    # All 200 change at once (a new config each): the burst the brief is about.
    changed = [
        sites.configmap(
            name,
            hostname,
            sites.config(hostname, tls=True, body_size=100),
            tls_secret=f"{name}-tls",
        )
        for name, hostname in zip(names, hostnames, strict=True)
    ]
    reloads, started = agent.reloads(), time.monotonic()
    sites.apply(changed)
    changed_applied_after = time.monotonic() - started
    sites.wait_applied(*names, timeout=45)
    change_time, change_reloads = time.monotonic() - started, agent.reloads() - reloads
    print(
        f"\n{BURST} new TLS sites (kubectl apply took {applied_after:.1f}s): {create_reloads} "
        f"reloads, all applied annotations after {create_time:.1f}s"
        f"\n{BURST} sites changed at once (kubectl apply took {changed_applied_after:.1f}s): "
        f"{change_reloads} reloads, all applied annotations after {change_time:.1f}s"
    )
    assert 1 <= change_reloads <= 5
    assert 1 <= create_reloads <= 5
    assert (
        "client_max_body_size 100m"
        in (nginx.root / "sites-available" / f"{hostnames[0]}.conf").read_text()
    )


# -- restarts ---------------------------------------------------------------------------------


def test_restart_rewrites_nothing_and_recovers_a_broken_disk(
    sites: Sites, nginx: NginxServer, agent: AgentProcess
) -> None:
    listed_manifests, listed_chain = sites.tls_site("vhost-keep-listed", "keep-listed.example.com")
    sites.apply([sites.http_site("vhost-keep", "keep.example.com"), *listed_manifests])
    sites.wait_applied("vhost-keep", "vhost-keep-listed")
    agent.stop()

    # What an agent killed between writing a batch and rolling it back leaves behind: an
    # untested config on disk that nginx refuses, enabled (here a hand-made one, held as it is,
    # since the agent applies none such).
    hostname = "crashed.example.com"
    config = (
        f"server {{\n    listen {nginx.http_port};\n    server_name {hostname};\n"
        "    retrun 200;\n}\n"
    )
    sites.apply([sites.configmap("vhost-crashed", hostname, config)])
    (nginx.root / "sites-available" / f"{hostname}.conf").write_text(config)
    (nginx.root / "sites-enabled" / f"{hostname}.conf").symlink_to(
        f"../sites-available/{hostname}.conf"
    )

    agent.start()  # ready: nginx -t passed and nginx reloaded
    assert "is not one the operator renders" in sites.wait_error("vhost-crashed")
    metrics = agent.metrics()
    assert metrics["vhost_agent_hosts_changed_total"] == 0, "everything else was in place"
    assert metrics["vhost_agent_reloads_total"] == 1
    assert not (nginx.root / "sites-enabled" / f"{hostname}.conf").exists(), "unlinked"
    assert (nginx.root / "sites-available" / f"{hostname}.conf").exists()
    assert http_request(nginx.http_port, "keep.example.com")[0] == 200
    # The quarantine took the shared HTTPS servers away too (one nginx refuses would break even
    # no site); the batch after it tested them and put them back, their sites listed as before.
    assert "took the shared HTTPS servers away" in agent.log()
    assert https_listings(nginx.root, "keep-listed.example.com")
    assert serves_certificate(nginx, "keep-listed.example.com", listed_chain)
