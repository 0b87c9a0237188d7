"""The challenge responder of a replica that did not publish the challenge itself
(``acme.challenges``): it answers what the VirtualHost watch shared, and reads a token the watch
has not brought yet at its source, at most once per second and hostname however many requests
ask. A real responder on loopback, asked over HTTP with the hostname as ``Host``."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.harness.processes import free_port
from vhost_operator.acme.challenges import (
    CHALLENGE_PATH,
    REFRESH_INTERVAL,
    ChallengeResponder,
    ChallengeStore,
)


async def ask(port: int, hostname: str, token: str) -> tuple[int, str]:
    url = f"http://127.0.0.1:{port}{CHALLENGE_PATH}{token}"
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers={"Host": f"{hostname}:80"}) as response,
    ):
        return response.status, await response.text()


def test_a_token_not_yet_shared_is_read_at_its_source_once_per_second() -> None:
    async def scenario() -> None:
        store = ChallengeStore()
        reads: list[str] = []
        published = {"mail.example.com": ("fresh", "fresh.thumbprint")}

        async def refresh(hostname: str) -> None:
            reads.append(hostname)
            await asyncio.sleep(0.05)  # an API read takes a moment: requests meanwhile wait
            if hostname in published:
                store.share("mail", published[hostname])

        store.share("other", ("shared", "shared.thumbprint"))
        responder = ChallengeResponder(store, refresh)
        port = free_port()
        await responder.start("127.0.0.1", port)
        try:
            assert await ask(port, "other.example.com", "shared") == (200, "shared.thumbprint")
            assert reads == []  # in memory: no read

            answers = await asyncio.gather(
                *(ask(port, "mail.example.com", "fresh") for _ in range(5))
            )
            assert set(answers) == {(200, "fresh.thumbprint")}
            assert reads == ["mail.example.com"]  # five requests, one read

            unknown = [await ask(port, "mail.example.com", "nope") for _ in range(3)]
            assert {status for status, _ in unknown} == {404}
            assert reads == ["mail.example.com"]  # within the interval: no new read
            await asyncio.sleep(REFRESH_INTERVAL)
            assert (await ask(port, "mail.example.com", "nope"))[0] == 404
            assert reads == ["mail.example.com", "mail.example.com"]
            assert (await ask(port, "mail.example.com", "bad token!"))[0] == 404
            assert len(reads) == 2  # not a token at all: never read
        finally:
            await responder.stop()

    asyncio.run(scenario())


def test_a_failing_read_is_a_404_and_the_responder_keeps_answering() -> None:
    async def scenario() -> None:
        store = ChallengeStore()

        async def refresh(hostname: str) -> None:
            raise RuntimeError("API server unreachable")

        responder = ChallengeResponder(store, refresh)
        port = free_port()
        await responder.start("127.0.0.1", port)
        try:
            assert (await ask(port, "mail.example.com", "tok"))[0] == 404
            await store.publish("tok", "tok.thumbprint")
            assert await ask(port, "mail.example.com", "tok") == (200, "tok.thumbprint")
        finally:
            await responder.stop()

    asyncio.run(scenario())
