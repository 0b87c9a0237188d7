"""The test harness's processes: one that never gets ready is not left running; ports; a failed
command's report says what the command said."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.harness.processes import (
    CommandFailed,
    ManagedProcess,
    StartupError,
    checked,
    free_port,
)


def test_a_process_that_never_gets_ready_is_stopped_with_the_error(tmp_path: Path) -> None:
    sleeper = ManagedProcess("sleeper", ["sleep", "600"], tmp_path / "sleeper.log")
    with pytest.raises(StartupError, match=r"sleeper: no readiness after 0\.3s"):
        sleeper.wait_until(lambda: False, timeout=0.3, what="readiness")
    assert sleeper.process.poll() is not None, "left running: nobody holds it to stop it"


def test_free_ports_stay_out_of_the_kernels_ephemeral_range() -> None:
    """Outbound connections take their source ports from the ephemeral range: a port picked
    there can be taken between the pick and the server's bind."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port() for _ in range(200)]
    assert all(port < low for port in ports)
    assert len(set(ports)) == len(ports), "a port handed out twice"


def run(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=False)


def test_a_failed_command_is_reported_with_its_stderr() -> None:
    with pytest.raises(CommandFailed) as failure:
        checked(run("echo 'error: the server rejected it' >&2; exit 3"))
    assert isinstance(failure.value, subprocess.CalledProcessError)  # callers catching it still do
    assert failure.value.returncode == 3
    assert "exit status 3" in str(failure.value)
    assert "error: the server rejected it" in str(failure.value)


def test_a_command_that_worked_or_is_not_checked_is_returned() -> None:
    assert checked(run("echo fine")).stdout == "fine\n"
    assert checked(run("exit 1"), check=False).returncode == 1
