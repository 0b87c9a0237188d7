"""Bounded retries of transient API errors, and the error mapping, in ``kube.api.call``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from vhost_operator.errors import ApiError, TransientApiError
from vhost_operator.kube.api import call, connect, throttle_token_refresh


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


class TokenConfiguration:
    """What the client's configuration holds of a token: the loaders' refresh hook, which puts
    a new copy of itself back on every call (as both kubernetes loaders do)."""

    def __init__(self) -> None:
        self.refreshes = 0
        self.refresh_api_key_hook: Any = self._hook()

    def _hook(self) -> Any:
        def refresh(configuration: TokenConfiguration) -> None:
            self.refreshes += 1
            configuration.refresh_api_key_hook = self._hook()

        return refresh


def test_the_token_is_checked_once_per_interval_not_per_request() -> None:
    configuration = TokenConfiguration()
    now = [100.0]
    throttle_token_refresh(configuration, interval=1.0, clock=lambda: now[0])

    for _ in range(50):  # what the client does before each request
        configuration.refresh_api_key_hook(configuration)
    assert configuration.refreshes == 1
    now[0] += 0.9
    configuration.refresh_api_key_hook(configuration)
    assert configuration.refreshes == 1
    now[0] += 0.2
    for _ in range(50):
        configuration.refresh_api_key_hook(configuration)
    assert configuration.refreshes == 2, "the hook the loader put back is called next"


def test_a_kubeconfig_token_still_authenticates_every_request(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
                "users": [{"name": "u", "user": {"token": "secret-token"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    configuration = connect(kubeconfig=kubeconfig).configuration

    for _ in range(3):
        assert configuration.auth_settings()["BearerToken"]["value"] == "Bearer secret-token"
    assert configuration.refresh_api_key_hook.__qualname__.startswith("throttle_token_refresh")
