"""``kube.events``: the Event body is kopf's, field for field (kopf's own ``post_event`` builds the
expected one, its request captured); the poster posts what is queued in few thread hops, to a
local server that records what arrives, retries what failed for a transient reason, and logs
and drops what it cannot post, without ever raising."""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import http.server
import json
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, cast

import kopf
import kubernetes
import pytest
from kopf._cogs.clients import api as kopf_api
from kopf._cogs.clients import events as kopf_events
from kopf._cogs.structs import references

from tests.harness.standin import StandIn
from vhost_operator.kube.events import (
    MAX_MESSAGE_LENGTH,
    REPORTING_COMPONENT,
    Event,
    EventPoster,
    EventType,
    Involved,
    event_body,
)
from vhost_operator.kube.objects import FIELD_MANAGER

# -- the body ----------------------------------------------------------------------------------

HOST = Involved("vhost-operator.io/v1alpha1", "VirtualHost", "one", "0b6c-uid")


async def _kopfs_request(involved: Involved, type: str, reason: str, message: str) -> Any:
    """(URL, body) of the request kopf's ``post_event`` makes for this Event, with the
    settings ``handlers.lifecycle.configure_kopf`` gives kopf and its login through the
    ``kubernetes`` client (no default namespace)."""
    settings = kopf.OperatorSettings()
    settings.posting.reporting_component = REPORTING_COMPONENT
    sent: list[tuple[str, Any]] = []

    async def post(*, url: str, payload: Any, **_: Any) -> None:
        sent.append((url, payload))

    async def no_default_namespace(**_: Any) -> None:
        return None

    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr(kopf_api, "post", post)
    monkeypatch.setattr(kopf_api, "get_default_namespace", no_default_namespace)
    try:
        reference = {
            "apiVersion": involved.api_version,
            "kind": involved.kind,
            "name": involved.name,
            "uid": involved.uid,
            "namespace": involved.namespace,
        }
        await kopf_events.post_event(
            ref=cast(Any, {key: value for key, value in reference.items() if value}),
            type=type,
            reason=reason,
            message=message,
            resource=references.Resource(group="", version="v1", plural="events", namespaced=True),
            settings=settings,
            logger=logging.getLogger(__name__),
        )
    finally:
        monkeypatch.undo()
    [request] = sent
    return request


@pytest.mark.parametrize(
    ("involved", "type", "reason", "message"),
    [
        (HOST, "Normal", "StepSucceeded", "bootstrap"),
        (HOST, "Warning", "StepFailed", "certificate: " + "x" * 3000),
        (HOST, "Normal", "Ready", "y" * MAX_MESSAGE_LENGTH),
        (HOST, "Warning", "StepFailed", "z" * (MAX_MESSAGE_LENGTH + 1)),
        (Involved("vhost-operator.io/v1alpha1", "MailDomain", "md", None), "Normal", "Linked", ""),
        (Involved("v1", "ConfigMap", "site", "u", namespace="web"), "Normal", "Seen", "m"),
    ],
    ids=["step", "long", "longest", "just-too-long", "no-uid", "namespaced"],
)
def test_the_body_and_namespace_are_kopfs(
    involved: Involved, type: EventType, reason: str, message: str
) -> None:
    url, theirs = asyncio.run(_kopfs_request(involved, type, reason, message))
    # The same moment as kopf's: the only field that differs between two calls.
    at = datetime.datetime.fromisoformat(theirs["eventTime"])
    # kopf writes isoformat(), ours always has the microseconds: kopf leaves them out at a
    # whole second, which the API server refuses (the next test); the same text otherwise.
    for field in ("firstTimestamp", "lastTimestamp", "eventTime"):
        assert theirs[field] == at.isoformat()
        theirs[field] = at.isoformat(timespec="microseconds")
    ours = event_body(Event(involved, type, reason, message, at))
    assert ours == theirs
    assert json.dumps(ours, sort_keys=True) == json.dumps(theirs, sort_keys=True)
    assert url == f"/api/v1/namespaces/{ours['metadata']['namespace']}/events"
    assert len(ours["message"]) <= MAX_MESSAGE_LENGTH


def test_an_event_at_a_whole_second_keeps_the_microseconds_the_api_server_needs() -> None:
    at = datetime.datetime(2026, 11, 28, 18, 48, 2, tzinfo=datetime.UTC)
    body = event_body(Event(HOST, "Normal", "StepSucceeded", "bootstrap", at))
    assert body["eventTime"] == "2026-11-28T18:48:02.000000+00:00"
    assert body["firstTimestamp"] == body["lastTimestamp"] == body["eventTime"]


# -- the poster --------------------------------------------------------------------------------


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Records every request; answers with the next of ``answers`` (then 201); a request
    waits for ``released`` first."""

    protocol_version = "HTTP/1.1"
    seen: ClassVar[list[dict[str, Any]]]
    answers: ClassVar[list[int]]
    released: ClassVar[threading.Event]

    def do_POST(self) -> None:
        self.released.wait()
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length))
        self.seen.append({"path": self.path, "body": body})
        status = self.answers.pop(0) if self.answers else 201
        answer = json.dumps({"kind": "Event" if status == 201 else "Status"}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *_: object) -> None:
        pass


class _Server:
    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.answers: list[int] = []
        self.released = threading.Event()
        self.released.set()
        attributes = {"seen": self.seen, "answers": self.answers, "released": self.released}
        self.stand_in = StandIn(type("Handler", (_Recorder,), attributes))
        configuration = kubernetes.client.Configuration()
        configuration.host = self.stand_in.url
        self.client = kubernetes.client.ApiClient(configuration)

    def reasons(self) -> list[str]:
        return [request["body"]["reason"] for request in self.seen]


@pytest.fixture
def server() -> Iterator[_Server]:
    served = _Server()
    try:
        yield served
    finally:
        served.released.set()
        served.client.rest_client.pool_manager.clear()
        served.stand_in.close()


class _CountingExecutor(concurrent.futures.ThreadPoolExecutor):
    """Counts the thread hops."""

    def __init__(self) -> None:
        super().__init__(4)
        self.hops = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        self.hops += 1
        return super().submit(fn, *args, **kwargs)


def _post(poster: EventPoster, reason: str, *, type: EventType = "Normal") -> None:
    poster.post(HOST, type=type, reason=reason, message=f"about {reason}")


def test_queued_events_arrive_several_per_thread_hop_stamped_in_order(server: _Server) -> None:
    executor = _CountingExecutor()

    async def scenario() -> None:
        poster = EventPoster(server.client, workers=4, batch=16, executor=executor)
        for number in range(40):
            _post(poster, f"R{number}")
        await poster.close()

    try:
        asyncio.run(scenario())
    finally:
        executor.shutdown()
    assert sorted(server.reasons()) == sorted(f"R{number}" for number in range(40))
    assert executor.hops == 3  # 16 + 16 + 8; the fourth worker found nothing left
    # Hops run at the same time, so they may arrive in another order: their time is when
    # they were queued.
    stamped = sorted(server.seen, key=lambda request: int(request["body"]["reason"][1:]))
    times = [request["body"]["eventTime"] for request in stamped]
    assert times == sorted(times)
    first = stamped[0]
    assert first["path"] == f"/api/v1/namespaces/default/events?fieldManager={FIELD_MANAGER}"
    assert first["body"]["involvedObject"] == {
        "apiVersion": HOST.api_version,
        "kind": "VirtualHost",
        "name": "one",
        "uid": "0b6c-uid",
        "namespace": "default",
    }
    assert first["body"]["type"] == "Normal"
    assert first["body"]["message"] == "about R0"


def test_a_post_never_waits_for_the_api_server(server: _Server) -> None:
    async def scenario() -> None:
        server.released.clear()  # the server answers nothing for now
        poster = EventPoster(server.client)
        _post(poster, "Queued")  # returns at once, or the test hangs here
        await asyncio.sleep(0.1)
        assert server.seen == []
        server.released.set()
        await poster.close()

    asyncio.run(scenario())
    assert server.reasons() == ["Queued"]


def test_a_transient_failure_is_retried_and_a_lasting_one_logged_and_dropped(
    server: _Server, caplog: pytest.LogCaptureFixture
) -> None:
    # A 503 (retried, then taken), a 403 (dropped: no retry makes it work), then 201s.
    server.answers.extend([503, 201, 403])

    async def scenario() -> None:
        poster = EventPoster(server.client, workers=1, delays=(0.01, 0.01))
        _post(poster, "Retried")
        await asyncio.sleep(0.2)
        _post(poster, "Refused", type="Warning")
        _post(poster, "Posted")
        await poster.close()

    with caplog.at_level(logging.WARNING, logger="vhost_operator.kube.events"):
        asyncio.run(scenario())
    assert server.reasons() == ["Retried", "Retried", "Refused", "Posted"]
    [warning] = [r for r in caplog.records if r.name == "vhost_operator.kube.events"]
    assert "Failed to post an event" in warning.getMessage()
    assert "reason='Refused'" in warning.getMessage()


def test_an_unreachable_api_server_costs_bounded_retries_then_a_warning(
    server: _Server, caplog: pytest.LogCaptureFixture
) -> None:
    server.stand_in.close()  # nothing listens on its port any more

    async def scenario() -> None:
        poster = EventPoster(server.client, delays=(0.01, 0.01))
        _post(poster, "Lost")
        await poster.close()

    with caplog.at_level(logging.WARNING, logger="vhost_operator.kube.events"):
        asyncio.run(scenario())
    assert [r.getMessage() for r in caplog.records if "reason='Lost'" in r.getMessage()]


def test_close_waits_a_bounded_time_then_drops_what_is_left(
    server: _Server, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        server.released.clear()  # the server hangs
        poster = EventPoster(server.client, workers=1, batch=1)
        for reason in ("Hanging", "Queued"):
            _post(poster, reason)
        await asyncio.wait_for(poster.close(timeout=0.2), timeout=5)
        _post(poster, "AfterClose")  # dropped, logged, never raised
        server.released.set()  # the request in flight ends: its thread can stop

    with caplog.at_level(logging.WARNING, logger="vhost_operator.kube.events"):
        asyncio.run(scenario())
    messages = [record.getMessage() for record in caplog.records]
    assert "dropped 1 Events not posted at shutdown" in messages
    assert any("reason='AfterClose'" in message for message in messages)
