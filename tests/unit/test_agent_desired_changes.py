"""The nginx agent's desired state kept up to date from the changed objects alone
(``agent.state.DesiredStates``): whatever happens to the ConfigMaps and Secrets, a state made
from what changed equals the state parsed from every object, and it tells which sites changed."""

from __future__ import annotations

import base64
import functools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.harness.nginx import self_signed_certificate
from vhost_operator.agent import state as states_module
from vhost_operator.agent.desired import Object, SiteRequest
from vhost_operator.agent.desired import site_request as site_request_of_one
from vhost_operator.agent.state import DesiredState, DesiredStates, desired_state
from vhost_operator.nginx import SharedHttpsServer, SiteConfig, render_final
from vhost_operator.resources import labels
from vhost_operator.resources.watch import ObjectStore, WatchEvent

CERTIFICATES = "/etc/nginx/vhost-operator/certs"
CONFIGMAPS = [f"vhost-{index}" for index in range(4)]
HOSTNAMES = ["a.example.com", "b.example.com"]
NAMES = [*HOSTNAMES, "x.example.com"]
"""Hostnames and additional names come from one small pool, so that claims collide."""
SECRETS = ["tls-0", "tls-1", "tls-2"]
UPSTREAMS = ["http://app:8000", "http://other:8000"]
CREATED = ["2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"]


@functools.cache
def certificate(variant: int) -> dict[str, str]:
    chain, key = self_signed_certificate([f"v{variant}.example.com"])
    return {
        "tls.crt": base64.b64encode(chain).decode(),
        "tls.key": base64.b64encode(key).decode(),
    }


def secret(name: str, variant: int) -> dict[str, Any]:
    """Variants 0 and 1: two certificates; 2: a key that is no key."""
    data = certificate(variant) if variant < 2 else {"tls.crt": "", "tls.key": "bm8="}
    return {"metadata": {"name": name}, "data": data}


def configmap(
    name: str,
    hostname: str,
    additional_names: tuple[str, ...],
    tls_secret: str | None,
    enabled: bool,
    created: str,
    upstream: str,
    report: str,
) -> dict[str, Any]:
    directory = f"{CERTIFICATES}/{hostname}"
    site = SiteConfig(
        hostname=hostname,
        additional_names=tuple(n for n in additional_names if n != hostname),
        challenge_upstream="op:8089",
        upstream=upstream,
        certificate_path=f"{directory}/tls.crt" if tls_secret else None,
        key_path=f"{directory}/tls.key" if tls_secret else None,
    )
    annotations = {
        labels.HOSTNAME: hostname,
        labels.VIRTUALHOST: name,
        labels.VIRTUALHOST_CREATED: created,
        labels.ENABLED: "true" if enabled else "false",
        labels.APPLIED_CONFIG_HASH: report,  # the agent's report: changes no request
    }
    if tls_secret:
        annotations[labels.TLS_SECRET] = tls_secret
    return {
        "metadata": {"name": name, "annotations": annotations},
        "data": {f"{hostname}.conf": render_final(site)},
    }


configmaps = st.builds(
    configmap,
    st.sampled_from(CONFIGMAPS),
    st.sampled_from(HOSTNAMES),
    st.lists(st.sampled_from(NAMES), max_size=2, unique=True).map(tuple),
    st.none() | st.sampled_from(SECRETS),
    st.booleans(),
    st.sampled_from(CREATED),
    st.sampled_from(UPSTREAMS),
    st.sampled_from(["", "r1"]),
)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("write configmap"), configmaps),
        st.tuples(st.just("delete configmap"), st.sampled_from(CONFIGMAPS)),
        st.tuples(st.just("write secret"), st.sampled_from(SECRETS), st.integers(0, 2)),
        st.tuples(st.just("delete secret"), st.sampled_from(SECRETS)),
    ).flatmap(lambda step: st.sampled_from([[step], [step, ("batch",)]])),
    max_size=25,
).map(lambda steps: [step for pair in steps for step in pair])
"""Changes to the objects, a batch after some of them."""


def expected(requests: tuple[SiteRequest, ...]) -> dict[str, object]:
    """What a state of these requests holds besides them, by their plain definitions."""
    sites = {r.site.hostname: r.site for r in requests if r.site is not None}
    servers = {
        site.https_server.key: site.https_server
        for site in sites.values()
        if site.enabled and site.https_server is not None
    }
    return {
        "sites": sites,
        "held": frozenset(r.hostname for r in requests if r.site is None and r.hostname),
        "waiting": frozenset(r.configmap for r in requests if r.waiting_for_secret),
        "enabled_sites": sum(site.enabled for site in sites.values()),
        "servers": servers,
        "configmap_of": {r.hostname: r.configmap for r in requests if r.hostname},
    }


def held_by(state: DesiredState) -> dict[str, object]:
    return {
        "sites": dict(state.sites),
        "held": state.held,
        "waiting": state.waiting,
        "enabled_sites": state.enabled_sites,
        "servers": dict(state.servers),
        "configmap_of": dict(state.configmap_of),
    }


@settings(max_examples=200, deadline=None)
@given(operations)
def test_a_state_made_from_the_changes_is_the_state_of_every_object(
    steps: list[tuple[Any, ...]],
) -> None:
    objects: dict[str, dict[str, Any]] = {}
    secrets: dict[str, dict[str, Any]] = {}
    states = DesiredStates(CERTIFICATES)
    last = states(objects, secrets)
    changed: tuple[set[str], set[str]] = set(), set()
    for step in [*steps, ("batch",)]:
        match step:
            case ("write configmap", body):
                objects[body["metadata"]["name"]] = body
                changed[0].add(body["metadata"]["name"])
            case ("delete configmap", name):
                objects.pop(name, None)
                changed[0].add(name)
            case ("write secret", name, variant):
                secrets[name] = secret(name, variant)
                changed[1].add(name)
            case ("delete secret", name):
                secrets.pop(name, None)
                changed[1].add(name)
            case ("batch",):
                state = states(
                    objects, secrets, changed_configmaps=changed[0], changed_secrets=changed[1]
                )
                changed = set(), set()
                everything = desired_state(objects.values(), secrets, certificate_dir=CERTIFICATES)
                assert state.requests == everything.requests
                assert held_by(state) == expected(everything.requests)
                assert held_by(everything) == expected(everything.requests)
                assert state.since is last.sites
                moved = {
                    hostname
                    for hostname in state.sites.keys() | last.sites.keys()
                    if state.sites.get(hostname) is not last.sites.get(hostname)
                }
                assert moved <= state.changed_sites
                requests = {
                    name
                    for name in state.by_configmap.keys() | last.by_configmap.keys()
                    if state.by_configmap.get(name) is not last.by_configmap.get(name)
                }
                assert requests <= state.changed_requests
                last = state


def test_only_the_changed_configmaps_and_those_of_a_changed_secret_are_parsed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    objects = {
        name: configmap(
            name, f"h{index}.example.com", (), f"tls-{index}", True, "", UPSTREAMS[0], ""
        )
        for index, name in enumerate(CONFIGMAPS)
    }
    secrets = {f"tls-{index}": secret(f"tls-{index}", 0) for index in range(len(CONFIGMAPS))}
    states = DesiredStates(CERTIFICATES)
    first = states(objects, secrets)
    parsed: list[str] = []
    original = site_request_of_one

    def site_request(configmap: Object, *args: Any, **kwargs: Any) -> SiteRequest:
        parsed.append(configmap["metadata"]["name"])
        return original(configmap, *args, **kwargs)

    monkeypatch.setattr(states_module, "site_request", site_request)
    objects["vhost-1"] = configmap(
        "vhost-1", "h1.example.com", (), "tls-1", False, "", UPSTREAMS[0], ""
    )
    secrets["tls-3"] = secret("tls-3", 1)
    state = states(objects, secrets, changed_configmaps={"vhost-1"}, changed_secrets={"tls-3"})
    assert sorted(parsed) == ["vhost-1", "vhost-3"]
    assert state.changed_sites == {"h1.example.com", "h3.example.com"}
    assert state.enabled_sites == len(CONFIGMAPS) - 1
    for name in ("vhost-0", "vhost-2"):
        assert state.by_configmap[name] is first.by_configmap[name]


def test_a_store_names_what_its_events_touched_and_everything_after_a_list() -> None:
    store = ObjectStore(lambda obj: obj)
    assert store.take_changes() is None, "nothing taken yet: everything"
    a, b = {"metadata": {"name": "a"}}, {"metadata": {"name": "b"}}
    store.update(WatchEvent("SYNC", objects=(a,)))
    assert store.take_changes() is None
    store.update(WatchEvent("MODIFIED", a))
    store.update(WatchEvent("ADDED", b))
    store.update(WatchEvent("DELETED", b))
    assert store.take_changes() == {"a", "b"}
    assert store.take_changes() == set()
    store.update(WatchEvent("SYNC", objects=(a, b)))
    assert store.take_changes() is None


def test_a_shared_server_is_wanted_while_an_enabled_site_can_be_listed_in_it() -> None:
    objects = {
        name: configmap(name, host, (), "tls-0", True, "", UPSTREAMS[0], "")
        for name, host in zip(CONFIGMAPS[:2], HOSTNAMES, strict=False)
    }
    secrets = {"tls-0": secret("tls-0", 0)}
    states = DesiredStates(CERTIFICATES)
    [key] = states(objects, secrets).servers
    assert isinstance(states(objects, secrets).servers[key], SharedHttpsServer)
    objects["vhost-0"] = configmap(
        "vhost-0", HOSTNAMES[0], (), "tls-0", False, "", UPSTREAMS[0], ""
    )
    state = states(objects, secrets, changed_configmaps={"vhost-0"}, changed_secrets=())
    assert list(state.servers) == [key], "vhost-1 still wants it"
    del objects["vhost-1"]
    state = states(objects, secrets, changed_configmaps={"vhost-1"}, changed_secrets=())
    assert state.servers == {}
