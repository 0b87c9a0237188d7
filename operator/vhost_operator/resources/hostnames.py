"""What a hostname must look like before it reaches nginx, an ACME order or a status field."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from typing import Annotated

from pydantic import AfterValidator

MAX_NAME_LENGTH = 253
"""RFC 1123: a full name is at most 253 characters (without a trailing dot). The limit of a mail
domain, which is never a file name."""

MAX_HOSTNAME_LENGTH = 248
"""A served hostname names its nginx config: the site ConfigMap's key and the agent's file are
``<hostname>.conf``, and a ConfigMap key has at most 253 characters (a file name 255). A longer
hostname is a valid DNS name that could never be served, so it is refused up front (the CRD's
``maxLength`` says the same)."""

DNS_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
"""One DNS label (RFC 1123): 1-63 lowercase letters, digits or hyphens, no hyphen at either end.
The one pattern for labels here, in nginx rendering and in the tenancy gate."""

# Letters of either case here: a name in capitals gets the specific "must be lowercase" message.
# (re.ASCII: with Unicode case folding, [a-z] would also match the Kelvin sign and the long s.)
_LABEL = re.compile(DNS_LABEL, re.IGNORECASE | re.ASCII)


def hostname_problem(hostname: str, *, max_length: int = MAX_HOSTNAME_LENGTH) -> str | None:
    """Return why ``hostname`` is unacceptable, or ``None`` when it is fine.

    The messages name the hostname, because a user applying many objects at once must be able to
    tell which one was refused. Case is checked after syntax so that the message for
    ``Mail.Example.com`` is the specific one ("must be lowercase"), not a generic pattern error.
    ``max_length``: :data:`MAX_HOSTNAME_LENGTH` for a served hostname, :data:`MAX_NAME_LENGTH`
    for a mail domain.
    """
    if not hostname:
        return "hostname must not be empty"
    if _is_ip_address(hostname):
        return (
            f"hostname {hostname!r} is an IP address; a virtual host needs a DNS name (its "
            "certificate is issued for a name)"
        )
    if hostname.endswith("."):
        return f"hostname {hostname!r} must not end with a dot"
    if len(hostname) > max_length:
        why = " (its nginx config file <hostname>.conf must fit)" * (max_length < MAX_NAME_LENGTH)
        return f"hostname {hostname[:40]!r}... is longer than {max_length} characters{why}"
    labels = hostname.split(".")
    if len(labels) < 2:
        return f"hostname {hostname!r} must be fully qualified (at least two labels)"
    for label in labels:
        if not _LABEL.fullmatch(label):
            return (
                f"hostname {hostname!r} is not a valid hostname: label {label!r} must be 1-63 "
                "letters, digits or hyphens, and must not start or end with a hyphen"
            )
    if labels[-1].isdigit():
        # RFC 3696: no top-level domain is all digits, so such a name reads as an IPv4 address
        # (or a fragment of one) to browsers, resolvers and CAs alike.
        return (
            f"hostname {hostname!r} must not end in an all-digit label (it reads as an IP address)"
        )
    if hostname != hostname.lower():
        return f"hostname {hostname!r} must be lowercase (use {hostname.lower()!r})"
    return None


MAX_ADDITIONAL_NAMES = 19
"""Names a host may serve besides its hostname: 20 in its one certificate. Let's Encrypt
allows 100 per certificate, but every name is an authorization to validate (each a request
to the CA and a self-check) at every renewal, and a mail domain needs a handful
(``imap.``, ``smtp.``, ``autoconfig.``, ``autodiscover.``, ``mta-sts.``)."""


def additional_names_problem(hostname: str, names: Sequence[str]) -> str | None:
    """Why ``names`` cannot be a host's additional names besides ``hostname``, or ``None``.

    Each name on its own is checked by :func:`hostname_problem`; this is about the list:
    its length, no name twice, and not the hostname itself.
    """
    if len(names) > MAX_ADDITIONAL_NAMES:
        return (
            f"additionalNames has {len(names)} names; at most {MAX_ADDITIONAL_NAMES} are "
            f"allowed ({MAX_ADDITIONAL_NAMES + 1} names in one certificate with the hostname)"
        )
    if hostname in names:
        return f"additional name {hostname} is the hostname itself; list only other names"
    seen: set[str] = set()
    for name in names:
        if name in seen:
            return f"additional name {name} is listed twice"
        seen.add(name)
    return None


def primary_hostname_problem(hostname: str, primary_hostnames: Iterable[str]) -> str | None:
    """Why ``hostname`` cannot be a VirtualHost's: it is one of the instance's own hostnames.

    Their site is the mail web app's own, not the operator's to render or to order certificates
    for, and the tenancy gate never restricts logins through them: as a VirtualHost it would
    take the instance's site over and still admit every user.
    """
    wanted = hostname.lower().removesuffix(".")
    if any(primary.lower().removesuffix(".") == wanted for primary in primary_hostnames):
        return (
            f"hostname {hostname} is a primary hostname of this instance "
            "(VHOST_OPERATOR_PRIMARY_HOSTNAMES): its site is the instance's own and logins "
            "through it are never restricted, so it cannot be a VirtualHost"
        )
    return None


def _is_ip_address(value: str) -> bool:
    """IPv4 and IPv6 literals, also bracketed (``[::1]``) and with a zone (``fe80::1%eth0``)."""
    try:
        ipaddress.ip_address(value.removeprefix("[").removesuffix("]").split("%", 1)[0])
    except ValueError:
        return False
    return True


def _checked(hostname: str) -> str:
    problem = hostname_problem(hostname)
    if problem is not None:
        raise ValueError(problem)
    return hostname


Hostname = Annotated[str, AfterValidator(_checked)]
"""A pydantic field type: a valid, lowercase, fully qualified hostname (see
:func:`hostname_problem`), refused with that function's message otherwise."""
