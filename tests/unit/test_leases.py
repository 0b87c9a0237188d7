"""Leader election's decisions (``resources.leases``): who takes the Lease when, and when a
holder must stop."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from vhost_operator.handlers.lifecycle import follower_may_send
from vhost_operator.kube.leases import lease_body, lease_record
from vhost_operator.resources.leases import (
    LeaseRecord,
    LeaseTiming,
    Move,
    claimed,
    decide,
    must_stop,
    next_look,
    observe,
)
from vhost_operator.settings import Settings

TIMING = LeaseTiming(lease_duration=10.0, renew_deadline=8.0, retry_period=2.0)
AT = datetime(2026, 11, 27, 20, 0, tzinfo=UTC)


def record(holder: str = "a", version: str = "1") -> LeaseRecord:
    return LeaseRecord(
        holder=holder, duration=10.0, transitions=0, acquired=AT, renewed=AT, version=version
    )


def test_no_lease_is_created() -> None:
    assert decide(observe(None, None, 0.0), "b", 0.0) == Move.CREATE


def test_own_lease_is_renewed() -> None:
    assert decide(observe(None, record("b"), 0.0), "b", 100.0) == Move.RENEW


def test_released_lease_is_taken_at_once() -> None:
    assert decide(observe(None, record(""), 0.0), "b", 0.0) == Move.TAKE


def test_held_lease_is_taken_only_after_its_duration_unchanged() -> None:
    seen = observe(None, record("a", "1"), 100.0)
    assert decide(seen, "b", 109.9) == Move.WAIT
    assert decide(seen, "b", 110.0) == Move.TAKE


def test_renewed_lease_restarts_the_clock() -> None:
    """The observer's own clock counts from when it first saw each version, never from the
    holder's renewTime (another machine's clock)."""
    first = observe(None, record("a", "1"), 100.0)
    assert observe(first, record("a", "1"), 105.0) is first
    renewed = observe(first, record("a", "2"), 108.0)
    assert renewed.since == 108.0
    assert decide(renewed, "b", 112.0) == Move.WAIT
    assert decide(renewed, "b", 118.0) == Move.TAKE


def test_a_new_lease_after_deletion_restarts_the_clock() -> None:
    first = observe(None, record("a", "1"), 100.0)
    gone = observe(first, None, 101.0)
    assert decide(gone, "b", 101.0) == Move.CREATE
    assert observe(gone, record("a", "3"), 102.0).since == 102.0


def test_taking_over_counts_a_transition_and_keeps_the_version() -> None:
    later = datetime(2026, 11, 27, 20, 1, tzinfo=UTC)
    taken = claimed(record("a", "7"), "b", later, TIMING)
    assert (taken.holder, taken.transitions, taken.version) == ("b", 1, "7")
    assert taken.acquired == taken.renewed == later
    assert claimed(None, "b", later, TIMING).transitions == 0
    assert claimed(record("", "7"), "b", later, TIMING).transitions == 0  # released: no change


def test_renewing_keeps_the_acquire_time() -> None:
    later = datetime(2026, 11, 27, 20, 1, tzinfo=UTC)
    renewed = claimed(record("b", "7"), "b", later, TIMING)
    assert (renewed.acquired, renewed.renewed, renewed.transitions) == (AT, later, 0)


def test_holder_stops_at_the_renew_deadline_before_anyone_may_take_over() -> None:
    assert not must_stop(100.0, 107.9, TIMING)
    assert must_stop(100.0, 108.0, TIMING)
    # The holder's deadline counts from the start of its renewal; a follower's expiry from when
    # it saw the result, later: the holder has stopped 2 s before a takeover is allowed.
    seen = observe(None, record("a", "2"), 100.0)
    assert decide(seen, "b", 108.0) == Move.WAIT


def test_follower_looks_again_exactly_when_the_lease_expires() -> None:
    seen = observe(None, record("a", "1"), 100.0)
    assert next_look(seen, "b", 100.0, TIMING) == 2.0
    assert next_look(seen, "b", 109.5, TIMING) == pytest.approx(0.5)
    assert next_look(seen, "b", 111.0, TIMING) == 0.0
    assert next_look(observe(None, record("b"), 0.0), "b", 5.0, TIMING) == 2.0


def test_lease_round_trips_through_its_json() -> None:
    """Written as the API expects (MicroTime, whole seconds) and read back unchanged."""
    taken = claimed(record("a", "7"), "b", AT, TIMING)
    body = lease_body("ns", "leader", taken)
    assert body["spec"]["renewTime"] == "2026-11-27T20:00:00.000000Z"
    assert body["spec"]["leaseDurationSeconds"] == 10
    assert body["metadata"]["resourceVersion"] == "7"
    assert lease_record(body) == taken
    assert (
        "resourceVersion"
        not in lease_body("ns", "leader", claimed(None, "b", AT, TIMING))["metadata"]
    )


def test_timing_out_of_order_is_refused() -> None:
    with pytest.raises(ValueError, match="lease_renew_deadline < lease_duration"):
        Settings(lease_duration=8.0, lease_renew_deadline=8.0)
    with pytest.raises(ValueError):
        Settings(lease_retry_period=8.0)
    Settings(lease_duration=4.0, lease_renew_deadline=3.0, lease_retry_period=1.0)


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/api", True),
        ("GET", "/api/v1", True),
        ("GET", "/apis", True),
        ("GET", "/apis/vhost-operator.io/v1alpha1", True),  # discovery: the webhook needs it
        ("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", True),
        ("GET", "/apis/vhost-operator.io/v1alpha1/virtualhosts", False),  # list and watch
        ("PATCH", "/apis/vhost-operator.io/v1alpha1/virtualhosts/a", False),
        ("GET", "/apis/vhost-operator.io/v1alpha1/maildomains", False),
        ("POST", "/api/v1/namespaces/default/events", False),
        (
            "PATCH",
            "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/x",
            False,
        ),
        ("POST", "/apis/vhost-operator.io/v1alpha1", False),
    ],
)
def test_a_followers_kopf_only_discovers(method: str, path: str, allowed: bool) -> None:
    """kopf serves its webhook once it has discovered the API; everything else it would send
    (our objects, Events, the webhook configuration) waits until this replica leads."""
    assert follower_may_send(method, path) is allowed
