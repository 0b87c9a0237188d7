"""The two small images a test node needs, made here because no registry is reachable: the pod
sandbox image (``pause``, a static C program) and a test image for pods (Debian's static busybox,
with its applets linked: ``sh``, ``nc``, ``httpd``, ``nslookup``...). Both are ``FROM scratch``
root filesystems imported into podman and saved as docker archives, which is what
``LocalNode.import_image`` loads into containerd.

Archives are cached in ``~/.cache/vhost-operator/images`` under a digest of their inputs (the C
source, the busybox binary), so a warm run runs neither gcc nor podman.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from tests.harness.controlplane import REPO

PAUSE_SOURCE = REPO / "hack" / "node" / "pause.c"
BUSYBOX = Path("/bin/busybox")
"""Debian's busybox-static. Its ``wget`` crashes (NSS in a static binary): probe with ``nc``."""


def cache_root() -> Path:
    """The cache the build scripts use (hack/build-lib.sh)."""
    configured = os.environ.get("VHOST_OPERATOR_CACHE")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vhost-operator"


@dataclasses.dataclass(frozen=True)
class ImageArchive:
    path: Path
    """A docker archive (``podman save --format docker-archive``)."""
    reference: str
    """The name it carries, as a pod's ``image`` names it."""


def _digest(*inputs: bytes) -> str:
    digest = hashlib.sha256()
    for data in inputs:
        digest.update(hashlib.sha256(data).digest())
    return digest.hexdigest()[:16]


def _cached_image(
    name: str, key: str, make_rootfs: Callable[[Path], None], changes: list[str]
) -> ImageArchive:
    reference = f"localhost/vhost-operator-test/{name}:{key}"
    archive = cache_root() / "images" / f"{name}-{key}.tar"
    if archive.exists():
        return ImageArchive(archive, reference)
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"vhost-image-{name}-") as scratch:
        rootfs = Path(scratch) / "rootfs"
        rootfs.mkdir()
        make_rootfs(rootfs)
        layer = Path(scratch) / "rootfs.tar"
        subprocess.run(
            ["tar", "--numeric-owner", "--owner=0", "--group=0", "-C", str(rootfs), "-cf",
             str(layer), "."],
            check=True,
        )  # fmt: skip
        change_args = [arg for change in changes for arg in ("--change", change)]
        subprocess.run(
            ["podman", "import", "--quiet", *change_args, str(layer), reference],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        partial = archive.with_suffix(".partial")
        try:
            subprocess.run(
                ["podman", "save", "--quiet", "--format", "docker-archive", "-o", str(partial),
                 reference],
                check=True,
            )  # fmt: skip
        finally:
            # The archive is the cache: podman's store keeps nothing of ours.
            subprocess.run(["podman", "rmi", "--force", reference], capture_output=True)
        partial.rename(archive)
    return ImageArchive(archive, reference)


def pause_image() -> ImageArchive:
    source = PAUSE_SOURCE.read_bytes()

    def rootfs(root: Path) -> None:
        subprocess.run(
            ["gcc", "-static", "-Os", "-s", "-o", str(root / "pause"), str(PAUSE_SOURCE)],
            check=True,
        )

    return _cached_image("pause", _digest(source), rootfs, ['ENTRYPOINT ["/pause"]'])


def busybox_image() -> ImageArchive:
    binary = BUSYBOX.read_bytes()

    def rootfs(root: Path) -> None:
        (root / "bin").mkdir()
        (root / "tmp").mkdir(mode=0o1777)
        (root / "tmp").chmod(0o1777)
        shutil.copy2(BUSYBOX, root / "bin" / "busybox")
        applets = subprocess.run(
            [str(BUSYBOX), "--list"], check=True, capture_output=True, text=True
        ).stdout.split()
        for applet in applets:
            if applet != "busybox":
                (root / "bin" / applet).symlink_to("busybox")

    return _cached_image("busybox", _digest(binary), rootfs, ["ENV PATH=/bin", 'CMD ["/bin/sh"]'])
