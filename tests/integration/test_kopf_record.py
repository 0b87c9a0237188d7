"""kopf's record of the handled spec, ``status.lastHandledConfiguration``, written by kopf with
the chain's last status in one patch after the handler returned (``handlers.kopf_storage``):
what is left when the operator stops between the two, and hosts recorded by earlier releases
(in an annotation)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.harness import kube
from tests.harness.clusters import Cluster
from tests.harness.operator import OperatorProcess
from tests.harness.pebble import Pebble
from tests.harness.waiting import get_object, phase_of, wait_for
from tests.integration.conftest import OperatorFactory
from vhost_operator.handlers.kopf_storage import ANNOTATION_KEY, STATUS_FIELD
from vhost_operator.handlers.lifecycle import KOPF_PREFIX

pytestmark = pytest.mark.cluster

ANNOTATION = f"{KOPF_PREFIX}/{ANNOTATION_KEY}"
"""Where earlier releases kept kopf's record."""


def recorded(obj: dict[str, Any]) -> bool:
    return phase_of(obj) == "Ready" and STATUS_FIELD in (obj.get("status") or {})


def provisioned(cluster: Cluster, name: str, tmp_path: Path) -> dict[str, Any]:
    kube.apply_manifests(cluster, [kube.virtualhost(name, f"{name}.example.com")], tmp_path)
    return wait_for(cluster, "vh", name, recorded, what="Ready and recorded", timeout=60)


def patch_status(cluster: Cluster, name: str, status: dict[str, Any]) -> None:
    cluster.kubectl(
        "patch", "vh", name, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": status}),
    )  # fmt: skip


def wait_for_log(operator: OperatorProcess, text: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while text not in operator.log():
        assert time.monotonic() < deadline, f"no {text!r} in the operator's log"
        time.sleep(0.2)


def test_a_stop_before_kopfs_patch_resumes_the_chain_with_its_last_written_step(
    cluster: Cluster, start_operator: OperatorFactory, pebble: Pebble, tmp_path: Path
) -> None:
    operator = start_operator()
    done = provisioned(cluster, "cut", tmp_path)
    operator.kill()
    # What a SIGKILL after the handler returned and before kopf's patch leaves: the chain's
    # last write of its own (certificate done, final started) and no record of the spec.
    chain = [dict(entry) for entry in done["status"]["chain"]]
    assert [entry["step"] for entry in chain] == ["bootstrap", "certificate", "final", "ready"]
    chain[2] = {"step": "final", "state": "Running", "startedAt": chain[2]["startedAt"]}
    chain[3] = {"step": "ready", "state": "Pending"}
    patch_status(cluster, "cut", {"phase": "Pending", "chain": chain, STATUS_FIELD: None})

    start_operator()
    again = wait_for(cluster, "vh", "cut", recorded, what="Ready and recorded again", timeout=60)

    assert again["status"]["chain"][:2] == done["status"]["chain"][:2], "resumed, not redone"
    assert again["status"]["certificate"] == done["status"]["certificate"], "no second order"
    assert pebble.logs(lines=100_000).count('Value:"cut.example.com"') == 1
    assert json.loads(again["status"][STATUS_FIELD])["spec"] == done["spec"]


def test_a_host_recorded_by_an_earlier_release_is_not_handled_as_new(
    cluster: Cluster, start_operator: OperatorFactory, tmp_path: Path
) -> None:
    operator = start_operator()
    done = provisioned(cluster, "old", tmp_path)
    operator.stop()
    # An earlier release kept the same record in an annotation, none in the status.
    record = done["status"][STATUS_FIELD]
    cluster.kubectl("annotate", "vh", "old", f"{ANNOTATION}={record}\n")
    patch_status(cluster, "old", {STATUS_FIELD: None})
    before = get_object(cluster, "vh", "old")
    assert before is not None and STATUS_FIELD not in before["status"]

    upgraded = start_operator()
    wait_for_log(upgraded, "Resuming is processed: 1 succeeded")

    assert "Creation is processed" not in upgraded.log(), "handled as a new host"
    after = get_object(cluster, "vh", "old")
    assert after is not None
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"], (
        "an upgrade writes nothing to a host whose spec did not change"
    )

    # The next change is recorded in the status; the annotation goes with it.
    cluster.kubectl("label", "vh", "old", "team=blue")
    changed = wait_for(
        cluster,
        "vh",
        "old",
        lambda obj: '"team":"blue"' in (obj.get("status") or {}).get(STATUS_FIELD, ""),
        what="the change recorded in the status",
        timeout=30,
    )
    assert ANNOTATION not in changed["metadata"].get("annotations", {})
    assert phase_of(changed) == "Ready"
