"""The CRD variants of bench item 7 (``bench.crdvariants``) differ from the shipped CRD in
exactly what they are named for (the API server accepting them is checked by the bench run)."""

from __future__ import annotations

import contextlib
import json
from typing import Any, ClassVar

import kubernetes

from bench import apicost
from bench.crdvariants import VARIANTS, patch_status, variant_crds
from tests.harness.standin import Handler, StandIn


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


class _Recorder(Handler):
    seen: ClassVar[list[tuple[str, str, str | None, Any]]]

    def do_PATCH(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append((self.command, self.path, self.headers["Content-Type"], body))
        self.reply(b"{}")


def test_status_patches_of_both_bench_parts_are_the_operators_merge_patch() -> None:
    """Item 7 measures one request, the operator's status merge patch, whether a host is
    written (``patch_status``) or measured (``apicost``): the same request on the wire."""
    seen: list[tuple[str, str, str | None, Any]] = []
    handler = type("Handler", (_Recorder,), {"seen": seen})
    body = {"status": {"phase": "Ready"}}
    shipped = VARIANTS[0]
    with contextlib.closing(StandIn(handler)) as stand_in:
        configuration = kubernetes.client.Configuration()
        configuration.host = stand_in.url
        api = kubernetes.client.ApiClient(configuration)
        try:
            patch_status(api, shipped, "host-3", body, apicost.MANAGER)
            measured = apicost._status_patch(api, shipped.path, apicost._host, body)
            measured(3).read()
        finally:
            api.rest_client.pool_manager.clear()
    expected = (
        "PATCH",
        f"{apicost.VIRTUALHOSTS_PATH}/host-3/status?fieldManager=vhost-operator",
        "application/merge-patch+json",
        body,
    )
    assert seen == [expected, expected]
