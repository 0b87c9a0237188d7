"""MTA-STS (RFC 8461) for a host's linked mail domains: the policy in the spec, the
``mta-sts.<domain>`` names it adds to the host's certificate, and the policy file's text. Pure.

Sending mail servers fetch ``https://mta-sts.<domain>/.well-known/mta-sts.txt`` (with a valid
certificate for that name) after finding the ``_mta-sts.<domain>`` TXT record; the policy tells
them which MX hosts to expect and whether to refuse delivery without TLS. The TXT record is
DNS, which this operator does not manage.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from vhost_operator.resources.hostnames import MAX_NAME_LENGTH, hostname_problem

POLICY_PATH = "/.well-known/mta-sts.txt"
NAME_PREFIX = "mta-sts."
MAX_MAX_AGE = 31_557_600
"""RFC 8461 section 3.2: ``max_age`` is at most 31557600 seconds (about a year)."""
DEFAULT_MAX_AGE = 604_800
"""One week: long enough for senders to rely on the policy, short enough to change it."""
MAX_MX = 20
MAX_CERTIFICATE_NAMES = 100
"""Let's Encrypt's limit of names per certificate: the hostname, the additional names and one
``mta-sts.`` name per linked domain must fit."""


class Mode(enum.StrEnum):
    ENFORCE = "enforce"
    TESTING = "testing"
    NONE = "none"


def _mx_checked(pattern: str) -> str:
    """An MX pattern: a hostname, or ``*.`` and a hostname (a wildcard for one leftmost label,
    RFC 8461 section 4.1)."""
    problem = hostname_problem(pattern.removeprefix("*."), max_length=MAX_NAME_LENGTH)
    if problem is None and len(pattern) > MAX_NAME_LENGTH:  # the CRD's limit counts the "*."
        problem = f"longer than {MAX_NAME_LENGTH} characters"
    if problem is not None:
        raise ValueError(f"mx {pattern!r}: {problem}")
    return pattern


MxPattern = Annotated[str, AfterValidator(_mx_checked)]


class MtaStsPolicy(BaseModel):
    """``spec.mtaSts``: the policy served for every domain linked to the host."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    mode: Mode
    mx: tuple[MxPattern, ...] = Field(default=(), max_length=MAX_MX)
    max_age: int = Field(default=DEFAULT_MAX_AGE, ge=1, le=MAX_MAX_AGE)

    @model_validator(mode="after")
    def _mx_unless_none(self) -> MtaStsPolicy:
        if self.mode != Mode.NONE and not self.mx:
            raise ValueError("mtaSts.mx must list the MX hosts unless mode is none")
        if len(set(self.mx)) != len(self.mx):
            raise ValueError("mtaSts.mx lists a host twice")
        return self

    def text(self) -> str:
        """The policy file (RFC 8461 section 3.2), CRLF-free lines ending in LF."""
        lines = ["version: STSv1", f"mode: {self.mode.value}"]
        lines += [f"mx: {pattern}" for pattern in self.mx]
        lines.append(f"max_age: {self.max_age}")
        return "".join(f"{line}\n" for line in lines)


_POLICY_LINE = re.compile(r"(?P<key>[a-z_]+): (?P<value>[*a-z0-9.-]+)")


def parse_policy(text: str) -> MtaStsPolicy | None:
    """The policy whose :meth:`MtaStsPolicy.text` is ``text``, or ``None``."""
    lines = text.split("\n")
    if lines[-1] != "" or lines[0] != "version: STSv1":
        return None
    fields: dict[str, list[str]] = {}
    for line in lines[1:-1]:
        match = _POLICY_LINE.fullmatch(line)
        if match is None:
            return None
        fields.setdefault(match["key"], []).append(match["value"])
    modes, ages = fields.pop("mode", []), fields.pop("max_age", [])
    if len(modes) != 1 or len(ages) != 1 or not ages[0].isdigit() or set(fields) - {"mx"}:
        return None
    try:
        policy = MtaStsPolicy(
            mode=Mode(modes[0]), mx=tuple(fields.get("mx", ())), max_age=int(ages[0])
        )
    except ValueError:
        return None
    return policy if policy.text() == text else None


def mta_sts_names(domains: Iterable[str]) -> tuple[str, ...]:
    """The policy host of each domain, in the order given."""
    return tuple(f"{NAME_PREFIX}{domain}" for domain in domains)
