"""What the CRD schema refuses by itself, with no operator (and so no webhook) running: hostnames
that could never be served and theme values the webhook would refuse, through a real API server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.clusters import Cluster
from tests.harness.waiting import get_object

pytestmark = pytest.mark.cluster

TOO_LONG = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 57])
"""249 characters: a valid DNS name whose ``<hostname>.conf`` fits no ConfigMap key."""

LONGEST = TOO_LONG[:-1]
"""248 characters, the longest hostname that can be served."""


def apply(cluster: Cluster, manifest: dict[str, Any], tmp_path: Path) -> tuple[int, str]:
    path = tmp_path / "object.yaml"
    path.write_text(yaml.safe_dump(manifest))
    done = cluster.kubectl("apply", "-f", str(path), check=False)
    return done.returncode, done.stderr


def virtualhost(name: str, hostname: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "vhost-operator.io/v1alpha1",
        "kind": "VirtualHost",
        "metadata": {"name": name},
        "spec": {"hostname": hostname, **spec},
    }


@pytest.mark.parametrize(
    ("hostname", "fragment"),
    [
        (TOO_LONG, "may not be more than 248"),
        ("192.0.2.7", "must not end in an all-digit label"),
        ("2001:db8::7", "should match"),
        ("[::1]", "should match"),
    ],
)
def test_the_crd_refuses_unservable_hostnames(
    cluster: Cluster, tmp_path: Path, hostname: str, fragment: str
) -> None:
    try:
        code, error = apply(cluster, virtualhost("unservable", hostname), tmp_path)
        print(f"\n{hostname[:40]}: {error.strip()}")
        assert code != 0 and fragment in error, error
        assert get_object(cluster, "vh", "unservable") is None
    finally:  # accepted by mistake: gone before the next case (the hostname is immutable)
        cluster.kubectl("delete", "vh", "unservable", "--ignore-not-found", "--wait=false")


def test_the_crd_refuses_a_maildomain_linking_an_unservable_hostname(
    cluster: Cluster, tmp_path: Path
) -> None:
    for hostname, fragment in ((TOO_LONG, "may not be more than 248"), ("10.0.0.1", "all-digit")):
        manifest = {
            "apiVersion": "vhost-operator.io/v1alpha1",
            "kind": "MailDomain",
            "metadata": {"name": "linked-to-nothing"},
            "spec": {"name": "example.com", "virtualHost": hostname},
        }
        try:
            code, error = apply(cluster, manifest, tmp_path)
            assert code != 0 and fragment in error, error
        finally:
            cluster.kubectl("delete", "md", "linked-to-nothing", "--ignore-not-found")


@pytest.mark.parametrize(
    ("names", "fragment"),
    [
        (["Imap.example.com"], "additional name Imap.example.com must be lowercase (use imap."),
        (["imap.10"], "additional name imap.10 must not end in an all-digit label"),
        (["imap.example.com", "imap.example.com"], "Duplicate value"),
        (["mail.example.com"], "additional name mail.example.com is the hostname itself"),
        ([TOO_LONG], "may not be more than 248"),
        (["-imap.example.com"], "should match"),
        ([f"n{i}.example.com" for i in range(20)], "must have at most 19 items"),
    ],
)
def test_the_crd_refuses_invalid_additional_names(
    cluster: Cluster, tmp_path: Path, names: list[str], fragment: str
) -> None:
    host = virtualhost("extra", "mail.example.com", additionalNames=names)
    try:
        code, error = apply(cluster, host, tmp_path)
        print(f"\n{names[:2]}: {error.strip()}")
        assert code != 0 and fragment in error, error
        assert get_object(cluster, "vh", "extra") is None
    finally:
        cluster.kubectl("delete", "vh", "extra", "--ignore-not-found", "--wait=false")


def test_the_crd_accepts_the_most_additional_names(cluster: Cluster, tmp_path: Path) -> None:
    names = [f"n{i}.example.com" for i in range(19)]
    try:
        code, error = apply(
            cluster, virtualhost("most", "mail.example.com", additionalNames=names), tmp_path
        )
        assert code == 0, error
    finally:
        cluster.kubectl("delete", "vh", "most", "--ignore-not-found", "--wait=false")


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"mtaSts": {"mode": "enforce"}}, "mtaSts.mx must list the MX hosts unless mode is none"),
        ({"mtaSts": {"mode": "strict", "mx": ["a.example"]}}, 'Unsupported value: "strict"'),
        ({"mtaSts": {"mode": "testing", "mx": ["Mail.example"]}}, "should match"),
        ({"mtaSts": {"mode": "none", "maxAge": 31557601}}, "less than or equal to 31557600"),
        (
            {"mtaSts": {"mode": "none"}, "domains": [f"d{i}.example" for i in range(100)]},
            "must fit one certificate (at most 100 names)",
        ),
    ],
)
def test_the_crd_refuses_an_invalid_mta_sts_policy(
    cluster: Cluster, tmp_path: Path, fields: dict[str, Any], fragment: str
) -> None:
    host = virtualhost("sts", "mail.example.com", **fields)
    try:
        code, error = apply(cluster, host, tmp_path)
        print(f"\n{error.strip()[:300]}")
        assert code != 0 and fragment in error, error
        assert get_object(cluster, "vh", "sts") is None
    finally:
        cluster.kubectl("delete", "vh", "sts", "--ignore-not-found", "--wait=false")


@pytest.mark.parametrize(
    "logo",
    [
        "https://x.example/a(b).svg",  # parentheses close a CSS url()
        "https://x.example/a!b.svg",
        "https://x.example/a*b.svg",
        "https://x.example/a|b.svg",
        "https://x.example/%zz.svg",  # not an escape
    ],
)
def test_the_crd_refuses_the_logo_urls_the_webhook_refuses(
    cluster: Cluster, tmp_path: Path, logo: str
) -> None:
    host = virtualhost("logo", "logo.example.com", theme={"logos": {"login": logo}})
    try:
        code, error = apply(cluster, host, tmp_path)
        assert code != 0 and "spec.theme.logos.login" in error, error
        assert get_object(cluster, "vh", "logo") is None
    finally:
        cluster.kubectl("delete", "vh", "logo", "--ignore-not-found", "--wait=false")


def test_the_longest_servable_hostname_is_accepted(cluster: Cluster, tmp_path: Path) -> None:
    logo = "https://x.example/logo%20file.svg?v=1&w=2#top"
    host = virtualhost("longest", LONGEST, theme={"logos": {"login": logo}})
    try:
        code, error = apply(cluster, host, tmp_path)
        assert code == 0, error
    finally:
        cluster.kubectl("delete", "vh", "longest", "--ignore-not-found", "--wait=false")
