"""The MailDomain model: what it reads from an object, the status it writes, the CRD it mirrors,
and the webhook's one-host-per-domain rule for VirtualHosts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.builders import virtualhost_body
from tests.unit.test_crd_schema import undeclared
from vhost_operator.admission.rules import Refusal, review_virtualhost
from vhost_operator.resources.claims import Claim
from vhost_operator.resources.maildomains import (
    LINKED,
    VIRTUALHOST_DELETED,
    HostDomains,
    MailDomain,
    MailDomainSpec,
    MailDomainStatus,
    claimed_by_other,
    status_after,
    status_failed,
)

CRD = Path(__file__).resolve().parents[2] / "crds" / "maildomains.yaml"
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def body(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "example-com",
            "uid": "u1",
            "generation": 4,
            "resourceVersion": "77",
            "creationTimestamp": "2026-01-01T00:00:00Z",
        },
        "spec": {"name": "example.com", **spec},
    }


def test_every_model_field_is_declared_in_the_crd() -> None:
    crd = yaml.safe_load(CRD.read_text())
    properties = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    assert undeclared(MailDomainSpec, properties["spec"], "spec") == []
    assert undeclared(MailDomainStatus, properties["status"], "status") == []


@pytest.mark.parametrize("value", [None, ""])
def test_an_empty_or_absent_virtual_host_means_not_linked(value: str | None) -> None:
    spec = {} if value is None else {"virtualHost": value}
    assert MailDomain.from_body(body(**spec)).spec.virtual_host is None


def test_from_body_reads_identity_and_version() -> None:
    domain = MailDomain.from_body(body(virtualHost="mail.example.com"))
    assert (domain.name, domain.uid, domain.generation, domain.resource_version) == (
        "example-com",
        "u1",
        4,
        "77",
    )
    assert domain.claim == Claim("2026-01-01T00:00:00Z", "example-com")
    assert domain.spec.virtual_host == "mail.example.com"


def test_host_domains_from_a_virtualhost_being_deleted() -> None:
    host = HostDomains.from_body(
        {
            "metadata": {"name": "h", "resourceVersion": "5", "deletionTimestamp": "x"},
            "spec": {"hostname": "h.example.com", "domains": ["a.com"]},
        }
    )
    assert host == HostDomains("h", "h.example.com", ("a.com",), "5", deleting=True)


def test_the_oldest_claim_wins_then_the_name() -> None:
    domain = MailDomain.from_body(body())
    assert claimed_by_other(domain, []) is None
    assert claimed_by_other(domain, [Claim("2026-01-02T00:00:00Z", "later")]) is None
    assert claimed_by_other(domain, [Claim("2025-12-31T00:00:00Z", "older")]) == "older"
    assert claimed_by_other(domain, [Claim("2026-01-01T00:00:00Z", "a-same-second")]) == (
        "a-same-second"
    )


def test_status_of_a_linked_then_unlinked_domain() -> None:
    domain = MailDomain.from_body(body(virtualHost="mail.example.com"))
    linked = status_after(domain, linked="mail-example-com", hostname="mail.example.com", now=NOW)
    assert linked.to_merge_patch() == {
        "linkedVirtualHost": "mail-example-com",
        "conditions": [
            {
                "type": LINKED,
                "status": "True",
                "reason": "Linked",
                "message": "domain example.com is linked to VirtualHost mail-example-com "
                "(mail.example.com)",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
                "observedGeneration": 4,
            }
        ],
        "observedGeneration": 4,
    }
    later = domain.model_copy(update={"status": linked})
    unlinked = status_after(later, linked=None, hostname=None, now=NOW + timedelta(hours=1))
    patch = unlinked.to_merge_patch()
    assert patch["linkedVirtualHost"] is None, "an unlinked domain must drop the old host"
    assert patch["conditions"][0]["reason"] == "NoVirtualHost"
    assert patch["conditions"][0]["lastTransitionTime"] == "2026-01-01T01:00:00Z"


def test_unlinked_by_a_host_deletion_keeps_saying_so_until_linked_again() -> None:
    domain = MailDomain.from_body(body())
    deleted = status_after(
        domain, linked=None, hostname=None, now=NOW, reason=VIRTUALHOST_DELETED, message="gone"
    )
    after = domain.model_copy(update={"status": deleted})
    again = status_after(after, linked=None, hostname=None, now=NOW)
    condition = again.condition(LINKED)
    assert condition is not None and (condition.reason, condition.message) == (
        VIRTUALHOST_DELETED,
        "gone",
    )
    relinked = status_after(
        after.model_copy(update={"status": again}), linked="h", hostname="h.example.com", now=NOW
    )
    condition = relinked.condition(LINKED)
    assert condition is not None and condition.reason == "Linked"


def test_a_failure_keeps_the_last_link() -> None:
    domain = MailDomain.from_body(body()).model_copy(
        update={"status": MailDomainStatus(linked_virtual_host="old")}
    )
    failed = status_failed(domain, reason="LinkFailed", message="busy", now=NOW)
    assert failed.linked_virtual_host == "old"
    condition = failed.condition(LINKED)
    assert condition is not None and (condition.status, condition.reason) == ("False", "LinkFailed")


# -- the webhook: a domain links to at most one host -------------------------------------------


def vh(*domains: str) -> dict[str, Any]:
    return virtualhost_body("b.example.com", domains=list(domains))


def test_a_domain_another_host_lists_is_refused() -> None:
    with pytest.raises(Refusal) as refused:
        review_virtualhost(
            vh("example.com"),
            None,
            name="b",
            hostname_owners=[],
            domain_owners={"example.com": ["a"]},
        )
    assert refused.value.code == 409
    assert refused.value.message.startswith(
        "domain example.com is already linked to VirtualHost a; a domain links to at most one "
        "virtual host"
    )


def test_own_domains_and_duplicates_that_predate_the_change_pass() -> None:
    review_virtualhost(
        vh("example.com"), None, name="b", hostname_owners=[], domain_owners={"example.com": ["b"]}
    )
    # An old duplicate must not block an unrelated edit, nor removing it.
    review_virtualhost(
        vh("example.com", "new.com"),
        vh("example.com"),
        name="b",
        hostname_owners=["b"],
        domain_owners={"example.com": ["a", "b"]},
    )
    review_virtualhost(vh(), vh("example.com"), name="b", hostname_owners=["b"])
