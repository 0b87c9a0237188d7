"""The shared HTTPS servers: which sites can be listed in one, the plan's operations for listing
and unlisting them, the files, and putting a server in place only when nginx accepts it."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from tests.harness.nginx import (
    CHECK_HTTPS_PORT,
    nginx_binary,
    nginx_check,
    self_signed_certificate,
)
from tests.harness.nginx import UNUSED_CHALLENGE_UPSTREAM as CHALLENGE
from vhost_operator.agent import files
from vhost_operator.agent.desired import Site
from vhost_operator.agent.plan import (
    HTTPS_MAP_FILE as MAP_FILE,
)
from vhost_operator.agent.plan import (
    DiskState,
    Entry,
    Listed,
    PlanInputs,
    Remove,
    Symlink,
    WriteFile,
    disk_state,
    enablings,
    format_entries,
    parse_entries,
    plan,
    removal_operations,
    site_operations,
)
from vhost_operator.agent.plan import https_names_path as names_file
from vhost_operator.agent.shared import SharedServers
from vhost_operator.certs import Certificate
from vhost_operator.nginx import (
    FinalLayout,
    SharedHttpsServer,
    SiteConfig,
    recognise,
    render_final,
    render_shared_https_server,
    shared_https_map,
)
from vhost_operator.resources.mtasts import parse_policy

CERTIFICATES = "/agent/certs"
SERVER = SharedHttpsServer(443, "http://app:8000", 50)
KEY = SERVER.key
NAMES = "server_name a.example.com www.example.com;\n"
MAP = "a.example.com a.example.com;\nwww.example.com a.example.com;\n"


def tls_site(**fields: Any) -> SiteConfig:
    hostname = fields.pop("hostname", "a.example.com")
    directory = f"{CERTIFICATES}/{hostname}"
    values: dict[str, Any] = {
        "hostname": hostname,
        "challenge_upstream": "op:8089",
        "upstream": "http://app:8000",
        "certificate_path": f"{directory}/tls.crt",
        "key_path": f"{directory}/tls.key",
    }
    return SiteConfig(**(values | fields))


def listed_site(*, enabled: bool = True, server: SharedHttpsServer = SERVER) -> Site:
    config = render_final(tls_site(additional_names=("www.example.com",)))
    return Site(
        "vhost-a",
        "a.example.com",
        config,
        enabled,
        Certificate(b"chain", b"key", "1"),
        NAMES,
        server,
        MAP,
    )


# -- which sites, and what lists them ----------------------------------------------------------


def test_a_tls_site_of_this_release_without_mta_sts_can_be_listed() -> None:
    def shared(config: SiteConfig, layout: FinalLayout = FinalLayout.TLS_ONLY) -> object:
        recognised = recognise(render_final(config, layout=layout), config.hostname, CERTIFICATES)
        assert recognised is not None
        return recognised.shared_https

    assert shared(tls_site()) == SERVER
    assert shared(tls_site(max_body_size_mib=100)) == SharedHttpsServer(443, SERVER.upstream, 100)
    policy = parse_policy("version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: 86400\n")
    assert shared(tls_site(mta_sts=policy)) is None, "an MTA-STS location of its own"
    assert shared(tls_site(), FinalLayout.ONE_SERVER) is None, "the previous release's form"
    http_only = SiteConfig(
        hostname="a.example.com", challenge_upstream="op:8089", upstream="http://x"
    )
    assert shared(http_only) is None
    assert len({SERVER.key, SharedHttpsServer(443, "http://app:8001", 50).key}) == 2


def test_a_listed_sites_map_names_its_certificate_for_each_of_its_names() -> None:
    assert shared_https_map(tls_site(additional_names=("www.example.com",))) == MAP


def test_the_shared_server_is_a_sites_server_with_its_names_included() -> None:
    text = render_shared_https_server(SERVER, f"/agent/https-names/{KEY}.conf")
    assert "    listen 443 ssl http2;\n" in text
    assert f"    server_name _vhost-operator:shared-https:{KEY};\n" in text
    assert f"    include /agent/https-names/{KEY}.conf;\n" in text
    assert "    client_max_body_size 50m;\n" in text
    assert "        proxy_pass http://app:8000;\n" in text
    assert "ssl_certificate" not in text
    with pytest.raises(ValueError, match="canonical"):
        render_shared_https_server(SERVER, "/agent/../etc")


def test_nginx_accepts_a_shared_server_and_its_listed_sites(tmp_path: Path) -> None:
    server = SharedHttpsServer(CHECK_HTTPS_PORT, "http://127.0.0.1:8000", 50)
    names = tmp_path.resolve() / "https-names" / f"{server.key}.conf"
    chain, key = self_signed_certificate(["a.example.com"])
    entries = {"a.example.com": NAMES, "b.example.com": "server_name b.example.com;\n"}
    result = nginx_check(
        [render_shared_https_server(server, str(names))],
        tmp_dir=tmp_path,
        extra_files={
            f"https-names/{server.key}.conf": format_entries(entries).encode(),
            "certs/a.example.com/tls.crt": chain,
            "certs/a.example.com/tls.key": key,
        },
    )
    assert result.returncode == 0, result.stderr
    # nginx_check writes an empty map; one with the entries:
    map_entries = {"a.example.com": MAP, "b.example.com": "b.example.com b.example.com;\n"}
    (tmp_path / "https-map.conf").write_text(format_entries(map_entries))
    conf = tmp_path / "nginx.conf"
    checked = subprocess.run(
        [nginx_binary(), "-t", "-c", str(conf), "-p", f"{tmp_path}/", "-e", "stderr"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr


def test_entries_read_back_as_they_were_written() -> None:
    entries = {"b.example.com": "server_name b.example.com;\n", "a.example.com": MAP}
    text = format_entries(entries)
    assert text.startswith("# a.example.com\na.example.com a.example.com;\n")
    assert parse_entries(text) == entries
    assert parse_entries("") == {}


# -- the plan ------------------------------------------------------------------------------------


def test_a_site_is_listed_once_its_server_is_on_disk_and_linked_until_then() -> None:
    site = listed_site()
    linked = site_operations(site, DiskState())
    assert (
        Symlink(
            PurePosixPath("sites-enabled/a.example.com.conf"),
            "../sites-available/a.example.com.conf",
        )
        in linked
    )
    listed = site_operations(site, DiskState(), {KEY})
    assert not any(isinstance(op, Symlink) for op in listed)
    paths = [str(op.path) for op in listed]
    assert paths == [
        "certs/a.example.com/tls.crt",
        "certs/a.example.com/tls.key",
        "sites-available/a.example.com.conf",
        "https-map.conf",  # the map before the names that select the server
        f"https-names/{KEY}.conf",
        "http-names.conf",
    ]
    assert listed[3] == Entry(MAP_FILE, "a.example.com", MAP)
    assert listed[4] == Entry(names_file(KEY), "a.example.com", NAMES)


def on_disk_of(operations: tuple[Any, ...]) -> DiskState:
    """The disk after ``operations`` on an empty one (writes, entries and links only)."""
    writes = {str(op.path): op.content for op in operations if isinstance(op, WriteFile)}
    entries = {str(op.path): op.text for op in operations if isinstance(op, Entry) and op.text}
    certificates = {
        "tls.crt": writes["certs/a.example.com/tls.crt"],
        "tls.key": writes["certs/a.example.com/tls.key"],
    }
    names = [
        ("a.example.com", PurePosixPath(path).stem, text)
        for path, text in entries.items()
        if path.startswith("https-names/")
    ]
    maps = [("a.example.com", text) for path, text in entries.items() if path == "https-map.conf"]
    links = [("a.example.com", op.target) for op in operations if isinstance(op, Symlink)]
    return disk_state(
        [("a.example.com", writes["sites-available/a.example.com.conf"])],
        links,
        [("a.example.com", certificates)],
        [("a.example.com", entries["http-names.conf"])],
        names,
        maps,
    )


def test_moving_between_a_link_and_a_listing_takes_the_old_one_away_first() -> None:
    site = listed_site()
    linked = on_disk_of(site_operations(site, DiskState()))
    listed = on_disk_of(site_operations(site, DiskState(), {KEY}))
    assert listed.https_names["a.example.com"].server == KEY
    assert site_operations(site, listed, {KEY}) == ()
    assert site_operations(site, linked, set()) == ()

    to_listing = site_operations(site, linked, {KEY})
    assert [type(op).__name__ for op in to_listing] == ["Remove", "Entry", "Entry"]
    assert to_listing[0] == Remove(PurePosixPath("sites-enabled/a.example.com.conf"))

    to_link = site_operations(site, listed, set())
    assert to_link == (
        Entry(names_file(KEY), "a.example.com", None),
        Entry(MAP_FILE, "a.example.com", None),
        Symlink(
            PurePosixPath("sites-enabled/a.example.com.conf"),
            "../sites-available/a.example.com.conf",
        ),
    )

    other = SharedHttpsServer(443, "http://app:8001", 50)
    moved = site_operations(listed_site(server=other), listed, {KEY, other.key})
    assert moved == (
        Entry(names_file(KEY), "a.example.com", None),
        Entry(names_file(other.key), "a.example.com", NAMES),
    )

    disabled = site_operations(listed_site(enabled=False), listed, {KEY})
    assert disabled == (
        Entry(PurePosixPath("http-names.conf"), "a.example.com", None),
        Entry(names_file(KEY), "a.example.com", None),
        Entry(MAP_FILE, "a.example.com", None),
    ), "the config stays; nothing links or lists it"

    removal = removal_operations("a.example.com", listed)
    assert [str(op.path) for op in removal] == [
        "http-names.conf",
        f"https-names/{KEY}.conf",
        "https-map.conf",
        "sites-available/a.example.com.conf",
        "certs/a.example.com",
    ]


def test_a_server_put_in_place_or_taken_away_plans_its_sites_again() -> None:
    site = listed_site()
    sites = {
        "a.example.com": site,
        "b.example.com": Site("vhost-b", "b.example.com", "", True, None),
    }
    inputs = PlanInputs(sites, frozenset(), frozenset())
    assert inputs.hosts_to_plan(sites, frozenset(), ()) == set()
    assert inputs.hosts_to_plan(sites, frozenset(), (), frozenset({KEY})) == {"a.example.com"}
    assert plan(sites, DiskState(), hostnames={"a.example.com"}, shared_servers={KEY})


def test_a_quarantine_takes_a_listing_away_and_can_put_it_back() -> None:
    listed = on_disk_of(site_operations(listed_site(), DiskState(), {KEY}))
    [(hostname, enabling)] = enablings(listed, {"a.example.com": (MAP, NAMES)}).items()
    assert hostname == "a.example.com"
    assert enabling.removal == (
        Entry(names_file(KEY), "a.example.com", None),
        Entry(MAP_FILE, "a.example.com", None),
    )
    listing = site_operations(listed_site(), DiskState(), {KEY})
    assert enabling.restoral == tuple(op for op in listing if "https-" in str(op.path))


# -- files and the servers on disk ---------------------------------------------------------------


def test_listings_are_read_back_from_disk(tmp_path: Path) -> None:
    files.prepare(tmp_path, 8443, http_port=8080, challenge_upstream=CHALLENGE)
    undo = files.apply_operations(tmp_path, site_operations(listed_site(), DiskState(), {KEY}))
    other = Site("vhost-b", "b.example.com", "", True, None, "server_name b.example.com;\n")
    files.apply_operations(tmp_path, listing_of(other, "b.example.com b.example.com;\n"))
    assert parse_entries((tmp_path / "https-map.conf").read_text()) == {
        "a.example.com": MAP,
        "b.example.com": "b.example.com b.example.com;\n",
    }
    disk = files.read_hosts(tmp_path, ["a.example.com"])
    assert disk.https_names == {
        "a.example.com": Listed(KEY, disk.https_names["a.example.com"].digest)
    }
    assert disk.listed_servers == {KEY}
    assert set(disk.https_maps) == {"a.example.com"} and not disk.links
    assert files.read_listings(tmp_path, disk) == {"a.example.com": (MAP, NAMES)}
    assert set(files.read_disk(tmp_path).https_maps) == {"a.example.com", "b.example.com"}
    undo.restore()
    assert parse_entries((tmp_path / "https-map.conf").read_text()) == {}, "the file as it was"


def listing_of(site: Site, map_entry: str) -> list[Entry]:
    assert site.http_names is not None
    return [
        Entry(MAP_FILE, site.hostname, map_entry),
        Entry(names_file(KEY), site.hostname, site.http_names),
    ]


class Verdicts:
    """A tester whose verdict is refusal while ``refuse`` is set; records what was on disk."""

    def __init__(self, root: Path, refuse: str | None = None) -> None:
        self.root, self.refuse, self.seen = root, refuse, list[set[str]]()

    async def test(self) -> str | None:
        self.seen.append(set(files.read_shared_servers(self.root)))
        return self.refuse


def test_a_server_is_put_in_place_only_if_nginx_accepts_it_and_pruned_when_unused(
    tmp_path: Path,
) -> None:
    files.prepare(tmp_path, 8443, http_port=8080, challenge_upstream=CHALLENGE)
    servers = SharedServers(tmp_path)
    wanted = {KEY: SERVER}
    refusing = Verdicts(tmp_path, refuse='host not found in upstream "app"')
    assert asyncio.run(servers.prepare(wanted, refusing)) == frozenset()
    assert refusing.seen == [{KEY}], "tested in place"
    assert files.read_shared_servers(tmp_path) == {}, "and taken away again"

    accepting = Verdicts(tmp_path)
    assert asyncio.run(servers.prepare(wanted, accepting)) == {KEY}
    assert asyncio.run(servers.prepare(wanted, accepting)) == {KEY}
    assert len(accepting.seen) == 1, "tested once, while it stays the same"
    assert (tmp_path / "https-names" / f"{KEY}.conf").read_text() == "", "an empty list"

    listed = on_disk_of(site_operations(listed_site(), DiskState(), {KEY}))
    asyncio.run(servers.prune({}, listed))
    assert set(files.read_shared_servers(tmp_path)) == {KEY}, "a host is still listed in it"
    asyncio.run(servers.prune({}, DiskState()))
    assert files.read_shared_servers(tmp_path) == {} and servers.keys == frozenset()
    assert not (tmp_path / "https-names" / f"{KEY}.conf").exists()


def test_a_server_that_cannot_be_written_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk: the names file (empty, nothing to write) can be made, the server cannot."""
    files.prepare(tmp_path, 8443, http_port=8080, challenge_upstream=CHALLENGE)
    original = files.write_file

    def write_file(path: Path, content: bytes, mode: int, **options: Any) -> None:
        if path.name.startswith("_vhost-shared-"):
            raise OSError(28, "No space left on device")
        original(path, content, mode, **options)

    monkeypatch.setattr(files, "write_file", write_file)
    with pytest.raises(OSError, match="No space left"):
        files.write_shared_server(tmp_path, KEY, b"server {}\n")
    assert not (tmp_path / "https-names" / f"{KEY}.conf").exists()


def test_a_quarantine_withdraws_every_server_and_the_next_batch_tests_them_again(
    tmp_path: Path,
) -> None:
    """A server nginx refuses now breaks its config even with no site listed in it."""
    files.prepare(tmp_path, 8443, http_port=8080, challenge_upstream=CHALLENGE)
    servers = SharedServers(tmp_path)
    assert asyncio.run(servers.prepare({KEY: SERVER}, Verdicts(tmp_path))) == {KEY}
    files.apply_operations(tmp_path, site_operations(listed_site(), DiskState(), {KEY}))
    asyncio.run(servers.withdraw())
    assert files.read_shared_servers(tmp_path) == {} and servers.keys == frozenset()
    assert files.read_disk(tmp_path).listed_servers == {KEY}, "the entries stay"
    again = Verdicts(tmp_path)
    assert asyncio.run(servers.prepare({KEY: SERVER}, again)) == {KEY}
    assert again.seen == [{KEY}]
