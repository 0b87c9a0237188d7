"""Desired sites vs. what is on disk → file operations per host; and what to report. Pure.

The on-disk layout under the agent's root directory (the agent owns everything in it)::

    sites-available/<hostname>.conf     every site's server block, enabled or not
    sites-enabled/<hostname>.conf       symlink to ../sites-available/<hostname>.conf, enabled only
    certs/<hostname>/tls.crt, tls.key   the certificate the config refers to (key mode 0600, or
                                        0640 with the agent's ``key_group``)
    http-names.conf                     an entry per enabled TLS site of this release: its
                                        ``server_name`` line, which lists it in the shared plain
                                        HTTP server
    sites-enabled/_vhost-operator.conf  ``nginx.http_definitions``, which the configs use (a name
                                        no hostname can have: ``_`` is not in hostnames); its
                                        plain HTTP server includes ``http-names.conf``, its
                                        certificate map ``https-map.conf``
    sites-enabled/_vhost-shared-<key>.conf
                                        a shared HTTPS server (``nginx.SharedHttpsServer``),
                                        which includes ``https-names/<key>.conf``
    https-names/<key>.conf              an entry per enabled site listed in that shared server
                                        instead of linked: its ``server_name`` line
    https-map.conf                      an entry per listed site: its names' certificate
                                        directory, for the map

nginx's main config includes ``<root>/sites-enabled/*.conf``, so disabling a site drops only its
link (or its two entries): the config stays, and enabling it again is one symlink.

A site that can be listed in a shared HTTPS server (``Site.https_server``) is, once that server
is on disk: nginx's cost of a reload then grows with the shared servers and the other sites'
blocks, not with every site. Which shared servers are on disk is the agent's to decide (it
writes one only when nginx accepts it); the plan lists a site in one only if it is.

What lists a site in a shared server is an entry in a file of many sites' entries
(:class:`Entry`), not a file of its own: nginx opens every file it includes, and at 10,000
sites a file per site and shared server cost it 8 µs each, 0.24 CPU-s per test and per reload.

Paths here are relative to the root; ``files`` resolves and writes them. The agent remembers
what is on disk as digests (:class:`DiskState`), not contents: a batch compares each host in a
few dictionary look-ups, and thousands of sites do not sit in memory twice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Iterator, Mapping
from pathlib import PurePosixPath
from typing import TypeVar

from vhost_operator.agent.desired import Site, SiteRequest, digest
from vhost_operator.certs import CERTIFICATE_KEY, PRIVATE_KEY_KEY, certificate_serial
from vhost_operator.nginx.render import CONFIG_HASH_LENGTH
from vhost_operator.resources import labels

AVAILABLE_DIR = "sites-available"
ENABLED_DIR = "sites-enabled"
CERTS_DIR = "certs"
HTTP_NAMES_FILE = PurePosixPath("http-names.conf")
HTTPS_NAMES_DIR = "https-names"
HTTPS_MAP_FILE = PurePosixPath("https-map.conf")
LAYOUT_DIRS = (AVAILABLE_DIR, ENABLED_DIR, CERTS_DIR, HTTPS_NAMES_DIR)
LEGACY_HTTP_NAMES_DIR = "http-names"
"""Where earlier releases listed the TLS sites in the shared plain HTTP server, a file each."""
DEFINITIONS_FILE = PurePosixPath(ENABLED_DIR, "_vhost-operator.conf")
SHARED_SERVER_PREFIX = "_vhost-shared-"
"""Of a shared HTTPS server's file in ``sites-enabled``: ``_`` is not in hostnames either."""

MAX_ERROR_LENGTH = 1024
"""Characters of an ``apply-error`` value kept: enough for nginx's message, far below the
256 KiB all annotations of an object may take together."""


def config_path(hostname: str) -> PurePosixPath:
    return PurePosixPath(AVAILABLE_DIR, f"{hostname}.conf")


def enabled_path(hostname: str) -> PurePosixPath:
    return PurePosixPath(ENABLED_DIR, f"{hostname}.conf")


def link_target(hostname: str) -> str:
    """Relative, so the layout keeps working wherever the directory is mounted."""
    return f"../{AVAILABLE_DIR}/{hostname}.conf"


def certificate_dir(hostname: str) -> PurePosixPath:
    return PurePosixPath(CERTS_DIR, hostname)


def shared_server_path(key: str) -> PurePosixPath:
    return PurePosixPath(ENABLED_DIR, f"{SHARED_SERVER_PREFIX}{key}.conf")


def https_names_path(key: str) -> PurePosixPath:
    return PurePosixPath(HTTPS_NAMES_DIR, f"{key}.conf")


# -- files of entries ----------------------------------------------------------------------------

_ENTRY_MARK = "# "


def parse_entries(text: str) -> dict[str, str]:
    """The entries of a file :func:`format_entries` wrote: hostname → its lines."""
    entries = {}
    # Split at each mark, not line by line: at 10,000 sites, 3 ms instead of 13.
    for chunk in f"\n{text}".split(f"\n{_ENTRY_MARK}")[1:]:
        hostname, newline, lines = chunk.partition("\n")
        # The split took the newline that ended each entry but the last.
        entries[hostname] = lines if not lines or lines.endswith("\n") else lines + newline
    return entries


def format_entries(entries: Mapping[str, str]) -> str:
    """One file of many hosts' lines, each host's after a comment naming it, by hostname."""
    return "".join(f"{_ENTRY_MARK}{hostname}\n{entries[hostname]}" for hostname in sorted(entries))


_Value = TypeVar("_Value")


@dataclasses.dataclass(frozen=True)
class DiskState:
    """What the layout directories hold, by hostname (the file or directory name); file
    contents as their :func:`digest`. Made from contents by :func:`disk_state`."""

    configs: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """``sites-available/<hostname>.conf``: digest of its contents."""
    links: Mapping[str, str | None] = dataclasses.field(default_factory=dict)
    """``sites-enabled/<hostname>.conf``: the symlink's target, ``None`` if not a symlink."""
    certificates: Mapping[str, Mapping[str, str]] = dataclasses.field(default_factory=dict)
    """``certs/<hostname>/``: file name → digest of its contents."""
    serials: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """The serial of the leaf in ``certs/<hostname>/tls.crt``, where that is a certificate."""
    http_names: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Its entry in ``http-names.conf``: digest of the entry."""
    https_names: Mapping[str, Listed] = dataclasses.field(default_factory=dict)
    """Its entry in ``https-names/<key>.conf``: which shared server, digest of the entry."""
    https_maps: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Its entry in ``https-map.conf``: digest of the entry."""

    @property
    def hostnames(self) -> set[str]:
        return (
            set(self.configs)
            | set(self.links)
            | set(self.certificates)
            | set(self.http_names)
            | set(self.https_names)
            | set(self.https_maps)
        )

    def updated(self, fresh: DiskState, hostnames: Collection[str]) -> DiskState:
        """This state with ``hostnames`` as ``fresh`` (read again) has them: the hosts a batch
        touched are read back, not the thousands it did not."""

        return DiskState(
            _merged(self.configs, fresh.configs, hostnames),
            _merged(self.links, fresh.links, hostnames),
            _merged(self.certificates, fresh.certificates, hostnames),
            _merged(self.serials, fresh.serials, hostnames),
            _merged(self.http_names, fresh.http_names, hostnames),
            _merged(self.https_names, fresh.https_names, hostnames),
            _merged(self.https_maps, fresh.https_maps, hostnames),
        )

    @property
    def listed_servers(self) -> set[str]:
        """The keys of the shared HTTPS servers some host is listed in."""
        return {listed.server for listed in self.https_names.values()}


@dataclasses.dataclass(frozen=True)
class Listed:
    """A host's entry in an ``https-names`` file."""

    server: str
    """The key of the shared HTTPS server whose names file it is in."""
    digest: str


def _merged(
    old: Mapping[str, _Value], new: Mapping[str, _Value], hostnames: Collection[str]
) -> dict[str, _Value]:
    result = dict(old)
    for hostname in hostnames:
        result.pop(hostname, None)
    result.update((hostname, value) for hostname, value in new.items() if hostname in hostnames)
    return result


def disk_state(
    configs: Iterable[tuple[str, bytes]] = (),
    links: Iterable[tuple[str, str | None]] = (),
    certificates: Iterable[tuple[str, Mapping[str, bytes]]] = (),
    http_names: Iterable[tuple[str, str]] = (),
    https_names: Iterable[tuple[str, str, str]] = (),
    https_maps: Iterable[tuple[str, str]] = (),
) -> DiskState:
    """The :class:`DiskState` of these contents (hostname, contents; entries: hostname, the
    shared HTTPS server's key for ``https_names``, entry), taken one at a time: a generator
    reading files holds one host's bytes at once."""
    certificate_digests: dict[str, Mapping[str, str]] = {}
    serials = {}
    for hostname, contents in certificates:
        certificate_digests[hostname] = {name: digest(c) for name, c in contents.items()}
        chain = contents.get(CERTIFICATE_KEY)
        serial = certificate_serial(chain) if chain else None
        if serial is not None:
            serials[hostname] = serial
    return DiskState(
        {hostname: digest(content) for hostname, content in configs},
        dict(links),
        certificate_digests,
        serials,
        {hostname: digest(entry.encode()) for hostname, entry in http_names},
        {hostname: Listed(key, digest(entry.encode())) for hostname, key, entry in https_names},
        {hostname: digest(entry.encode()) for hostname, entry in https_maps},
    )


# -- operations ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class WriteFile:
    path: PurePosixPath
    content: bytes
    private: bool = False
    """Mode 0600 instead of 0644: private keys."""


@dataclasses.dataclass(frozen=True)
class Symlink:
    path: PurePosixPath
    target: str


@dataclasses.dataclass(frozen=True)
class Remove:
    """Remove a file, a symlink or a whole directory."""

    path: PurePosixPath


@dataclasses.dataclass(frozen=True)
class Entry:
    """Set a host's entry in a file of entries (:func:`format_entries`), or drop it (``None``)."""

    path: PurePosixPath
    hostname: str
    text: str | None


Operation = WriteFile | Symlink | Remove | Entry


@dataclasses.dataclass(frozen=True)
class Change:
    """Everything that changes for one host: the unit nginx accepts or rejects."""

    hostname: str
    operations: tuple[Operation, ...]
    fingerprint: str | None
    """``Site.fingerprint`` of what this change puts in place; ``None`` when it removes the host."""


def plan(
    sites: Mapping[str, Site],
    disk: DiskState,
    *,
    keep: Collection[str] = (),
    hostnames: Collection[str] | None = None,
    shared_servers: Collection[str] = frozenset(),
) -> list[Change]:
    """The changes that make the disk match ``sites``, one per host that differs, by hostname.

    Hosts on disk without a site are removed, except those in ``keep`` (held or rejected hosts,
    whose last good files must stay). ``hostnames``: look only at these hosts (``None``: at
    every host). ``shared_servers``: the keys of the shared HTTPS servers on disk, which the
    sites that can be are listed in. A host's changes depend only on its site, its files,
    whether it is kept and whether its shared server is on disk, so the hosts none of these
    changed for since a plan found nothing to do for them can be left out: a batch then costs
    what changed, not every site (:class:`PlanInputs`).
    """
    changes = []
    candidates = set(sites) | disk.hostnames if hostnames is None else hostnames
    for hostname in sorted(candidates):
        if hostname in keep:
            continue
        site = sites.get(hostname)
        operations = (
            site_operations(site, disk, shared_servers)
            if site
            else removal_operations(hostname, disk)
        )
        if operations:
            fingerprint = site.fingerprint if site else None
            changes.append(Change(hostname, operations, fingerprint))
    return changes


@dataclasses.dataclass(frozen=True)
class PlanInputs:
    """What a :func:`plan` looked at, to tell which hosts the next one must look at again."""

    sites: Mapping[str, Site]
    keep: frozenset[str]
    changed: frozenset[str]
    """The hosts it found changes for (applied since, or rejected and then kept)."""
    shared_servers: frozenset[str] = frozenset()

    def hosts_to_plan(
        self,
        sites: Mapping[str, Site],
        keep: frozenset[str],
        files_read: Collection[str],
        shared_servers: frozenset[str] = frozenset(),
        *,
        since: Mapping[str, Site] | None = None,
        changed_sites: Collection[str] = (),
    ) -> set[str]:
        """The hosts a plan of ``sites``, ``keep`` and ``shared_servers`` may find changes for,
        when the files of ``files_read`` are the only ones read again since this plan: those
        whose site (a new object: sites are parsed again only when their objects change), whose
        being kept, whose shared server's being on disk or whose files changed, and those this
        plan changed. ``changed_sites``: the hosts whose site is another object in ``sites``
        than in ``since`` (``state.DesiredState``'s account); taken as they are when ``since`` is
        this plan's sites, else every site is compared by identity (a fraction of a microsecond
        per site)."""
        hostnames = set(files_read) | self.changed | (self.keep ^ keep)
        last = self.sites
        if since is last:
            hostnames.update(changed_sites)
        else:
            hostnames.update(
                hostname for hostname, site in sites.items() if last.get(hostname) is not site
            )
            hostnames.update(hostname for hostname in last if hostname not in sites)
        servers = self.shared_servers ^ shared_servers
        if servers:
            hostnames.update(
                hostname
                for hostname, site in sites.items()
                if site.https_server is not None and site.https_server.key in servers
            )
        return hostnames


def site_operations(
    site: Site, disk: DiskState, shared_servers: Collection[str] = frozenset()
) -> tuple[Operation, ...]:
    """Certificate first, then config, then the link, then the entries in files of entries
    (which ``files`` writes after every host's own files): the listing in a shared HTTPS server
    (of ``shared_servers``), then the names in the shared plain HTTP server. That is the order
    a crash can interrupt safely: a config never points at a certificate that is not there
    yet, port 80 never redirects to a site not enabled yet. The names are listed only while
    the site is enabled and its config is a TLS one of this release (``http_names``): a host
    is never in that server and in a server of its own config on the same port. Likewise, a
    host's old link or listing goes before its new one is put in place."""
    hostname = site.hostname
    names = site.http_names if site.enabled else None
    names_on_disk = disk.http_names.get(hostname)
    server = site.https_server if site.enabled else None
    listed_in = server.key if server is not None and server.key in shared_servers else None
    operations: list[Operation] = []
    on_disk = disk.certificates.get(hostname)
    if site.certificate is not None:
        wanted = (
            (CERTIFICATE_KEY, site.certificate.chain_pem, site.chain_digest, False),
            (PRIVATE_KEY_KEY, site.certificate.key_pem, site.key_digest, True),
        )
        for name, content, wanted_digest, private in wanted:
            if (on_disk or {}).get(name) != wanted_digest:
                path = certificate_dir(hostname) / name
                operations.append(WriteFile(path, content, private=private))
    if names is None and names_on_disk is not None:
        operations.append(Entry(HTTP_NAMES_FILE, hostname, None))
    listed = disk.https_names.get(hostname)
    if listed is not None and listed.server != listed_in:
        operations.append(Entry(https_names_path(listed.server), hostname, None))
    if listed_in is None and hostname in disk.https_maps:
        operations.append(Entry(HTTPS_MAP_FILE, hostname, None))
    if disk.configs.get(hostname) != site.config_digest:
        operations.append(WriteFile(config_path(hostname), site.config.encode()))
    linked = hostname in disk.links
    wants_link = site.enabled and listed_in is None
    if wants_link and (not linked or disk.links[hostname] != link_target(hostname)):
        operations.append(Symlink(enabled_path(hostname), link_target(hostname)))
    if not wants_link and linked:
        operations.append(Remove(enabled_path(hostname)))
    if listed_in is not None:
        operations.extend(_listing_operations(site, listed_in, disk))
    if names is not None and names_on_disk != site.http_names_digest:
        operations.append(Entry(HTTP_NAMES_FILE, hostname, names))
    if site.certificate is None and on_disk is not None:
        operations.append(Remove(certificate_dir(hostname)))
    return tuple(operations)


def _listing_operations(site: Site, server: str, disk: DiskState) -> Iterator[Operation]:
    """The map before the names: nginx never selects the shared server by a name whose
    certificate it cannot find."""
    hostname = site.hostname
    assert site.https_map is not None and site.http_names is not None, "a shared HTTPS site"
    if disk.https_maps.get(hostname) != site.https_map_digest:
        yield Entry(HTTPS_MAP_FILE, hostname, site.https_map)
    if disk.https_names.get(hostname) != Listed(server, site.http_names_digest or ""):
        yield Entry(https_names_path(server), hostname, site.http_names)


def removal_operations(hostname: str, disk: DiskState) -> tuple[Operation, ...]:
    """Names and link first, certificate last: the reverse of the order they are put in place."""
    operations: list[Operation] = []
    if hostname in disk.http_names:
        operations.append(Entry(HTTP_NAMES_FILE, hostname, None))
    listed = disk.https_names.get(hostname)
    if listed is not None:
        operations.append(Entry(https_names_path(listed.server), hostname, None))
    if hostname in disk.https_maps:
        operations.append(Entry(HTTPS_MAP_FILE, hostname, None))
    if hostname in disk.links:
        operations.append(Remove(enabled_path(hostname)))
    if hostname in disk.configs:
        operations.append(Remove(config_path(hostname)))
    if hostname in disk.certificates:
        operations.append(Remove(certificate_dir(hostname)))
    return tuple(operations)


# -- shared HTTPS servers and enabled sites ---------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Enabling:
    """What makes nginx serve an enabled host, as operations: its link, or its listing in a
    shared HTTPS server."""

    removal: tuple[Operation, ...]
    restoral: tuple[Operation, ...]


def enablings(disk: DiskState, listings: Mapping[str, tuple[str, str]]) -> dict[str, Enabling]:
    """What enables each host on ``disk``; ``listings``: the listed hosts' map and names
    entries."""
    found = {
        hostname: Enabling(
            (Remove(enabled_path(hostname)),), (Symlink(enabled_path(hostname), target),)
        )
        for hostname, target in disk.links.items()
        if target is not None
    }
    for hostname, (map_entry, names_entry) in listings.items():
        names = https_names_path(disk.https_names[hostname].server)
        found[hostname] = Enabling(
            (Entry(names, hostname, None), Entry(HTTPS_MAP_FILE, hostname, None)),
            (Entry(HTTPS_MAP_FILE, hostname, map_entry), Entry(names, hostname, names_entry)),
        )
    return found


# -- who can read the keys ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Credentials:
    """A process's effective user and all its groups (primary and supplementary)."""

    uid: int
    groups: frozenset[int]


def key_access_problem(
    workers: Collection[Credentials], *, owner: int, key_group: int | None
) -> str | None:
    """Why some of nginx's ``workers`` cannot read the keys the agent writes (owned by
    ``owner``, mode 0600, or 0640 in ``key_group``), or ``None``. They load them per TLS
    handshake: a worker that cannot fails every handshake of every TLS site."""
    for worker in workers:
        if worker.uid in (0, owner) or (key_group is not None and key_group in worker.groups):
            continue
        if key_group is None:
            return (
                f"nginx's workers run as UID {worker.uid}, not as the agent's {owner}, and cannot "
                "read the keys (mode 0600): set VHOST_AGENT_KEY_GROUP to their group"
            )
        return (
            f"nginx's workers (UID {worker.uid}) are not in VHOST_AGENT_KEY_GROUP {key_group} "
            "and cannot read the keys (mode 0640)"
        )
    return None


# -- reports ---------------------------------------------------------------------------------

Report = dict[str, str | None]
"""Annotation → value for a site ConfigMap; ``None`` removes the annotation."""


def report(
    request: SiteRequest,
    disk: DiskState,
    error: str | None,
    keys: labels.ReportKeys = labels.SINGLE_AGENT_KEYS,
) -> Report:
    """The annotations (``keys``: this agent's) that tell the operator what nginx runs for
    this ConfigMap.

    Call only while ``disk`` is what nginx has loaded (after a confirmed reload): the applied
    values are read from the files, so they are true whatever the ConfigMap says now.
    ``error`` is why this ConfigMap's current config is not applied, if it is not (the
    request's problem or nginx's verdict; the caller decides which to show when).
    """
    hostname = request.hostname
    config = disk.configs.get(hostname) if hostname else None
    return {
        # config_hash() is this digest's beginning: the hash of the config nginx loaded.
        keys.config_hash: config[:CONFIG_HASH_LENGTH] if config is not None else None,
        keys.serial: disk.serials.get(hostname) if hostname else None,
        keys.error: apply_error(request.config_hash, error) if error else None,
    }


def apply_error(config_hash: str | None, message: str) -> str:
    """``<config-hash>: <message>``: the hash says which config the error is about, so the
    operator can tell a fresh verdict on the config it just wrote from a stale one."""
    text = f"{config_hash or 'unknown'}: {message}"
    return text if len(text) <= MAX_ERROR_LENGTH else text[: MAX_ERROR_LENGTH - 3] + "..."


def report_patch(current: Mapping[str, str], wanted: Report) -> Report:
    """Only the annotations whose value differs from ``current``: no patch, no event, no load."""
    return {key: value for key, value in wanted.items() if current.get(key) != value}


def stale_reports(current: Mapping[str, str], replicas: Collection[str], own: str) -> Report:
    """Removals of the reports of nginx replicas that no longer exist (not in ``replicas``,
    the pods there are), for a patch the agent sends anyway: each rollout would otherwise leave
    its old pods' keys on every ConfigMap for good."""
    stale: Report = {}
    for key in current:
        found = labels.reporting_replica(key)
        if found is not None and found[0] not in ("", own) and found[0] not in replicas:
            stale[key] = None
    return stale
