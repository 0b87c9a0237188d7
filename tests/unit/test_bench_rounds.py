"""The benchmark's item 1 choices that are pure: which rounds run, which one is audited, the
targets and timeouts by size, and the agent's batch times read from its log."""

from __future__ import annotations

import dataclasses

import pytest

from bench.provisioning import batch_seconds, ready_target, round_item, round_timeout
from bench.report import Figure, median_seconds, spread
from bench.run import attribution_size, parse, rounds_of, spreads


def test_large_adds_a_round_of_ten_thousand_after_the_others() -> None:
    assert rounds_of("100,1000", large=True) == [100, 1000, 10_000]
    assert rounds_of("100,1000", large=False) == [100, 1000]
    assert rounds_of("10_000", large=True) == [10_000]


def test_repeated_rounds_run_in_a_row_and_the_large_one_once() -> None:
    assert rounds_of("100,1000", large=True, repeat=2) == [100, 100, 1000, 1000, 10_000]
    assert rounds_of("10_000", large=True, repeat=3) == [10_000, 10_000, 10_000]


@pytest.mark.parametrize(
    ("rounds", "requested", "expected"),
    [
        ([100, 1000, 10_000], None, 1000),  # never 10,000 on an audited plane by default
        ([50, 200], None, 200),
        ([100, 1000], 100, 100),
        ([100, 1000], 0, 0),
        ([], None, 0),
    ],
)
def test_attribution_round_is_the_largest_round_up_to_a_thousand(
    rounds: list[int], requested: int | None, expected: int
) -> None:
    assert attribution_size(rounds, requested) == expected


def test_command_line_sets_rounds_and_attribution() -> None:
    arguments = parse(["--large"])
    assert arguments.rounds == [100, 100, 100, 1000, 1000, 1000, 10_000]
    assert arguments.attribution_hosts == 1000
    arguments = parse(["--quick", "--repeat", "1"])
    assert (arguments.rounds, arguments.attribution_hosts) == ([20], 20)


def test_targets_by_size() -> None:
    assert ready_target(1000) == ("< 40 s", 40.0)
    assert ready_target(10_000) == ("< 10 min", 600.0)
    assert ready_target(100) is None


def test_timeouts_scale_with_the_number_of_hosts() -> None:
    assert round_timeout(50) == 120
    assert round_timeout(10_000) == 6000


def test_headline_and_attribution_rounds_are_told_apart() -> None:
    assert round_item(1000, audited=False) == "1. provision 1000 hosts"
    assert "audit log on" in round_item(1000, audited=True)


def test_batch_seconds_from_the_agent_log() -> None:
    log = (
        "2026-11-27 23:30:17,918 INFO vhost_operator.agent.agent: nginx reloaded: 110 hosts "
        "changed, 0 rejected, 1 nginx -t runs, 3.99s after the batch started\n"
        "2026-11-27 23:30:18,000 INFO vhost_operator.agent.agent: reported 110 hosts\n"
        "2026-11-27 23:30:25,223 INFO vhost_operator.agent.agent: nginx reloaded: 3 hosts "
        "changed, 1 rejected, 4 nginx -t runs, 12.50s after the batch started\n"
    )
    assert batch_seconds(log) == [3.99, 12.5]
    assert batch_seconds("") == []


def test_request_costs_run_by_default_and_small_when_quick() -> None:
    """Item 7 is part of a full run; ``--quick`` measures fewer requests and skips the
    2,000 VirtualHosts created for its last figure."""
    arguments = parse([])
    assert "7" in arguments.only.split(",")
    assert (arguments.request_count, arguments.request_present) == (300, 2000)
    arguments = parse(["--quick"])
    assert (arguments.request_count, arguments.request_present) == (100, 0)


def _round(item: str, seconds: float | None) -> Figure:
    name = "all Ready after" if seconds is not None else "Ready when timed out"
    return Figure(item, name, "", seconds=seconds)


def test_repeated_rounds_are_summed_up_by_their_median_and_range() -> None:
    item = "1. provision 1000 hosts"
    figures = [_round(item, 68.2), Figure(item, "hosts/s", "14.7"), _round(item, 55.3)]
    figures += [_round(item, 61.8), _round("1. provision 100 hosts", 7.4)]
    summary = spread(figures, item, ("< 40 s", 40.0))
    assert summary == Figure(
        item, "all Ready, median of 3 rounds", "61.8 s (range 55.3-68.2)", "< 40 s", False
    )
    assert median_seconds(figures, item) == 61.8
    assert spread(figures, item, ("< 70 s", 70.0)) == dataclasses.replace(
        summary, target="< 70 s", met=True
    )


def test_a_round_that_timed_out_misses_the_target_and_a_single_round_has_no_spread() -> None:
    item = "1. provision 1000 hosts"
    summary = spread([_round(item, 30.0), _round(item, None)], item, ("< 40 s", 40.0))
    assert summary is not None and summary.met is False
    assert summary.value == "30.0 s (range 30.0-30.0), 1 timed out"
    assert spread([_round(item, 30.0)], item, ("< 40 s", 40.0)) is None
    assert spread([_round(item, None), _round(item, None)], item) == Figure(
        item, "all Ready, median of 2 rounds", "none ended", "", False
    )


def test_a_summary_for_each_size_that_ran_more_than_once() -> None:
    thousand, hundred = "1. provision 1000 hosts", "1. provision 100 hosts"
    figures = [_round(hundred, 7.4), _round(thousand, 52.2), _round(thousand, 50.0)]
    assert spreads(figures, [100, 1000, 1000]) == [
        Figure(
            thousand, "all Ready, median of 2 rounds", "51.1 s (range 50.0-52.2)", "< 40 s", False
        )
    ]
