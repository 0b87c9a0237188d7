"""The nginx agent's pure layers: objects → desired sites, sites vs. disk → operations, reports,
and the isolation of rejected hosts (with an in-memory stand-in for disk + ``nginx -t``; the
real thing is tests/integration/test_nginx_agent.py). Plus the file primitives on a temp dir."""

from __future__ import annotations

import asyncio
import base64
import stat
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from tests.harness.nginx import UNUSED_CHALLENGE_UPSTREAM as CHALLENGE
from tests.harness.nginx import nginx_check, self_signed_certificate
from vhost_operator.agent import desired, files, state
from vhost_operator.agent.apply import (
    BaselineRejected,
    Undo,
    apply_batch,
    isolate_reload,
    named_host,
    quarantine,
)
from vhost_operator.agent.desired import (
    SharedHttp,
    Site,
    relevant_configmap,
    slim_configmap,
    slim_secret,
)
from vhost_operator.agent.metrics import AgentStats
from vhost_operator.agent.nginx import nginx_complaint
from vhost_operator.agent.plan import (
    Change,
    Credentials,
    DiskState,
    Entry,
    PlanInputs,
    Remove,
    Symlink,
    WriteFile,
    apply_error,
    disk_state,
    enablings,
    format_entries,
    key_access_problem,
    link_target,
    parse_entries,
    plan,
    report,
    report_patch,
    stale_reports,
)
from vhost_operator.agent.state import DesiredState, DesiredStates
from vhost_operator.agent.state import desired_state as agent_desired_state
from vhost_operator.certs import Certificate, inspect_certificate
from vhost_operator.nginx import (
    FinalLayout,
    SiteConfig,
    config_hash,
    render_final,
    shared_http_names,
)
from vhost_operator.resources import labels

CERTIFICATES = "/etc/nginx/vhost-operator/certs"
CONFIG = render_final(
    SiteConfig(hostname="a.example.com", challenge_upstream="op:8089", upstream="http://app:8000")
)


def by_name(*configmaps: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {configmap["metadata"]["name"]: configmap for configmap in configmaps}


def desired_state(configmaps: list[dict[str, Any]], secrets: dict[str, Any]) -> DesiredState:
    return agent_desired_state(configmaps, secrets, certificate_dir=CERTIFICATES)


def _tls_site(hostname: str = "a.example.com", **fields: Any) -> SiteConfig:
    """``hostname``'s TLS site, its certificate where the agent writes it."""
    directory = f"{CERTIFICATES}/{hostname}"
    return SiteConfig(
        hostname=hostname,
        challenge_upstream="op:8089",
        upstream="http://app:8000",
        certificate_path=f"{directory}/tls.crt",
        key_path=f"{directory}/tls.key",
        **fields,
    )


def _tls_config(https_port: int = 443, layout: FinalLayout = FinalLayout.TLS_ONLY) -> str:
    """a.example.com's final TLS config, its certificate where the agent writes it."""
    return render_final(_tls_site(https_port=https_port), layout=layout)


def configmap(
    name: str = "vhost-a",
    hostname: str | None = "a.example.com",
    config: str | None = CONFIG,
    **annotations: str,
) -> dict[str, Any]:
    metadata_annotations = {labels.HOSTNAME: hostname} if hostname is not None else {}
    metadata_annotations.update({getattr(labels, key.upper()): v for key, v in annotations.items()})
    data = {f"{hostname}.conf": config} if config is not None else {}
    return {"metadata": {"name": name, "annotations": metadata_annotations}, "data": data}


def tls_secret(name: str, chain: bytes, key: bytes) -> dict[str, Any]:
    encoded = {
        "tls.crt": base64.b64encode(chain).decode(),
        "tls.key": base64.b64encode(key).decode(),
    }
    return {"metadata": {"name": name}, "data": encoded}


@pytest.fixture(scope="module")
def pair() -> tuple[bytes, bytes]:
    return self_signed_certificate(["a.example.com"])


def site(
    hostname: str = "a.example.com",
    config: str = CONFIG,
    *,
    enabled: bool = True,
    certificate: Certificate | None = None,
) -> Site:
    return Site(f"vhost-{hostname}", hostname, config, enabled, certificate)


def on_disk(
    configs: dict[str, bytes] | None = None,
    links: dict[str, str | None] | None = None,
    certificates: dict[str, dict[str, bytes]] | None = None,
) -> DiskState:
    """The :class:`DiskState` of files with these contents."""
    return disk_state((configs or {}).items(), (links or {}).items(), (certificates or {}).items())


# -- desired state ---------------------------------------------------------------------------


def test_a_configmap_with_its_secret_becomes_a_site(pair: tuple[bytes, bytes]) -> None:
    chain, key = pair
    desired = desired_state(
        [configmap(tls_secret="vhost-a-tls", enabled="false")],
        {"vhost-a-tls": tls_secret("vhost-a-tls", chain, key)},
    )
    [request] = desired.requests
    assert request.problem is None and request.config_hash == config_hash(CONFIG)
    assert desired.sites["a.example.com"] == Site(
        "vhost-a",
        "a.example.com",
        CONFIG,
        False,
        Certificate(chain, key, inspect_certificate(chain).serial, ("a.example.com",)),
    )
    assert not desired.held


@pytest.mark.parametrize(
    ("cm", "problem"),
    [
        (configmap(hostname=None), "annotation vhost-operator.io/hostname is missing"),
        (configmap(hostname="A.example.com"), "must be lowercase"),
        (configmap(hostname="../../etc/passwd"), "is not a valid hostname"),
        (configmap(hostname="a.example.com\n"), "is not a valid hostname"),
        (configmap(config=None), "no data key a.example.com.conf"),
        (configmap(enabled="yes"), "must be 'true' or 'false'"),
    ],
)
def test_configmaps_that_cannot_be_applied_say_why(cm: dict[str, Any], problem: str) -> None:
    [request] = desired_state([cm], {}).requests
    assert request.site is None
    assert request.problem is not None and problem in request.problem


def test_a_tls_config_without_a_secret_is_refused() -> None:
    """``nginx -t`` accepts it (certificates load per handshake); every handshake would fail."""
    tls = _tls_config()
    desired = desired_state([configmap(config=tls)], {})
    [request] = desired.requests
    assert request.site is None and desired.held == {"a.example.com"}
    assert request.problem is not None and "names no TLS Secret" in request.problem


def test_a_tls_config_on_another_port_than_the_agents_names_both_settings(
    pair: tuple[bytes, bytes],
) -> None:
    """nginx -t would refuse every such site with "no ssl_certificate is defined": the agent's
    default TLS server (the shared context) listens on its own HTTPS port only."""
    chain, key = pair
    tls = _tls_config(https_port=8443)
    configmaps = [configmap(config=tls, tls_secret="vhost-a-tls"), configmap("vhost-b", "b.x.org")]
    configmaps[1]["data"] = {"b.x.org.conf": CONFIG.replace("a.example.com", "b.x.org")}
    secrets = {"vhost-a-tls": tls_secret("vhost-a-tls", chain, key)}
    desired = agent_desired_state(configmaps, secrets, certificate_dir=CERTIFICATES, https_port=443)
    refused, plain = desired.requests
    assert refused.site is None and desired.held == {"a.example.com"}
    assert refused.problem == (
        "the config serves HTTPS on port 8443, but this agent's VHOST_AGENT_HTTPS_PORT is 443 "
        "(nginx's default TLS server, the one TLS context every site shares, listens there): "
        "nginx would refuse it. The operator's VHOST_OPERATOR_NGINX_HTTPS_PORT and the agent's "
        "VHOST_AGENT_HTTPS_PORT must be the same port"
    )
    assert plain.problem is None and "b.x.org" in desired.sites  # no HTTPS: any port
    same = agent_desired_state(configmaps, secrets, certificate_dir=CERTIFICATES, https_port=8443)
    assert same.requests[0].problem is None


def test_only_a_tls_config_of_this_release_is_listed_in_the_shared_http_server(
    pair: tuple[bytes, bytes],
) -> None:
    """Its plain HTTP is the agent's shared server, which must list its names; every other
    config has a port-80 server of its own, and a name in both would be nginx's "conflicting
    server name" (the first one wins, the other is ignored)."""
    chain, key = pair
    secrets = {"vhost-a-tls": tls_secret("vhost-a-tls", chain, key)}
    names = {}
    for layout in FinalLayout:
        tls = configmap(config=_tls_config(layout=layout), tls_secret="vhost-a-tls")
        site = desired_state([tls], secrets).sites["a.example.com"]
        names[layout] = site.http_names
    assert names == {
        layout: "server_name a.example.com;\n" if layout is FinalLayout.TLS_ONLY else None
        for layout in FinalLayout
    }
    assert desired_state([configmap()], {}).sites["a.example.com"].http_names is None


def test_a_tls_config_for_another_http_port_than_the_agents_names_both_settings(
    pair: tuple[bytes, bytes],
) -> None:
    """The operator checks port 80 of the config's port; the agent's shared server would
    answer on its own."""
    chain, key = pair
    configmaps = [configmap(config=_tls_config(), tls_secret="vhost-a-tls")]
    secrets = {"vhost-a-tls": tls_secret("vhost-a-tls", chain, key)}

    def state(http_port: int) -> DesiredState:
        return agent_desired_state(
            configmaps, secrets, certificate_dir=CERTIFICATES, shared_http=SharedHttp(http_port)
        )

    [refused] = state(8080).requests
    assert refused.site is None and refused.problem == (
        "the config expects plain HTTP on port 80, but this agent's VHOST_AGENT_HTTP_PORT is "
        "8080 (its shared plain HTTP server, which answers the TLS sites' challenges and "
        "redirects, listens there). The operator's VHOST_OPERATOR_NGINX_HTTP_PORT and the "
        "agent's VHOST_AGENT_HTTP_PORT must be the same port"
    )
    assert state(80).requests[0].problem is None
    previous = [
        configmap(config=_tls_config(layout=FinalLayout.ONE_SERVER), tls_secret="vhost-a-tls")
    ]
    kept = agent_desired_state(
        previous, secrets, certificate_dir=CERTIFICATES, shared_http=SharedHttp(8080)
    )
    assert kept.requests[0].problem is None, "a port-80 server of its own: any port"


def test_a_missing_secret_holds_the_host_instead_of_removing_it() -> None:
    desired = desired_state([configmap(tls_secret="vhost-a-tls")], {})
    [request] = desired.requests
    assert request.waiting_for_secret
    assert request.problem is not None and "vhost-operator.io/component=tls" in request.problem
    assert desired.held == {"a.example.com"}
    assert plan(desired.sites, on_disk(configs={"a.example.com": b"old"}), keep=desired.held) == []


def test_a_secret_whose_key_does_not_match_is_refused(pair: tuple[bytes, bytes]) -> None:
    chain, _ = pair
    _, other_key = self_signed_certificate(["a.example.com"])
    secrets = {"s": tls_secret("s", chain, other_key)}
    [request] = desired_state([configmap(tls_secret="s")], secrets).requests
    assert request.problem == "TLS Secret s: tls.key does not belong to the certificate"
    assert not request.waiting_for_secret


def _broken_pairs() -> dict[str, tuple[bytes, bytes, str]]:
    """Pairs nginx would not load, by what is wrong: (chain, key, the agent's complaint)."""
    chain, key = self_signed_certificate(["a.example.com"])
    _, other_key = self_signed_certificate(["a.example.com"])
    weak_chain, weak_key = self_signed_certificate(["a.example.com"], rsa_bits=1024)
    return {
        "empty-certificate": (b"", key, "tls.crt is not a PEM certificate chain"),
        "empty-key": (chain, b"", "tls.key: not an unencrypted PEM private key"),
        "garbage-key": (chain, b"-----BEGIN PRIVATE KEY-----\nAAAA\n", "tls.key: not an"),
        "key-of-another-certificate": (chain, other_key, "tls.key does not belong"),
        "rsa-1024": (weak_chain, weak_key, "1024-bit RSA key (at least 2048 needed)"),
    }


@pytest.mark.parametrize("broken", sorted(_broken_pairs()))
def test_a_pair_nginx_would_not_load_is_refused_before_it_is_written(
    broken: str, tmp_path: Path
) -> None:
    """nginx loads certificates per handshake, so ``nginx -t`` no longer catches a broken pair:
    the agent refuses it for its host (whose files stay as they are), saying why. Each case is
    one ``nginx -t`` refused in the layout that loaded certificates at reload."""
    chain, key, complaint = _broken_pairs()[broken]
    secrets = {"s": tls_secret("s", chain, key)}
    desired = desired_state([configmap(tls_secret="s")], secrets)
    [request] = desired.requests
    assert request.site is None and request.problem is not None
    assert request.problem.startswith("TLS Secret s: ") and complaint in request.problem
    assert desired.held == {"a.example.com"}, "its last good files stay"

    directory = tmp_path.resolve() / "tls"
    static = SiteConfig(
        hostname="a.example.com",
        challenge_upstream="127.0.0.1:8089",
        upstream="http://127.0.0.1:8000",
        http_port=8080,
        https_port=8443,
        certificate_path=f"{directory}/tls.crt",
        key_path=f"{directory}/tls.key",
    )
    files = {"tls/tls.crt": chain, "tls/tls.key": key}
    checked = nginx_check(
        [render_final(static, layout=FinalLayout.AT_RELOAD)], tmp_dir=tmp_path, extra_files=files
    )
    assert checked.returncode != 0, f"nginx loads {broken}: the agent need not refuse it"


def test_the_first_configmap_by_name_keeps_a_contested_hostname() -> None:
    desired = desired_state([configmap("vhost-b"), configmap("vhost-a")], {})
    first, second = desired.requests
    assert (first.configmap, first.problem) == ("vhost-a", None)
    assert second.problem == "hostname a.example.com is already served from ConfigMap vhost-a"
    assert second.hostname is None, "it owns no files, so it reports none as applied"
    assert desired.sites["a.example.com"].configmap == "vhost-a"


def test_the_agent_keeps_only_what_it_reads_of_each_object(pair: tuple[bytes, bytes]) -> None:
    chain, key = pair
    managed = {"managedFields": [{"manager": "vhost-operator", "fieldsV1": {"f:data": {}}}]}
    cm = configmap(tls_secret="a-tls")
    cm["metadata"] |= {"labels": {labels.COMPONENT: labels.SITE_COMPONENT}, **managed}
    secret = tls_secret("a-tls", chain, key)
    secret["metadata"] |= managed
    secret["data"]["ca.crt"] = secret["data"]["tls.crt"]
    slim_cm, slim_tls = slim_configmap(cm), slim_secret(secret)
    assert (
        "managedFields" not in slim_cm["metadata"] and "managedFields" not in slim_tls["metadata"]
    )
    assert list(slim_tls["data"]) == ["tls.crt", "tls.key"]
    assert desired_state([slim_cm], {"a-tls": slim_tls}) == desired_state([cm], {"a-tls": secret})
    assert relevant_configmap(slim_cm) == relevant_configmap(cm)


def test_the_agents_own_annotations_are_not_a_change() -> None:
    before = configmap()
    after = configmap(applied_config_hash="abc", apply_error="x: y")
    assert relevant_configmap(before) == relevant_configmap(after)
    assert relevant_configmap(before) != relevant_configmap(configmap(enabled="false"))


def test_an_unchanged_configmap_is_not_read_again(
    pair: tuple[bytes, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every batch goes through every ConfigMap: one whose object is the one seen before costs
    a look-up of its Secret, not a reading of its annotations, and its request stays."""
    configmaps = by_name(configmap(tls_secret="tls-a"), configmap("vhost-b", "b.example.com"))
    secrets = {"tls-a": tls_secret("tls-a", *pair)}
    states = DesiredStates(CERTIFICATES)
    first = states(configmaps, secrets)
    read: list[str] = []
    original = state._secret_name

    def secret_name(configmap: desired.Object) -> str | None:
        read.append(configmap["metadata"]["name"])
        return original(configmap)

    monkeypatch.setattr(state, "_secret_name", secret_name)
    again = states(configmaps, secrets)
    assert read == []
    assert again.requests == first.requests
    assert all(new is old for new, old in zip(again.requests, first.requests, strict=True))
    renewed = {"tls-a": tls_secret("tls-a", *self_signed_certificate(["a.example.com"]))}
    site = states(configmaps, renewed).sites["a.example.com"]
    assert read == []
    assert site.certificate is not None
    assert site.certificate.chain_pem != pair[0], "a new Secret object is looked up all the same"


# -- planning --------------------------------------------------------------------------------

AVAILABLE = PurePosixPath("sites-available/a.example.com.conf")
ENABLED = PurePosixPath("sites-enabled/a.example.com.conf")
LINK = "../sites-available/a.example.com.conf"
CERTS = PurePosixPath("certs/a.example.com")


def test_a_new_site_is_written_certificate_first_then_config_then_link(
    pair: tuple[bytes, bytes],
) -> None:
    chain, key = pair
    new = site(certificate=Certificate(chain, key, "1"))
    [change] = plan({"a.example.com": new}, DiskState())
    assert change.hostname == "a.example.com" and change.fingerprint == new.fingerprint
    assert change.operations == (
        WriteFile(CERTS / "tls.crt", chain),
        WriteFile(CERTS / "tls.key", key, private=True),
        WriteFile(AVAILABLE, CONFIG.encode()),
        Symlink(ENABLED, LINK),
    )


def test_a_site_already_on_disk_needs_nothing(pair: tuple[bytes, bytes]) -> None:
    chain, key = pair
    disk = on_disk(
        configs={"a.example.com": CONFIG.encode()},
        links={"a.example.com": LINK},
        certificates={"a.example.com": {"tls.crt": chain, "tls.key": key}},
    )
    assert plan({"a.example.com": site(certificate=Certificate(chain, key, "1"))}, disk) == []


def test_only_what_differs_is_written(pair: tuple[bytes, bytes]) -> None:
    chain, key = pair
    renewed, _ = self_signed_certificate(["a.example.com"])
    disk = on_disk(
        configs={"a.example.com": CONFIG.encode()},
        links={"a.example.com": "elsewhere.conf"},
        certificates={"a.example.com": {"tls.crt": chain, "tls.key": key}},
    )
    [change] = plan({"a.example.com": site(certificate=Certificate(renewed, key, "2"))}, disk)
    assert change.operations == (WriteFile(CERTS / "tls.crt", renewed), Symlink(ENABLED, LINK))


def test_disabling_drops_only_the_link_and_enabling_puts_it_back() -> None:
    enabled = on_disk(configs={"a.example.com": CONFIG.encode()}, links={"a.example.com": LINK})
    [disable] = plan({"a.example.com": site(enabled=False)}, enabled)
    assert disable.operations == (Remove(ENABLED),)
    disabled = on_disk(configs={"a.example.com": CONFIG.encode()})
    [enable] = plan({"a.example.com": site()}, disabled)
    assert enable.operations == (Symlink(ENABLED, LINK),)
    [new_disabled] = plan({"a.example.com": site(enabled=False)}, DiskState())
    assert new_disabled.operations == (WriteFile(AVAILABLE, CONFIG.encode()),)


def test_a_site_back_to_http_only_loses_its_certificate_files() -> None:
    disk = on_disk(
        configs={"a.example.com": CONFIG.encode()},
        links={"a.example.com": LINK},
        certificates={"a.example.com": {"tls.crt": b"x", "tls.key": b"y"}},
    )
    [change] = plan({"a.example.com": site()}, disk)
    assert change.operations == (Remove(CERTS),)


def test_hosts_without_a_configmap_are_removed_link_first_unless_kept() -> None:
    disk = on_disk(
        configs={"a.example.com": b"x", "b.example.com": b"y"},
        links={"a.example.com": LINK},
        certificates={"a.example.com": {"tls.crt": b"x"}},
    )
    [change] = plan({}, disk, keep={"b.example.com"})
    assert change == Change(
        "a.example.com", (Remove(ENABLED), Remove(AVAILABLE), Remove(CERTS)), None
    )


NAMES = PurePosixPath("http-names.conf")


def listing(hostname: str = "a.example.com", names: str | None = None) -> Entry:
    """``hostname``'s entry in the shared plain HTTP server's names (``None``: none)."""
    return Entry(NAMES, hostname, names)


def tls_site(
    hostname: str = "a.example.com",
    layout: FinalLayout = FinalLayout.TLS_ONLY,
    *,
    enabled: bool = True,
    additional_names: tuple[str, ...] = (),
) -> Site:
    config = _tls_site(hostname, additional_names=additional_names)
    listed = shared_http_names(config) if layout is FinalLayout.TLS_ONLY else None
    return Site(
        f"vhost-{hostname}",
        hostname,
        render_final(config, layout=layout),
        enabled,
        Certificate(b"chain", b"key", "1"),
        listed,
    )


def disk_of(*sites: Site) -> DiskState:
    """What the disk holds once ``sites`` are applied."""
    return disk_state(
        ((site.hostname, site.config.encode()) for site in sites),
        ((site.hostname, link_target(site.hostname)) for site in sites if site.enabled),
        ((site.hostname, {"tls.crt": b"chain", "tls.key": b"key"}) for site in sites),
        (
            (site.hostname, site.http_names)
            for site in sites
            if site.http_names is not None and site.enabled
        ),
    )


def test_a_tls_site_of_this_release_is_listed_after_its_link_and_unlisted_before() -> None:
    """Port 80 never redirects to an HTTPS server that is not enabled (yet, or any more)."""
    new = tls_site()
    [add] = plan({"a.example.com": new}, DiskState())
    assert add.operations[-2:] == (
        Symlink(ENABLED, LINK),
        listing(names="server_name a.example.com;\n"),
    )
    assert plan({"a.example.com": new}, disk_of(new)) == []
    [disable] = plan({"a.example.com": tls_site(enabled=False)}, disk_of(new))
    assert disable.operations == (listing(), Remove(ENABLED))
    [enable] = plan({"a.example.com": new}, disk_of(tls_site(enabled=False)))
    assert enable.operations == (
        Symlink(ENABLED, LINK),
        listing(names="server_name a.example.com;\n"),
    )
    [leave] = plan({}, disk_of(new))
    assert leave.operations == (listing(), Remove(ENABLED), Remove(AVAILABLE), Remove(CERTS))


def test_a_host_changing_layout_is_listed_or_unlisted_with_its_config() -> None:
    """In at most one port-80 server: the shared one (this release's TLS config) or its own."""
    new, previous = tls_site(), tls_site(layout=FinalLayout.ONE_SERVER)
    [downgrade] = plan({"a.example.com": previous}, disk_of(new))
    assert downgrade.operations == (listing(), WriteFile(AVAILABLE, previous.config.encode()))
    [upgrade] = plan({"a.example.com": new}, disk_of(previous))
    assert upgrade.operations == (
        WriteFile(AVAILABLE, new.config.encode()),
        listing(names="server_name a.example.com;\n"),
    )


def test_names_entries_change_only_for_the_hosts_that_changed() -> None:
    """A batch's cost follows what changed: one host's new name changes its entry alone."""
    sites = {f"h{index}.example.com": tls_site(f"h{index}.example.com") for index in range(50)}
    disk = disk_of(*sites.values())
    assert plan(sites, disk) == []
    changed = tls_site("h7.example.com", additional_names=("www.h7.example.com",))
    [change] = plan(sites | {"h7.example.com": changed}, disk)
    assert change.hostname == "h7.example.com"
    names = "server_name h7.example.com www.h7.example.com;\n"
    assert listing("h7.example.com", names) in change.operations
    [gone] = plan({h: s for h, s in sites.items() if h != "h3.example.com"}, disk)
    assert listing("h3.example.com") in gone.operations


def test_the_next_plan_looks_only_at_hosts_whose_inputs_changed() -> None:
    """A host's changes depend on its site, its files and whether it is kept: after a plan,
    the next one need not look at the thousands of hosts none of these changed for."""
    sites = {f"h{index}.example.com": tls_site(f"h{index}.example.com") for index in range(50)}
    planned = PlanInputs(sites, frozenset({"h1.example.com"}), frozenset({"h2.example.com"}))
    assert planned.hosts_to_plan(dict(sites), planned.keep, set()) == {"h2.example.com"}
    changed = sites | {"h7.example.com": tls_site("h7.example.com", enabled=False)}
    del changed["h3.example.com"]
    hosts = planned.hosts_to_plan(changed, frozenset({"h4.example.com"}), {"h5.example.com"})
    assert hosts == {f"h{index}.example.com" for index in (1, 2, 3, 4, 5, 7)}
    # What it leaves out is what a plan of every host finds nothing to do for.
    disk = disk_of(*sites.values())
    everything = plan(changed, disk, keep={"h4.example.com"})
    assert plan(changed, disk, keep={"h4.example.com"}, hostnames=hosts) == everything
    assert {change.hostname for change in everything} == {"h3.example.com", "h7.example.com"}


def test_names_entries_are_read_back_and_a_stray_one_is_removed(tmp_path: Path) -> None:
    (tmp_path / "http-names").mkdir()  # an earlier release's files, one per site
    (tmp_path / "http-names" / "a.example.com.conf").write_text("server_name a.example.com;\n")
    files.prepare(tmp_path, 8443, http_port=8080, challenge_upstream=CHALLENGE)
    assert not (tmp_path / "http-names").exists(), "listed again as entries by the first batch"
    new = tls_site()
    [change] = plan({"a.example.com": new}, DiskState())
    files.apply_operations(tmp_path, change.operations)
    entries = parse_entries((tmp_path / NAMES).read_text())
    assert entries == {"a.example.com": "server_name a.example.com;\n"}
    assert files.read_disk(tmp_path) == disk_of(new)
    assert files.read_hosts(tmp_path, ["a.example.com"]) == disk_of(new)
    # After a batch the agent reads back the hosts it touched only, names files included.
    other = tls_site("b.example.com")
    fresh = files.read_hosts(tmp_path, ["a.example.com"])
    assert disk_of(other).updated(fresh, {"a.example.com"}) == disk_of(other, new)
    assert disk_of(other, new).updated(DiskState(), {"a.example.com"}) == disk_of(other)
    entries["stray.example.com"] = "server_name x;\n"
    (tmp_path / NAMES).write_text(format_entries(entries))
    [stray] = plan({"a.example.com": new}, files.read_disk(tmp_path))
    assert stray == Change("stray.example.com", (listing("stray.example.com"),), None)


# -- reports ---------------------------------------------------------------------------------


def test_the_report_reads_what_is_on_disk(pair: tuple[bytes, bytes]) -> None:
    chain, key = pair
    [request] = desired_state([configmap()], {}).requests
    disk = on_disk(
        configs={"a.example.com": b"older config"},
        certificates={"a.example.com": {"tls.crt": chain, "tls.key": key}},
    )
    assert report(request, disk, "[emerg] broken") == {
        labels.APPLIED_CONFIG_HASH: config_hash("older config"),
        labels.APPLIED_CERTIFICATE_SERIAL: inspect_certificate(chain).serial,
        labels.APPLY_ERROR: f"{config_hash(CONFIG)}: [emerg] broken",
    }
    assert report(request, DiskState(), None) == {
        labels.APPLIED_CONFIG_HASH: None,
        labels.APPLIED_CERTIFICATE_SERIAL: None,
        labels.APPLY_ERROR: None,
    }


def test_long_errors_are_cut_and_patches_carry_only_differences() -> None:
    assert len(apply_error("abc", "x" * 5000)) == 1024
    current = {labels.APPLIED_CONFIG_HASH: "h", labels.APPLY_ERROR: "old"}
    wanted: dict[str, str | None] = {
        labels.APPLIED_CONFIG_HASH: "h",
        labels.APPLIED_CERTIFICATE_SERIAL: None,
        labels.APPLY_ERROR: None,
    }
    assert report_patch(current, wanted) == {labels.APPLY_ERROR: None}


def test_nginx_complaints_read_the_same_each_time() -> None:
    output = (
        '2026/11/25 15:12:15 [warn] 99#99: the "user" directive makes sense only as root\n'
        '2026/11/25 15:12:15 [emerg] 24841#24841: unknown directive "x" in /r/a.conf:1\n'
        "nginx: configuration file /r/nginx.conf test failed\n"
    )
    assert nginx_complaint(output) == '[emerg] unknown directive "x" in /r/a.conf:1'
    assert nginx_complaint("odd\noutput") == "odd output"


# -- isolating rejected hosts ------------------------------------------------------------------


class FakeWorkspace:
    """Disk and ``nginx -t`` in memory: nginx refuses the hosts in ``bad`` unless unlinked."""

    def __init__(self, bad: set[str], *, named: bool = True, broken_baseline: bool = False) -> None:
        self.bad = bad
        self.named = named
        self.broken_baseline = broken_baseline
        self.applied: dict[str, Change] = {}
        self.tests = 0

    async def apply(self, changes: Sequence[Change]) -> Undo:
        before = dict(self.applied)
        self.applied.update({change.hostname: change for change in changes})

        async def undo() -> None:
            self.applied = before

        return undo

    async def test(self) -> str | None:
        self.tests += 1
        if self.broken_baseline:
            return "[emerg] the main config is broken"
        broken = sorted(
            hostname
            for hostname, change in self.applied.items()
            if hostname in self.bad
            and not all(isinstance(operation, Remove) for operation in change.operations)
        )
        if not broken:
            return None
        if self.named:
            return f'[emerg] unknown directive "x" in /r/sites-enabled/{broken[0]}.conf:3'
        return "[emerg] duplicate something"


def changes(count: int) -> list[Change]:
    return [
        Change(f"h{i}.example.com", (Symlink(PurePosixPath(f"sites-enabled/h{i}"), "t"),), "f")
        for i in range(count)
    ]


def test_a_good_batch_costs_one_test() -> None:
    workspace = FakeWorkspace(set())
    outcome = asyncio.run(apply_batch(changes(200), workspace))
    assert len(outcome.accepted) == 200 and not outcome.rejected
    assert outcome.tests == workspace.tests == 1


def test_a_host_named_by_nginx_is_isolated_in_a_few_tests() -> None:
    workspace = FakeWorkspace({"h57.example.com"})
    outcome = asyncio.run(apply_batch(changes(200), workspace))
    assert set(outcome.rejected) == {"h57.example.com"}
    assert "h57.example.com.conf:3" in outcome.rejected["h57.example.com"]
    assert len(outcome.accepted) == 199 and "h57.example.com" not in workspace.applied
    assert workspace.tests == 3, "the batch, the baseline, the batch without the named host"


def test_unnamed_culprits_are_found_by_halving() -> None:
    bad = {"h3.example.com", "h150.example.com"}
    workspace = FakeWorkspace(bad, named=False)
    outcome = asyncio.run(apply_batch(changes(200), workspace))
    assert set(outcome.rejected) == bad
    assert len(outcome.accepted) == 198
    assert set(workspace.applied) == {f"h{i}.example.com" for i in range(200)} - bad
    assert workspace.tests <= 2 + 2 * 2 * 8, "about 2·log2(n) tests per bad host"


def test_several_named_culprits() -> None:
    bad = {"h1.example.com", "h2.example.com", "h9.example.com"}
    outcome = asyncio.run(apply_batch(changes(10), FakeWorkspace(bad)))
    assert set(outcome.rejected) == bad and len(outcome.accepted) == 7


def test_a_broken_baseline_blames_no_host() -> None:
    workspace = FakeWorkspace(set(), broken_baseline=True)
    with pytest.raises(BaselineRejected, match="main config is broken"):
        asyncio.run(apply_batch(changes(3), workspace))
    assert workspace.applied == {}, "rolled back"


def test_a_batch_nginx_cannot_load_is_isolated_with_reloads() -> None:
    workspace = FakeWorkspace(set(), named=False)
    outcome = asyncio.run(apply_batch(changes(8), workspace))
    assert len(outcome.accepted) == 8 and workspace.tests == 1
    # nginx -t accepted all 8, but the reload (the reloading workspace's test) fails on h5.
    workspace.bad = {"h5.example.com"}
    isolated = asyncio.run(isolate_reload(outcome, workspace))
    assert set(isolated.rejected) == {"h5.example.com"}
    assert len(isolated.accepted) == 7
    assert set(workspace.applied) == {f"h{i}.example.com" for i in range(8)} - {"h5.example.com"}


def test_a_reload_that_fails_even_for_the_last_good_state_blames_no_host() -> None:
    workspace = FakeWorkspace(set())
    outcome = asyncio.run(apply_batch(changes(3), workspace))
    workspace.broken_baseline = True  # nginx is down: no reload works
    with pytest.raises(BaselineRejected):
        asyncio.run(isolate_reload(outcome, workspace))
    assert workspace.applied == {}, "back to the last good state"


def test_quarantine_unlinks_only_the_sites_that_break_nginx() -> None:
    workspace = FakeWorkspace({"b.example.com"})
    linked = (Symlink(PurePosixPath("sites-enabled/x.conf"), "../x"),)
    workspace.applied = {h: Change(h, linked, None) for h in ("a.example.com", "b.example.com")}
    disk = on_disk(links={"a.example.com": "../a", "b.example.com": "../b"})
    outcome = asyncio.run(quarantine(enablings(disk, {}), workspace))
    assert set(outcome.rejected) == {"b.example.com"}
    assert workspace.applied["b.example.com"].operations == (
        Remove(PurePosixPath("sites-enabled/b.example.com.conf")),
    )
    assert workspace.applied["a.example.com"].operations[0] == Symlink(
        PurePosixPath("sites-enabled/a.example.com.conf"), "../a"
    )


def test_named_host_reads_config_and_certificate_paths() -> None:
    group = changes(3)
    message = 'cannot load certificate "/x/certs/h2.example.com/tls.crt": BIO_new_file() failed'
    assert named_host(message, group) == group[2]
    assert named_host("in /x/sites-available/h1.example.com.conf:2", group) == group[1]
    assert named_host("in /x/sites-enabled/other.example.com.conf:2", group) is None


# -- files -----------------------------------------------------------------------------------


def test_files_are_written_with_their_modes_and_undone(
    tmp_path: Path, pair: tuple[bytes, bytes]
) -> None:
    chain, key = pair
    files.prepare(tmp_path, 8443, http_port=8080, challenge_upstream=CHALLENGE)
    (tmp_path / "sites-available" / ".tmp-left-by-a-crash").write_text("x")
    files.prepare(tmp_path, 8443, http_port=8080, challenge_upstream=CHALLENGE)
    assert not (tmp_path / "sites-available" / ".tmp-left-by-a-crash").exists()
    [change] = plan({"a.example.com": site(certificate=Certificate(chain, key, "1"))}, DiskState())
    undo = files.apply_operations(tmp_path, change.operations)

    assert files.read_disk(tmp_path) == on_disk(
        configs={"a.example.com": CONFIG.encode()},
        links={"a.example.com": LINK},
        certificates={"a.example.com": {"tls.crt": chain, "tls.key": key}},
    )

    def mode(path: PurePosixPath) -> int:
        return stat.S_IMODE((tmp_path / path).stat().st_mode)

    assert mode(CERTS / "tls.key") == 0o600
    assert mode(CERTS / "tls.crt") == mode(AVAILABLE) == 0o644
    assert mode(CERTS) == 0o755
    assert (tmp_path / ENABLED).read_text() == CONFIG, "the relative link resolves"

    undo.restore()
    assert files.read_disk(tmp_path) == DiskState()
    assert not (tmp_path / CERTS).exists(), "the directory the change created is gone too"


def test_undo_puts_back_replaced_and_removed_files(tmp_path: Path) -> None:
    files.prepare(tmp_path, 8443, http_port=8080, challenge_upstream=CHALLENGE)
    first = plan({"a.example.com": site()}, DiskState())
    files.apply_operations(tmp_path, [op for change in first for op in change.operations])
    (tmp_path / CERTS).mkdir()
    files.write_file(tmp_path / CERTS / "tls.key", b"secret", 0o600)
    before = files.read_disk(tmp_path)

    second = plan({"a.example.com": site(config="other\n", enabled=False)}, before)
    undo = files.apply_operations(tmp_path, [op for change in second for op in change.operations])
    assert files.read_disk(tmp_path) == on_disk(configs={"a.example.com": b"other\n"})
    undo.restore()
    assert files.read_disk(tmp_path) == before
    assert stat.S_IMODE((tmp_path / CERTS / "tls.key").stat().st_mode) == 0o600


def test_a_named_replica_reports_under_its_own_keys() -> None:
    [request] = desired_state([configmap()], {}).requests
    keys = labels.report_keys("nginx-0")
    disk = on_disk(configs={"a.example.com": b"older config"})
    assert report(request, disk, None, keys) == {
        keys.config_hash: config_hash("older config"),
        keys.serial: None,
        keys.error: None,
    }


def test_a_replica_is_ready_once_applied_and_while_not_failing() -> None:
    stats = AgentStats()
    assert not stats.serving, "nothing applied yet"
    stats.ready = True
    assert stats.serving
    stats.failing, stats.failure = True, "nginx -t: [emerg] broken baseline"
    assert not stats.serving
    assert "vhost_agent_failing 1" in stats.render()
    assert "broken baseline" not in stats.render(), "the reason is no metric"


def test_reports_of_replicas_that_are_gone_are_dropped() -> None:
    mine, alive, gone = (labels.report_keys(r) for r in ("nginx-0", "nginx-1", "nginx-old"))
    current = {
        labels.CONFIG_HASH: "h",
        labels.APPLIED_CONFIG_HASH: "h",  # the unnamed agent's: not a replica's
        mine.config_hash: "h",
        alive.config_hash: "h",
        gone.config_hash: "h",
        gone.error: "h: old",
    }
    assert stale_reports(current, ["nginx-1"], "nginx-0") == {
        gone.config_hash: None,
        gone.error: None,
    }


# -- who can read the keys ---------------------------------------------------------------------

AGENT = 10001
NOBODY = Credentials(65534, frozenset({65534}))


@pytest.mark.parametrize(
    ("workers", "key_group", "readable"),
    [
        ([Credentials(AGENT, frozenset({AGENT}))], None, True),  # the chart: one UID
        ([Credentials(0, frozenset({0}))], None, True),
        ([Credentials(33, frozenset({33}))], None, False),  # www-data, keys 0600
        ([Credentials(33, frozenset({33}))], 33, True),  # ... with its group as key group
        ([Credentials(33, frozenset({33, 44}))], 44, True),  # a supplementary group
        (
            [Credentials(AGENT, frozenset({AGENT})), Credentials(65534, frozenset({65534}))],
            33,
            False,
        ),
    ],
)
def test_the_agent_knows_whether_nginx_workers_can_read_the_keys(
    workers: list[Credentials], key_group: int | None, readable: bool
) -> None:
    problem = key_access_problem(workers, owner=AGENT, key_group=key_group)
    assert (problem is None) == readable, problem
    if problem is not None:
        assert "VHOST_AGENT_KEY_GROUP" in problem
