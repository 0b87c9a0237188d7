from __future__ import annotations

import pytest

from vhost_operator.resources.hostnames import hostname_problem


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
        ("a." * 127 + "com", "longer than 253"),
        ("mail.example.com;\n", "label 'com;\\n'"),
        ("mail.example.com\n", "label 'com\\n'"),
    ],
)
def test_invalid_hostnames_are_explained(hostname: str, fragment: str) -> None:
    problem = hostname_problem(hostname)
    assert problem is not None and fragment in problem
