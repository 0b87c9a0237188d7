"""Item 7: the API server's CPU per request, for each kind of request a new host brings.

On a control plane of its own (no audit log, no operator), ``count`` objects of each kind get
one request each, in parallel, and the API server's CPU seconds over those requests are divided
by ``count``. The objects have the shapes the operator writes (a site ConfigMap with its
annotations and a 1.5 kB config, a TLS Secret, a VirtualHost with a Ready host's status), so
the figures show what a host's 15 writes cost and which alternative would cost less: a
server-side apply against a merge patch making the same change, a small against a large
object. Then ``present`` more VirtualHosts are created and the VirtualHost status patch is
measured again: whether a request costs more with many objects present (the API server keeps
them all decoded in its watch cache, which its garbage collector scans).

The machine may be shared: CPU seconds of the API server alone are roughly independent of the
load, wall-clock times are not.
"""

from __future__ import annotations

import base64
import copy
import functools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import crdvariants
from bench.cluster import BENCH_NAMESPACE, Client, bench_cluster
from bench.crdvariants import CelTime, Variant
from bench.measure import cpu_used_since, descendants_cpu
from bench.report import Figure, say
from vhost_operator.kube.api import drained
from vhost_operator.kube.core import CoreObjects, send
from vhost_operator.resources.models import GROUP, VERSION, VIRTUALHOSTS

ITEM = "7. API server CPU per request"
MANAGER = "vhost-operator"
VIRTUALHOSTS_PATH = f"/apis/{GROUP}/{VERSION}/{VIRTUALHOSTS}"

CONFIG = "server {\n    listen 80;\n" + "    # a line of the rendered site config\n" * 36 + "}\n"
"""A site config of about the size the operator renders (1.5 kB)."""

READY_STATUS: dict[str, Any] = {
    "phase": "Ready",
    "failedAttempts": 0,
    "observedGeneration": 1,
    "certificate": {
        "secretName": "vhost-h-ea49d2c8a725a795-tls",
        "serial": "5a712c6ca59c798",
        "certificateId": "dVc8ovT84Kb2VkUTiDJELBckxjU.BacSxspZx5g",
        "names": ["mail.h.example.com"],
        "notBefore": "2026-11-28T08:17:33Z",
        "notAfter": "2031-11-27T08:17:32Z",
        "renewalTime": "2030-03-28T00:20:17.645063Z",
        "renewalWindow": {
            "start": "2030-03-28T00:17:32Z",
            "end": "2030-03-30T00:17:32Z",
            "source": "ari",
        },
    },
    "chain": [
        {
            "step": step,
            "state": "Succeeded",
            "startedAt": "2026-11-28T08:17:30Z",
            "finishedAt": "2026-11-28T08:17:32Z",
            "message": message,
        }
        for step, message in (
            ("bootstrap", "bootstrap config e91e3a291ce7c7fd applied by nginx"),
            ("certificate", "certificate 5a712c6ca59c798 issued by order https://ca/order/1"),
            ("final", "final config 8fc26dd0f7c13ac1 served with certificate 5a712c6ca59c798"),
            ("ready", "provisioned"),
        )
    ],
    "conditions": [
        {
            "type": kind,
            "status": "True",
            "reason": reason,
            "message": message,
            "observedGeneration": 1,
            "lastTransitionTime": "2026-11-28T08:17:35Z",
        }
        for kind, reason, message in (
            ("CertificateValid", "Valid", "valid until 2031-11-27T08:17:32+00:00"),
            ("Provisioned", "Provisioned", "every step succeeded"),
            ("Ready", "Provisioned", "every step succeeded"),
        )
    ],
    # kopf's record of the handled spec, which the chain's last status write carries.
    "lastHandledConfiguration": json.dumps(
        {"spec": {"hostname": "mail.h.example.com", "domains": ["h.example.com"], "enabled": True}}
    ),
}
"""A Ready host's status, as the operator writes it (the fields of a real one)."""


class _Costs:
    """Runs ``count`` requests of one kind and reports the API server's CPU per request."""

    def __init__(self, client: Client, count: int) -> None:
        self.client = client
        self.count = count
        self.figures: list[Figure] = []

    def measure(self, what: str, request: Callable[[int], Any], *, cel: bool = False) -> float:
        """``cel``: also report the CEL validator's time per request (read outside the window
        whose CPU is counted: the metrics page costs the API server CPU too)."""
        cel_before = CelTime.read(self.client.api) if cel else None
        before = descendants_cpu()
        self.client.parallel(
            functools.partial(_drained_call, request, i) for i in range(self.count)
        )
        time.sleep(1.0)  # the watch cache and the watchers catch up: part of the requests' cost
        used = cpu_used_since(before).get("kube-apiserver", 0.0)
        milliseconds = 1000 * used / self.count
        validator = ""
        if cel_before is not None:
            validator = f"; {CelTime.read(self.client.api).since(cel_before, self.count)}"
        say(f"{what}: {milliseconds:.2f} ms of API server CPU per request{validator}")
        self.figures.append(Figure(ITEM, what, f"{milliseconds:.2f} ms"))
        return milliseconds


def _drained_call(request: Callable[[int], Any], index: int) -> None:
    drained(request(index))


def _metadata(name: str, component: str, **annotations: str) -> dict[str, Any]:
    return {
        "name": name,
        "labels": {
            "app.kubernetes.io/managed-by": "vhost-operator",
            "vhost-operator.io/component": component,
        },
        "annotations": {
            "vhost-operator.io/virtualhost": name,
            "vhost-operator.io/hostname": f"mail.{name}.example.com",
            **annotations,
        },
    }


def _configmap(name: str, stage: str) -> dict[str, Any]:
    annotations = {"vhost-operator.io/stage": stage, "vhost-operator.io/config-hash": stage}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(name, "nginx-site", **annotations),
        "data": {f"mail.{name}.example.com.conf": CONFIG.replace("80", stage)},
    }


def _secret(name: str, certificate: bytes, **annotations: str) -> dict[str, Any]:
    data = {"tls.key": b"k" * 240, "tls.crt": certificate}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": _metadata(name, "tls", **annotations),
        "data": {key: base64.b64encode(value).decode() for key, value in data.items()},
    }


def _virtualhost(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "VirtualHost",
        "metadata": {"name": name},
        "spec": {"hostname": f"mail.{name}.example.com", "domains": [f"{name}.example.com"]},
    }


def _ready_status(message: str) -> dict[str, Any]:
    status = copy.deepcopy(READY_STATUS)
    status["chain"][0]["message"] += message
    return {"status": status}


def request_costs(workdir: Path, count: int, present: int) -> list[Figure]:
    say(f"\n== {ITEM}: {count} requests of each kind, on a control plane of its own ==")
    with bench_cluster(workdir / "plane", audited=False) as plane:
        client = Client(plane.kubeconfig)
        core = CoreObjects(client.api)
        costs = _Costs(client, count)
        ns = BENCH_NAMESPACE

        def site(i: int) -> str:
            return f"site-{i}"

        costs.measure(
            "create ConfigMap",
            lambda i: core.create("configmaps", ns, _configmap(site(i), "b"), manager=MANAGER),
        )
        agent_report = {"metadata": {"annotations": {"vhost-operator.io/applied-config-hash": "b"}}}
        costs.measure(
            "merge patch ConfigMap: an annotation (the agent's report)",
            lambda i: core.merge_patch("configmaps", ns, site(i), agent_report, manager="agent"),
        )
        costs.measure(
            "server-side apply ConfigMap: a new config",
            lambda i: core.apply(
                "configmaps", ns, site(i), _configmap(site(i), "f"), manager=MANAGER
            ),
        )
        costs.measure(
            "merge patch ConfigMap: a new config",
            lambda i: core.merge_patch(
                "configmaps", ns, site(i), _configmap(site(i), "g"), manager=MANAGER
            ),
        )
        costs.measure(
            "create Secret",
            lambda i: core.create("secrets", ns, _secret(site(i), b""), manager=MANAGER),
        )
        costs.measure(
            "server-side apply Secret: an annotation",
            lambda i: core.apply(
                "secrets", ns, site(i), _secret(site(i), b"", **{"x/order": "1"}), manager=MANAGER
            ),
        )
        costs.measure(
            "merge patch Secret: an annotation",
            lambda i: core.merge_patch(
                "secrets", ns, site(i), _secret(site(i), b"", **{"x/order": "2"}), manager=MANAGER
            ),
        )
        costs.measure(
            "server-side apply Secret: the certificate",
            lambda i: core.apply(
                "secrets", ns, site(i), _secret(site(i), b"c" * 1500), manager=MANAGER
            ),
        )
        costs.measure(
            "merge patch Secret: the certificate",
            lambda i: core.merge_patch(
                "secrets", ns, site(i), _secret(site(i), b"d" * 1500), manager=MANAGER
            ),
        )
        costs.measure(
            "create Event",
            lambda i: core.request("POST", f"/api/v1/namespaces/{ns}/events", body=_event(site(i))),
        )
        _virtualhost_costs(costs)
        _variant_costs(costs, plane, workdir)
        _present_costs(costs, present)
        return costs.figures


def _event(name: str) -> dict[str, Any]:
    # As kopf posts one about a cluster-scoped object: in a namespace, which the reference names.
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{name}."},
        "involvedObject": {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "VirtualHost",
            "name": name,
            "namespace": BENCH_NAMESPACE,
        },
        "reason": "StepSucceeded",
        "message": "bootstrap",
        "type": "Normal",
        "source": {"component": "vhost-operator"},
        "firstTimestamp": "2026-11-28T08:17:30Z",
        "lastTimestamp": "2026-11-28T08:17:30Z",
        "count": 1,
    }


def _status_patch(
    api: Any, path: str, name: Callable[[int], str], body: Any
) -> Callable[[int], Any]:
    return lambda i: crdvariants.send_status_patch(api, path, name(i), body, MANAGER)


def _host(i: int) -> str:
    return f"host-{i}"


def _virtualhost_costs(costs: _Costs) -> None:
    api = costs.client.api

    def status_patch(body: dict[str, Any]) -> Callable[[int], Any]:
        return _status_patch(api, VIRTUALHOSTS_PATH, _host, body)

    costs.measure(
        "create VirtualHost",
        lambda i: send(api, "POST", VIRTUALHOSTS_PATH, body=_virtualhost(_host(i))),
        cel=True,
    )
    costs.measure(
        "patch VirtualHost status: phase only",
        status_patch({"status": {"phase": "Pending"}}),
        cel=True,
    )
    costs.measure(
        "patch VirtualHost status: a Ready host's", status_patch(_ready_status("")), cel=True
    )
    costs.measure(
        "patch VirtualHost status: a Ready host's, again",
        status_patch(_ready_status(".")),
        cel=True,
    )


def _variant_costs(costs: _Costs, plane: Any, workdir: Path) -> None:
    """The same status patch on each variant of the CRD (``bench.crdvariants``), in two
    rounds, then on hosts of the shipped CRD with one field manager and with a provisioned
    host's three."""
    api = costs.client.api
    say("installing the CRD's variants, creating their hosts...")
    crdvariants.install(plane, workdir / "variants")
    variants = crdvariants.VARIANTS

    def name(variant: Variant) -> Callable[[int], str]:
        return lambda i: f"{variant.key}-{i}"

    for variant in variants:
        costs.client.parallel(
            functools.partial(_create_ready, api, variant, name(variant)(i), writers=3)
            for i in range(costs.count)
        )
    for number, order in enumerate((variants, tuple(reversed(variants))), start=1):
        for variant in order:
            costs.measure(
                f"patch VirtualHost status, CRD {variant.what} (round {number})",
                _status_patch(api, variant.path, name(variant), _ready_status(f"r{number}")),
                cel=True,
            )
    shipped = variants[0]
    for writers, what in ((1, "one field manager"), (3, "a provisioned host's three")):
        key = f"writers{writers}"
        named = functools.partial("{}-{}".format, key)
        costs.client.parallel(
            functools.partial(_create_ready, api, shipped, f"{key}-{i}", writers=writers)
            for i in range(costs.count)
        )
        costs.measure(
            f"patch VirtualHost status, host with {what}",
            _status_patch(api, shipped.path, named, _ready_status("w")),
            cel=True,
        )


def _present_costs(costs: _Costs, present: int) -> None:
    if present <= 0:
        return
    api = costs.client.api
    say(f"creating {present} more VirtualHosts with a Ready host's status...")
    costs.client.parallel(
        functools.partial(_create_ready, api, crdvariants.VARIANTS[0], f"present-{i}", writers=1)
        for i in range(present)
    )
    costs.measure(
        f"patch VirtualHost status: a Ready host's, {present} more hosts present",
        _status_patch(api, VIRTUALHOSTS_PATH, _host, _ready_status("..")),
        cel=True,
    )


def _create_ready(api: Any, variant: Variant, name: str, *, writers: int) -> None:
    """A Ready host: ``writers`` 1, created and written by one program without an annotation;
    3, as a provisioned host (created by ``kubectl apply``, the operator's status writes, kopf's
    last one with its record)."""
    crdvariants.create(api, variant, name, as_kubectl=writers > 1)
    crdvariants.patch_status(api, variant, name, _ready_status(""), MANAGER)
    if writers > 1:
        crdvariants.patch_status(api, variant, name, _ready_status("k"), "kopf")
