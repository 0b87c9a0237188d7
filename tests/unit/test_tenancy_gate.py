"""The login decision (``tenancy.gate``) and the names it compares (``tenancy.names``)."""

from __future__ import annotations

import pydantic
import pytest

from vhost_operator.tenancy.gate import Decision, HostEntry, LoginRequest, Reason, evaluate
from vhost_operator.tenancy.names import loggable, normalise_email, normalise_hostname

PRIMARY = ("webmail.provider.net",)

ACME = HostEntry(hostname="mail.acme.com", domains=frozenset({"acme.com", "acme.org"}))
GLOBEX = HostEntry(hostname="mail.globex.com", domains=frozenset({"globex.com"}))
DISABLED = HostEntry(hostname="mail.initech.com", enabled=False, domains=frozenset({"initech.com"}))
HOSTS = {host.hostname: host for host in (ACME, GLOBEX, DISABLED)}


def login(
    hostname: str, email: str, *, administers: tuple[str, ...] = (), superuser: bool = False
) -> Decision:
    """Decide as the service does: the request's normalised hostname picks the host."""
    request = LoginRequest(
        hostname=hostname,
        email=email,
        administered_domains=list(administers),
        superuser=superuser,
    )
    return evaluate(request, HOSTS.get(request.hostname), PRIMARY)


# -- the allow/deny matrix ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hostname", "email", "administers", "superuser", "allowed", "reason"),
    [
        # superusers go anywhere, even through unknown or disabled hosts
        ("mail.acme.com", "root@provider.net", (), True, True, Reason.SUPERUSER),
        ("nowhere.example", "root@provider.net", (), True, True, Reason.SUPERUSER),
        ("mail.initech.com", "root@provider.net", (), True, True, Reason.SUPERUSER),
        # mailbox domain linked to the host (either of its domains)
        ("mail.acme.com", "alice@acme.com", (), False, True, Reason.MAILBOX_DOMAIN),
        ("mail.acme.com", "bob@acme.org", (), False, True, Reason.MAILBOX_DOMAIN),
        # a domain the user administers is linked, though their mailbox is elsewhere
        ("mail.acme.com", "reseller@agency.net", ("globex.com", "acme.org"), False, True,
         Reason.ADMINISTERED_DOMAIN),
        # another tenant's user
        ("mail.acme.com", "gina@globex.com", (), False, False, Reason.NOT_A_TENANT),
        ("mail.globex.com", "alice@acme.com", (), False, False, Reason.NOT_A_TENANT),
        ("mail.acme.com", "admin@agency.net", ("globex.com",), False, False,
         Reason.NOT_A_TENANT),
        # a subdomain or parent of a linked domain is not that domain
        ("mail.acme.com", "eve@sub.acme.com", (), False, False, Reason.NOT_A_TENANT),
        ("mail.acme.com", "eve@com", (), False, False, Reason.NOT_A_TENANT),
        # the primary hostname lets everyone in, tenant or not
        ("webmail.provider.net", "gina@globex.com", (), False, True, Reason.PRIMARY_HOST),
        ("webmail.provider.net", "nobody@nowhere.example", (), False, True,
         Reason.PRIMARY_HOST),
        # unknown and disabled hosts deny non-superusers, even the host's own users
        ("mail.unknown.com", "alice@acme.com", (), False, False, Reason.UNKNOWN_HOST),
        ("mail.initech.com", "milton@initech.com", (), False, False, Reason.HOST_DISABLED),
        ("mail.initech.com", "milton@agency.net", ("initech.com",), False, False,
         Reason.HOST_DISABLED),
    ],
)  # fmt: skip
def test_matrix(
    hostname: str,
    email: str,
    administers: tuple[str, ...],
    superuser: bool,
    allowed: bool,
    reason: Reason,
) -> None:
    decision = login(hostname, email, administers=administers, superuser=superuser)
    assert (decision.allowed, decision.reason) == (allowed, reason), decision.message


@pytest.mark.parametrize(
    "hostname",
    [
        "MAIL.ACME.COM",
        "Mail.Acme.Com",
        "mail.acme.com.",
        "MAIL.acme.com.",
        "mail.acme.com:443",
        "mail.acme.com.:8443",
        "Mail.Acme.Com.:80",
    ],
)
def test_hostname_variants_are_the_same_host(hostname: str) -> None:
    assert login(hostname, "alice@acme.com").reason is Reason.MAILBOX_DOMAIN
    assert login(hostname, "gina@globex.com").reason is Reason.NOT_A_TENANT


@pytest.mark.parametrize("hostname", ["WEBMAIL.provider.net", "webmail.provider.net.:443"])
def test_primary_hostname_variants(hostname: str) -> None:
    assert login(hostname, "gina@globex.com").reason is Reason.PRIMARY_HOST


def test_primary_hostnames_setting_is_normalised_too() -> None:
    request = LoginRequest(hostname="webmail.provider.net", email="gina@globex.com")
    decision = evaluate(request, None, ["WebMail.Provider.NET."])
    assert decision.reason is Reason.PRIMARY_HOST


@pytest.mark.parametrize(
    ("email", "administers"),
    [("alice@ACME.com", ()), ("alice@acme.com.", ()), ("x@agency.net", ("ACME.ORG.",))],
)
def test_domain_case_and_trailing_dot_variants(email: str, administers: tuple[str, ...]) -> None:
    assert login("mail.acme.com", email, administers=administers).allowed


def test_host_entry_domains_are_normalised() -> None:
    host = HostEntry(hostname="Mail.Example.com.", domains=frozenset({"Example.COM."}))
    assert host.hostname == "mail.example.com"
    assert host.domains == {"example.com"}
    request = LoginRequest(hostname="mail.example.com", email="a@example.com")
    assert evaluate(request, host, ()).allowed


def test_mismatched_host_entry_is_not_used() -> None:
    # A caller bug (the wrong host looked up) must not grant access.
    request = LoginRequest(hostname="mail.globex.com", email="alice@acme.com")
    assert evaluate(request, ACME, ()).reason is Reason.UNKNOWN_HOST


def test_denial_message_names_no_other_tenant_domain() -> None:
    decision = login("mail.acme.com", "gina@globex.com")
    assert "gina@globex.com" in decision.message and "mail.acme.com" in decision.message
    assert "acme.org" not in decision.message


# -- the request at the boundary -----------------------------------------------------------


def test_request_reads_camel_case_json() -> None:
    request = LoginRequest.model_validate(
        {
            "hostname": "Mail.Acme.com",
            "email": "Alice@Acme.COM",
            "administeredDomains": ["Acme.org."],
            "superuser": False,
        }
    )
    assert request.hostname == "mail.acme.com"
    assert request.email == "Alice@acme.com"  # local part kept as written
    assert request.mailbox_domain == "acme.com"
    assert request.administered_domains == ["acme.org"]


@pytest.mark.parametrize(
    ("payload", "complaint"),
    [
        ({"email": "a@acme.com"}, "hostname"),
        ({"hostname": "mail.acme.com"}, "email"),
        ({"hostname": "", "email": "a@acme.com"}, "empty"),
        ({"hostname": "mail acme.com", "email": "a@acme.com"}, "not a valid name"),
        ({"hostname": "mail.acme.com..", "email": "a@acme.com"}, "not a valid name"),
        ({"hostname": "mail.acme.com:http", "email": "a@acme.com"}, "bad port"),
        ({"hostname": "mail.acme.com:99999", "email": "a@acme.com"}, "bad port"),
        ({"hostname": "mail.\u212acme.com", "email": "a@acme.com"}, "not ASCII"),
        ({"hostname": "mail.acme.com", "email": "alice"}, "user@domain"),
        ({"hostname": "mail.acme.com", "email": "@acme.com"}, "user@domain"),
        ({"hostname": "mail.acme.com", "email": "a b@acme.com"}, "before the @"),
        ({"hostname": "mail.acme.com", "email": "a@acme..com"}, "invalid domain"),
        ({"hostname": "mail.acme.com", "email": "a@acme.com", "superuser": "yes"}, "boolean"),
        ({"hostname": "mail.acme.com", "email": "a@acme.com", "superuser": 1}, "boolean"),
        (
            {"hostname": "mail.acme.com", "email": "a@acme.com", "administeredDomains": "x.com"},
            "list",
        ),
        (
            {"hostname": "mail.acme.com", "email": "a@acme.com", "administeredDomains": ["-x"]},
            "not a valid name",
        ),
        ({"hostname": "mail.acme.com", "email": "a@acme.com", "admin": True}, "not permitted"),
        ({"hostname": "a" * 300, "email": "a@acme.com"}, "longer than 253"),
    ],
)
def test_malformed_requests_are_refused(payload: dict[str, object], complaint: str) -> None:
    with pytest.raises(pydantic.ValidationError) as refused:
        LoginRequest.model_validate(payload)
    assert complaint in str(refused.value)


def test_too_many_administered_domains_are_refused() -> None:
    domains = [f"d{i}.example.com" for i in range(10_001)]
    with pytest.raises(pydantic.ValidationError):
        LoginRequest(hostname="a.example.com", email="a@example.com", administered_domains=domains)


# -- names ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("Mail.Example.COM", "mail.example.com"),
        ("mail.example.com.", "mail.example.com"),
        ("mail.example.com:8443", "mail.example.com"),
        ("localhost:8080", "localhost"),
        ("127.0.0.1:80", "127.0.0.1"),
        ("[::1]:8090", "[::1]"),
        ("[2001:DB8::1]", "[2001:db8::1]"),
    ],
)
def test_normalise_hostname(raw: str, normal: str) -> None:
    assert normalise_hostname(raw) == normal


@pytest.mark.parametrize("raw", ["[::1]x", "[::1]:", "mail.example.com:", ":443", "."])
def test_normalise_hostname_refuses(raw: str) -> None:
    with pytest.raises(ValueError):
        normalise_hostname(raw)


def test_normalise_email_splits_at_the_last_at() -> None:
    assert normalise_email('"a@b"@Example.com') == '"a@b"@example.com'


@pytest.mark.parametrize(
    ("raw", "logged"),
    [
        ("alice@acme.test", "alice@acme.test"),
        ("élise@acme.test", "élise@acme.test"),
        ("eve\u2028x@acme.test", "eve\\u2028x@acme.test"),
        ("eve\u2029x@acme.test", "eve\\u2029x@acme.test"),
        ("eve\x85x@acme.test", "eve\\x85x@acme.test"),
        ("eve\x9b31mx@acme.test", "eve\\x9b31mx@acme.test"),
    ],
)
def test_request_values_are_logged_escaped(raw: str, logged: str) -> None:
    assert loggable(normalise_email(raw)) == logged
