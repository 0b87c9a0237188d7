from __future__ import annotations

import pytest

from vhost_operator.provisioning.decisions import Action, decide
from vhost_operator.resources.models import (
    RENEW_ANNOTATION,
    RETRY_ANNOTATION,
    Phase,
    VirtualHost,
    VirtualHostSpec,
    VirtualHostStatus,
)


def host(
    phase: Phase | None,
    *,
    retry: str | None = None,
    observed_retry: str | None = None,
    generation: int = 1,
    observed_generation: int | None = 1,
    renew: str | None = None,
) -> VirtualHost:
    annotations = {RETRY_ANNOTATION: retry} if retry else {}
    if renew:
        annotations[RENEW_ANNOTATION] = renew
    return VirtualHost(
        name="h",
        uid="u",
        generation=generation,
        annotations=annotations,
        spec=VirtualHostSpec(hostname="h.example.com"),
        status=VirtualHostStatus(
            phase=phase, observed_retry=observed_retry, observed_generation=observed_generation
        ),
    )


@pytest.mark.parametrize(
    ("subject", "action"),
    [
        (host(None, observed_generation=None), Action.PROVISION),
        (host(Phase.PENDING), Action.PROVISION),
        (host(Phase.PENDING, retry="1"), Action.PROVISION),
        (host(Phase.FAILED, retry="1"), Action.RETRY),
        (host(Phase.FAILED, retry="1", observed_retry="1"), Action.NOTHING),
        (host(Phase.FAILED), Action.NOTHING),
        (host(Phase.READY, retry="2", observed_retry="1"), Action.REFUSE_RETRY),
        (host(Phase.READY, generation=2), Action.OBSERVE),
        (host(Phase.READY), Action.NOTHING),
        (host(Phase.READY, renew="t1"), Action.RENEW),
        (host(Phase.FAILED, renew="t1"), Action.NOTHING),
    ],
)
def test_decide(subject: VirtualHost, action: Action) -> None:
    assert decide(subject) is action
