"""The CA's ``Retry-After``: parsed as seconds or an HTTP-date, never earlier than it says."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from vhost_operator.acme.transport import parse_retry_after

NOW = datetime(2026, 11, 27, 17, 0, 0, 250_000, tzinfo=UTC)
"""Not on a whole second: the result is rounded up to one."""


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", datetime(2026, 11, 27, 17, 2, 1, tzinfo=UTC)),
        (" 5 ", datetime(2026, 11, 27, 17, 0, 6, tzinfo=UTC)),
        ("0", datetime(2026, 11, 27, 17, 0, 1, tzinfo=UTC)),
        ("Fri, 27 Nov 2026 17:30:00 GMT", datetime(2026, 11, 27, 17, 30, tzinfo=UTC)),
        ("Fri, 27 Nov 2026 18:30:00 +0100", datetime(2026, 11, 27, 17, 30, tzinfo=UTC)),
        ("Friday, 27-Nov-26 17:30:00 GMT", datetime(2026, 11, 27, 17, 30, tzinfo=UTC)),
        ("Fri Nov 27 17:30:00 2026", datetime(2026, 11, 27, 17, 30, tzinfo=UTC)),
    ],
)
def test_seconds_and_http_dates(header: str, expected: datetime) -> None:
    assert parse_retry_after(header, NOW) == expected


def test_a_date_in_the_past_means_now() -> None:
    assert parse_retry_after("Thu, 26 Nov 2026 17:00:00 GMT", NOW) == NOW.replace(
        microsecond=0
    ) + timedelta(seconds=1)


def test_far_future_is_kept_as_it_is() -> None:
    # No cap: a long pause is waited for (and shown), never turned into a failure.
    assert parse_retry_after("2592000", NOW) == datetime(2026, 12, 27, 17, 0, 1, tzinfo=UTC)


@pytest.mark.parametrize("header", [None, "", "soon", "-5", "1.5", "Fri, 99 Nov 2026 17:30:00 GMT"])
def test_missing_or_unreadable(header: str | None) -> None:
    assert parse_retry_after(header, NOW) is None
