"""The mail TLS agent's pure parts: which certificate serves which names, the files of a
generation, and the report; and the operator's MailServing condition drawn from it."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from tests.harness.nginx import self_signed_certificate
from vhost_operator.certs import inspect_certificate
from vhost_operator.mailtls.desired import mail_state
from vhost_operator.mailtls.render import (
    DOVECOT,
    POSTFIX,
    generation_files,
    report,
    report_patch,
    served,
)
from vhost_operator.provisioning.mailserving import (
    MailCondition,
    MailServingKeeper,
    MailSubject,
    mail_condition,
)
from vhost_operator.resources.mailtls import MailServing, decode, encode
from vhost_operator.resources.models import ConditionStatus
from vhost_operator.resources.watch import WatchEvent


def tls_secret(
    name: str, chain: bytes, key: bytes, created: str = "2026-01-01T00:00:00Z"
) -> dict[str, Any]:
    data = {"tls.crt": base64.b64encode(chain).decode(), "tls.key": base64.b64encode(key).decode()}
    return {"metadata": {"name": name, "creationTimestamp": created}, "data": data}


def test_every_san_of_a_certificate_is_served_and_the_older_secret_keeps_a_shared_name() -> None:
    chain, key = self_signed_certificate(["mail.a.example", "smtp.a.example", "*.a.example"])
    rival_chain, rival_key = self_signed_certificate(["smtp.a.example", "imap.b.example"])
    state = mail_state(
        [
            tls_secret("b-tls", rival_chain, rival_key, "2026-02-01T00:00:00Z"),
            tls_secret("a-tls", chain, key),
        ]
    )
    assert [(host.secret, host.names) for host in state.hosts] == [
        ("a-tls", ("mail.a.example", "smtp.a.example")),  # no wildcard
        ("b-tls", ("imap.b.example",)),
    ]
    assert not state.problems


def test_unusable_secrets_are_problems_not_hosts() -> None:
    chain, _ = self_signed_certificate(["x.example"])
    _, other_key = self_signed_certificate(["y.example"])
    wildcard_chain, wildcard_key = self_signed_certificate(["*.z.example"])
    state = mail_state(
        [
            tls_secret("mismatch", chain, other_key),
            tls_secret("wildcard-only", wildcard_chain, wildcard_key),
            {"metadata": {"name": "empty"}, "data": {}},
        ]
    )
    assert state.hosts == ()
    assert "does not belong to the certificate" in state.problems["mismatch"]
    assert "no name to serve" in state.problems["wildcard-only"]
    assert "tls.crt is missing" in state.problems["empty"]


def test_postfix_map_and_dovecot_blocks_name_each_host_files_by_serial() -> None:
    chain, key = self_signed_certificate(["mail.a.example", "smtp.a.example"])
    serial = inspect_certificate(chain).serial
    [host] = mail_state([tls_secret("a-tls", chain, key)]).hosts
    postfix = {f.path: f for f in generation_files(POSTFIX, [host], "/g/1")}
    pem = f"chains/a-tls.{serial}.pem"
    assert postfix[pem].content == key + chain and postfix[pem].private
    assert postfix[pem].named_by_content
    assert postfix["sni"].content.decode().splitlines()[1:] == [
        f"mail.a.example /g/1/{pem}",
        f"smtp.a.example /g/1/{pem}",
    ]
    dovecot = {f.path: f for f in generation_files(DOVECOT, [host], "/g/2")}
    assert dovecot[f"certs/a-tls.{serial}.key"].private
    assert not dovecot[f"certs/a-tls.{serial}.crt"].private
    config = dovecot["local_names.conf"].content.decode()
    assert (
        f"local_name smtp.a.example {{\n  ssl_cert = </g/2/certs/a-tls.{serial}.crt\n"
        f"  ssl_key = </g/2/certs/a-tls.{serial}.key\n}}\n"
    ) in config
    assert config.count("local_name ") == 2
    assert served([host]) == {"a-tls": [serial, "mail.a.example", "smtp.a.example"]}


def test_the_report_says_what_each_service_serves_and_why_not_the_current_one() -> None:
    chain, key = self_signed_certificate(["mail.a.example"])
    serial = inspect_certificate(chain).serial
    state = mail_state([tls_secret("a-tls", chain, key), {"metadata": {"name": "bad"}, "data": {}}])
    data = report(
        state,
        {POSTFIX: {"a-tls": "old"}, DOVECOT: {"a-tls": serial}},
        {POSTFIX: "postfix check failed", DOVECOT: "ignored: dovecot serves the current one"},
    )
    assert decode(data["a-tls"]) == MailServing(
        {POSTFIX: "old", DOVECOT: serial}, {POSTFIX: "postfix check failed"}
    )
    bad = decode(data["bad"])
    assert bad is not None and bad.serving == {POSTFIX: None, DOVECOT: None}
    assert set(bad.errors) == {POSTFIX, DOVECOT}
    assert report_patch({"a-tls": data["a-tls"], "gone": "x"}, data) == {
        "bad": data["bad"],
        "gone": None,
    }
    assert decode(encode(MailServing({POSTFIX: "1"}))) == MailServing({POSTFIX: "1"})
    assert decode("not json") is None


# -- the operator's MailServing condition --------------------------------------------------------


def test_mail_serving_is_true_only_when_every_service_serves_the_current_serial() -> None:
    both = MailServing({POSTFIX: "ab", DOVECOT: "ab"})
    assert mail_condition("ab", {"vhost-mail-tls": both}) == MailCondition(
        ConditionStatus.TRUE, "Serving", "dovecot, postfix serve certificate ab"
    )
    behind = MailServing({POSTFIX: "ab", DOVECOT: "aa"})
    pending = mail_condition("ab", {"vhost-mail-tls": behind})
    assert (pending.status, pending.reason) == (ConditionStatus.FALSE, "Pending")
    assert pending.message == "not serving ab: dovecot serves aa"
    refused = MailServing({POSTFIX: "ab", DOVECOT: "aa"}, {DOVECOT: "doveconf -n failed"})
    assert mail_condition("ab", {"r": refused}) == MailCondition(
        ConditionStatus.FALSE, "Refused", "dovecot: doveconf -n failed"
    )
    # Two agents (two mail pods): each service is named with its report.
    two = mail_condition("ab", {"mx1": both, "mx2": None})
    assert two.message == "not serving ab: mx2 has not reported it yet"


class Catalog:
    def __init__(self, subjects: dict[str, MailSubject]) -> None:
        self.subjects = subjects

    def mail_subject(self, name: str) -> MailSubject | None:
        return self.subjects.get(name)

    def named_by_secret(self, secret: str) -> list[str]:
        return [name for name, s in self.subjects.items() if s.secret == secret]

    def names(self) -> list[str]:
        return list(self.subjects)


def report_configmap(name: str, data: dict[str, MailServing]) -> dict[str, Any]:
    return {"metadata": {"name": name}, "data": {k: encode(v) for k, v in data.items()}}


def test_the_keeper_writes_only_hosts_whose_report_changed_and_whose_condition_differs() -> None:
    asyncio.run(keeper_scenario())


async def keeper_scenario() -> None:
    serving = MailCondition(ConditionStatus.TRUE, "Serving", "dovecot, postfix serve certificate 1")
    catalog = Catalog(
        {
            "a": MailSubject("a-tls", "1", None),
            "b": MailSubject("b-tls", "1", serving),
        }
    )
    keeper = MailServingKeeper(catalog)
    writes: list[tuple[str, MailCondition]] = []

    async def write(name: str, condition: MailCondition) -> None:
        writes.append((name, condition))

    task = asyncio.create_task(keeper.run(write))
    try:
        assert keeper.desired("a") is None  # no agent reports: no condition at all
        both = MailServing({POSTFIX: "1", DOVECOT: "1"})
        keeper.handle_report(
            WatchEvent("SYNC", objects=(report_configmap("r", {"a-tls": both, "b-tls": both}),))
        )
        await asyncio.sleep(0.01)
        assert writes == [("a", serving)]  # b holds it already
        writes.clear()
        # A renewal of b: its serial changes (host event), the report catches up later.
        catalog.subjects["b"] = MailSubject("b-tls", "2", serving)
        keeper.handle_host(WatchEvent("MODIFIED", object={"metadata": {"name": "b"}}))
        await asyncio.sleep(0.01)
        assert [(name, c.reason) for name, c in writes] == [("b", "Pending")]
    finally:
        task.cancel()
