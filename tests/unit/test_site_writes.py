"""How the nginx steps write a site ConfigMap (``provisioning.sites.SitePublisher``): in one
request where the watch of the site ConfigMaps vouches for whose it is, else read, check, apply."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.unit.builders import virtualhost
from vhost_operator.provisioning.serving import SiteApplications
from vhost_operator.provisioning.sites import BOOTSTRAP, FINAL, SitePublisher
from vhost_operator.resources import labels
from vhost_operator.resources.naming import site_configmap_name
from vhost_operator.resources.watch import WatchEvent
from vhost_operator.settings import Settings

SETTINGS = Settings(nginx_namespace="nginx", nginx_wait_for_agent=False)
HOST = virtualhost("mail.example.com", name="mail-example-com", uid="uid-1")
NAME = site_configmap_name(HOST.name)


class RecordingConfigMaps:
    """The calls a publish makes; ``existing``: whether a create finds the name taken."""

    def __init__(self, *, existing: bool = False) -> None:
        self.calls: list[str] = []
        self.existing = existing

    async def apply_configmap(
        self, namespace: str, manifest: dict[str, object], *, checked: bool = False
    ) -> None:
        self.calls.append("apply checked" if checked else "read, check, apply")

    async def create_configmap(self, namespace: str, manifest: dict[str, object]) -> bool:
        self.calls.append("create")
        return not self.existing

    # Objects under the names of earlier releases, removed before a publish until the watch
    # has listed: not what these tests are about.
    async def delete_configmap(self, namespace: str, name: str, *, owner: str) -> None:
        pass

    async def delete_secret(self, namespace: str, name: str, *, owner: str) -> None:
        pass


def site(owner: str, **metadata: Any) -> dict[str, Any]:
    annotations = {labels.VIRTUALHOST: owner}
    return {"metadata": {"name": NAME, "annotations": annotations, **metadata}}


def publish(
    configmaps: RecordingConfigMaps,
    seen: list[dict[str, Any]] | None,
    *,
    stage: str = BOOTSTRAP,
    tls: bool = False,
) -> list[str]:
    """The calls of one publish; ``seen``: the watch's list (``None``: not listed yet)."""
    applications = SiteApplications()
    if seen is not None:
        applications.handle(WatchEvent("SYNC", objects=tuple(seen)))
    publisher = SitePublisher(configmaps, SETTINGS, applications)
    asyncio.run(publisher.publish(HOST, stage, "server {}\n", tls=tls))
    return configmaps.calls


def test_a_new_hosts_first_config_is_one_create() -> None:
    assert publish(RecordingConfigMaps(), []) == ["create"]


def test_a_config_the_watch_shows_as_the_hosts_own_is_applied_without_a_read() -> None:
    assert publish(RecordingConfigMaps(), [site(HOST.name)], stage=FINAL, tls=True) == [
        "apply checked"
    ]


@pytest.mark.parametrize(
    "seen",
    [
        pytest.param([site("someone-else")], id="another-hosts"),
        pytest.param(
            [site(HOST.name, ownerReferences=[{"kind": "VirtualHost", "name": "other"}])],
            id="owned-by-another",
        ),
        pytest.param(None, id="not-listed-yet"),
    ],
)
def test_without_the_watch_vouching_the_write_reads_and_checks_first(
    seen: list[dict[str, Any]] | None,
) -> None:
    assert publish(RecordingConfigMaps(), seen) == ["read, check, apply"]


def test_a_create_refused_because_the_name_is_taken_falls_back_to_the_checked_write() -> None:
    assert publish(RecordingConfigMaps(existing=True), []) == ["create", "read, check, apply"]


def test_a_config_with_tls_is_never_created() -> None:
    """A create's fields stay with it when a later apply leaves them out (the TLS Secret's
    name, were ACME switched off): only the bootstrap config, with no such field, is."""
    assert publish(RecordingConfigMaps(), [], stage=FINAL, tls=True) == ["read, check, apply"]
