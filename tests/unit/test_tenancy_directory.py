"""The gate's in-memory directory (``tenancy.directory``) and the ``auth_request`` header
parsing of its HTTP layer, fed with raw objects as the watch delivers them."""

from __future__ import annotations

from typing import Any

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from tests.unit.builders import virtualhost_body
from vhost_operator.resources.watch import WatchEvent
from vhost_operator.tenancy.directory import HostDirectory
from vhost_operator.tenancy.server import BadRequest, login_from_headers


def body(name: str, hostname: str, created: str = "2026-01-01T00:00:00Z", **spec: Any) -> Any:
    return virtualhost_body(hostname, metadata={"name": name, "creationTimestamp": created}, **spec)


def test_sync_then_events() -> None:
    directory = HostDirectory()
    assert not directory.synced
    directory.apply(WatchEvent("SYNC", objects=(body("a", "mail.a.com", domains=["a.com"]),)))
    assert directory.synced
    entry = directory.lookup("mail.a.com")
    assert entry is not None and entry.domains == {"a.com"} and entry.enabled

    directory.apply(WatchEvent("MODIFIED", object=body("a", "mail.a.com", enabled=False)))
    entry = directory.lookup("mail.a.com")
    assert entry is not None and not entry.enabled and entry.domains == frozenset()

    directory.apply(WatchEvent("ADDED", object=body("b", "mail.b.com")))
    directory.apply(WatchEvent("DELETED", object=body("a", "mail.a.com")))
    assert directory.lookup("mail.a.com") is None
    assert directory.lookup("mail.b.com") is not None
    assert len(directory) == 1


def test_sync_forgets_what_was_deleted_while_disconnected() -> None:
    directory = HostDirectory()
    directory.apply(WatchEvent("SYNC", objects=(body("a", "mail.a.com"), body("b", "mail.b.com"))))
    directory.apply(WatchEvent("SYNC", objects=(body("b", "mail.b.com"),)))
    assert directory.lookup("mail.a.com") is None
    assert directory.lookup("mail.b.com") is not None


def test_oldest_claim_on_a_hostname_wins_and_the_next_takes_over() -> None:
    directory = HostDirectory()
    old = body("old", "mail.x.com", "2026-01-01T00:00:00Z", domains=["x.com"])
    new = body("new", "mail.x.com", "2026-02-01T00:00:00Z", domains=["intruder.com"])
    directory.replace([new, old])
    entry = directory.lookup("mail.x.com")
    assert entry is not None and entry.domains == {"x.com"}
    directory.remove(old)
    entry = directory.lookup("mail.x.com")
    assert entry is not None and entry.domains == {"intruder.com"}
    directory.remove(new)
    assert directory.lookup("mail.x.com") is None


def test_unreadable_spec_removes_the_previous_entry() -> None:
    directory = HostDirectory()
    directory.replace([body("a", "mail.a.com", domains=["a.com"])])
    broken = {"metadata": {"name": "a"}, "spec": {"hostname": "Not A Hostname"}}
    directory.upsert(broken)
    assert directory.lookup("mail.a.com") is None


def test_bad_theme_values_are_dropped_not_served() -> None:
    directory = HostDirectory()
    theme = {"colors": {"primary": "#ABCDEF", "label": "red"}, "logos": {"login": "http://x.y/"}}
    directory.replace([body("a", "mail.a.com", theme=theme)])
    entry = directory.lookup("mail.a.com")
    assert entry is not None
    assert entry.theme.colors.primary == "#abcdef"
    assert entry.theme.colors.label is None and entry.theme.logos.login is None


# -- auth_request headers ---------------------------------------------------------------------


def headers(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


def test_headers_become_a_login() -> None:
    login = login_from_headers(
        headers(
            ("Host", "gate.internal:8090"),
            ("X-Original-Host", "Mail.A.com"),
            ("X-User-Email", "u@a.com"),
            ("X-User-Domains", " b.com, ,C.com "),
            ("X-User-Superuser", "FALSE"),
        )
    )
    assert login is not None
    assert login.hostname == "mail.a.com"
    assert login.administered_domains == ["b.com", "c.com"]
    assert login.superuser is False


def test_host_header_is_used_without_x_original_host() -> None:
    login = login_from_headers(headers(("Host", "mail.a.com:443"), ("X-User-Email", "u@a.com")))
    assert login is not None and login.hostname == "mail.a.com" and not login.superuser


def test_no_email_means_no_identity() -> None:
    assert login_from_headers(headers(("Host", "mail.a.com"), ("X-User-Email", " "))) is None


@pytest.mark.parametrize(
    ("pairs", "complaint"),
    [
        ((("X-User-Email", "u@a.com"),), "Host"),
        ((("Host", "mail.a.com"), ("X-User-Email", "u")), "user@domain"),
        ((("Host", "a.com"), ("X-User-Email", "u@a.com"), ("X-User-Superuser", "yes")), "true"),
        ((("Host", "a.com"), ("X-User-Email", "u@a.com"), ("X-User-Email", "r@a.com")), "2 times"),
        ((("Host", "a.com"), ("X-User-Email", "u@a.com"), ("X-User-Domains", "a.com,-b")), "valid"),
    ],
)  # fmt: skip
def test_bad_headers(pairs: tuple[tuple[str, str], ...], complaint: str) -> None:
    with pytest.raises(BadRequest, match=complaint):
        login_from_headers(headers(*pairs))
