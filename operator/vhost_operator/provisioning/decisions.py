"""What a VirtualHost event calls for. Pure: reads the object, returns an action."""

from __future__ import annotations

import enum
from collections.abc import Iterable

from vhost_operator.resources.claims import (
    Claim,
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
    OBSERVE = "observe"
    """Only the generation moved (e.g. domains edited): record observedGeneration."""
    NOTHING = "nothing"


def decide(host: VirtualHost) -> Action:
    status = host.status
    retry_requested = host.retry_request is not None and host.retry_request != status.observed_retry
    if status.phase is None or status.phase == Phase.PENDING:
        return Action.PROVISION
    if retry_requested:
        return Action.RETRY if status.phase == Phase.FAILED else Action.REFUSE_RETRY
    if status.observed_generation != host.generation:
        return Action.OBSERVE
    renewal_requested = (
        host.renewal_request is not None and host.renewal_request != status.observed_renewal
    )
    if renewal_requested and status.phase == Phase.READY:
        return Action.RENEW
    return Action.NOTHING


def hostname_refusal(host: VirtualHost, rivals: Iterable[Claim]) -> str | None:
    """Why ``host`` may not be provisioned: an older VirtualHost has its hostname (``rivals``:
    the claims of every VirtualHost with it, this one's included or not)."""
    owner = claimed_by_older(host.claim, [r for r in rivals if r.name != host.name])
    return None if owner is None else hostname_taken_message(host.spec.hostname, owner)


def successor(deleted: VirtualHost, rivals: Iterable[Claim]) -> str | None:
    """The VirtualHost that takes the hostname over once ``deleted`` is gone: the next oldest,
    if ``deleted`` kept it; ``None`` if it did not, or nobody else claims it."""
    others = [r for r in rivals if r.name != deleted.name]
    if not others or claimed_by_older(deleted.claim, others) is not None:
        return None
    return senior(others).name
