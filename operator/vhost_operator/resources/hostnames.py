"""What a hostname must look like before it reaches nginx, an ACME order or a status field."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

MAX_HOSTNAME_LENGTH = 253
"""RFC 1123: a full name is at most 253 characters (without a trailing dot)."""

DNS_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
"""One DNS label (RFC 1123): 1-63 lowercase letters, digits or hyphens, no hyphen at either end.
The one pattern for labels here, in nginx rendering and in the tenancy gate."""

# Letters of either case here: a name in capitals gets the specific "must be lowercase" message.
# (re.ASCII: with Unicode case folding, [a-z] would also match the Kelvin sign and the long s.)
_LABEL = re.compile(DNS_LABEL, re.IGNORECASE | re.ASCII)


def hostname_problem(hostname: str) -> str | None:
    """Return why ``hostname`` is unacceptable, or ``None`` when it is fine.

    The messages name the hostname, because a user applying many objects at once must be able to
    tell which one was refused. Case is checked after syntax so that the message for
    ``Mail.Example.com`` is the specific one ("must be lowercase"), not a generic pattern error.
    """
    if not hostname:
        return "hostname must not be empty"
    if hostname.endswith("."):
        return f"hostname {hostname!r} must not end with a dot"
    if len(hostname) > MAX_HOSTNAME_LENGTH:
        return f"hostname {hostname[:40]!r}... is longer than {MAX_HOSTNAME_LENGTH} characters"
    labels = hostname.split(".")
    if len(labels) < 2:
        return f"hostname {hostname!r} must be fully qualified (at least two labels)"
    for label in labels:
        if not _LABEL.fullmatch(label):
            return (
                f"hostname {hostname!r} is not a valid hostname: label {label!r} must be 1-63 "
                "letters, digits or hyphens, and must not start or end with a hyphen"
            )
    if hostname != hostname.lower():
        return f"hostname {hostname!r} must be lowercase (use {hostname.lower()!r})"
    return None


def _checked(hostname: str) -> str:
    problem = hostname_problem(hostname)
    if problem is not None:
        raise ValueError(problem)
    return hostname


Hostname = Annotated[str, AfterValidator(_checked)]
"""A pydantic field type: a valid, lowercase, fully qualified hostname (see
:func:`hostname_problem`), refused with that function's message otherwise."""
