"""promtool, built from its Go module by ``hack/build-promtool.sh``: checks and unit-tests the
chart's alerting rules."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.harness.controlplane import REPO

BUILD_SCRIPT = REPO / "hack" / "build-promtool.sh"
PROMTOOL_ENV = "VHOST_OPERATOR_PROMTOOL"
"""Environment variable naming a promtool binary to use instead of the one the script builds."""


def promtool_binary() -> Path:
    """``$VHOST_OPERATOR_PROMTOOL``, else the cached build (built on first use: several minutes,
    Prometheus is a large module)."""
    configured = os.environ.get(PROMTOOL_ENV)
    if configured:
        return Path(configured)
    built = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], check=True, stdout=subprocess.PIPE, text=True
    )
    return Path(built.stdout.strip().splitlines()[-1])


def promtool(binary: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run promtool; never raises on its exit status (the caller shows its output)."""
    return subprocess.run(
        [str(binary), *args], capture_output=True, text=True, cwd=cwd, timeout=300, check=False
    )
