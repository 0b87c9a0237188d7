"""The CRD schema declares every field the models read or write: the API server silently
prunes undeclared status fields, which would lose the operator's bookkeeping."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from vhost_operator.resources.models import VirtualHostSpec, VirtualHostStatus

CRD = Path(__file__).resolve().parents[2] / "crds" / "virtualhosts.yaml"


def schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD.read_text())
    version = crd["spec"]["versions"][0]
    properties: dict[str, Any] = version["schema"]["openAPIV3Schema"]["properties"]
    return properties


def undeclared(model: type[BaseModel], node: dict[str, Any], path: str) -> list[str]:
    missing: list[str] = []
    declared = node.get("properties") or node.get("items", {}).get("properties", {})
    for name, field in model.model_fields.items():
        key = field.alias or name
        if key not in declared:
            missing.append(f"{path}.{key}")
            continue
        nested = _model_in(field.annotation)
        if nested is not None:
            missing += undeclared(nested, declared[key], f"{path}.{key}")
    return missing


def _model_in(annotation: Any) -> type[BaseModel] | None:
    candidates = [annotation, *getattr(annotation, "__args__", ())]
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def test_every_model_field_is_declared() -> None:
    properties = schema()
    assert undeclared(VirtualHostSpec, properties["spec"], "spec") == []
    assert undeclared(VirtualHostStatus, properties["status"], "status") == []
