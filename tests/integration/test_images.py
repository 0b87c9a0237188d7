"""The Dockerfile's images, built for real with podman by ``hack/build-images.sh``.

The base is made here from Debian packages (no registry is reachable), both targets are built
from the unchanged Dockerfile on it, and the tests run the images: the operator image answers
as UID 10001 from its installed package, the agent image carries Debian's nginx, the host's CA
bundle (mounted into the build for pip) is in no layer, and the docker-archive tars that a node
imports name the images. A cold cache builds for a few minutes; a warm one builds nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.controlplane import REPO
from tests.harness.images import BUILD_SCRIPT, BuiltImages, built_images

pytestmark = pytest.mark.images

IMAGE_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
# What the build script mounts into the build: the bundle that trusts this machine's egress CA.
HOST_BUNDLE = Path(os.environ.get("SSL_CERT_FILE") or os.environ.get("PIP_CERT") or IMAGE_BUNDLE)
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


@pytest.fixture(scope="module")
def images() -> BuiltImages:
    return built_images()


def answered(completed: subprocess.CompletedProcess[str]) -> str:
    assert completed.returncode == 0, f"{completed.args}:\n{completed.stdout}\n{completed.stderr}"
    return completed.stdout + completed.stderr


def test_a_warm_run_builds_nothing(images: BuiltImages) -> None:
    again = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, check=True, timeout=120
    )
    assert "cached:" in again.stderr and "building" not in again.stderr, again.stderr
    assert Path(again.stdout.strip()).parent.name == images.key


def test_images_are_tagged_by_version_and_content(images: BuiltImages) -> None:
    assert images.operator.ref == f"localhost/vhost-operator:{VERSION}-{images.key}"
    assert images.agent.ref == f"{images.operator.ref}-agent"
    values = images.chart_values()
    assert values["image"]["repository"] + ":" + values["image"]["tag"] == images.operator.ref
    assert values["agentImage"]["repository"] + ":" + values["agentImage"]["tag"] == (
        images.agent.ref
    )


def test_the_operator_image_runs_its_command_as_uid_10001(images: BuiltImages) -> None:
    config = json.loads(answered(images.podman("image", "inspect", images.operator.ref)))[0]
    assert config["Config"]["User"] == "10001:10001"
    assert config["Config"]["Entrypoint"] == ["vhost-operator"]
    assert config["Config"]["Cmd"] == ["run"]

    assert "nginx-agent" in answered(images.run(images.operator.ref, "--help"))
    assert answered(images.run(images.operator.ref, "--version")).strip() == VERSION
    assert answered(images.run(images.operator.ref, "-u", entrypoint="id")).strip() == "10001"


def test_the_operator_image_holds_the_installed_package_and_no_build_leftovers(
    images: BuiltImages,
) -> None:
    script = (
        "import os, vhost_operator, vhost_operator.nginx as n\n"
        "print(vhost_operator.__file__)\n"
        "print([p for p in ('/src', '/wheels', '/opt/vhost-operator/bin/pip') "
        "if os.path.exists(p)])\n"
        "print(n.render_bootstrap(n.SiteConfig(hostname='mail.example.com', "
        "challenge_upstream='127.0.0.1:8089', upstream='http://127.0.0.1:8000')))\n"
    )
    output = answered(images.run(images.operator.ref, "-c", script, entrypoint="python"))
    location, leftovers, rendered = output.split("\n", 2)
    assert location.startswith("/opt/vhost-operator/lib/")  # the wheel's, not a source tree
    assert leftovers == "[]"  # no build context, no wheels, no pip in the venv
    assert "server_name mail.example.com;" in rendered  # the templates came as package data


def test_the_images_hold_exactly_the_repositorys_sources(images: BuiltImages) -> None:
    """What the content key promises: an image under a key is built from those sources, not
    from a build cache that outlived them."""
    script = (
        "import hashlib, json, pathlib, vhost_operator\n"
        "root = pathlib.Path(vhost_operator.__file__).parent\n"
        "print(json.dumps({p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes())"
        ".hexdigest() for p in root.rglob('*') if p.is_file() and p.suffix != '.pyc'}))\n"
    )
    package = REPO / "operator" / "vhost_operator"
    expected = {
        path.relative_to(package).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in package.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    for image in (images.operator, images.agent):
        output = answered(images.run(image.ref, "-c", script, entrypoint="python"))
        assert json.loads(output) == expected, image.ref


def test_the_agent_image_has_debians_nginx_and_the_agent_command(images: BuiltImages) -> None:
    config = json.loads(answered(images.podman("image", "inspect", images.agent.ref)))[0]
    assert config["Config"]["User"] == "10001:10001"
    assert config["Config"]["Cmd"] == ["nginx-agent"]

    assert "nginx/1.22.1" in answered(images.run(images.agent.ref, "-v", entrypoint="nginx"))
    assert "--help" in answered(images.run(images.agent.ref, "nginx-agent", "--help"))


def layer_files(archive: Path) -> Iterator[tuple[str, str, tarfile.TarFile, tarfile.TarInfo]]:
    """(image ref, layer, layer tar, member) for every regular file of every layer of a
    docker-archive."""
    with tarfile.open(archive) as outer:
        manifest_file = outer.extractfile("manifest.json")
        assert manifest_file is not None
        (manifest,) = json.load(manifest_file)
        for layer in manifest["Layers"]:
            stream = outer.extractfile(layer)
            assert stream is not None
            with tarfile.open(fileobj=stream, mode="r|") as layer_tar:
                for member in layer_tar:
                    if member.isreg():
                        yield manifest["RepoTags"][0], layer, layer_tar, member


def test_archives_name_the_images_and_no_layer_holds_the_host_ca_bundle(
    images: BuiltImages,
) -> None:
    host_bundle = HOST_BUNDLE.read_bytes()
    host_digest = hashlib.sha256(host_bundle).hexdigest()
    own_bundles: list[str] = []
    copies: list[str] = []
    for image in (images.operator, images.agent):
        assert image.tar.is_file()
        for ref, layer, layer_tar, member in layer_files(image.tar):
            assert ref == image.ref  # what `ctr images import` will name it
            if member.name.lstrip("./") == IMAGE_BUNDLE.lstrip("/"):
                own_bundles.append(f"{layer}:{member.name}")
            if member.size != len(host_bundle):
                continue
            content = layer_tar.extractfile(member)
            assert content is not None
            if hashlib.sha256(content.read()).hexdigest() == host_digest:
                copies.append(f"{image.ref} {layer}:{member.name}")
    # The images do carry a bundle, Debian's (so the scan above saw the path), and the
    # host's (with this machine's egress CA) is nowhere, under any name.
    assert own_bundles
    assert copies == []
    inside = answered(images.run(images.agent.ref, IMAGE_BUNDLE, entrypoint="sha256sum")).split()[0]
    assert inside != host_digest


def test_the_key_covers_the_build_context_and_nothing_else(tmp_path: Path) -> None:
    def key(root: Path) -> str:
        completed = subprocess.run(
            ["bash", str(root / "hack" / "build-images.sh"), "--key"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return completed.stdout.strip()

    copy = tmp_path / "repo"
    for name in ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md"):
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, copy / name)
    (copy / "hack").mkdir()
    shutil.copy2(BUILD_SCRIPT, copy / "hack" / "build-images.sh")
    shutil.copytree(
        REPO / "operator", copy / "operator", ignore=shutil.ignore_patterns("*.egg-info")
    )
    original = key(copy)
    assert original == key(REPO)

    # Outside the build context, or excluded by .dockerignore: the same images.
    (copy / "tests").mkdir()
    (copy / "tests" / "test_new.py").write_text("x = 1\n")
    cache = copy / "operator" / "vhost_operator" / "__pycache__"
    cache.mkdir(exist_ok=True)
    (cache / "new.cpython-311.pyc").write_bytes(b"\0")
    assert key(copy) == original

    # Any source, the Dockerfile or the metadata: other images.
    cli = copy / "operator" / "vhost_operator" / "cli.py"
    cli.write_text(cli.read_text() + "\n# changed\n")
    changed = key(copy)
    assert changed != original
    (copy / "Dockerfile").write_text((copy / "Dockerfile").read_text() + "\n# changed\n")
    assert key(copy) not in (original, changed)
