"""The chart's files themselves, without Helm: CRDs in step with the repository's, every value
documented and described by the schema, versions in step with the package, Helm's conventions.

Rendering is tested with the real Helm in tests/integration/test_chart_templates.py.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "vhost-operator"
TEMPLATES = CHART / "templates"


def test_chart_crds_are_the_repository_crds() -> None:
    """Helm installs charts/vhost-operator/crds/ verbatim (never templated): it must be a copy of
    crds/, byte for byte. Fix a failure with ``cp crds/*.yaml charts/vhost-operator/crds/``."""
    repository = {p.name: p.read_bytes() for p in (REPO / "crds").glob("*.yaml")}
    chart = {p.name: p.read_bytes() for p in (CHART / "crds").glob("*.yaml")}
    assert repository, "no CRDs in crds/"
    assert sorted(chart) == sorted(repository)
    different = [name for name in repository if chart[name] != repository[name]]
    assert different == [], f"charts/vhost-operator/crds/ differs from crds/ in {different}"


def test_chart_versions() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "vhost-operator"
    assert chart["version"] == "0.1.0"
    assert chart["appVersion"] == project["version"]


# -- values.yaml and values.schema.json ---------------------------------------------------------


def values() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return loaded


def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
    return loaded


def chart_keys(node: dict[str, Any], node_schema: dict[str, Any], path: str = "") -> Iterator[str]:
    """Dotted paths of the chart's own keys: those the schema describes property by property.
    Below a free-form object (resources, securityContext, nodeSelector ...) keys are Kubernetes'
    own, not the chart's."""
    properties = node_schema.get("properties")
    if properties is None:
        return
    for key, value in node.items():
        dotted = f"{path}.{key}" if path else key
        yield dotted
        if isinstance(value, dict) and key in properties:
            yield from chart_keys(value, properties[key], dotted)


def test_schema_describes_exactly_the_values() -> None:
    def schema_keys(node_schema: dict[str, Any], path: str = "") -> Iterator[str]:
        for key, child in (node_schema.get("properties") or {}).items():
            dotted = f"{path}.{key}" if path else key
            yield dotted
            yield from schema_keys(child, dotted)

    assert sorted(chart_keys(values(), schema())) == sorted(schema_keys(schema()))


def test_schema_refuses_unknown_keys_everywhere() -> None:
    def objects(node_schema: dict[str, Any], path: str = "<root>") -> Iterator[tuple[str, Any]]:
        if "properties" in node_schema:
            yield path, node_schema.get("additionalProperties")
            for key, child in node_schema["properties"].items():
                yield from objects(child, key)

    lax = [path for path, additional in objects(schema()) if additional is not False]
    assert lax == []


def test_every_value_is_documented_by_a_comment_naming_it() -> None:
    """Helm's best practice: each value has a comment right above it that starts with its
    name (``# tag of the operator image ...``)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    keys = set(chart_keys(values(), schema()))
    documented: set[str] = set()
    stack: list[tuple[int, str]] = []
    for number, line in enumerate(lines):
        match = re.match(r"^( *)([A-Za-z][\w-]*):", line)
        if not match:
            continue
        indent, key = len(match[1]), match[2]
        while stack and stack[-1][0] >= indent:
            stack.pop()
        dotted = ".".join([*(k for _, k in stack), key])
        stack.append((indent, key))
        if dotted not in keys:
            continue  # a key inside a free-form default (resources.requests ...)
        comment: list[str] = []
        above = number - 1
        while above >= 0 and lines[above].strip().startswith("#"):
            comment.insert(0, lines[above].strip().lstrip("#").strip())
            above -= 1
        if comment and comment[0].split()[0] == key:
            documented.add(dotted)
    assert sorted(keys - documented) == []


def test_defaults_are_the_safe_ones() -> None:
    defaults = values()
    assert defaults["acme"]["enabled"] is False
    assert "staging" in defaults["acme"]["directoryUrl"]
    assert defaults["webhook"]["guard"] is True
    assert defaults["podSecurityContext"]["runAsNonRoot"] is True
    assert defaults["securityContext"]["readOnlyRootFilesystem"] is True
    assert defaults["image"]["tag"] == ""  # the chart's appVersion: image and chart move together


# -- templates -------------------------------------------------------------------------------------


def template_files() -> list[Path]:
    return sorted(p for p in TEMPLATES.rglob("*") if p.is_file())


def test_defines_are_namespaced() -> None:
    defines = re.findall(r'define "([^"]+)"', (TEMPLATES / "_helpers.tpl").read_text())
    assert defines
    assert [d for d in defines if not d.startswith("vhost-operator.")] == []
    used = {
        name
        for path in template_files()
        for name in re.findall(r'include "([^"]+)"', path.read_text())
    }
    assert used <= set(defines), used - set(defines)


@pytest.mark.parametrize("path", template_files(), ids=lambda p: str(p.relative_to(TEMPLATES)))
def test_one_resource_per_template_named_after_its_kind(path: Path) -> None:
    if path.suffix != ".yaml":
        assert path.name in ("_helpers.tpl", "NOTES.txt")
        return
    text = path.read_text()
    kinds = re.findall(r"^kind: (\w+)$", text, re.MULTILINE)
    assert len(kinds) == 1, kinds
    assert "---" not in text
    # Dashed lowercase file names that say what they hold (Helm's template guide).
    assert re.fullmatch(r"[a-z0-9-]+\.yaml", path.name)
    kind = kinds[0].lower()
    assert path.stem.split("-")[0] in kind or path.parent.name == "tests", (path.name, kind)


def test_images_are_pinned_by_the_chart() -> None:
    """No image reference in a template but through the helpers (tag = appVersion or digest)."""
    for path in template_files():
        for line in path.read_text().splitlines():
            if re.match(r"^\s*image:", line):
                assert 'include "vhost-operator.' in line, f"{path.name}: {line.strip()}"


def test_helm_is_pinned_like_the_control_plane() -> None:
    go_mod = (REPO / "hack" / "helm" / "go.mod").read_text()
    assert re.search(r"^require helm\.sh/helm/v3 v3\.\d+\.\d+$", go_mod, re.MULTILINE)
    assert not re.search(r"^replace\b", go_mod, re.MULTILINE)
    go_sum = (REPO / "hack" / "helm" / "go.sum").read_text()
    assert re.search(r"^helm\.sh/helm/v3 v3\.\d+\.\d+ h1:", go_sum, re.MULTILINE)
