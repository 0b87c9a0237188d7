"""The Dockerfile's two images, built with podman by ``hack/build-images.sh``, and podman itself.

The script does the work (``make images`` runs it too) and caches by content, so calling
:func:`built_images` is cheap once the images exist: it only reads the ``refs.json`` the script
prints. What it gives a node or a chart install::

    images = built_images()
    images.operator.tar, images.agent.tar      docker-archive tars: `ctr -n k8s.io images import`
    images.operator.ref                        localhost/vhost-operator:0.1.0-<key>
    images.chart_values()                      image/agentImage values for `helm install`

podman must run with the script's ``containers.conf`` (runc, no default ulimits):
:meth:`BuiltImages.podman` does that.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from tests.harness.controlplane import REPO
from tests.harness.processes import checked

BUILD_SCRIPT = REPO / "hack" / "build-images.sh"


class Image(BaseModel):
    model_config = ConfigDict(frozen=True)

    ref: str
    """Full reference, ``<repository>:<tag>``."""
    tag: str
    tar: Path
    """The image saved by ``podman save --format docker-archive``."""


class BuiltImages(BaseModel):
    """What ``hack/build-images.sh`` wrote into ``refs.json``."""

    model_config = ConfigDict(frozen=True)

    key: str
    """Hash of everything the images are built from; the cache directory's name."""
    version: str
    base: str
    """The base image made from Debian packages (the build's ``PYTHON_IMAGE``)."""
    repository: str
    containers_conf: Path
    operator: Image
    agent: Image

    def chart_values(self) -> dict[str, Any]:
        """The chart's image values for these images, which are imported into the node's
        containerd and in no registry, so they are never pulled."""
        return {
            "image": {
                "repository": self.repository,
                "tag": self.operator.tag,
                "pullPolicy": "Never",
            },
            "agentImage": {
                "repository": self.repository,
                "tag": self.agent.tag,
                "pullPolicy": "Never",
            },
        }

    def podman(
        self, *args: str, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Runs podman configured as the build script configured it."""
        completed = subprocess.run(
            ["podman", *args],
            env={**os.environ, "CONTAINERS_CONF": str(self.containers_conf)},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        return checked(completed, check=check)

    def run(
        self, ref: str, *args: str, entrypoint: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Runs a container of ``ref`` to completion, without network, as the image's user.
        The container is removed even if podman or the command outlives ``timeout``."""
        name = f"vhost-operator-test-{uuid.uuid4().hex[:12]}"
        options = ["--rm", "--name", name, "--network=none"]
        if entrypoint is not None:
            options += ["--entrypoint", entrypoint]
        try:
            return self.podman("run", *options, ref, *args, timeout=timeout, check=False)
        finally:
            self.podman("rm", "--force", "--ignore", name, check=False)


def built_images() -> BuiltImages:
    """Builds both images (first run only, a few minutes) and returns what was built."""
    built = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], check=True, stdout=subprocess.PIPE, text=True
    )
    refs = Path(built.stdout.strip().splitlines()[-1])
    return BuiltImages.model_validate_json(refs.read_text())
