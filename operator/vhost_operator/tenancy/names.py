"""Normalising the hostnames, domains and email addresses a login names. PURE: no I/O.

Everything the gate compares goes through here first, so that ``Mail.Example.COM.``,
``mail.example.com:443`` and ``mail.example.com`` are one host, and ``Example.com`` is the
domain ``example.com``. Malformed input raises ``ValueError`` with a message naming the value,
which the HTTP layer answers with 400: a request we cannot read is never "allowed".
"""

from __future__ import annotations

import re

from vhost_operator.resources.hostnames import DNS_LABEL

MAX_NAME_LENGTH = 253
"""RFC 1123: a full name is at most 253 characters (without the trailing dot)."""

MAX_EMAIL_LENGTH = 254
"""RFC 5321's path limit; longer addresses cannot be delivered, so they are not users."""

MAX_LOCAL_PART_LENGTH = 64
"""RFC 5321's limit on the part before the ``@``."""

_LABEL = re.compile(DNS_LABEL)
_PORT = re.compile(r"[0-9]{1,5}")
# A bracketed IPv6 literal as it appears in a Host header; never a VirtualHost, but not malformed.
_IPV6_LITERAL = re.compile(r"\[[0-9a-f:.]{2,45}\]")
# Control characters, space and DEL never appear in a usable address.
_UNPRINTABLE = re.compile(r"[\x00-\x20\x7f]")


def _shown(value: str) -> str:
    """The value for an error message: quoted, and cut short so a huge input stays readable."""
    return repr(value if len(value) <= 80 else value[:80] + "...")


def loggable(value: str) -> str:
    """``value`` with every unprintable character escaped (``\\u2028``, ``\\x85``, ``\\n``).

    An email's local part is kept as written, and UTF-8 there may carry line and paragraph
    separators (U+2028, U+2029, NEL U+0085) and C1 controls (a terminal's CSI U+009B): logged
    raw, they split a log line or forge a new one in log viewers and pipelines.
    """
    if value.isprintable():
        return value
    return "".join(char if char.isprintable() else ascii(char)[1:-1] for char in value)


def normalise_domain(value: str) -> str:
    """``Example.COM.`` -> ``example.com``: lowercase, one trailing dot removed, syntax checked.

    ASCII only (IDNs in their ``xn--`` form): ``str.lower`` folds some non-ASCII letters onto
    ASCII ones (the Kelvin sign becomes ``k``), which would let a different name pass as ours.
    """
    if not value.isascii():
        raise ValueError(f"{_shown(value)} is not ASCII (write IDNs in their xn-- form)")
    name = value.lower()
    if name.endswith("."):
        name = name[:-1]
    if not name:
        raise ValueError(f"{_shown(value)} is not a domain name: it is empty")
    if len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"{_shown(value)} is longer than {MAX_NAME_LENGTH} characters")
    if not all(_LABEL.fullmatch(label) for label in name.split(".")):
        raise ValueError(
            f"{_shown(value)} is not a valid name: each dot-separated label must be 1-63 "
            "letters, digits or hyphens, not starting or ending with a hyphen"
        )
    return name


def _without_port(value: str) -> str:
    if value.startswith("["):  # [v6::addr] or [v6::addr]:port
        literal, _, rest = value.partition("]")
        if rest and not (rest.startswith(":") and _PORT.fullmatch(rest[1:])):
            raise ValueError(f"{_shown(value)} is not a valid host: bad port")
        return literal + "]"
    host, colon, port = value.rpartition(":")
    if not colon:
        return value
    if not _PORT.fullmatch(port) or int(port) > 65535:
        raise ValueError(f"{_shown(value)} is not a valid host: bad port {_shown(port)}")
    return host


def normalise_hostname(value: str) -> str:
    """The host a request came through, as the VirtualHost would spell it.

    Lowercased, a ``:port`` removed (a Host header carries one on non-default ports), one
    trailing dot removed (``mail.example.com.`` is the same absolute name). Bracketed IPv6
    literals pass through lowercased: they are valid Hosts, they just never match a host.
    """
    if not value.isascii():
        raise ValueError(f"{_shown(value)} is not ASCII (write IDNs in their xn-- form)")
    host = _without_port(value.lower())
    if _IPV6_LITERAL.fullmatch(host):
        return host
    return normalise_domain(host)


def normalise_email(value: str) -> str:
    """``Alice@Example.COM`` -> ``Alice@example.com``: the domain is normalised, the local part
    is kept as written (it is case-sensitive in principle and not ours to judge)."""
    if len(value) > MAX_EMAIL_LENGTH:
        raise ValueError(f"email {_shown(value)} is longer than {MAX_EMAIL_LENGTH} characters")
    # The last @ separates the domain: a quoted local part may itself contain one.
    local, at, domain = value.rpartition("@")
    if not at or not local:
        raise ValueError(f"email {_shown(value)} is not an address of the form user@domain")
    if len(local) > MAX_LOCAL_PART_LENGTH or _UNPRINTABLE.search(local):
        raise ValueError(f"email {_shown(value)} has an invalid part before the @")
    try:
        return f"{local}@{normalise_domain(domain)}"
    except ValueError as error:
        raise ValueError(f"email {_shown(value)} has an invalid domain: {error}") from None


def mailbox_domain(email: str) -> str:
    """The domain of a normalised address: what follows its last ``@``."""
    return email.rpartition("@")[2]
