"""The VirtualHost handlers answer an API outage with a prompt retry, and nothing else."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf
import pytest

from vhost_operator.errors import ApiError, TransientApiError
from vhost_operator.handlers.virtualhosts import API_RETRY_DELAY, _retried_soon_on_api_trouble


def test_an_api_outage_is_retried_after_the_short_delay() -> None:
    @_retried_soon_on_api_trouble
    async def handler(**_: Any) -> None:
        raise TransientApiError("writing status of VirtualHost a: API server unreachable")

    with pytest.raises(kopf.TemporaryError) as raised:
        asyncio.run(handler(body={}))
    assert raised.value.delay == API_RETRY_DELAY < 60  # kopf's default for other errors
    assert "API server unreachable" in str(raised.value)
    assert handler.__name__ == "handler", "kopf keys its progress records by the name"


def test_other_errors_and_success_pass_through() -> None:
    calls = []

    @_retried_soon_on_api_trouble
    async def handler(*, fail: bool) -> None:
        calls.append(fail)
        if fail:
            raise ApiError("forbidden", status=403)

    asyncio.run(handler(fail=False))
    with pytest.raises(ApiError):
        asyncio.run(handler(fail=True))
    assert calls == [False, True]
