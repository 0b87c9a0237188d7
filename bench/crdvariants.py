"""Item 7, the VirtualHost's part: which parts of its CRD and of the object make a status write
cost the API server what it does.

The same status patch of a Ready host is measured on variants of the CRD installed side by side
in one control plane (each in a group of its own, with ``count`` hosts of its own), in two rounds
(in order, then in reverse), so that the differences are measured in the same conditions:

- as shipped (``crds/virtualhosts.yaml``);
- without its CEL rules (``x-kubernetes-validations``): on a status write the API server
  evaluates every rule of the whole object, the spec's included (the status strategy runs the
  CEL validator over the object; ratcheting only turns the errors of unchanged fields into
  warnings), while the OpenAPI checks (``pattern``, ``maxLength``...) run on the status only;
- without ``format: date-time`` in the status (each such string is parsed when validated);
- with an open status (``x-kubernetes-preserve-unknown-fields``: no status schema to validate,
  prune or coerce);
- with no schema at all (spec and status open, no rules): the floor of any write of this object.

Then, on the shipped CRD, the field managers a host carries: one writer against a host as the
operator leaves it (kubectl's client-side apply with its last-applied annotation, the operator's
status writes, kopf's last one with its record): the same patch of the operator's on each.

For every VirtualHost write the API server's ``apiserver_cel_evaluation_duration_seconds`` is
read before and after: a bound of the time spent on the rules themselves (see
:meth:`CelTime.since`), next to the CPU of the whole request. The machine may be shared, so
only differences larger than the spread between the two rounds of one variant mean anything.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.harness.audit import AuditedControlPlane
from tests.harness.clusters import CRDS
from vhost_operator.kube.api import drained
from vhost_operator.kube.core import MERGE_PATCH, send
from vhost_operator.resources.models import GROUP, VERSION, VIRTUALHOSTS

CEL_METRIC = "apiserver_cel_evaluation_duration_seconds"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"

Schema = dict[str, Any]


@dataclass(frozen=True)
class Variant:
    key: str
    what: str
    change: Callable[[Schema], None]
    """Edits the CRD's schema (``openAPIV3Schema``) in place."""

    @property
    def group(self) -> str:
        return GROUP if self.key == "shipped" else f"{self.key}.bench.{GROUP}"

    @property
    def path(self) -> str:
        return f"/apis/{self.group}/{VERSION}/{VIRTUALHOSTS}"


def _unchanged(schema: Schema) -> None:
    del schema


def _without(key: str, value: object = None) -> Callable[[Schema], None]:
    """Removes ``key`` everywhere in the schema (only where it is ``value``, if given)."""

    def change(node: Any) -> None:
        if isinstance(node, dict):
            if key in node and (value is None or node[key] == value):
                del node[key]
            for child in node.values():
                change(child)
        elif isinstance(node, list):
            for child in node:
                change(child)

    return change


def _without_date_time(schema: Schema) -> None:
    _without("format", "date-time")(schema["properties"]["status"])


def _open_status(schema: Schema) -> None:
    schema["properties"]["status"] = {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
    }


def _open(schema: Schema) -> None:
    for part in ("spec", "status"):
        schema["properties"][part] = {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": True,
        }


VARIANTS = (
    Variant("shipped", "as shipped", _unchanged),
    Variant("norules", "without CEL rules", _without("x-kubernetes-validations")),
    Variant("nodatetime", "without format: date-time in the status", _without_date_time),
    Variant("openstatus", "with an open status (no status schema)", _open_status),
    Variant("open", "with no schema (spec and status open, no rules)", _open),
)


def variant_crds() -> list[dict[str, Any]]:
    """The CRDs of every variant but the shipped one, each in its own group."""
    crd = yaml.safe_load((CRDS / "virtualhosts.yaml").read_text())
    documents = []
    for variant in VARIANTS[1:]:
        changed = copy.deepcopy(crd)
        changed["metadata"]["name"] = f"{VIRTUALHOSTS}.{variant.group}"
        changed["spec"]["group"] = variant.group
        for version in changed["spec"]["versions"]:
            variant.change(version["schema"]["openAPIV3Schema"])
        documents.append(changed)
    return documents


def install(plane: AuditedControlPlane, workdir: Path) -> None:
    """Installs every variant but the shipped CRD (installed with the plane)."""
    path = workdir / "crd-variants.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump_all(variant_crds()))
    plane.kubectl("apply", "--server-side", "-f", str(path))
    plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")


@dataclass(frozen=True)
class CelTime:
    """The CEL validator's seconds so far (the sum of the API server's histogram)."""

    seconds: float

    @classmethod
    def read(cls, api: Any) -> CelTime:
        response = send(api, "GET", "/metrics")
        text = response.read().decode()
        sums = (line for line in text.splitlines() if line.startswith(f"{CEL_METRIC}_sum"))
        return cls(sum(float(line.split()[-1]) for line in sums))

    def since(self, before: CelTime, requests: int) -> str:
        """Milliseconds per request. The histogram times the validator at every node of the
        schema it walks into (5 per VirtualHost write: the object, its spec, the hostname, the
        domains, each domain), a parent's time including its children's: the sum is an upper
        bound of the rules' time, and wall clock (a busy machine inflates it)."""
        milliseconds = 1000 * (self.seconds - before.seconds) / requests
        return f"CEL validator at most {milliseconds:.2f} ms (wall) per request"


def create(api: Any, variant: Variant, name: str, *, as_kubectl: bool) -> None:
    """A host as ``kubectl apply`` creates it (its last-applied annotation, kubectl's manager)
    or as a program without an annotation."""
    body: dict[str, Any] = {
        "apiVersion": f"{variant.group}/{VERSION}",
        "kind": "VirtualHost",
        "metadata": {"name": name},
        "spec": {"hostname": f"mail.{name}.example.com", "domains": [f"{name}.example.com"]},
    }
    manager = "kubectl-client-side-apply" if as_kubectl else "vhost-operator"
    if as_kubectl:
        body["metadata"]["annotations"] = {LAST_APPLIED: json.dumps(body, sort_keys=True)}
    drained(send(api, "POST", variant.path, query=[("fieldManager", manager)], body=body))


def send_status_patch(api: Any, path: str, name: str, body: Any, manager: str) -> Any:
    """A merge patch of VirtualHost ``name``'s status (``path``: its resource's collection)
    under field manager ``manager``, as the operator sends one; the response, not yet read."""
    return send(
        api,
        "PATCH",
        f"{path}/{name}/status",
        query=[("fieldManager", manager)],
        body=body,
        content_type=MERGE_PATCH,
    )


def patch_status(api: Any, variant: Variant, name: str, body: Any, manager: str) -> None:
    drained(send_status_patch(api, variant.path, name, body, manager))
