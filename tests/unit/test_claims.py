"""One VirtualHost per hostname without the webhook: the shared rule, and the operator, the
nginx agent and the tenancy gate all following it."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from tests.unit.builders import virtualhost_body
from vhost_operator.agent.state import desired_state
from vhost_operator.catalog import HostCatalog
from vhost_operator.nginx import SiteConfig, render_final
from vhost_operator.provisioning.chain import StepOutcome, run_chain
from vhost_operator.provisioning.decisions import hostname_refusal, successor
from vhost_operator.resources import labels
from vhost_operator.resources.claims import Claim, claimed_by_older, senior
from vhost_operator.resources.models import Phase, StepState, VirtualHost
from vhost_operator.resources.watch import WatchEvent
from vhost_operator.tenancy.directory import HostDirectory

HOSTNAME = "shared.example.com"
# (name, creationTimestamp): "b" is the oldest; "a" and "c" share a second, "a" sorts first.
HOSTS = [
    ("c", "2026-01-02T00:00:00Z"),
    ("b", "2026-01-01T00:00:00Z"),
    ("a", "2026-01-02T00:00:00Z"),
]


def body(name: str, created: str) -> dict[str, Any]:
    metadata = {"name": name, "uid": f"uid-{name}", "creationTimestamp": created}
    return virtualhost_body(HOSTNAME, metadata=metadata, domains=[f"{name}.example"])


def config(name: str) -> str:
    """A config as the operator renders it, told apart by its body size."""
    site = SiteConfig(
        hostname=HOSTNAME,
        challenge_upstream="op:8089",
        upstream="http://app:8000",
        max_body_size_mib=ord(name),
    )
    return render_final(site)


def configmap(name: str, created: str) -> dict[str, Any]:
    annotations = {
        labels.HOSTNAME: HOSTNAME,
        labels.VIRTUALHOST: name,
        labels.VIRTUALHOST_CREATED: created,
    }
    # ConfigMap names sort against the hosts' age: the oldest host's sorts last.
    return {
        "metadata": {"name": f"vhost-{'z' if name == 'b' else name}", "annotations": annotations},
        "data": {f"{HOSTNAME}.conf": config(name)},
    }


def test_the_oldest_claim_wins_then_the_name() -> None:
    claims = [Claim(created, name) for name, created in HOSTS]
    assert senior(claims).name == "b"
    assert claimed_by_older(Claim("2026-01-02T00:00:00Z", "a"), claims) == "b"
    assert claimed_by_older(Claim("2026-01-01T00:00:00Z", "b"), claims) is None
    assert (
        senior([Claim("2026-01-02T00:00:00Z", "c"), Claim("2026-01-02T00:00:00Z", "a")]).name == "a"
    )


def test_operator_agent_and_gate_pick_the_same_owner_in_any_order() -> None:
    for order in itertools.permutations(HOSTS):
        catalog = HostCatalog()
        catalog.apply(WatchEvent("SYNC", objects=tuple(body(n, c) for n, c in order)))
        provisioned = [
            name
            for name, created in order
            if hostname_refusal(
                VirtualHost.from_body(body(name, created)), catalog.rivals(HOSTNAME)
            )
            is None
        ]
        agent = desired_state([configmap(n, c) for n, c in order], {}, certificate_dir="/certs")
        served = agent.sites[HOSTNAME].config
        directory = HostDirectory()
        directory.replace([body(n, c) for n, c in order])
        entry = directory.lookup(HOSTNAME)
        assert entry is not None
        assert provisioned == ["b"], order
        assert served == config("b"), order
        assert entry.domains == frozenset({"b.example"}), order


def test_the_refusal_names_the_owner() -> None:
    loser = VirtualHost.from_body(body("a", "2026-01-02T00:00:00Z"))
    message = hostname_refusal(loser, [Claim("2026-01-01T00:00:00Z", "b"), loser.claim])
    assert message is not None
    assert message.startswith(f"hostname {HOSTNAME} is already used by VirtualHost b")


def test_the_next_oldest_takes_over_only_from_the_owner() -> None:
    claims = [Claim(created, name) for name, created in HOSTS]
    owner = VirtualHost.from_body(body("b", "2026-01-01T00:00:00Z"))
    loser = VirtualHost.from_body(body("c", "2026-01-02T00:00:00Z"))
    assert successor(owner, claims) == "a"
    assert successor(loser, claims) is None
    assert successor(owner, [owner.claim]) is None


def test_hosts_being_deleted_keep_no_hostname() -> None:
    catalog = HostCatalog()
    deleting = body("b", "2026-01-01T00:00:00Z")
    deleting["metadata"]["deletionTimestamp"] = "2026-02-01T00:00:00Z"
    catalog.apply(WatchEvent("SYNC", objects=(deleting, body("c", "2026-01-02T00:00:00Z"))))
    assert [claim.name for claim in catalog.rivals(HOSTNAME)] == ["c"]


class Step:
    name = "certificate"

    def __init__(self) -> None:
        self.runs = 0

    async def run(self, host: VirtualHost) -> StepOutcome:
        self.runs += 1
        return StepOutcome()


class Recorder:
    async def write_status(self, host: VirtualHost, status: object, *, last: bool = False) -> None:
        pass

    async def event(self, host: VirtualHost, *, warning: bool, reason: str, message: str) -> None:
        pass


def test_a_refused_host_fails_before_its_step_runs() -> None:
    step = Step()
    host = VirtualHost.from_body(body("a", "2026-01-02T00:00:00Z"))
    status = asyncio.run(run_chain(host, [step], Recorder(), guard=lambda h: "taken"))
    assert step.runs == 0, "no ACME order for the loser"
    assert status.phase == Phase.FAILED
    assert status.error is not None and status.error.message == "taken"
    assert status.chain[0].state == StepState.FAILED
