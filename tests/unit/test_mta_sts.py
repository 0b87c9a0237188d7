"""MTA-STS (RFC 8461) for a host's linked domains: the policy, its names in the certificate,
the webhook's messages, and the nginx config that serves it (which real nginx accepts)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydantic
import pytest

from tests.harness.nginx import nginx_check_final
from vhost_operator.admission.rules import Refusal, review_virtualhost
from vhost_operator.catalog import HostCatalog
from vhost_operator.nginx import SiteConfig, recognise, render_final
from vhost_operator.resources.models import VirtualHostSpec, served_names
from vhost_operator.resources.mtasts import Mode, MtaStsPolicy, parse_policy
from vhost_operator.resources.watch import WatchEvent

HOSTNAME = "mail.example.com"
POLICY = {"mode": "enforce", "mx": ["mail.example.com", "*.example.net"], "maxAge": 86400}
CERTS = "/etc/nginx/vhost-operator/certs"


def spec(**fields: Any) -> dict[str, Any]:
    return {
        "hostname": HOSTNAME,
        "domains": ["example.com", "example.org"],
        "mtaSts": POLICY,
        **fields,
    }


def test_the_policy_file_is_rfc_8461s_format() -> None:
    policy = MtaStsPolicy.model_validate(POLICY)
    assert policy.text() == (
        "version: STSv1\nmode: enforce\nmx: mail.example.com\nmx: *.example.net\nmax_age: 86400\n"
    )
    assert parse_policy(policy.text()) == policy
    withdrawn = MtaStsPolicy(mode=Mode.NONE)
    assert withdrawn.text() == "version: STSv1\nmode: none\nmax_age: 604800\n"
    for forged in (
        policy.text().replace("mode: enforce", "mode: enforce\nmode: none"),
        policy.text() + "mx: evil.example\n",  # mx after max_age: not what the renderer writes
        policy.text().rstrip("\n"),
        "version: STSv2\n" + policy.text().partition("\n")[2],
    ):
        assert parse_policy(forged) is None, forged


def test_every_linked_domain_gets_its_policy_host_in_the_certificate() -> None:
    parsed = VirtualHostSpec.model_validate(spec(additionalNames=["imap.example.com"]))
    assert parsed.names == (
        HOSTNAME,
        "imap.example.com",
        "mta-sts.example.com",
        "mta-sts.example.org",
    )
    assert served_names(spec(additionalNames=["imap.example.com"])) == parsed.names
    assert VirtualHostSpec.model_validate(spec(mtaSts=None)).names == (HOSTNAME,)
    # Listed as an additional name too (or the hostname itself): one name all the same.
    both = spec(hostname="mta-sts.example.org", additionalNames=["mta-sts.example.com"])
    assert VirtualHostSpec.model_validate(both).names == (
        "mta-sts.example.org",
        "mta-sts.example.com",
    )
    assert served_names(both) == VirtualHostSpec.model_validate(both).names
    review_virtualhost({"spec": both}, None, name="me", hostname_owners=[])


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"mtaSts": {"mode": "enforce"}}, "spec.mtaSts: mtaSts.mx must list the MX hosts"),
        ({"mtaSts": {"mode": "strict", "mx": ["a.example"]}}, "spec.mtaSts.mode: Input should be"),
        ({"mtaSts": {**POLICY, "mx": ["Mail.example.com"]}}, "must be lowercase"),
        ({"mtaSts": {**POLICY, "mx": ["mail.*.example"]}}, "is not a valid hostname"),
        ({"mtaSts": {**POLICY, "maxAge": 31557601}}, "spec.mtaSts.maxAge: Input should be less"),
        ({"mtaSts": {**POLICY, "mx": ["a.example", "a.example"]}}, "lists a host twice"),
        ({"mtaSts": {**POLICY, "extra": 1}}, "spec.mtaSts.extra: Extra inputs"),
        (
            {"domains": [f"d{i}.example" for i in range(100)]},
            "with mtaSts the host needs 101 names in its certificate",
        ),
        (
            {"domains": [".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 56])]},
            "longer than 253 characters",
        ),
    ],
)
def test_a_bad_policy_is_refused_with_422(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(Refusal) as caught:
        review_virtualhost({"spec": spec(**fields)}, None, name="me", hostname_owners=[])
    assert caught.value.code == 422 and message in caught.value.message, caught.value.message
    with pytest.raises(pydantic.ValidationError):
        VirtualHostSpec.model_validate(spec(**fields))


def test_a_policy_host_another_host_serves_is_a_conflict() -> None:
    with pytest.raises(Refusal) as caught:
        review_virtualhost(
            {"spec": spec()},
            None,
            name="me",
            hostname_owners=[],
            name_owners={"mta-sts.example.org": ["other"]},
        )
    assert caught.value.code == 409
    assert caught.value.message.startswith(
        "MTA-STS policy host mta-sts.example.org is already used by VirtualHost other"
    )


def test_the_catalog_counts_policy_hosts_as_served_names() -> None:
    hosts = HostCatalog()
    body = {"metadata": {"name": "a", "creationTimestamp": "2026-01-01T00:00:00Z"}, "spec": spec()}
    hosts.apply(WatchEvent("SYNC", objects=(body,)))
    assert list(hosts.serving("mta-sts.example.org")) == ["a"]


def site(**overrides: Any) -> SiteConfig:
    fields: dict[str, Any] = {
        "hostname": HOSTNAME,
        "additional_names": ("mta-sts.example.com",),
        "challenge_upstream": "127.0.0.1:8089",
        "upstream": "http://127.0.0.1:8000",
        "certificate_path": f"{CERTS}/{HOSTNAME}/tls.crt",
        "key_path": f"{CERTS}/{HOSTNAME}/tls.key",
        "mta_sts": MtaStsPolicy.model_validate(POLICY),
    }
    fields.update(overrides)
    return SiteConfig(**fields)


def test_the_policy_is_served_as_text_over_https_only() -> None:
    final = render_final(site())
    https_block = final.partition("listen 443")[2]
    assert "location = /.well-known/mta-sts.txt {" in https_block
    assert "default_type text/plain;" in https_block
    quoted = MtaStsPolicy.model_validate(POLICY).text().replace("\n", "\\n")
    assert f'return 200 "{quoted}";' in https_block
    assert "mta-sts" not in final.partition("listen 443")[0].replace("mta-sts.example.com", "")
    with pytest.raises(pydantic.ValidationError, match="over HTTPS only"):
        site(certificate_path=None, key_path=None)


def test_the_agent_recognises_a_policy_and_refuses_a_forged_one() -> None:
    text = render_final(site())
    recognised = recognise(text, HOSTNAME, CERTS)
    assert recognised is not None and recognised.site.mta_sts == site().mta_sts
    for old, new in (
        ("mode: enforce", "mode: testing\\nmode: enforce"),
        ("max_age: 86400\\n", "max_age: 86400\\nx: y\\n"),
        ('return 200 "version', 'return 200 "$request_uri version'),
        ("default_type text/plain;", "default_type text/html;"),
    ):
        assert old in text
        assert recognise(text.replace(old, new), HOSTNAME, CERTS) is None, new


def test_nginx_accepts_the_policy_config(tmp_path: Path) -> None:
    result = nginx_check_final(site(), tmp_dir=tmp_path)
    assert result.returncode == 0, result.stderr
