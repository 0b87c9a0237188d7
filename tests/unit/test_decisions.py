from __future__ import annotations

import pytest

from tests.unit.builders import virtualhost
from vhost_operator.provisioning.decisions import Action, decide
from vhost_operator.resources.models import (
    RENEW_ANNOTATION,
    RETRY_ANNOTATION,
    Phase,
    VirtualHost,
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
    status = VirtualHostStatus(
        phase=phase, observed_retry=observed_retry, observed_generation=observed_generation
    )
    return virtualhost(generation=generation, annotations=annotations, status=status)


@pytest.mark.parametrize(
    ("subject", "action"),
    [
        pytest.param(host(None, observed_generation=None), Action.PROVISION, id="new"),
        pytest.param(host(Phase.PENDING), Action.PROVISION, id="pending"),
        pytest.param(host(Phase.PENDING, retry="1"), Action.PROVISION, id="pending-retried"),
        pytest.param(host(Phase.FAILED, retry="1"), Action.RETRY, id="failed-retried"),
        pytest.param(
            host(Phase.FAILED, retry="1", observed_retry="1"),
            Action.NOTHING,
            id="failed-retry-already-seen",
        ),
        pytest.param(host(Phase.FAILED), Action.NOTHING, id="failed"),
        pytest.param(
            host(Phase.READY, retry="2", observed_retry="1"),
            Action.REFUSE_RETRY,
            id="ready-retried",
        ),
        pytest.param(host(Phase.READY, generation=2), Action.OBSERVE, id="ready-spec-changed"),
        pytest.param(host(Phase.READY), Action.NOTHING, id="ready"),
        pytest.param(host(Phase.READY, renew="t1"), Action.RENEW, id="ready-renew-asked"),
        pytest.param(host(Phase.FAILED, renew="t1"), Action.NOTHING, id="failed-renew-asked"),
    ],
)
def test_decide(subject: VirtualHost, action: Action) -> None:
    assert decide(subject) is action
