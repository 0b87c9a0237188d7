"""What a VirtualHost event calls for. Pure: reads the object, returns an action."""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable

from vhost_operator.resources.claims import (
    Claim,
    additional_name_taken_message,
    claimed_by_older,
    hostname_taken_message,
    senior,
)
from vhost_operator.resources.models import Phase, VirtualHost


class Action(enum.Enum):
    PROVISION = "provision"
    """A new host, or one whose chain was interrupted: run the chain (finished steps are kept)."""
    RETRY = "retry"
    """A Failed host whose retry annotation changed: run the whole chain again."""
    REFUSE_RETRY = "refuse-retry"
    """The retry annotation changed on a host that is not Failed: record it, do nothing else."""
    RENEW = "renew"
    """A Ready host with a new renewal request (from the scanner): order a new certificate."""
    REISSUE = "reissue"
    """A Ready (or Pending) host whose certificate does not cover exactly its names
    (``additionalNames`` changed): run the whole chain again, which orders a certificate for
    the new list while the current one keeps serving."""
    OBSERVE = "observe"
    """Only the generation moved (e.g. domains edited): record observedGeneration."""
    NOTHING = "nothing"


def decide(host: VirtualHost) -> Action:
    status = host.status
    retry_requested = host.retry_request is not None and host.retry_request != status.observed_retry
    if status.phase is None or status.phase == Phase.PENDING:
        # The list changed after this chain's certificate was issued: resuming would finish
        # with a certificate that lacks (or keeps) names, so the chain starts over.
        return Action.REISSUE if _reissue_due(host) else Action.PROVISION
    if retry_requested:
        return Action.RETRY if status.phase == Phase.FAILED else Action.REFUSE_RETRY
    if status.phase == Phase.READY and _reissue_due(host):
        return Action.REISSUE
    if status.observed_generation != host.generation:
        return Action.OBSERVE
    renewal_requested = (
        host.renewal_request is not None and host.renewal_request != status.observed_renewal
    )
    if renewal_requested and status.phase == Phase.READY:
        return Action.RENEW
    return Action.NOTHING


def _reissue_due(host: VirtualHost) -> bool:
    # Disabled hosts wait: nginx would not serve their challenges (as with renewals).
    return host.spec.enabled and names_changed(host)


def names_changed(host: VirtualHost) -> bool:
    """Whether the host's certificate covers other names than the spec lists. A certificate
    recorded without its names predates ``additionalNames``: it covers the hostname alone."""
    certificate = host.status.certificate
    if certificate is None:
        return False
    covered = certificate.names if certificate.names is not None else [host.spec.hostname]
    return set(covered) != set(host.spec.names)


def hostname_refusal(host: VirtualHost, rivals: Iterable[Claim]) -> str | None:
    """Why ``host`` may not be provisioned: an older VirtualHost has its hostname (``rivals``:
    the claims of every VirtualHost with it, this one's included or not)."""
    owner = claimed_by_older(host.claim, [r for r in rivals if r.name != host.name])
    return None if owner is None else hostname_taken_message(host.spec.hostname, owner)


def names_refusal(host: VirtualHost, rivals: Callable[[str], Iterable[Claim]]) -> str | None:
    """Why ``host`` may not be provisioned: an older VirtualHost serves its hostname or one of
    its additional names (``rivals(name)``: the claims of every VirtualHost serving it)."""
    refusal = hostname_refusal(host, rivals(host.spec.hostname))
    if refusal is not None:
        return refusal
    for name in host.spec.other_names:
        owner = claimed_by_older(host.claim, [r for r in rivals(name) if r.name != host.name])
        if owner is not None:
            return additional_name_taken_message(name, owner)
    return None


def successor(deleted: VirtualHost, rivals: Iterable[Claim]) -> str | None:
    """The VirtualHost that takes the hostname over once ``deleted`` is gone: the next oldest,
    if ``deleted`` kept it; ``None`` if it did not, or nobody else claims it."""
    others = [r for r in rivals if r.name != deleted.name]
    if not others or claimed_by_older(deleted.claim, others) is not None:
        return None
    return senior(others).name
