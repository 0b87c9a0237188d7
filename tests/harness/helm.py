"""Helm, built from its Go module by ``hack/build-helm.sh``, and the chart it installs.

Helm keeps its own state (repositories, cache, plugins) under ``HELM_*_HOME``; every call here
points those at a throwaway directory, so the tests never read or change the user's Helm setup.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from tests.harness.controlplane import REPO
from tests.harness.processes import checked

CHART = REPO / "charts" / "vhost-operator"
BUILD_SCRIPT = REPO / "hack" / "build-helm.sh"
HELM_ENV = "VHOST_OPERATOR_HELM"
"""Environment variable naming a helm binary to use instead of the one the script builds."""

Manifest = dict[str, Any]


def helm_binary() -> Path:
    """``$VHOST_OPERATOR_HELM``, else the cached build (built on first use, ~2-3 minutes)."""
    configured = os.environ.get(HELM_ENV)
    if configured:
        return Path(configured)
    built = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], check=True, stdout=subprocess.PIPE, text=True
    )
    return Path(built.stdout.strip().splitlines()[-1])


class Helm:
    """Runs helm with a private state directory, against ``kubeconfig`` if given."""

    def __init__(self, binary: Path, kubeconfig: Path | None = None) -> None:
        self.binary = binary
        self.kubeconfig = kubeconfig
        self._home = Path(tempfile.mkdtemp(prefix="vhost-helm-"))

    def run(
        self, *args: str, check: bool = True, timeout: float = 180
    ) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "HELM_CACHE_HOME": str(self._home / "cache"),
            "HELM_CONFIG_HOME": str(self._home / "config"),
            "HELM_DATA_HOME": str(self._home / "data"),
        }
        if self.kubeconfig is not None:
            env["KUBECONFIG"] = str(self.kubeconfig)
        command = [str(self.binary), *args]
        completed = subprocess.run(
            command, capture_output=True, text=True, env=env, timeout=timeout
        )
        return checked(completed, check=check)

    def values_file(self, values: Mapping[str, Any]) -> Path:
        handle, name = tempfile.mkstemp(prefix="values-", suffix=".yaml", dir=self._home)
        os.close(handle)
        path = Path(name)
        path.write_text(yaml.safe_dump(dict(values)))
        return path

    def template(
        self,
        values: Mapping[str, Any] | None = None,
        *,
        release: str = "vhost-operator",
        namespace: str = "vhost-operator",
    ) -> list[Manifest]:
        """``helm template`` of the chart, parsed: one dict per object."""
        completed = self.run(
            "template",
            release,
            str(CHART),
            "--namespace",
            namespace,
            "--values",
            str(self.values_file(values or {})),
        )
        return parse_manifests(completed.stdout)


def parse_manifests(text: str) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def find(manifests: list[Manifest], kind: str, name: str | None = None) -> list[Manifest]:
    """The objects of ``kind`` (and ``name``, if given)."""
    return [
        m
        for m in manifests
        if m["kind"] == kind and (name is None or m["metadata"]["name"] == name)
    ]


def one(manifests: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    found = find(manifests, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def container(deployment: Manifest, name: str) -> Manifest:
    containers: list[Manifest] = deployment["spec"]["template"]["spec"]["containers"]
    for candidate in containers:
        if candidate["name"] == name:
            return candidate
    raise AssertionError(f"no container {name} in {deployment['metadata']['name']}")


def literal_env(container_spec: Manifest) -> dict[str, str]:
    """The container's environment variables with literal values (not ``valueFrom``)."""
    return {e["name"]: e["value"] for e in container_spec.get("env", []) if "value" in e}


def env_names(container_spec: Manifest) -> list[str]:
    return [e["name"] for e in container_spec.get("env", [])]
