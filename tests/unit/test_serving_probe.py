"""The final step's serving probe: asked again while a connection lands on a stopping replica."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.unit.builders import virtualhost
from vhost_operator.probes import ProbeFailed
from vhost_operator.provisioning import sites
from vhost_operator.provisioning.chain import StepFailed
from vhost_operator.settings import Settings

SETTINGS = Settings(nginx_probe_address="nginx.svc:443")


def publisher() -> sites.SitePublisher:
    return sites.SitePublisher(configmaps=None, settings=SETTINGS, applications=None)  # type: ignore[arg-type]


def probe_answers(answers: list[str | None], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace the TLS probe: each call gives the next answer (``None``: no handshake)."""
    asked: list[str] = []
    remaining: Iterator[str | None] = iter(answers)

    async def probe(address: str, hostname: str) -> str:
        asked.append(hostname)
        answer = next(remaining)
        if answer is None:
            raise ProbeFailed(f"no TLS handshake with nginx at {address} for {hostname}")
        return answer

    monkeypatch.setattr(sites, "served_certificate_serial", probe)
    monkeypatch.setattr(sites, "PROBE_SPACING", 0)
    return asked


def test_a_probe_that_reaches_a_stopping_replica_is_asked_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked = probe_answers([None, "old", "new"], monkeypatch)
    asyncio.run(publisher()._require_serving(virtualhost(), "new"))
    assert len(asked) == 3


def test_nginx_that_never_serves_the_new_certificate_fails_the_step_with_the_last_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked = probe_answers([None] * (sites.PROBE_ATTEMPTS - 1) + ["old"], monkeypatch)
    with pytest.raises(StepFailed) as failed:
        asyncio.run(publisher()._require_serving(virtualhost(), "new"))
    assert len(asked) == sites.PROBE_ATTEMPTS
    assert "presents certificate old for h.example.com, not the new new" in str(failed.value)
