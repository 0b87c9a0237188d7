"""Per-host themes: validation, and merging a host's theme over the global one. PURE.

A theme is five colours and three logo URLs (the VirtualHost's ``spec.theme``). Whatever a host
leaves blank it inherits from the global theme (``GateSettings``). Values reach the mail web app's
pages, so each one is checked against an allow-list here, whatever the CRD schema or the webhook
already checked: a colour is exactly ``#RRGGBB``; a logo is an ``https://`` URL made only of
characters that cannot close an attribute, a CSS ``url()``, a string or an nginx directive
(no quotes, brackets, parentheses, semicolons, backslashes, ``$``, whitespace or ``<>``).
A host value that fails is dropped, so the global value shows instead, never the bad one.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from vhost_operator.resources.models import Theme, ThemeColors, ThemeLogos
from vhost_operator.tenancy.names import normalise_hostname

MAX_LOGO_URL_LENGTH = 2048
"""The CRD's limit too; longer URLs break some browsers and proxies."""

_COLOR = re.compile(r"#[0-9A-Fa-f]{6}")
LOGO_URL_PATTERN = r"^https://(?:[A-Za-z0-9\-._~:/?#@&=+,]|%[0-9A-Fa-f]{2})+$"
"""Unreserved characters, the delimiters a URL needs (: / ? # @ & = + ,), and %XX escapes.
Left out on purpose: ' " ( ) ; $ ! * [ ] { } < > \\ ` ^ | and whitespace. The CRD's logo
fields carry this very pattern (a test compares them), so the API server refuses what the
webhook would, even while the operator is down."""
_SAFE_URL = re.compile(LOGO_URL_PATTERN)

COLOR_FIELDS = tuple(ThemeColors.model_fields)
LOGO_FIELDS = tuple(ThemeLogos.model_fields)


def check_color(value: str) -> str:
    """``#1A73E8`` -> ``#1a73e8``; anything but ``#RRGGBB`` raises ``ValueError``."""
    if not _COLOR.fullmatch(value):
        raise ValueError(f"colour {value[:40]!r} is not of the form #RRGGBB")
    return value.lower()


def check_logo_url(value: str) -> str:
    """Return ``value`` if it is a safe ``https://`` URL with a host, else raise ``ValueError``."""
    shown = repr(value[:60])
    if len(value) > MAX_LOGO_URL_LENGTH:
        raise ValueError(f"logo URL {shown}... is longer than {MAX_LOGO_URL_LENGTH} characters")
    if not _SAFE_URL.fullmatch(value):
        raise ValueError(
            f"logo URL {shown} must start with https:// and use only letters, digits, "
            "-._~:/?#@&=+, and %XX escapes"
        )
    parts = urlsplit(value)
    # user:password@ in front of a host is a classic way to disguise where a link goes.
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"logo URL {shown} must not carry a user name or password")
    try:
        _ = parts.port  # raises on a non-numeric or out-of-range port
        normalise_hostname(parts.hostname or "")
    except ValueError:
        raise ValueError(f"logo URL {shown} has no valid host") from None
    return value


def _checked(value: str | None, check: Callable[[str], str], problems: list[str]) -> str | None:
    if value is None or value == "":
        return None  # blank: inherit
    try:
        return check(value)
    except ValueError as error:
        problems.append(str(error))
        return None


def sanitise(theme: Theme) -> tuple[Theme, list[str]]:
    """The theme with blank and invalid values as ``None`` (so they inherit), and what was
    wrong, for the caller to log. Valid colours come back lowercased."""
    problems: list[str] = []
    colors = {
        name: _checked(getattr(theme.colors, name), check_color, problems) for name in COLOR_FIELDS
    }
    logos = {
        name: _checked(getattr(theme.logos, name), check_logo_url, problems) for name in LOGO_FIELDS
    }
    clean = Theme(colors=ThemeColors.model_validate(colors), logos=ThemeLogos.model_validate(logos))
    return clean, problems


def validated(theme: Theme) -> Theme:
    """The theme, sanitised, or ``ValueError`` naming every bad value (for settings: a bad
    global theme is an installation mistake to refuse at start, not to hide)."""
    clean, problems = sanitise(theme)
    if problems:
        raise ValueError("; ".join(problems))
    return clean


def merge(host: Theme | None, base: Theme) -> Theme:
    """``host`` over ``base``, field by field: a blank host field takes the base's value.

    Both are expected sanitised (``sanitise``/``validated``); merging never revalidates, it only
    picks, so it is cheap enough to run per request.
    """
    if host is None:
        return base
    colors = {
        name: getattr(host.colors, name) or getattr(base.colors, name) for name in COLOR_FIELDS
    }
    logos = {name: getattr(host.logos, name) or getattr(base.logos, name) for name in LOGO_FIELDS}
    return Theme(colors=ThemeColors.model_validate(colors), logos=ThemeLogos.model_validate(logos))


def to_wire(theme: Theme) -> dict[str, Any]:
    """The theme as the API answers it: the CRD's camelCase keys, every key present (``null``
    where neither the host nor the global theme sets a value), so clients need no defaults."""
    wire: dict[str, Any] = theme.model_dump(by_alias=True, mode="json")
    return wire
