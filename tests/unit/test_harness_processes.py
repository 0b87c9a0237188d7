"""The test harness's processes: one that never gets ready is not left running."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness.processes import ManagedProcess, StartupError


def test_a_process_that_never_gets_ready_is_stopped_with_the_error(tmp_path: Path) -> None:
    sleeper = ManagedProcess("sleeper", ["sleep", "600"], tmp_path / "sleeper.log")
    with pytest.raises(StartupError, match=r"sleeper: no readiness after 0\.3s"):
        sleeper.wait_until(lambda: False, timeout=0.3, what="readiness")
    assert sleeper.process.poll() is not None, "left running: nobody holds it to stop it"
