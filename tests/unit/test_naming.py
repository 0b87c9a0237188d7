"""Names derived from a VirtualHost: unique by construction, and whose an object is."""

from __future__ import annotations

import re

import pytest

from vhost_operator.resources import labels
from vhost_operator.resources.naming import (
    derived_name,
    foreign_owner,
    legacy_derived_name,
    next_key_secret_name,
    site_configmap_name,
    tls_secret_name,
)

_LABEL = re.compile(r"[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?")


def test_a_short_name_can_no_longer_be_spelt_like_a_shortened_one() -> None:
    victim = "victim-" + "x" * 60
    squatter = legacy_derived_name(victim).removeprefix("vhost-")
    assert legacy_derived_name(squatter) == legacy_derived_name(victim), "the old collision"
    for name in (site_configmap_name, tls_secret_name, next_key_secret_name):
        assert name(squatter) != name(victim)


@pytest.mark.parametrize(
    "virtualhost", ["a", "mail-example-com", "x" * 57, "y" * 63, "z." * 120 + "end"]
)
def test_every_derived_name_is_a_valid_label_value_carrying_a_hash(virtualhost: str) -> None:
    for suffix in ("", "-tls", "-next-key"):
        name = derived_name(virtualhost, suffix)
        assert len(name) <= 63 and _LABEL.fullmatch(name), name
        assert re.search(rf"-[0-9a-f]{{16}}{suffix}$", name), name


def test_names_that_share_a_long_prefix_stay_apart() -> None:
    names = {site_configmap_name("p" * 70 + str(i)) for i in range(1000)}
    names |= {site_configmap_name(str(i)) for i in range(1000)}
    assert len(names) == 2000


def test_suffixes_of_one_host_cannot_meet_names_of_another() -> None:
    # "a-tls" as a host must not take "a"'s TLS Secret name.
    assert tls_secret_name("a") != derived_name("a-tls")
    assert next_key_secret_name("a") != tls_secret_name("a-next")


def test_legacy_names_are_those_of_earlier_releases() -> None:
    assert legacy_derived_name("mail-example-com", "-tls") == "vhost-mail-example-com-tls"
    long = legacy_derived_name("l" * 80)
    assert len(long) == 63 and long.startswith("vhost-lll")


@pytest.mark.parametrize(
    ("metadata", "problem"),
    [
        ({"annotations": {labels.VIRTUALHOST: "mine"}}, None),
        (
            {
                "annotations": {labels.VIRTUALHOST: "mine"},
                "ownerReferences": [{"kind": "VirtualHost", "name": "mine", "uid": "1"}],
            },
            None,
        ),
        ({"annotations": {labels.VIRTUALHOST: "other"}}, "it belongs to VirtualHost other"),
        ({}, "it was not written for any VirtualHost"),
        (
            {
                "annotations": {labels.VIRTUALHOST: "mine"},
                "ownerReferences": [{"kind": "VirtualHost", "name": "other", "uid": "2"}],
            },
            "it is owned by VirtualHost other",
        ),
    ],
)
def test_only_objects_naming_the_host_are_its_own(
    metadata: dict[str, object], problem: str | None
) -> None:
    assert foreign_owner(metadata, "mine") == problem
