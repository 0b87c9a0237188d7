"""The CRD schema declares every field the models read or write: the API server silently
prunes undeclared status fields, which would lose the operator's bookkeeping."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from vhost_operator.resources.hostnames import MAX_ADDITIONAL_NAMES, MAX_HOSTNAME_LENGTH
from vhost_operator.resources.models import (
    ACME_CHALLENGE,
    VirtualHostSpec,
    VirtualHostStatus,
    challenge_status,
    published_challenge,
)
from vhost_operator.tenancy.themes import LOGO_URL_PATTERN, MAX_LOGO_URL_LENGTH

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


def test_crd_limits_come_from_the_code() -> None:
    """The CRD refuses what the webhook and the models refuse (also while the operator is
    down): the hostname length a served host can have, and the theme's logo URL pattern."""
    spec = schema()["spec"]["properties"]
    assert spec["hostname"]["maxLength"] == MAX_HOSTNAME_LENGTH
    additional = spec["additionalNames"]
    assert additional["maxItems"] == MAX_ADDITIONAL_NAMES
    assert additional["items"]["maxLength"] == MAX_HOSTNAME_LENGTH
    assert additional["items"]["pattern"] == spec["hostname"]["pattern"]
    maildomain = yaml.safe_load(CRD.with_name("maildomains.yaml").read_text())
    linked = maildomain["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert linked["properties"]["virtualHost"]["maxLength"] == MAX_HOSTNAME_LENGTH
    logos = spec["theme"]["properties"]["logos"]["properties"]
    assert set(logos) == {"login", "menu", "creationForm"}
    for field in logos.values():
        assert field["pattern"] == LOGO_URL_PATTERN
        assert field["maxLength"] == MAX_LOGO_URL_LENGTH


def test_the_published_challenge_is_declared_and_every_status_write_removes_it() -> None:
    """``status.acmeChallenge`` lives outside the status model: the CRD must declare it (else
    the API server prunes it and no other replica can answer), and the chain's status writes
    must remove it so it never outlives its step."""
    declared = schema()["status"]["properties"][ACME_CHALLENGE]["properties"]
    assert challenge_status("t", "t.k")[ACME_CHALLENGE].keys() == declared.keys()
    assert VirtualHostStatus().to_merge_patch()[ACME_CHALLENGE] is None
    assert published_challenge({"status": challenge_status("t", "t.k")}) == ("t", "t.k")
