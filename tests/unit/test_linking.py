"""MailDomain linking against in-memory VirtualHosts that behave like the API server: versioned
conditional writes, AlreadyExists on a taken name, and (optionally) the webhook's refusal of a
domain listed by two hosts. Concurrent links are interleaved at every API call."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Collection, Sequence
from datetime import UTC, datetime

import pytest

from vhost_operator.errors import InvalidResourceError, TransientApiError
from vhost_operator.kube.preconditions import Contended, NameTaken
from vhost_operator.provisioning import linking
from vhost_operator.provisioning.linking import (
    DomainClaimed,
    HostBeingDeleted,
    LinkOutcome,
    link_domain,
    reconcile_maildomain,
    release_maildomain,
    unlink_domain,
    unlink_maildomains_of,
)
from vhost_operator.resources.claims import Claim
from vhost_operator.resources.maildomains import (
    LINKED,
    VIRTUALHOST_DELETED,
    HostDomains,
    MailDomain,
    MailDomainSpec,
    MailDomainStatus,
    virtualhost_names,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class FakeHosts:
    """VirtualHosts as the API server keeps them. ``webhook``: refuse a domain another host
    lists (as the admission webhook does), so the order of writes matters."""

    def __init__(self, *, webhook: bool = False, jitter: bool = False) -> None:
        self.hosts: dict[str, HostDomains] = {}
        self.created_for: dict[str, str] = {}
        self.webhook = webhook
        self.jitter = jitter
        self.version = 0
        self.writes = 0

    async def _yield(self) -> None:
        # Every call is a point where another handler may run, as with real API round trips.
        await asyncio.sleep(random.uniform(0, 0.002) if self.jitter else 0)

    def add(self, name: str, hostname: str, *domains: str, deleting: bool = False) -> None:
        self.version += 1
        self.hosts[name] = HostDomains(name, hostname, tuple(domains), str(self.version), deleting)

    def _refuse_duplicates(self, name: str, domains: Sequence[str]) -> None:
        if not self.webhook:
            return
        for other in self.hosts.values():
            clash = set(domains) & set(other.domains)
            if other.name != name and clash:
                raise Contended(f"domain {sorted(clash)[0]} is already linked to {other.name}")

    async def get(self, name: str) -> HostDomains | None:
        await self._yield()
        return self.hosts.get(name)

    async def create(
        self, name: str, hostname: str, domains: Sequence[str], *, created_for: str
    ) -> HostDomains:
        await self._yield()
        if name in self.hosts:
            raise NameTaken(f"creating VirtualHost {name}: already exists")
        self._refuse_duplicates(name, domains)
        self.add(name, hostname, *domains)
        self.created_for[name] = created_for
        self.writes += 1
        return self.hosts[name]

    async def set_domains(self, host: HostDomains, domains: Sequence[str]) -> HostDomains | None:
        await self._yield()
        current = self.hosts.get(host.name)
        if current is None:
            return None
        if current.resource_version != host.resource_version:
            raise Contended("the object has been modified")
        self._refuse_duplicates(host.name, domains)
        self.add(host.name, current.hostname, *domains, deleting=current.deleting)
        self.writes += 1
        return self.hosts[host.name]

    def domains(self, name: str) -> list[str]:
        return sorted(self.hosts[name].domains)


class LiveHints:
    """An index that is always current (``stale``: one that has seen nothing yet)."""

    def __init__(self, hosts: FakeHosts, *, stale: bool = False) -> None:
        self._hosts = hosts
        self._stale = stale

    def named_for(self, hostname: str) -> Collection[str]:
        if self._stale:
            return []
        return [h.name for h in self._hosts.hosts.values() if h.hostname == hostname]

    def listing(self, domain: str) -> Collection[str]:
        if self._stale:
            return []
        return [h.name for h in self._hosts.hosts.values() if domain in h.domains]


def maildomain(
    name: str,
    domain: str,
    virtual_host: str | None = None,
    *,
    linked: str | None = None,
    created: str = "2026-01-01T00:00:00Z",
    version: str = "1",
) -> MailDomain:
    return MailDomain(
        name=name,
        uid=f"uid-{name}",
        generation=1,
        resource_version=version,
        creation_timestamp=created,
        spec=MailDomainSpec(name=domain, virtual_host=virtual_host),
        status=MailDomainStatus(linked_virtual_host=linked),
    )


def link(hosts: FakeHosts, domain: str, hostname: str, previous: str | None = None) -> LinkOutcome:
    return asyncio.run(
        link_domain(
            domain,
            hostname,
            previous=previous,
            hosts=hosts,
            hints=LiveHints(hosts),
            created_for=f"MailDomain/{domain}",
        )
    )


# -- names --------------------------------------------------------------------------------------


def test_host_names_derive_from_the_hostname() -> None:
    base, hashed = virtualhost_names("mail.example.com")
    assert base == "mail-example-com"
    assert hashed.startswith("mail-example-com-") and len(hashed) == len(base) + 9
    assert virtualhost_names("mail-example.com")[0] == base
    assert virtualhost_names("mail-example.com")[1] != hashed


def test_host_names_of_the_longest_hostnames_stay_valid() -> None:
    hostname = ".".join(["a" * 63] * 3 + ["b" * 61])
    assert len(hostname) == 253
    for name in virtualhost_names(hostname):
        assert len(name) <= 253 and not name.endswith("-")


# -- linking ------------------------------------------------------------------------------------


def test_a_domain_creates_its_host() -> None:
    hosts = FakeHosts()
    outcome = link(hosts, "example.com", "mail.example.com")
    assert outcome == LinkOutcome(
        linked="mail-example-com", hostname="mail.example.com", created=True, added=True
    )
    assert hosts.hosts["mail-example-com"].hostname == "mail.example.com"
    assert hosts.domains("mail-example-com") == ["example.com"]
    assert hosts.created_for["mail-example-com"] == "MailDomain/example.com"


def test_a_second_domain_joins_the_host_and_relinking_writes_nothing() -> None:
    hosts = FakeHosts()
    link(hosts, "example.com", "mail.example.com")
    outcome = link(hosts, "example.org", "mail.example.com")
    assert outcome == LinkOutcome(
        linked="mail-example-com", hostname="mail.example.com", added=True
    )
    assert hosts.domains("mail-example-com") == ["example.com", "example.org"]
    writes = hosts.writes
    again = link(hosts, "example.org", "mail.example.com", previous="mail-example-com")
    assert again == LinkOutcome(linked="mail-example-com", hostname="mail.example.com")
    assert hosts.writes == writes


def test_a_name_taken_by_another_hostname_gets_a_hashed_name() -> None:
    hosts = FakeHosts()
    hosts.add("mail-example-com", "mail-example.com", "other.com")
    outcome = link(hosts, "example.com", "mail.example.com")
    hashed = virtualhost_names("mail.example.com")[1]
    assert outcome == LinkOutcome(
        linked=hashed, hostname="mail.example.com", created=True, added=True
    )
    assert hosts.domains("mail-example-com") == ["other.com"]
    # and it is found there again, not created a third time
    assert link(hosts, "example.org", "mail.example.com") == LinkOutcome(
        linked=hashed, hostname="mail.example.com", added=True
    )


def test_both_names_taken_by_other_hostnames_is_an_error() -> None:
    hosts = FakeHosts()
    base, hashed = virtualhost_names("mail.example.com")
    hosts.add(base, "mail-example.com")
    hosts.add(hashed, "elsewhere.example.com")
    with pytest.raises(InvalidResourceError, match="used by VirtualHosts of other hostnames"):
        link(hosts, "example.com", "mail.example.com")


def test_a_host_made_by_hand_under_any_name_is_used() -> None:
    hosts = FakeHosts()
    hosts.add("custom", "mail.example.com", "example.net")
    outcome = link(hosts, "example.com", "mail.example.com")
    assert outcome == LinkOutcome(linked="custom", hostname="mail.example.com", added=True)
    assert set(hosts.hosts) == {"custom"}
    assert hosts.domains("custom") == ["example.com", "example.net"]


@pytest.mark.parametrize("webhook", [False, True])
def test_changing_the_hostname_moves_the_domain(webhook: bool) -> None:
    hosts = FakeHosts(webhook=webhook)
    link(hosts, "example.com", "one.example.com")
    link(hosts, "example.org", "one.example.com")
    outcome = link(hosts, "example.com", "two.example.com", previous="one-example-com")
    assert outcome == LinkOutcome(
        linked="two-example-com",
        hostname="two.example.com",
        created=True,
        added=True,
        removed_from=("one-example-com",),
    )
    assert hosts.domains("one-example-com") == ["example.org"]
    assert hosts.domains("two-example-com") == ["example.com"]


@pytest.mark.parametrize("webhook", [False, True])
def test_a_domain_listed_by_hand_on_another_host_is_moved_not_duplicated(webhook: bool) -> None:
    hosts = FakeHosts(webhook=webhook)
    hosts.add("by-hand", "other.example.com", "example.com", "example.net")
    hosts.add("mail-example-com", "mail.example.com")
    outcome = link(hosts, "example.com", "mail.example.com")
    assert outcome.removed_from == ("by-hand",)
    assert hosts.domains("by-hand") == ["example.net"]
    assert hosts.domains("mail-example-com") == ["example.com"]


def test_unlinking_takes_the_domain_off_every_host() -> None:
    hosts = FakeHosts()
    hosts.add("a", "a.example.com", "example.com", "keep.com")
    hosts.add("b", "b.example.com", "example.com")
    outcome = asyncio.run(
        unlink_domain("example.com", previous="a", hosts=hosts, hints=LiveHints(hosts))
    )
    assert outcome == LinkOutcome(linked=None, removed_from=("a", "b"))
    assert hosts.domains("a") == ["keep.com"] and hosts.domains("b") == []


def test_the_recorded_link_is_unlinked_even_when_the_index_lags() -> None:
    hosts = FakeHosts()
    hosts.add("a", "a.example.com", "example.com")
    stale = LiveHints(hosts, stale=True)
    asyncio.run(unlink_domain("example.com", previous="a", hosts=hosts, hints=stale))
    assert hosts.domains("a") == []


def test_a_host_being_deleted_is_neither_joined_nor_written() -> None:
    hosts = FakeHosts()
    hosts.add("mail-example-com", "mail.example.com", "example.org", deleting=True)
    with pytest.raises(HostBeingDeleted):
        link(hosts, "example.com", "mail.example.com")
    outcome = asyncio.run(
        unlink_domain(
            "example.org", previous="mail-example-com", hosts=hosts, hints=LiveHints(hosts)
        )
    )
    assert outcome.removed_from == ()
    assert hosts.writes == 0


def test_a_write_that_keeps_losing_gives_up_with_a_transient_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hosts = FakeHosts()
    hosts.add("mail-example-com", "mail.example.com")

    async def always_stale(host: HostDomains, domains: Sequence[str]) -> HostDomains | None:
        raise Contended("the object has been modified")

    monkeypatch.setattr(hosts, "set_domains", always_stale)
    monkeypatch.setattr(linking, "MAX_BACKOFF", 0.0)
    with pytest.raises(TransientApiError, match="still conflicting after 8 attempts"):
        link(hosts, "example.com", "mail.example.com")


# -- races --------------------------------------------------------------------------------------


@pytest.mark.parametrize("webhook", [False, True])
@pytest.mark.parametrize("stale_index", [False, True])
@pytest.mark.parametrize("seed", range(10))
def test_simultaneous_links_to_a_new_hostname_share_one_host(
    seed: int, stale_index: bool, webhook: bool
) -> None:
    random.seed(seed)
    hosts = FakeHosts(jitter=True, webhook=webhook)
    hints = LiveHints(hosts, stale=stale_index)
    domains = [f"d{i}.example.com" for i in range(6)]

    async def all_at_once() -> None:
        await asyncio.gather(
            *(
                link_domain(
                    d,
                    "mail.example.com",
                    previous=None,
                    hosts=hosts,
                    hints=hints,
                    created_for=f"MailDomain/{d}",
                )
                for d in domains
            )
        )

    asyncio.run(all_at_once())
    assert list(hosts.hosts) == ["mail-example-com"]
    assert hosts.domains("mail-example-com") == sorted(domains)


@pytest.mark.parametrize("seed", range(10))
def test_simultaneous_moves_never_lose_or_duplicate_a_domain(seed: int) -> None:
    random.seed(seed)
    hosts = FakeHosts(jitter=True, webhook=True)
    hosts.add("one", "one.example.com", "a.com", "b.com", "c.com")
    hosts.add("two", "two.example.com", "x.com")

    async def moves() -> None:
        await asyncio.gather(
            *(
                link_domain(
                    d,
                    "two.example.com",
                    previous="one",
                    hosts=hosts,
                    hints=LiveHints(hosts),
                    created_for="",
                )
                for d in ("a.com", "b.com")
            ),
            link_domain(
                "y.com",
                "one.example.com",
                previous=None,
                hosts=hosts,
                hints=LiveHints(hosts),
                created_for="",
            ),
        )

    asyncio.run(moves())
    assert hosts.domains("one") == ["c.com", "y.com"]
    assert hosts.domains("two") == ["a.com", "b.com", "x.com"]


# -- MailDomains --------------------------------------------------------------------------------


def test_reconcile_links_or_unlinks_by_the_spec() -> None:
    hosts = FakeHosts()
    hints = LiveHints(hosts)
    linked = asyncio.run(
        reconcile_maildomain(maildomain("a", "example.com", "mail.example.com"), hosts, hints, [])
    )
    assert linked.linked == "mail-example-com"
    assert hosts.created_for["mail-example-com"] == "MailDomain/a"
    cleared = maildomain("a", "example.com", None, linked="mail-example-com")
    unlinked = asyncio.run(reconcile_maildomain(cleared, hosts, hints, []))
    assert unlinked == LinkOutcome(linked=None, removed_from=("mail-example-com",))
    assert hosts.domains("mail-example-com") == []


def test_an_older_maildomain_keeps_its_domain() -> None:
    hosts = FakeHosts()
    hosts.add("mail-example-com", "mail.example.com", "example.com")
    older = Claim("2026-01-01T00:00:00Z", "first")
    newer = maildomain("second", "example.com", "other.example.com", created="2026-01-02T00:00:00Z")
    with pytest.raises(DomainClaimed, match="already described by MailDomain first"):
        asyncio.run(reconcile_maildomain(newer, hosts, LiveHints(hosts), [older, newer.claim]))
    released = asyncio.run(release_maildomain(newer, hosts, LiveHints(hosts), [older]))
    assert released == LinkOutcome(linked=None)
    assert hosts.domains("mail-example-com") == ["example.com"]
    assert set(hosts.hosts) == {"mail-example-com"}


def test_deleting_a_maildomain_unlinks_it() -> None:
    hosts = FakeHosts()
    hosts.add("mail-example-com", "mail.example.com", "example.com", "example.org")
    domain = maildomain("a", "example.com", "mail.example.com", linked="mail-example-com")
    outcome = asyncio.run(release_maildomain(domain, hosts, LiveHints(hosts), [domain.claim]))
    assert outcome.removed_from == ("mail-example-com",)
    assert hosts.domains("mail-example-com") == ["example.org"]


# -- VirtualHost deletion -----------------------------------------------------------------------


class FakeMailDomains:
    def __init__(self, *domains: MailDomain) -> None:
        self.objects = {d.name: d for d in domains}
        self.statuses: dict[str, MailDomainStatus] = {}
        self.cleared: list[str] = []
        self.stale_once: set[str] = set()
        """Names whose next clear loses to a user's edit made just before."""
        self.user_edit: dict[str, str | None] = {}

    async def list_all(self) -> list[MailDomain]:
        return list(self.objects.values())

    async def get(self, name: str) -> MailDomain | None:
        return self.objects.get(name)

    async def clear_virtual_host(self, domain: MailDomain) -> bool:
        if domain.name in self.stale_once:
            self.stale_once.discard(domain.name)
            current = self.objects[domain.name]
            edited = current.spec.model_copy(update={"virtual_host": self.user_edit[domain.name]})
            self.objects[domain.name] = current.model_copy(
                update={"spec": edited, "resource_version": "2"}
            )
            raise Contended("the object has been modified")
        self.cleared.append(domain.name)
        return True

    async def write_status(self, name: str, status: MailDomainStatus) -> None:
        self.statuses[name] = status


def test_deleting_a_host_clears_the_maildomains_that_name_it() -> None:
    store = FakeMailDomains(
        maildomain("a", "a.com", "mail.example.com", linked="mail-example-com"),
        maildomain("b", "b.com", "mail.example.com"),
        maildomain("c", "c.com", "other.example.com", linked="other-example-com"),
        maildomain("d", "d.com", None),
    )
    announced: list[tuple[str, str]] = []
    unlinked = asyncio.run(
        unlink_maildomains_of(
            "mail.example.com",
            "mail-example-com",
            store,
            announce=lambda d, message: announced.append((d.name, message)),
            clock=lambda: NOW,
        )
    )
    assert unlinked == ["a", "b"]
    assert store.cleared == ["a", "b"]
    for name in ("a", "b"):
        status = store.statuses[name]
        assert status.linked_virtual_host is None
        condition = status.condition(LINKED)
        assert condition is not None and condition.reason == VIRTUALHOST_DELETED
        assert condition.status == "False"
    assert announced[0] == (
        "a",
        "VirtualHost mail-example-com (mail.example.com) was deleted: domain a.com is no longer "
        "linked and spec.virtualHost was cleared",
    )


def test_a_maildomain_pointed_elsewhere_meanwhile_keeps_the_users_choice() -> None:
    store = FakeMailDomains(maildomain("a", "a.com", "mail.example.com"))
    store.stale_once.add("a")
    store.user_edit["a"] = "new.example.com"
    asyncio.run(unlink_maildomains_of("mail.example.com", "mail-example-com", store))
    assert store.cleared == []
    assert store.objects["a"].spec.virtual_host == "new.example.com"


def test_a_maildomain_edited_but_still_naming_the_host_is_cleared_on_the_next_round() -> None:
    store = FakeMailDomains(maildomain("a", "a.com", "mail.example.com"))
    store.stale_once.add("a")
    store.user_edit["a"] = "mail.example.com"
    asyncio.run(unlink_maildomains_of("mail.example.com", "mail-example-com", store))
    assert store.cleared == ["a"]
