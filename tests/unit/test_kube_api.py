"""Bounded retries of transient API errors, and the error mapping, in ``kube.api.call``."""

from __future__ import annotations

import asyncio

import pytest
from kubernetes.client.exceptions import ApiException

from vhost_operator.errors import ApiError, TransientApiError
from vhost_operator.kube.api import call


class Flaky:
    def __init__(self, failures: list[int]) -> None:
        self.failures = failures
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise ApiException(status=self.failures.pop(0), reason="Busy")
        return "done"


def test_conflicts_and_timeouts_are_retried_until_the_call_succeeds() -> None:
    flaky = Flaky([409, 504, 429])
    assert asyncio.run(call(flaky, what="writing", delays=(0, 0, 0, 0))) == "done"
    assert flaky.calls == 4


def test_retries_are_bounded_and_end_in_a_stable_message() -> None:
    flaky = Flaky([503] * 10)
    with pytest.raises(TransientApiError) as caught:
        asyncio.run(call(flaky, what="writing status of VirtualHost a", delays=(0, 0)))
    assert flaky.calls == 3
    assert str(caught.value) == "writing status of VirtualHost a: Kubernetes API answered 503 Busy"


def test_a_refusal_is_not_retried() -> None:
    flaky = Flaky([403])
    with pytest.raises(ApiError) as caught:
        asyncio.run(call(flaky, what="reading Secret ns/s", delays=(0, 0)))
    assert flaky.calls == 1 and caught.value.status == 403
