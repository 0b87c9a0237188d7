"""Every site ConfigMap's request from batch to batch (:class:`DesiredStates`), kept up to date
from the objects that changed: which ConfigMap serves each name, the sites, and what changed
since the batch before. Pure: raw API dicts in, values out; one ConfigMap is parsed by
``desired.site_request``.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
from collections.abc import Callable, Collection, Iterable, Mapping

from vhost_operator.agent.desired import (
    Object,
    SharedHttp,
    Site,
    SiteRequest,
    name_of,
    relevant_configmap,
    relevant_secret,
    site_request,
)
from vhost_operator.nginx import SharedHttpsServer
from vhost_operator.resources import labels


@dataclasses.dataclass(frozen=True)
class DesiredState:
    """What every site ConfigMap asks for, as of one batch (made by :class:`DesiredStates`)."""

    by_configmap: Mapping[str, SiteRequest]
    """One request per site ConfigMap, by the ConfigMap's name."""
    sites: Mapping[str, Site]
    """The sites that can be applied, by hostname."""
    held: frozenset[str]
    """Hostnames whose ConfigMap exists but cannot be applied now: their files stay as they
    are (an old config keeps serving) instead of being removed as unwanted."""
    waiting: frozenset[str]
    """The ConfigMaps whose TLS Secret has not been seen (yet)."""
    enabled_sites: int
    servers: Mapping[str, SharedHttpsServer]
    """The shared HTTPS servers the enabled sites can be listed in, by key."""
    configmap_of: Mapping[str, str]
    """Hostname → the ConfigMap whose request has it."""
    since: Mapping[str, Site] | None = None
    """The ``sites`` of the state before this one, which ``changed_sites`` tells this one's
    from (``None``: none before)."""
    changed_sites: frozenset[str] = frozenset()
    """The hostnames whose site is another object than in ``since``, or in only one of them."""
    changed_requests: frozenset[str] = frozenset()
    """The ConfigMaps whose request is another object than in the state before, or which
    have one in only one of them."""

    @functools.cached_property
    def requests(self) -> tuple[SiteRequest, ...]:
        """The requests, ordered by ConfigMap name."""
        return tuple(self.by_configmap[name] for name in sorted(self.by_configmap))


def desired_state(
    configmaps: Iterable[Object],
    secrets: Mapping[str, Object],
    *,
    certificate_dir: str,
    https_port: int | None = None,
    shared_http: SharedHttp | None = None,
) -> DesiredState:
    """Parse every site ConfigMap; ``secrets`` are the TLS Secrets by name; configs may name
    certificates only as ``<certificate_dir>/<hostname>/tls.{crt,key}``, serve HTTPS only on
    ``https_port`` (the port the agent writes nginx's default TLS server for; ``None``: any),
    and a TLS config whose plain HTTP is the agent's shared server must expect that server's
    ``shared_http`` settings (``None``: any).

    When several ConfigMaps claim one hostname (the admission webhook normally prevents it), the
    one of the oldest VirtualHost keeps it, by the rule the operator and the tenancy gate follow
    too (``resources.claims``), so the outcome depends neither on event order nor on which of
    them decides. ``requests`` stay ordered by ConfigMap name.
    """
    by_name = {name_of(configmap): configmap for configmap in configmaps}
    return DesiredStates(certificate_dir, https_port, shared_http)(by_name, secrets)


@dataclasses.dataclass(frozen=True)
class _Parsed:
    configmap: Object
    secret: Object | None
    """The Secret the ConfigMap names, as it was when parsed (``None``: none, or not found)."""
    request: SiteRequest
    seniority: tuple[str, str, str]
    secret_name: str | None
    """The Secret the ConfigMap names, if any: looked up again each call while the ConfigMap
    object stays the same, without reading its annotations again."""

    @property
    def served_names(self) -> tuple[str, ...]:
        """The names its request wants to serve, its hostname first."""
        request = self.request
        if request.hostname is None:
            return request.additional_names
        return (request.hostname, *request.additional_names)


class DesiredStates:
    """:func:`desired_state` from batch to batch, at the cost of what changed.

    Told which ConfigMaps and Secrets changed since the last call, it parses only the
    ConfigMaps among them and those naming a changed Secret; a ConfigMap whose relevant fields
    (:func:`relevant_configmap`), and the Secret it names, are those it had keeps its request
    (the annotations the agent and the operator write change the object, not the request).
    The claims are decided again for every ConfigMap only when a changed one shares a name with
    another (the admission webhook normally prevents that); else each changed request is its
    ConfigMap's outcome. Parsing, claiming and summing up every site each batch made a batch
    cost about 50 ms of CPU at 10,000 sites for one changed site.
    """

    def __init__(
        self,
        certificate_dir: str,
        https_port: int | None = None,
        shared_http: SharedHttp | None = None,
    ) -> None:
        self._certificate_dir = certificate_dir
        self._https_port = https_port
        self._shared_http = shared_http
        self._parsed: dict[str, _Parsed] = {}
        self._users: dict[str, set[str]] = {}
        """Secret name → the ConfigMaps naming it."""
        self._claimants: dict[str, set[str]] = {}
        """Served name (hostname or additional name) → the ConfigMaps whose request names it."""
        self._outcome = _Outcome()
        self._last: DesiredState | None = None

    def _forget(self) -> None:
        """Start again from nothing: after a call that did not finish, the indexes may be
        half-updated."""
        self._parsed, self._users, self._claimants = {}, {}, {}
        self._outcome, self._last = _Outcome(), None

    def __call__(
        self,
        configmaps: Mapping[str, Object],
        secrets: Mapping[str, Object],
        *,
        changed_configmaps: Collection[str] | None = None,
        changed_secrets: Collection[str] | None = None,
    ) -> DesiredState:
        """The state of ``configmaps`` (by name) and ``secrets`` (by name). ``changed_*``: the
        objects that may differ from the last call's (``None``: any may)."""
        everything = self._last is None or changed_configmaps is None or changed_secrets is None
        if everything:
            names = set(self._parsed) | set(configmaps)
        else:
            assert changed_configmaps is not None and changed_secrets is not None
            names = set(changed_configmaps)
            for secret in changed_secrets:
                names |= self._users.get(secret, set())
        try:
            replaced, contested = self._parse(names, configmaps, secrets)
            if everything or contested:
                claimed = _claimed(self._parsed.values())
                every = claimed.keys() | self._outcome.requests.keys()
                self._outcome.update({name: claimed.get(name) for name in every})
            else:
                self._outcome.update(
                    {name: new.request if new else None for name, new in replaced.items()}
                )
            state = self._outcome.snapshot(self._last)
        except BaseException:
            self._forget()
            raise
        self._last = state
        return state

    def _parse(
        self,
        names: Collection[str],
        configmaps: Mapping[str, Object],
        secrets: Mapping[str, Object],
    ) -> tuple[dict[str, _Parsed | None], bool]:
        """Parse ``names`` again where their objects changed and keep the indexes: the entries
        replaced (``None``: gone), and whether one of them shares a name with another
        ConfigMap's request, before or after."""
        replaced: dict[str, tuple[_Parsed | None, _Parsed | None]] = {}
        for name in names:
            old = self._parsed.get(name)
            configmap = configmaps.get(name)
            new = None if configmap is None else self._parsed_again(old, configmap, secrets)
            if new is not old:
                replaced[name] = (old, new)
        contested = False
        for name, (old, _) in replaced.items():
            if old is not None:
                contested |= self._index(name, old, add=False)
        for name, (_, new) in replaced.items():
            if new is None:
                del self._parsed[name]
            else:
                self._parsed[name] = new
                self._index(name, new, add=True)
        for _, new in replaced.values():
            if new is not None:
                contested |= any(len(self._claimants[n]) > 1 for n in new.served_names)
        return {name: new for name, (_, new) in replaced.items()}, contested

    def _parsed_again(
        self, known: _Parsed | None, configmap: Object, secrets: Mapping[str, Object]
    ) -> _Parsed:
        if known is not None and known.configmap is configmap:
            secret_name = known.secret_name
        else:
            secret_name = _secret_name(configmap)
        secret = secrets.get(secret_name) if secret_name else None
        if (
            known is None
            or not _same(known.configmap, configmap, relevant_configmap)
            or not _same(known.secret, secret, relevant_secret)
        ):
            request = site_request(
                configmap,
                secrets,
                certificate_dir=self._certificate_dir,
                https_port=self._https_port,
                shared_http=self._shared_http,
            )
            return _Parsed(configmap, secret, request, _seniority(configmap), secret_name)
        if known.configmap is not configmap or known.secret is not secret:
            return dataclasses.replace(known, configmap=configmap, secret=secret)
        return known

    def _index(self, name: str, parsed: _Parsed, *, add: bool) -> bool:
        """Add ``parsed`` to the indexes (or take it out); ``True`` if one of its names was
        wanted by another ConfigMap before it was taken out."""
        contested = False
        if parsed.secret_name:
            _toggle(self._users, parsed.secret_name, name, add=add)
        for served in parsed.served_names:
            contested |= not add and len(self._claimants.get(served, ())) > 1
            _toggle(self._claimants, served, name, add=add)
        return contested


def _toggle(index: dict[str, set[str]], key: str, member: str, *, add: bool) -> None:
    if add:
        index.setdefault(key, set()).add(member)
        return
    members = index.get(key)
    if members is not None:
        members.discard(member)
        if not members:
            del index[key]


class _Outcome:
    """The claimed request of every site ConfigMap and what follows from them (sites, held
    hostnames, ...), kept up to date request by request."""

    def __init__(self) -> None:
        self.requests: dict[str, SiteRequest] = {}
        self._sites: dict[str, Site] = {}
        self._held: set[str] = set()
        self._waiting: set[str] = set()
        self._enabled = 0
        self._servers: dict[str, tuple[SharedHttpsServer, int]] = {}
        """Key → the server and how many enabled sites can be listed in it."""
        self._configmap_of: dict[str, str] = {}
        self._changed_sites: set[str] = set()
        self._changed_requests: set[str] = set()

    def update(self, requests: Mapping[str, SiteRequest | None]) -> None:
        """Make these the requests of these ConfigMaps (``None``: it is gone). Every old one
        is taken out before any new one goes in: a hostname may move between ConfigMaps."""
        replaced = {
            name: (old, new)
            for name, new in requests.items()
            if (old := self.requests.get(name)) is not new
        }
        for old, _ in replaced.values():
            if old is not None:
                self._count(old, -1)
        for name, (_, new) in replaced.items():
            self._changed_requests.add(name)
            if new is None:
                del self.requests[name]
            else:
                self.requests[name] = new
                self._count(new, 1)

    def _count(self, request: SiteRequest, sign: int) -> None:
        add = sign > 0
        if request.waiting_for_secret:
            _include(self._waiting, request.configmap, add=add)
        if request.hostname:
            if add:
                self._configmap_of[request.hostname] = request.configmap
            elif self._configmap_of.get(request.hostname) == request.configmap:
                del self._configmap_of[request.hostname]
        site = request.site
        if site is None:
            if request.hostname:
                _include(self._held, request.hostname, add=add)
            return
        self._changed_sites.add(site.hostname)
        if add:
            self._sites[site.hostname] = site
        elif self._sites.get(site.hostname) is site:
            del self._sites[site.hostname]
        if not site.enabled:
            return
        self._enabled += sign
        server = site.https_server
        if server is not None:
            _, users = self._servers.get(server.key, (server, 0))
            if users + sign:
                self._servers[server.key] = (server, users + sign)
            else:
                del self._servers[server.key]

    def snapshot(self, last: DesiredState | None) -> DesiredState:
        """The state as it is, telling which sites changed since ``last``."""
        state = DesiredState(
            by_configmap=dict(self.requests),
            sites=dict(self._sites),
            held=frozenset(self._held),
            waiting=frozenset(self._waiting),
            enabled_sites=self._enabled,
            servers={key: server for key, (server, _) in self._servers.items()},
            configmap_of=dict(self._configmap_of),
            since=None if last is None else last.sites,
            changed_sites=frozenset(self._changed_sites),
            changed_requests=frozenset(self._changed_requests),
        )
        self._changed_sites.clear()
        self._changed_requests.clear()
        return state


def _include(members: set[str], member: str, *, add: bool) -> None:
    if add:
        members.add(member)
    else:
        members.discard(member)


def _same(
    old: Object | None, new: Object | None, relevant: Callable[[Object | None], object]
) -> bool:
    return old is new or relevant(old) == relevant(new)


def _secret_name(configmap: Object) -> str | None:
    annotations: Mapping[str, str] = configmap.get("metadata", {}).get("annotations") or {}
    return annotations.get(labels.TLS_SECRET)


def _claimed(parsed: Iterable[_Parsed]) -> dict[str, SiteRequest]:
    """The requests by ConfigMap, each hostname and additional name served by its most senior
    claimant."""
    owners: dict[str, str] = {}  # every served name (hostname or additional) -> ConfigMap
    requests = {}
    for entry in sorted(parsed, key=operator.attrgetter("seniority")):
        request = entry.request
        if request.hostname is not None:
            owner = owners.setdefault(request.hostname, request.configmap)
            if owner != request.configmap:
                problem = f"hostname {request.hostname} is already served from ConfigMap {owner}"
                request = SiteRequest(request.configmap, None, request.config_hash, problem=problem)
            else:
                request = _claim_additional_names(request, owners)
        requests[request.configmap] = request
    return requests


def _claim_additional_names(request: SiteRequest, owners: dict[str, str]) -> SiteRequest:
    """``request``, refused (its files held as they are) if a more senior ConfigMap serves one
    of its additional names; else it claims them all."""
    for name in request.additional_names:
        owner = owners.get(name)
        if owner is not None and owner != request.configmap:
            problem = f"additional name {name} is already served from ConfigMap {owner}"
            return dataclasses.replace(request, site=None, problem=problem)
    for name in request.additional_names:
        owners[name] = request.configmap
    return request


def _seniority(configmap: Object) -> tuple[str, str, str]:
    """Its VirtualHost's claim on the hostname, then the ConfigMap's name. ConfigMaps written
    before the claim was recorded sort first: they predate any rival made since. The claim's
    fields (``resources.claims.Claim``: created, then name) as plain strings: every batch sorts
    every ConfigMap by this, and comparing dataclasses made that sort most of a batch's cost at
    10,000 sites."""
    annotations: Mapping[str, str] = configmap.get("metadata", {}).get("annotations") or {}
    created = annotations.get(labels.VIRTUALHOST_CREATED, "")
    return created, annotations.get(labels.VIRTUALHOST, ""), name_of(configmap)
