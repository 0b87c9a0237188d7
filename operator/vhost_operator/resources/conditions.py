"""Kubernetes-style conditions, updated the way the API conventions ask.

``lastTransitionTime`` changes only when a condition's status flips: rewriting it on every
reconcile would make each status write look like a change and wake every watcher.
"""

from __future__ import annotations

from datetime import datetime

from vhost_operator.resources.models import Condition, ConditionStatus

READY = "Ready"
"""The host is provisioned and serving (or, with nothing to provision, simply accepted)."""
PROVISIONED = "Provisioned"
"""Every step of the provisioning chain has succeeded."""
CERTIFICATE_VALID = "CertificateValid"
"""The host holds a certificate that is within its validity period."""
MAIL_SERVING = "MailServing"
"""The mail services (Postfix, Dovecot: the mail TLS agents' reports) serve the host's current
certificate. Set only where a mail TLS agent reports; ``Ready`` stays about nginx."""


def set_condition(
    conditions: list[Condition],
    *,
    type: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    now: datetime,
    observed_generation: int | None,
) -> list[Condition]:
    """Return ``conditions`` with the condition ``type`` set; the input list is not changed."""
    previous = next((c for c in conditions if c.type == type), None)
    transition = (
        previous.last_transition_time if previous is not None and previous.status == status else now
    )
    updated = Condition(
        type=type,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=transition,
        observed_generation=observed_generation,
    )
    others = [c for c in conditions if c.type != type]
    return sorted([*others, updated], key=lambda c: c.type)
