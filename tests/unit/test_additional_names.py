"""``spec.additionalNames``: validated like the hostname, unique across hosts, all in one
certificate, served by nginx and the gate, and a changed list re-runs the chain."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pydantic
import pytest

from tests.harness.nginx import nginx_check_final
from tests.unit.test_certificate_step import HOST, TLS, Stack
from vhost_operator.admission.rules import Refusal, review_maildomain, review_virtualhost
from vhost_operator.agent.state import desired_state
from vhost_operator.catalog import HostCatalog
from vhost_operator.certs import inspect_certificate, new_private_key_pem
from vhost_operator.nginx import (
    FinalLayout,
    SiteConfig,
    recognise,
    render_bootstrap,
    render_final,
    shared_http_names,
)
from vhost_operator.provisioning.decisions import Action, decide, names_refusal
from vhost_operator.resources import labels
from vhost_operator.resources.claims import Claim
from vhost_operator.resources.hostnames import MAX_ADDITIONAL_NAMES
from vhost_operator.resources.models import (
    CertificateStatus,
    Phase,
    VirtualHost,
    VirtualHostSpec,
    VirtualHostStatus,
)
from vhost_operator.resources.watch import WatchEvent
from vhost_operator.tenancy.directory import HostDirectory
from vhost_operator.tenancy.gate import LoginRequest, Reason, evaluate

HOSTNAME = "mail.example.com"
EXTRA = ["imap.example.com", "autoconfig.example.com"]
CERTS = "/etc/nginx/vhost-operator/certs"
NAME = HOST.name  # the certificate step tests' host: its Secrets are TLS and NEXT_KEY


def vh(*names: Any, hostname: str = HOSTNAME) -> dict[str, Any]:
    return {"metadata": {}, "spec": {"hostname": hostname, "additionalNames": list(names)}}


def refused(body: dict[str, Any], old: dict[str, Any] | None = None, **owners: Any) -> Refusal:
    with pytest.raises(Refusal) as caught:
        review_virtualhost(body, old, name="me", hostname_owners=[], **owners)
    return caught.value


# -- admission ---------------------------------------------------------------------------------


def test_valid_additional_names_pass() -> None:
    review_virtualhost(vh(*EXTRA), None, name="me", hostname_owners=["me"])
    names = [f"n{i}.example.com" for i in range(MAX_ADDITIONAL_NAMES)]
    review_virtualhost(vh(*names), None, name="me", hostname_owners=[])


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (
            ["IMAP.example.com"],
            "spec.additionalNames: hostname 'IMAP.example.com' must be lowercase "
            "(use 'imap.example.com')",
        ),
        (["imap..example.com"], "is not a valid hostname"),
        (["192.0.2.1"], "is an IP address"),
        (["imap"], "must be fully qualified"),
        (["imap.example.com."], "must not end with a dot"),
        ([".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 57])], "longer than 248"),
        ([HOSTNAME], f"additional name {HOSTNAME} is the hostname itself"),
        (
            ["imap.example.com", "imap.example.com"],
            "additional name imap.example.com is listed twice",
        ),
        (
            [f"n{i}.example.com" for i in range(MAX_ADDITIONAL_NAMES + 1)],
            f"additionalNames has 20 names; at most {MAX_ADDITIONAL_NAMES} are allowed",
        ),
        ([7], "spec.additionalNames must be a list of hostnames"),
    ],
)
def test_invalid_additional_names_are_refused_with_422(names: list[Any], message: str) -> None:
    refusal = refused(vh(*names))
    assert refusal.code == 422 and message in refusal.message, refusal.message


def test_a_primary_hostname_is_no_additional_name() -> None:
    with pytest.raises(Refusal) as caught:
        review_virtualhost(
            vh("www.example.com"),
            None,
            name="me",
            hostname_owners=[],
            primary_hostnames=["www.example.com"],
        )
    assert caught.value.code == 422 and "primary hostname" in caught.value.message


def test_a_name_another_host_serves_is_a_conflict() -> None:
    refusal = refused(vh(*EXTRA), name_owners={"imap.example.com": ["other"]})
    assert refusal.code == 409
    assert refusal.message.startswith(
        "additional name imap.example.com is already used by VirtualHost other"
    )


def test_a_clash_that_predates_an_edit_does_not_block_it() -> None:
    old = vh("imap.example.com")
    review_virtualhost(
        vh(*EXTRA),
        old,
        name="me",
        hostname_owners=[],
        name_owners={"imap.example.com": ["other"]},
    )
    refusal = refused(vh(*EXTRA), old, name_owners={"autoconfig.example.com": ["other"]})
    assert refusal.code == 409 and "autoconfig.example.com" in refusal.message


def test_the_model_refuses_what_the_webhook_refuses() -> None:
    with pytest.raises(pydantic.ValidationError, match="is the hostname itself"):
        VirtualHostSpec(hostname=HOSTNAME, additional_names=[HOSTNAME])
    with pytest.raises(pydantic.ValidationError, match="must be lowercase"):
        VirtualHostSpec(hostname=HOSTNAME, additional_names=["Imap.example.com"])
    spec = VirtualHostSpec.model_validate({"hostname": HOSTNAME, "additionalNames": EXTRA})
    assert spec.names == (HOSTNAME, *EXTRA)


# -- uniqueness across hosts (operator side) ----------------------------------------------------


def catalog_body(name: str, hostname: str, created: str, *names: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "uid": name, "generation": 1, "creationTimestamp": created},
        "spec": {"hostname": hostname, "additionalNames": list(names)},
    }


def host(
    *names: str,
    phase: Phase | None = Phase.READY,
    covered: list[str] | None = None,
    certificate: bool = True,
    enabled: bool = True,
    name: str = "me",
    created: str = "2026-01-02T00:00:00Z",
) -> VirtualHost:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    status = VirtualHostStatus(
        phase=phase,
        observed_generation=1,
        certificate=CertificateStatus(
            secret_name="s",
            not_before=now,
            not_after=now,
            serial="1",
            renewal_time=now,
            names=covered,
        )
        if certificate
        else None,
    )
    return VirtualHost(
        name=name,
        uid=name,
        generation=1,
        creation_timestamp=created,
        spec=VirtualHostSpec(hostname=HOSTNAME, additional_names=list(names), enabled=enabled),
        status=status,
    )


def test_the_catalog_knows_who_serves_each_name() -> None:
    hosts = HostCatalog()
    hosts.apply(
        WatchEvent(
            "SYNC",
            objects=(
                catalog_body("a", "mail.a.test", "2026-01-01T00:00:00Z", "imap.a.test"),
                catalog_body("b", "mail.b.test", "2026-01-02T00:00:00Z"),
            ),
        )
    )
    assert list(hosts.serving("imap.a.test")) == ["a"]
    assert list(hosts.serving("mail.a.test")) == ["a"]
    assert list(hosts.named_for("imap.a.test")) == [], "linking looks up hostnames only"
    hosts.apply(
        WatchEvent("MODIFIED", object=catalog_body("a", "mail.a.test", "2026-01-01T00:00:00Z"))
    )
    assert list(hosts.serving("imap.a.test")) == []


def test_an_older_host_keeps_a_name_the_webhook_let_through() -> None:
    hosts = HostCatalog()
    older = catalog_body("old", "mail.old.test", "2026-01-01T00:00:00Z", "imap.example.com")
    hosts.apply(WatchEvent("SYNC", objects=(older,)))
    me = host("imap.example.com")
    assert names_refusal(me, hosts.rivals) == (
        "additional name imap.example.com is already served by VirtualHost old, which is older "
        "and keeps it; remove it from spec.additionalNames here or there, then retry this one"
    )
    # The hostname too: an older host's additional name.
    hosts.apply(
        WatchEvent("ADDED", object=catalog_body("x", "x.test", "2026-01-01T00:00:00Z", HOSTNAME))
    )
    assert (names_refusal(host(), hosts.rivals) or "").startswith(f"hostname {HOSTNAME} is")
    # A younger rival does not stop this host.
    assert (
        names_refusal(
            host("imap.example.com", created="2025-01-01T00:00:00Z"),
            lambda n: [Claim("2026-01-01T00:00:00Z", "old")],
        )
        is None
    )


# -- what a changed list calls for --------------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "action"),
    [
        pytest.param(host(covered=None), Action.NOTHING, id="old-status-hostname-only"),
        pytest.param(host(*EXTRA, covered=None), Action.REISSUE, id="old-status-names-added"),
        pytest.param(host(*EXTRA, covered=[*EXTRA, HOSTNAME]), Action.NOTHING, id="same-set"),
        pytest.param(host(covered=[HOSTNAME, EXTRA[0]]), Action.REISSUE, id="name-removed"),
        pytest.param(host(*EXTRA, covered=[HOSTNAME], enabled=False), Action.NOTHING, id="off"),
        pytest.param(host(*EXTRA, certificate=False), Action.NOTHING, id="no-certificate"),
        pytest.param(
            host(*EXTRA, phase=Phase.PENDING, certificate=False), Action.PROVISION, id="new"
        ),
        pytest.param(
            host(*EXTRA, phase=Phase.PENDING, covered=[HOSTNAME, *EXTRA]),
            Action.PROVISION,
            id="pending-same-names",
        ),
        pytest.param(
            host(*EXTRA, phase=Phase.FAILED, covered=[HOSTNAME]),
            Action.NOTHING,
            id="failed-waits-for-retry",
        ),
        pytest.param(
            host(*EXTRA, phase=Phase.PENDING, covered=[HOSTNAME]), Action.REISSUE, id="pending"
        ),
    ],
)
def test_a_changed_list_reissues_a_ready_host(subject: VirtualHost, action: Action) -> None:
    assert decide(subject) == action


# -- the certificate ------------------------------------------------------------------------------


def test_every_name_is_in_the_one_certificate_and_in_status() -> None:
    stack = Stack()
    outcome = asyncio.run(stack.step.run(host(*EXTRA, certificate=False, phase=None, name=NAME)))

    info = inspect_certificate(stack.secrets.data(TLS)["tls.crt"])
    assert info.dns_names == (HOSTNAME, *EXTRA)
    assert outcome.certificate is not None and outcome.certificate.names == [HOSTNAME, *EXTRA]
    [order] = stack.ca.orders.values()
    assert order.names == (HOSTNAME, *EXTRA)

    # Same names (in another order): kept. Another list: ordered anew, for exactly that list.
    shuffled = host(*reversed(EXTRA), certificate=False, phase=None, name=NAME)
    assert asyncio.run(stack.step.run(shuffled)).message == "current certificate kept"
    fewer = host(EXTRA[0], certificate=False, phase=None, name=NAME)
    outcome = asyncio.run(stack.step.run(fewer))
    assert len(stack.ca.orders) == 2
    assert outcome.certificate is not None and outcome.certificate.names == [HOSTNAME, EXTRA[0]]


def test_the_self_check_is_asked_for_every_name() -> None:
    stack = Stack()
    checked: list[str] = []

    async def check(name: str, token: str, key_authorization: str) -> None:
        checked.append(name)

    async def issue() -> None:
        await stack.ca.register(None)
        await stack.ca.issue(
            HOSTNAME,
            new_private_key_pem(),
            publish=stack.challenges.publish,
            unpublish=stack.challenges.unpublish,
            self_check=check,
            additional_names=EXTRA,
        )

    asyncio.run(issue())
    assert checked == [HOSTNAME, *EXTRA]


# -- nginx ------------------------------------------------------------------------------------


def site(**overrides: Any) -> SiteConfig:
    fields: dict[str, Any] = {
        "hostname": HOSTNAME,
        "additional_names": tuple(EXTRA),
        "challenge_upstream": "127.0.0.1:8089",
        "upstream": "http://127.0.0.1:8000",
        "certificate_path": f"{CERTS}/{HOSTNAME}/tls.crt",
        "key_path": f"{CERTS}/{HOSTNAME}/tls.key",
    }
    fields.update(overrides)
    return SiteConfig(**fields)


def test_every_server_block_names_every_name() -> None:
    """And the configs of earlier releases redirect plain HTTP to the hostname; this release's
    TLS config has no plain HTTP server: the agent's shared one lists the same names and
    redirects each to itself (the certificate covers them all)."""
    names = f"server_name {HOSTNAME} {' '.join(EXTRA)};"
    final = render_final(site())
    assert final.count(names) == 1
    assert shared_http_names(site()) == names + "\n"
    previous = render_final(site(), layout=FinalLayout.ONE_SERVER)
    assert previous.count(names) == 1  # one server for both ports
    assert f"return 301 https://{HOSTNAME}$request_uri;" in previous
    earlier = render_final(site(), layout=FinalLayout.SHARED_CONTEXT)
    assert earlier.count(names) == 2
    assert f"return 301 https://{HOSTNAME}$request_uri;" in earlier
    bootstrap = render_bootstrap(site(certificate_path=None, key_path=None))
    assert bootstrap.count(names) == 1


@pytest.mark.parametrize(
    "config",
    [site(), site(certificate_path=None, key_path=None), site(additional_names=())],
)
def test_configs_with_additional_names_are_recognised(config: SiteConfig) -> None:
    for text in (render_bootstrap(config), render_final(config)):
        recognised = recognise(text, HOSTNAME, CERTS)
        assert recognised is not None
        assert recognised.site.additional_names in ((), config.additional_names)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (" autoconfig.example.com;", " autoconfig.example.com mail.example.com;"),
        (" autoconfig.example.com;", " autoconfig.example.com Victim.example.com;"),
        (" autoconfig.example.com;", " autoconfig.example.com  x.example.com;"),
        (" autoconfig.example.com;", " autoconfig.example.com *.example.com;"),
        (" autoconfig.example.com;", " autoconfig.example.com ~.*;"),
    ],
)
def test_forged_server_names_are_not_recognised(old: str, new: str) -> None:
    text = render_final(site())
    assert old in text
    assert recognise(text.replace(old, new), HOSTNAME, CERTS) is None


def test_nginx_accepts_the_names_and_serves_one_block_for_them(tmp_path: Path) -> None:
    result = nginx_check_final(site(), tmp_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "conflicting server name" not in result.stderr


def cm(name: str, hostname: str, created: str, *names: str) -> dict[str, Any]:
    config = render_bootstrap(
        site(hostname=hostname, additional_names=names, certificate_path=None, key_path=None)
    )
    return {
        "metadata": {
            "name": name,
            "annotations": {
                labels.HOSTNAME: hostname,
                labels.VIRTUALHOST: name,
                labels.VIRTUALHOST_CREATED: created,
            },
        },
        "data": {f"{hostname}.conf": config},
    }


def test_the_agent_serves_a_contested_additional_name_from_the_older_host_only() -> None:
    older = cm("cm-old", "mail.old.test", "2026-01-01T00:00:00Z", "imap.example.com")
    younger = cm("cm-new", "mail.new.test", "2026-01-02T00:00:00Z", "imap.example.com")
    taker = cm("cm-taker", "imap.example.com", "2026-01-03T00:00:00Z")
    state = desired_state([younger, taker, older], {}, certificate_dir=CERTS)
    by_name = {request.configmap: request for request in state.requests}
    assert by_name["cm-old"].site is not None
    assert by_name["cm-new"].problem == (
        "additional name imap.example.com is already served from ConfigMap cm-old"
    )
    assert by_name["cm-new"].hostname == "mail.new.test", "held: its files stay as they are"
    assert "mail.new.test" in state.held
    assert by_name["cm-taker"].problem == (
        "hostname imap.example.com is already served from ConfigMap cm-old"
    )


# -- the tenancy gate ---------------------------------------------------------------------------


def test_a_login_through_an_additional_name_is_decided_by_the_hosts_domains() -> None:
    directory = HostDirectory()
    body = {
        "metadata": {"name": "a", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"hostname": HOSTNAME, "additionalNames": EXTRA, "domains": ["example.com"]},
    }
    directory.apply(WatchEvent("SYNC", objects=(body,)))
    assert len(directory) == 1

    def login(hostname: str, email: str) -> Reason:
        request = LoginRequest(hostname=hostname, email=email)
        return evaluate(request, directory.lookup(request.hostname), ()).reason

    assert login("imap.example.com", "ann@example.com") == Reason.MAILBOX_DOMAIN
    assert login("imap.example.com", "bob@example.net") == Reason.NOT_A_TENANT
    assert login("other.example.com", "ann@example.com") == Reason.UNKNOWN_HOST
    directory.apply(WatchEvent("MODIFIED", object={**body, "spec": {"hostname": HOSTNAME}}))
    assert login("imap.example.com", "ann@example.com") == Reason.UNKNOWN_HOST


def test_a_maildomain_links_to_a_hostname_not_to_another_hosts_additional_name() -> None:
    body = {"spec": {"name": "example.com", "virtualHost": "imap.example.com"}}
    with pytest.raises(Refusal) as caught:
        review_maildomain(
            body,
            name="example-com",
            domain_owners=[],
            served_as_other_name={"mail-example-com": HOSTNAME},
        )
    assert caught.value.code == 409
    assert caught.value.message == (
        "virtualHost imap.example.com is a name VirtualHost mail-example-com serves besides its "
        "hostname; link the domain to mail.example.com instead"
    )
    review_maildomain(body, name="example-com", domain_owners=[])
