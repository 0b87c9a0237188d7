"""The scrape-time view of the hosts: read on the event loop, never under its feet."""

from __future__ import annotations

import asyncio
import threading

from vhost_operator.handlers.observability import read_on_loop
from vhost_operator.metrics import HostCollector, HostView


def test_scrapes_from_a_thread_while_the_loop_changes_the_index() -> None:
    index: dict[str, list[HostView]] = {}
    seen: list[int] = []
    failures: list[BaseException] = []

    async def churn(loop: asyncio.AbstractEventLoop) -> None:
        read = read_on_loop(lambda: [v for views in index.values() for v in views], loop)

        def scrape() -> None:
            try:
                for _ in range(20):
                    seen.append(len(read()))
            except BaseException as error:
                failures.append(error)

        scraper = threading.Thread(target=scrape)
        scraper.start()
        number = 0
        while scraper.is_alive():
            for _ in range(200):  # what a burst of watch events does to kopf's index
                index[f"h{number}"] = [HostView(f"h{number}", "Ready", None)]
                index.pop(f"h{number - 100}", None)
                number += 1
            await asyncio.sleep(0.001)
        scraper.join()

    async def main() -> None:
        await churn(asyncio.get_running_loop())

    asyncio.run(main())
    assert not failures
    assert len(seen) == 20 and all(count <= 100 for count in seen)


def test_registering_the_collector_reads_no_hosts() -> None:
    def hosts() -> list[HostView]:
        raise AssertionError("read at registration")

    described = list(HostCollector(hosts).describe())
    assert [family.name for family in described] == [
        "vhost_operator_virtualhosts",
        "vhost_operator_certificate_expiry_timestamp_seconds",
        "vhost_operator_certificate_renewal_timestamp_seconds",
    ]
