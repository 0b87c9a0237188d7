from __future__ import annotations

import pytest

from vhost_operator.resources.hostnames import (
    MAX_HOSTNAME_LENGTH,
    MAX_NAME_LENGTH,
    hostname_problem,
)


@pytest.mark.parametrize(
    "hostname", ["mail.example.com", "a.b", "x-1.example.co.uk", "a" * 63 + ".com"]
)
def test_valid_hostnames_pass(hostname: str) -> None:
    assert hostname_problem(hostname) is None


@pytest.mark.parametrize(
    ("hostname", "fragment"),
    [
        ("Mail.Example.com", "'Mail.Example.com' must be lowercase (use 'mail.example.com')"),
        ("", "must not be empty"),
        ("mail.example.com.", "must not end with a dot"),
        ("localhost", "fully qualified"),
        ("-a.example.com", "label '-a'"),
        ("a_b.example.com", "label 'a_b'"),
        ("a..example.com", "label ''"),
        ("a" * 64 + ".com", "1-63"),
        ("a." * 127 + "com", "longer than 248"),
        # 249-253 characters: a valid DNS name, but <hostname>.conf fits no ConfigMap key.
        (".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 57]), "longer than 248 characters (its"),
        ("192.0.2.7", "'192.0.2.7' is an IP address"),
        ("2001:db8::7", "'2001:db8::7' is an IP address"),
        ("[::1]", "'[::1]' is an IP address"),
        ("::ffff:192.0.2.7", "is an IP address"),
        ("fe80::1%eth0", "is an IP address"),
        ("10.1", "all-digit label"),
        ("mail.example.123", "all-digit label"),
        ("mail.example.com;\n", "label 'com;\\n'"),
        ("mail.example.com\n", "label 'com\\n'"),
    ],
)
def test_invalid_hostnames_are_explained(hostname: str, fragment: str) -> None:
    problem = hostname_problem(hostname)
    assert problem is not None and fragment in problem


def test_a_mail_domain_may_use_the_full_dns_length() -> None:
    domain = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])
    assert len(domain) == MAX_NAME_LENGTH
    assert hostname_problem(domain, max_length=MAX_NAME_LENGTH) is None
    assert hostname_problem(domain[:MAX_HOSTNAME_LENGTH].rstrip(".-")) is None
