"""The mail TLS agent's report: what Postfix and Dovecot serve, per TLS Secret. Pure.

Each agent keeps one ConfigMap (label ``COMPONENT=mail-tls-report``) in the namespace of the TLS
Secrets: data key = TLS Secret name, value = compact JSON
``{"serving": {"postfix": "<serial>", "dovecot": "<serial>"}, "errors": {"dovecot": "..."}}``
(a serial is ``null`` until the service serves one; ``errors`` only while there are any). One
object per agent, patched once per batch: the operator watches these few objects instead of
thousands of Secrets.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping

REPORT_COMPONENT = "mail-tls-report"
"""Value of ``labels.COMPONENT`` on the report ConfigMaps."""


@dataclasses.dataclass(frozen=True)
class MailServing:
    """One agent's report on one TLS Secret."""

    serving: Mapping[str, str | None]
    """Service → serial it serves (``None``: none yet)."""
    errors: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Service → why it does not serve the Secret's current certificate."""


def encode(report: MailServing) -> str:
    value: dict[str, object] = {"serving": dict(report.serving)}
    if report.errors:
        value["errors"] = dict(report.errors)
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def decode(value: str) -> MailServing | None:
    """The report in ``value``, or ``None`` if it is not one (written by something else)."""
    try:
        raw = json.loads(value)
        serving = {str(k): None if v is None else str(v) for k, v in raw["serving"].items()}
        errors = {str(k): str(v) for k, v in (raw.get("errors") or {}).items()}
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    return MailServing(serving, errors)
