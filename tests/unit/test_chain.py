"""The chain runner with in-memory steps and recorder: ordering, cancellation, resumption."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from tests.unit.builders import virtualhost
from vhost_operator.provisioning.chain import (
    Step,
    StepDeferred,
    StepFailed,
    StepOutcome,
    run_chain,
)
from vhost_operator.resources.models import (
    ChainEntry,
    ConditionStatus,
    Phase,
    StepState,
    VirtualHost,
    VirtualHostStatus,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class RecordingStep:
    def __init__(self, name: str, log: list[str], *, fails: str | None = None) -> None:
        self.name = name
        self._log = log
        self._fails = fails

    async def run(self, host: VirtualHost) -> StepOutcome:
        self._log.append(self.name)
        if self._fails:
            raise StepFailed(self._fails)
        return StepOutcome(message=f"{self.name} done")


class MemoryRecorder:
    def __init__(self) -> None:
        self.statuses: list[VirtualHostStatus] = []
        self.lasts: list[bool] = []
        self.events: list[tuple[bool, str, str]] = []

    async def write_status(
        self, host: VirtualHost, status: VirtualHostStatus, *, last: bool = False
    ) -> None:
        self.statuses.append(status.model_copy(deep=True))
        self.lasts.append(last)

    async def event(self, host: VirtualHost, *, warning: bool, reason: str, message: str) -> None:
        self.events.append((warning, reason, message))


def run(
    host: VirtualHost, steps: list[RecordingStep], recorder: MemoryRecorder, restart: bool = False
) -> VirtualHostStatus:
    return asyncio.run(run_chain(host, steps, recorder, restart=restart, clock=lambda: NOW))


def test_steps_run_in_order_and_end_ready() -> None:
    log: list[str] = []
    recorder = MemoryRecorder()
    steps = [RecordingStep(n, log) for n in ("bootstrap", "certificate", "final", "ready")]
    status = run(virtualhost(), steps, recorder)
    assert log == ["bootstrap", "certificate", "final", "ready"]
    assert status.phase == Phase.READY
    assert [e.state for e in status.chain] == [StepState.SUCCEEDED] * 4
    assert status.observed_generation == 1
    assert {c.type: c.status.value for c in status.conditions} == {
        "Provisioned": "True",
        "Ready": "True",
    }
    assert recorder.statuses[-1] == status
    assert recorder.statuses[0].chain[0].state == StepState.RUNNING
    # Only the ending may be left to the handler's patch: every step's start is written.
    assert recorder.lasts == [False] * 4 + [True]


def test_no_steps_means_ready_at_once() -> None:
    recorder = MemoryRecorder()
    status = run(virtualhost(), [], recorder)
    assert status.phase == Phase.READY and status.chain == []
    assert len(recorder.statuses) == 1


def test_failure_cancels_the_rest_and_records_the_error() -> None:
    log: list[str] = []
    recorder = MemoryRecorder()
    steps = [
        RecordingStep("bootstrap", log),
        RecordingStep("certificate", log, fails="ACME directory unreachable"),
        RecordingStep("final", log),
    ]
    status = run(virtualhost(), steps, recorder)
    assert log == ["bootstrap", "certificate"]
    assert status.phase == Phase.FAILED
    assert [e.state for e in status.chain] == [
        StepState.SUCCEEDED,
        StepState.FAILED,
        StepState.CANCELLED,
    ]
    assert status.error is not None and status.error.step == "certificate"
    assert status.error.message == "ACME directory unreachable"
    assert status.failed_attempts == 1 and status.last_failure_time == NOW
    assert (True, "StepFailed", "certificate: ACME directory unreachable") in recorder.events
    assert recorder.statuses[-1] == status and recorder.lasts == [False, False, True]
    ready = next(c for c in status.conditions if c.type == "Ready")
    assert ready.status.value == "False" and ready.reason == "StepFailed"


def test_identical_failures_write_identical_status() -> None:
    steps = [RecordingStep("certificate", [], fails="CA refused")]
    first = run(virtualhost(), steps, MemoryRecorder())
    second = run(virtualhost(status=first), steps, MemoryRecorder(), restart=True)
    assert second.error == first.error
    assert second.failed_attempts == 2


def test_resume_skips_finished_steps() -> None:
    log: list[str] = []
    interrupted = VirtualHostStatus(
        phase=Phase.PENDING,
        chain=[
            ChainEntry(step="bootstrap", state=StepState.SUCCEEDED),
            ChainEntry(step="certificate", state=StepState.RUNNING),
            ChainEntry(step="final"),
        ],
    )
    steps = [RecordingStep(n, log) for n in ("bootstrap", "certificate", "final")]
    status = run(virtualhost(status=interrupted), steps, MemoryRecorder())
    assert log == ["certificate", "final"]
    assert status.phase == Phase.READY


def test_retry_reruns_everything_and_clears_the_error() -> None:
    log: list[str] = []
    failed = run(virtualhost(), [RecordingStep("bootstrap", [], fails="boom")], MemoryRecorder())
    status = run(
        virtualhost(status=failed),
        [RecordingStep("bootstrap", log)],
        MemoryRecorder(),
        restart=True,
    )
    assert log == ["bootstrap"]
    assert status.phase == Phase.READY and status.error is None
    assert status.to_merge_patch()["error"] is None, "a merge patch must remove the old error"
    assert status.failed_attempts == 0, "a success resets the count (as cert-manager does)"
    assert status.last_failure_time == failed.last_failure_time


class QuickStep(RecordingStep):
    quick = True


def test_a_quick_step_is_recorded_with_the_chain_outcome() -> None:
    log: list[str] = []
    recorder = MemoryRecorder()
    steps = [RecordingStep("bootstrap", log), RecordingStep("final", log), QuickStep("ready", log)]
    status = run(virtualhost(), steps, recorder)
    assert log == ["bootstrap", "final", "ready"]
    # Written: bootstrap running, final running, Ready; no write for "ready running" alone.
    assert [[e.state for e in s.chain] for s in recorder.statuses] == [
        [StepState.RUNNING, StepState.PENDING, StepState.PENDING],
        [StepState.SUCCEEDED, StepState.RUNNING, StepState.PENDING],
        [StepState.SUCCEEDED] * 3,
    ]
    assert status.phase == Phase.READY
    assert [reason for _, reason, _ in recorder.events] == [
        "StepSucceeded",
        "StepSucceeded",
        "Ready",
    ]


class BrokenStep:
    """A step with a defect: it raises something that is no ``VhostOperatorError``."""

    name = "certificate"

    async def run(self, host: VirtualHost) -> StepOutcome:
        raise ValueError("not an unencrypted PEM private key")


def test_an_unexpected_exception_fails_the_step_naming_it() -> None:
    recorder = MemoryRecorder()
    steps: list[Step] = [RecordingStep("bootstrap", []), BrokenStep(), RecordingStep("final", [])]
    status = asyncio.run(run_chain(virtualhost(), steps, recorder, clock=lambda: NOW))
    assert status.phase == Phase.FAILED
    assert [e.state for e in status.chain] == [
        StepState.SUCCEEDED,
        StepState.FAILED,
        StepState.CANCELLED,
    ]
    expected = (
        "unexpected error in step certificate: ValueError: not an unencrypted PEM private key"
    )
    assert status.error is not None and status.error.message == expected
    assert recorder.statuses[-1] == status
    assert recorder.events[-1] == (True, "StepFailed", f"certificate: {expected}")


def test_a_refused_host_fails_at_its_first_step_without_running_it() -> None:
    log: list[str] = []
    steps = [RecordingStep(n, log) for n in ("bootstrap", "certificate")]
    recorder = MemoryRecorder()
    status = asyncio.run(
        run_chain(virtualhost(), steps, recorder, refused="a primary hostname", clock=lambda: NOW)
    )
    assert log == []
    assert status.phase == Phase.FAILED
    assert [e.state for e in status.chain] == [StepState.FAILED, StepState.CANCELLED]
    assert status.error is not None and status.error.message == "a primary hostname"


class DeferringStep:
    name = "certificate"

    def __init__(self, until: datetime) -> None:
        self.until = until

    async def run(self, host: VirtualHost) -> StepOutcome:
        raise StepDeferred(f"waiting for the CA until {self.until.isoformat()}", until=self.until)


def test_a_deferring_step_leaves_the_host_pending_and_asks_to_run_again_later() -> None:
    log: list[str] = []
    recorder = MemoryRecorder()
    until = datetime(2026, 1, 1, 0, 5, tzinfo=UTC)
    woken: list[tuple[str, datetime]] = []

    async def on_deferred(host: VirtualHost, at: datetime) -> None:
        woken.append((host.name, at))

    steps: list[Step] = [
        RecordingStep("bootstrap", log),
        DeferringStep(until),
        RecordingStep("final", log),
    ]
    status = asyncio.run(
        run_chain(virtualhost(), steps, recorder, clock=lambda: NOW, on_deferred=on_deferred)
    )
    assert status.phase == Phase.PENDING and status.error is None
    assert [e.state for e in status.chain] == [
        StepState.SUCCEEDED,
        StepState.PENDING,
        StepState.PENDING,
    ]
    assert status.chain[1].message == f"waiting for the CA until {until.isoformat()}"
    assert status.failed_attempts == 0
    assert recorder.statuses[-1] == status
    assert recorder.lasts == [False, False, True], "the waiting step ends the run"
    assert woken == [("h", until)]
    assert log == ["bootstrap"], "nothing after the waiting step runs"
    assert recorder.events[-1][1] == "StepWaiting"
    ready = next(c for c in status.conditions if c.type == "Ready")
    assert (ready.status, ready.reason) == (ConditionStatus.FALSE, "WaitingForCA")
    assert ready.message == status.chain[1].message, "Ready says what it waits for, and until"

    # Run again (the wake-up): the chain resumes at the waiting step.
    steps[1] = RecordingStep("certificate", log)
    resumed = asyncio.run(run_chain(virtualhost(status=status), steps, recorder, clock=lambda: NOW))
    assert resumed.phase == Phase.READY
    assert log == ["bootstrap", "certificate", "final"]
