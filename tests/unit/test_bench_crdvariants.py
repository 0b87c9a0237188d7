"""The CRD variants of bench item 7 (``bench.crdvariants``) differ from the shipped CRD in
exactly what they are named for (the API server accepting them is checked by the bench run)."""

from __future__ import annotations

import json
from typing import Any

from bench.crdvariants import VARIANTS, variant_crds


def _schemas() -> dict[str, dict[str, Any]]:
    crds = {crd["spec"]["group"].split(".")[0]: crd for crd in variant_crds()}
    return {
        key: crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"] for key, crd in crds.items()
    }


def test_each_variant_has_a_group_and_name_of_its_own() -> None:
    crds = variant_crds()
    assert len(crds) == len(VARIANTS) - 1
    assert len({crd["spec"]["group"] for crd in crds}) == len(crds)
    for crd in crds:
        assert crd["metadata"]["name"] == f"virtualhosts.{crd['spec']['group']}"


def test_without_rules_keeps_every_other_check() -> None:
    schema = json.dumps(_schemas()["norules"])
    assert "x-kubernetes-validations" not in schema
    assert '"pattern"' in schema and '"date-time"' in schema


def test_without_date_time_only_in_the_status() -> None:
    schema = _schemas()["nodatetime"]
    assert "date-time" not in json.dumps(schema["properties"]["status"])
    assert "x-kubernetes-validations" in json.dumps(schema["properties"]["spec"])


def test_open_variants() -> None:
    schemas = _schemas()
    opened = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    assert schemas["openstatus"]["properties"]["status"] == opened
    assert schemas["openstatus"]["properties"]["spec"]["required"] == ["hostname"]
    assert (
        schemas["open"]["properties"]["spec"] == schemas["open"]["properties"]["status"] == opened
    )
