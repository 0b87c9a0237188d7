"""The chain runner: runs a host's steps in order and records each one in ``status.chain``.

The chain is strict. A step runs only after the one before it succeeded; the first failure
cancels the rest, records ``status.error`` and sets phase Failed. Status is written after every
step, so an operator restarted at any point resumes with the first step that has not succeeded.
Error text is kept free of volatile details (no timestamps, no object versions): identical
failures write identical status and so do not wake the watch loop again.

A step may also defer (:class:`StepDeferred`): it cannot go on before a given time (the CA asked
for a pause). The chain then stops without failing: the step shows ``Pending`` with a message
saying until when and why, the phase stays Pending, and ``on_deferred`` is told when to run the
chain again. Nothing waits in the meantime.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Protocol

from vhost_operator.errors import VhostOperatorError
from vhost_operator.metrics import STEP_DURATION
from vhost_operator.resources import conditions
from vhost_operator.resources.conditions import set_condition
from vhost_operator.resources.models import (
    CertificateStatus,
    ChainEntry,
    ConditionStatus,
    Phase,
    StepError,
    StepState,
    VirtualHost,
    VirtualHostStatus,
)

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    # Status timestamps are RFC 3339 with second precision, like the ones Kubernetes writes.
    return datetime.now(UTC).replace(microsecond=0)


class StepFailed(VhostOperatorError):
    """A step could not do its work. The message is shown to users in ``status.error``."""


class StepDeferred(VhostOperatorError):
    """A step cannot go on before ``until``; the message says why (shown on the step).

    ``reason`` is the reason of the host's Ready condition meanwhile (CamelCase): what it waits
    for, the CA's pause or the account's order budget."""

    def __init__(self, message: str, *, until: datetime, reason: str = "WaitingForCA") -> None:
        super().__init__(message)
        self.until = until
        self.reason = reason


OnDeferred = Callable[[VirtualHost, datetime], Awaitable[None]]
"""``(host, until)``: arrange for the host's chain to run again at ``until``."""


@dataclasses.dataclass(frozen=True)
class StepOutcome:
    """What a successful step adds to the status besides its own chain entry."""

    message: str = ""
    certificate: CertificateStatus | None = None


class Step(Protocol):
    """One idempotent unit of provisioning. Running it twice must be harmless.

    A step that only checks things and takes no time may set a class attribute ``quick = True``:
    its start is then not written on its own, only its outcome, and its success gets no Event of
    its own (the chain's "Ready" Event tells it): an API write or two less per host.
    """

    @property
    def name(self) -> str: ...

    async def run(self, host: VirtualHost) -> StepOutcome: ...


class ChainRecorder(Protocol):
    """Where the runner reports progress: the VirtualHost's status and its Events."""

    async def write_status(
        self, host: VirtualHost, status: VirtualHostStatus, *, last: bool = False
    ) -> None:
        """Write ``status``. ``last``: the run's ending (Ready, Failed or waiting), nothing of
        the run comes after it but Events; the recorder may leave it to a write that follows
        the run (kopf's patch, with its record of the handled spec), as long as that write
        comes: a status that is never written leaves the host resuming from the step before."""
        ...

    async def event(
        self, host: VirtualHost, *, warning: bool, reason: str, message: str
    ) -> None: ...


def fresh_chain(steps: Sequence[Step]) -> list[ChainEntry]:
    return [ChainEntry(step=step.name) for step in steps]


def resumable_chain(status: VirtualHostStatus, steps: Sequence[Step]) -> list[ChainEntry]:
    """Keep the recorded chain when it is the same list of steps and was left Pending.

    Anything else (settings changed which steps exist, or a retry of a Failed chain) starts over.
    """
    names = [step.name for step in steps]
    recorded = [entry.step for entry in status.chain]
    if status.phase == Phase.PENDING and recorded == names:
        return [entry.model_copy() for entry in status.chain]
    return fresh_chain(steps)


async def run_chain(
    host: VirtualHost,
    steps: Sequence[Step],
    recorder: ChainRecorder,
    *,
    restart: bool = False,
    refused: str | None = None,
    clock: Clock = utc_now,
    on_deferred: OnDeferred | None = None,
    guard: Callable[[VirtualHost], str | None] | None = None,
) -> VirtualHostStatus:
    """Run ``steps`` for ``host`` and return the final status (written, or left to the
    recorder's next write: ``last``).

    ``refused``: why this host must not be provisioned at all (a rule the webhook enforces,
    checked again for when the webhook was absent); its first step then fails with that
    message before it does anything.

    A step that defers ends the run with the host Pending; ``on_deferred`` (required if any
    step can defer) is then told when to run the chain again.

    ``guard`` is asked before each step whether the host may go on; its answer, if any, fails
    that step (e.g. another VirtualHost keeps the hostname: no ACME order, no nginx config).
    """
    chain = fresh_chain(steps) if restart else resumable_chain(host.status, steps)
    status = host.status.model_copy(
        update={
            "phase": Phase.PENDING,
            "error": None,
            "chain": chain,
            "observed_generation": host.generation,
            "observed_retry": host.retry_request,
        }
    )
    status = with_conditions(status, host, clock())
    for index, step in enumerate(steps):
        entry = status.chain[index]
        if entry.state == StepState.SUCCEEDED:
            continue
        status.chain[index] = entry.model_copy(
            update={"state": StepState.RUNNING, "started_at": clock(), "finished_at": None}
        )
        quick = bool(getattr(step, "quick", False))
        if index == 0 or not quick:
            await recorder.write_status(host, status)
        started = time.monotonic()
        try:
            refusal = refused if refused is not None else guard(host) if guard else None
            if refusal is not None:
                raise StepFailed(refusal)
            outcome = await step.run(host.model_copy(update={"status": status}))
        except StepDeferred as deferral:
            status.chain[index] = status.chain[index].model_copy(
                update={"state": StepState.PENDING, "message": str(deferral)}
            )
            status = _waiting(status, host, deferral, clock())
            await recorder.write_status(host, status, last=True)
            await recorder.event(
                host, warning=True, reason="StepWaiting", message=f"{step.name}: {deferral}"
            )
            if on_deferred is None:
                raise
            await on_deferred(host, deferral.until)
            return status
        except Exception as failure:  # any escape would leave the step Running forever
            STEP_DURATION.labels(step.name, "failed").observe(time.monotonic() - started)
            message = failure_message(step.name, failure)
            status = _failed(status, index, message, clock())
            status = with_conditions(status, host, clock())
            await recorder.write_status(host, status, last=True)
            await recorder.event(
                host, warning=True, reason="StepFailed", message=f"{step.name}: {message}"
            )
            return status
        STEP_DURATION.labels(step.name, "succeeded").observe(time.monotonic() - started)
        status.chain[index] = status.chain[index].model_copy(
            update={
                "state": StepState.SUCCEEDED,
                "finished_at": clock(),
                "message": outcome.message or None,
            }
        )
        if outcome.certificate is not None:
            status = status.model_copy(update={"certificate": outcome.certificate})
        if not quick:
            await recorder.event(host, warning=False, reason="StepSucceeded", message=step.name)
    # failedAttempts counts failures since the last success (cert-manager's
    # failedIssuanceAttempts): what an automatic retry's backoff grows with.
    status = status.model_copy(update={"phase": Phase.READY, "failed_attempts": 0})
    status = with_conditions(status, host, clock())
    await recorder.write_status(host, status, last=True)
    await recorder.event(
        host, warning=False, reason="Ready", message=f"{host.spec.hostname} is ready"
    )
    return status


def failure_message(step: str, failure: Exception) -> str:
    """The text recorded for an exception that ended ``step``.

    A :class:`VhostOperatorError` carries a message written for users. Anything else is a
    defect or a library error nobody mapped: it must still end the step (a step left Running
    keeps the host Pending forever), named by step and type so that it can be reported, and
    logged with its traceback.
    """
    if isinstance(failure, VhostOperatorError):
        return str(failure)
    logger.error("step %s raised %s", step, type(failure).__name__, exc_info=failure)
    detail = str(failure) or "no message"
    return f"unexpected error in step {step}: {type(failure).__name__}: {detail}"


def _failed(
    status: VirtualHostStatus, index: int, message: str, now: datetime
) -> VirtualHostStatus:
    chain = list(status.chain)
    chain[index] = chain[index].model_copy(
        update={"state": StepState.FAILED, "finished_at": now, "message": message}
    )
    for later in range(index + 1, len(chain)):
        chain[later] = chain[later].model_copy(update={"state": StepState.CANCELLED})
    return status.model_copy(
        update={
            "phase": Phase.FAILED,
            "chain": chain,
            "error": StepError(step=chain[index].step, message=message, at=now),
            "failed_attempts": status.failed_attempts + 1,
            "last_failure_time": now,
        }
    )


def _waiting(
    status: VirtualHostStatus, host: VirtualHost, deferral: StepDeferred, now: datetime
) -> VirtualHostStatus:
    """Ready and Provisioned say what the host waits for, and until when (the step's message)."""
    current = status.conditions
    for type_ in (conditions.READY, conditions.PROVISIONED):
        current = set_condition(
            current,
            type=type_,
            status=ConditionStatus.FALSE,
            reason=deferral.reason,
            message=str(deferral),
            now=now,
            observed_generation=host.generation,
        )
    return status.model_copy(update={"conditions": current})


def with_conditions(
    status: VirtualHostStatus, host: VirtualHost, now: datetime
) -> VirtualHostStatus:
    """Derive the Ready, Provisioned and CertificateValid conditions from the phase."""
    phase = status.phase or Phase.PENDING
    if phase == Phase.READY:
        state, reason, message = ConditionStatus.TRUE, "Provisioned", "every step succeeded"
    elif phase == Phase.FAILED and status.error is not None:
        state, reason, message = (
            ConditionStatus.FALSE,
            "StepFailed",
            f"{status.error.step}: {status.error.message}",
        )
    else:
        state, reason, message = (
            ConditionStatus.FALSE,
            "Provisioning",
            "the provisioning chain is running",
        )
    current = status.conditions
    for type_ in (conditions.READY, conditions.PROVISIONED):
        current = set_condition(
            current,
            type=type_,
            status=state,
            reason=reason,
            message=message,
            now=now,
            observed_generation=host.generation,
        )
    if status.certificate is not None:
        valid = status.certificate.not_before <= now < status.certificate.not_after
        current = set_condition(
            current,
            type=conditions.CERTIFICATE_VALID,
            status=ConditionStatus.TRUE if valid else ConditionStatus.FALSE,
            reason="Valid" if valid else "Expired",
            message=f"valid until {status.certificate.not_after.isoformat()}",
            now=now,
            observed_generation=host.generation,
        )
    return status.model_copy(update={"conditions": current})
