"""Keeping ACME Renewal Information current (``provisioning.renewal_info``): when each
certificate's window is asked for again, how the requests are paced, and what is written."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

from vhost_operator.acme.errors import AcmeUnavailable
from vhost_operator.acme.orders import RenewalInfo
from vhost_operator.certs import RenewalWindow, time_in_window
from vhost_operator.provisioning.renewal import RenewalCandidate
from vhost_operator.provisioning.renewal_info import (
    Pacing,
    RenewalInfoKeeper,
    first_check,
    next_check,
    run_renewal_info,
    worth_asking,
)
from vhost_operator.resources.models import Phase, RenewalWindowStatus

NOW = datetime(2026, 6, 1, tzinfo=UTC)
DAY = timedelta(days=1)
PACING = Pacing(rate=1000.0, max_age=DAY)


def candidate(name: str, **changes: object) -> RenewalCandidate:
    fields: dict[str, object] = {
        "name": name,
        "enabled": True,
        "phase": Phase.READY,
        "renewal_time": NOW + 3 * DAY,
        "not_after": NOW + 5 * DAY,
        "requested": None,
        "serial": f"serial-{name}",
        "certificate_id": f"aki.{name}",
        "window": RenewalWindowStatus(start=NOW + 2 * DAY, end=NOW + 4 * DAY, source="ari"),
        **changes,
    }
    return RenewalCandidate(**fields)  # type: ignore[arg-type]


class CA:
    def __init__(self, windows: dict[str, RenewalInfo]) -> None:
        self.windows = windows
        self.asked: list[str] = []
        self.failure: Exception | None = None

    async def renewal_info(self, certificate_id: str) -> RenewalInfo | None:
        self.asked.append(certificate_id)
        if self.failure is not None:
            raise self.failure
        return self.windows.get(certificate_id)


class Writes:
    def __init__(self) -> None:
        self.written: list[tuple[str, str, RenewalWindow, datetime]] = []

    async def write_renewal_window(
        self, name: str, serial: str, window: RenewalWindow, renewal_time: datetime
    ) -> None:
        self.written.append((name, serial, window, renewal_time))


def check(keeper: RenewalInfoKeeper, hosts: list[RenewalCandidate], at: datetime) -> None:
    asyncio.run(keeper.check_due(hosts, lambda: at))


def test_the_cas_retry_after_is_kept_within_a_minute_and_the_maximum_age() -> None:
    assert next_check(NOW, NOW + timedelta(hours=6), PACING) == NOW + timedelta(hours=6)
    assert next_check(NOW, NOW + timedelta(seconds=5), PACING) == NOW + timedelta(minutes=1)
    assert next_check(NOW, NOW + 3 * DAY, PACING) == NOW + DAY
    assert next_check(NOW, None, PACING) == NOW + DAY
    short = Pacing(rate=1.0, max_age=timedelta(seconds=3))  # a test's setting
    assert next_check(NOW, NOW + timedelta(hours=6), short) == NOW + timedelta(seconds=3)


def test_after_a_restart_first_checks_are_spread_over_the_maximum_age() -> None:
    firsts = [first_check(f"aki.{n}", NOW, PACING) for n in range(10_000)]
    assert all(NOW <= when < NOW + DAY for when in firsts)
    per_hour = [
        sum(1 for w in firsts if NOW + h * DAY / 24 <= w < NOW + (h + 1) * DAY / 24)
        for h in range(24)
    ]
    assert max(per_hour) < 10_000 / 24 * 1.2  # no burst: about even over the day


def test_only_hosts_whose_renewal_a_window_could_move_are_asked_about() -> None:
    assert worth_asking(candidate("a"), NOW)
    assert not worth_asking(candidate("a", enabled=False), NOW)
    assert not worth_asking(candidate("a", phase=Phase.FAILED), NOW)
    assert not worth_asking(candidate("a", requested="x"), NOW)
    assert not worth_asking(candidate("a", renewal_time=NOW), NOW)  # due: renewed anyway
    assert not worth_asking(candidate("a", certificate_id=None), NOW)
    assert not worth_asking(candidate("a", not_after=NOW - DAY, renewal_time=NOW + DAY), NOW)


def test_a_moved_window_is_written_with_a_renewal_time_in_it_and_an_unmoved_one_is_not() -> None:
    revoked = RenewalInfo(NOW - timedelta(hours=1), NOW - timedelta(minutes=59), None)
    same = RenewalInfo(NOW + 2 * DAY, NOW + 4 * DAY, NOW + timedelta(hours=6))
    ca, writes = CA({"aki.a": revoked, "aki.b": same}), Writes()
    keeper = RenewalInfoKeeper(ca, writes, PACING)
    hosts = [candidate("a"), candidate("b")]

    check(keeper, hosts, NOW)  # first look: nothing asked yet, the first checks lie ahead
    assert ca.asked == []
    check(keeper, hosts, NOW + DAY)

    assert sorted(ca.asked) == ["aki.a", "aki.b"]
    [(name, serial, window, renewal_time)] = writes.written
    assert (name, serial, window.source) == ("a", "serial-a", "ari")
    assert (window.start, window.end) == (revoked.start, revoked.end)
    assert renewal_time == time_in_window(window, "serial-a") < NOW  # due at the next scan


def test_a_certificate_is_asked_again_only_when_its_check_is_due() -> None:
    ca = CA({"aki.a": RenewalInfo(NOW + 2 * DAY, NOW + 4 * DAY, NOW + DAY + timedelta(hours=6))})
    keeper = RenewalInfoKeeper(ca, Writes(), PACING)
    hosts = [candidate("a")]
    check(keeper, hosts, NOW)
    check(keeper, hosts, NOW + DAY)
    check(keeper, hosts, NOW + DAY + timedelta(hours=5))
    assert ca.asked == ["aki.a"]
    check(keeper, hosts, NOW + DAY + timedelta(hours=6))
    assert ca.asked == ["aki.a", "aki.a"]


def test_requests_are_paced_by_the_rate() -> None:
    ca = CA({})
    keeper = RenewalInfoKeeper(ca, Writes(), Pacing(rate=50.0, max_age=timedelta(seconds=1)))
    hosts = [candidate(str(n)) for n in range(6)]
    check(keeper, hosts, NOW)
    started = time.monotonic()
    check(keeper, hosts, NOW + timedelta(seconds=2))
    assert len(ca.asked) == 6
    assert time.monotonic() - started >= 5 / 50  # five gaps of 1/50 s


def test_a_failing_ca_is_asked_again_later_and_nothing_is_written() -> None:
    ca, writes = CA({}), Writes()
    ca.failure = AcmeUnavailable("the CA at https://ca.test could not be reached")
    keeper = RenewalInfoKeeper(ca, writes, PACING)
    check(keeper, [candidate("a")], NOW)
    check(keeper, [candidate("a")], NOW + DAY)
    check(keeper, [candidate("a")], NOW + DAY + timedelta(hours=1))
    assert ca.asked == ["aki.a"] and writes.written == []


def test_a_host_that_appears_later_is_asked_about_within_the_maximum_age() -> None:
    class Later:
        def __init__(self) -> None:
            self.looks = 0

        def candidates(self) -> list[RenewalCandidate]:
            self.looks += 1  # none at the first look (the catalog was empty at start)
            return [] if self.looks == 1 else [candidate("a", renewal_time=far, not_after=far)]

    far = datetime.now(UTC) + 3 * DAY
    ca = CA({})
    keeper = RenewalInfoKeeper(ca, Writes(), Pacing(rate=10.0, max_age=timedelta(seconds=1)))

    async def run_briefly() -> None:
        task = asyncio.create_task(
            run_renewal_info(Later(), keeper, clock=lambda: datetime.now(UTC))
        )
        await asyncio.sleep(3.5)
        task.cancel()

    asyncio.run(run_briefly())
    assert ca.asked, "the second host was never asked about"
