"""The webhook's rules, object in, refusal out."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.builders import virtualhost_body
from vhost_operator.admission.rules import (
    Refusal,
    review_maildomain,
    review_needed,
    review_virtualhost,
)


def vh(
    hostname: str, *, phase: str | None = None, retry: str | None = None, **spec: Any
) -> dict[str, Any]:
    annotations = {} if retry is None else {"vhost-operator.io/retry": retry}
    status = None if phase is None else {"phase": phase}
    return virtualhost_body(hostname, metadata={"annotations": annotations}, status=status, **spec)


def refusal(call: Any) -> Refusal:
    with pytest.raises(Refusal) as caught:
        call()
    return caught.value


def test_a_valid_host_passes() -> None:
    review_virtualhost(vh("mail.example.com"), None, name="m", hostname_owners=["m"])


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (vh("Mail.Example.com"), "must be lowercase (use 'mail.example.com')"),
        (vh("mail..example.com"), "not a valid hostname"),
        (vh("a.example.com", theme={"colors": {"primary": "red"}}), "spec.theme.colors.primary"),
        (
            vh("a.example.com", theme={"logos": {"login": 'https://x.example/a.svg" onload="'}}),
            "spec.theme.logos.login",
        ),
        (vh("a.example.com", theme={"logos": {"menu": "http://x.example/a.svg"}}), "https://"),
        (vh("192.0.2.7"), "'192.0.2.7' is an IP address"),
        (vh("2001:db8::7"), "'2001:db8::7' is an IP address"),
        (vh(".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 57])), "longer than 248"),
    ],
)
def test_invalid_hosts_are_refused_with_422(body: dict[str, Any], fragment: str) -> None:
    refused = refusal(lambda: review_virtualhost(body, None, name="x", hostname_owners=[]))
    assert refused.code == 422 and fragment in refused.message


def test_a_taken_hostname_is_a_conflict() -> None:
    refused = refusal(
        lambda: review_virtualhost(vh("a.example.com"), None, name="b", hostname_owners=["a"])
    )
    assert refused.code == 409
    assert refused.message == "hostname a.example.com is already used by VirtualHost a"


def test_the_hostname_is_immutable() -> None:
    refused = refusal(
        lambda: review_virtualhost(
            vh("b.example.com"), vh("a.example.com"), name="a", hostname_owners=[]
        )
    )
    assert refused.code == 422 and "immutable" in refused.message


@pytest.mark.parametrize("phase", ["Ready", "Pending", None])
def test_retry_on_a_host_that_is_not_failed_is_a_conflict(phase: str | None) -> None:
    old = vh("a.example.com", phase=phase)
    new = vh("a.example.com", phase=phase, retry="1")
    refused = refusal(lambda: review_virtualhost(new, old, name="a", hostname_owners=["a"]))
    assert refused.code == 409 and f"is {phase or 'Pending'}" in refused.message


def test_retry_on_a_failed_host_passes_and_other_edits_are_not_retries() -> None:
    failed = vh("a.example.com", phase="Failed")
    review_virtualhost(
        vh("a.example.com", phase="Failed", retry="1"), failed, name="a", hostname_owners=["a"]
    )
    ready = vh("a.example.com", phase="Ready", retry="1")
    review_virtualhost(
        vh("a.example.com", phase="Ready", retry="1", enabled=False),
        ready,
        name="a",
        hostname_owners=["a"],
    )


def test_a_domain_is_described_once() -> None:
    body = {"spec": {"name": "example.com", "virtualHost": "mail.example.com"}}
    review_maildomain(body, name="example-com", domain_owners=["example-com"])
    refused = refusal(lambda: review_maildomain(body, name="other", domain_owners=["example-com"]))
    assert refused.code == 409 and "MailDomain example-com" in refused.message


def test_a_domain_may_be_longer_than_a_served_hostname() -> None:
    long_name = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])  # 253: a valid domain
    review_maildomain({"spec": {"name": long_name}}, name="long", domain_owners=[])
    body = {"spec": {"name": "example.com", "virtualHost": long_name}}
    refused = refusal(lambda: review_maildomain(body, name="example-com", domain_owners=[]))
    assert refused.code == 422 and "longer than 248" in refused.message


def test_a_primary_hostname_is_no_virtualhost() -> None:
    primaries = ["webmail.provider.test"]
    refused = refusal(
        lambda: review_virtualhost(
            vh("webmail.provider.test"),
            None,
            name="x",
            hostname_owners=[],
            primary_hostnames=primaries,
        )
    )
    assert refused.code == 422
    assert "webmail.provider.test is a primary hostname of this instance" in refused.message
    body = {"spec": {"name": "example.com", "virtualHost": "webmail.provider.test"}}
    refused = refusal(
        lambda: review_maildomain(body, name="m", domain_owners=[], primary_hostnames=primaries)
    )
    assert refused.code == 422 and "primary hostname" in refused.message
    review_virtualhost(
        vh("mail.provider.test"), None, name="y", hostname_owners=[], primary_hostnames=primaries
    )


@pytest.mark.parametrize(
    ("domain", "fragment"),
    [
        ("Example.com", "domain 'Example.com' must be lowercase (use 'example.com')"),
        ("", "domain must not be empty"),
        ("example", "fully qualified"),
        ("exa mple.com", "domain 'exa mple.com' is not a valid hostname: label 'exa mple'"),
    ],
)
def test_a_listed_domain_must_be_a_valid_name(domain: str, fragment: str) -> None:
    """As the CRD's pattern says, but with the webhook's message; a domain the host already
    lists is not judged again (an edit must not fail on what it does not touch)."""
    body = vh("mail.example.com", domains=["example.org", domain])
    refused = refusal(lambda: review_virtualhost(body, None, name="m", hostname_owners=[]))
    assert refused.code == 422 and fragment in refused.message
    review_virtualhost(body, body, name="m", hostname_owners=[])


def review(operation: str, new: dict[str, Any], old: dict[str, Any] | None = None) -> Any:
    """An AdmissionReview request as the API server sends it."""
    payload: dict[str, Any] = {"uid": "r1", "operation": operation, "object": new}
    if old is not None:
        payload["oldObject"] = old
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": payload}


def with_metadata(body: dict[str, Any], **metadata: Any) -> dict[str, Any]:
    return {**body, "metadata": {**body["metadata"], **metadata}}


def test_updates_that_keep_spec_and_retry_need_no_review() -> None:
    # kopf's finalizer, its last-handled record, the wake-up annotation, a label, a status.
    host = vh("mail.example.com", phase="Ready", retry="1")
    kopf_wrote = with_metadata(
        host,
        finalizers=["vhost-operator.io/finalizer"],
        annotations={"vhost-operator.io/retry": "1", "kopf.vhost-operator.io/last": "{}"},
        labels={"team": "a"},
    )
    moved_on = {**kopf_wrote, "status": {"phase": "Pending"}}

    assert not review_needed(review("UPDATE", kopf_wrote, host))
    assert not review_needed(review("UPDATE", moved_on, host))


@pytest.mark.parametrize(
    ("new", "old"),
    [
        (vh("mail.example.com", domains=["example.com"]), vh("mail.example.com")),
        (vh("other.example.com"), vh("mail.example.com")),
        (vh("mail.example.com", retry="2", phase="Ready"), vh("mail.example.com", retry="1")),
        (vh("mail.example.com", retry="1"), vh("mail.example.com")),
        (vh("mail.example.com"), vh("mail.example.com", retry="1")),
    ],
    ids=["domains", "hostname", "retry-changed", "retry-added", "retry-removed"],
)
def test_updates_of_spec_or_retry_are_reviewed(new: dict[str, Any], old: dict[str, Any]) -> None:
    assert review_needed(review("UPDATE", new, old))


def test_creates_and_subresource_updates_are_reviewed() -> None:
    host = vh("mail.example.com")

    assert review_needed(review("CREATE", host))
    status_update = review("UPDATE", host, host)
    status_update["request"]["subResource"] = "status"
    assert review_needed(status_update)
