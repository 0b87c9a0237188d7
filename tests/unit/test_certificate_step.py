"""The ``certificate`` step against an in-memory CA (``provisioning.certificates``, ``acme.fake``).

The step's own decisions: when to order, which key and order to resume, what it stores in which
order, what it refuses to store, and the message each failure leaves for ``status.error``. The
real client against a real CA (pebble) is tested in ``tests/integration/test_acme_pebble.py``.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from prometheus_client import REGISTRY

from tests.unit.builders import virtualhost
from vhost_operator.acme.challenges import ChallengeStore
from vhost_operator.acme.errors import (
    AcmeRefused,
    AcmeRetryLater,
    AcmeUnavailable,
    ChallengeFailed,
)
from vhost_operator.acme.fake import FakeAcme
from vhost_operator.acme.orders import RenewalInfo
from vhost_operator.certs import certificate_id, certificate_matches_key, inspect_certificate
from vhost_operator.errors import ForeignObjectError
from vhost_operator.kube.objects import SecretData
from vhost_operator.provisioning.budget import BudgetLimits
from vhost_operator.provisioning.certificates import (
    AcmeAccount,
    CertificateStep,
    EarlierAttempts,
)
from vhost_operator.provisioning.chain import StepDeferred, StepFailed, StepOutcome
from vhost_operator.provisioning.ledger import OrderLedger
from vhost_operator.resources import labels
from vhost_operator.resources.models import VirtualHost, VirtualHostStatus
from vhost_operator.resources.naming import next_key_secret_name, tls_secret_name
from vhost_operator.settings import Settings

T = TypeVar("T")

SETTINGS = Settings(
    acme_enabled=True,
    self_check_enabled=False,  # the self-check fetches over HTTP; the fake CA asks nobody
    nginx_namespace="nginx",
    operator_namespace="operator",
)
HOST = virtualhost("mail.example.com", name="mail-example-com", uid="uid-1")
TLS = ("nginx", tls_secret_name("mail-example-com"))
NEXT_KEY = ("nginx", next_key_secret_name("mail-example-com"))
ACCOUNT = ("operator", "vhost-operator-acme-account")


class MemorySecrets:
    """Secrets by (namespace, name), a log of every write, for the order of writes, and of
    every call, for what the step asks of the API server (``kube.objects`` semantics: a create
    refused when the name is taken, a delete by uid only of that incarnation)."""

    def __init__(self, log: list[str]) -> None:
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.log = log
        self.calls: list[str] = []
        self._uids = itertools.count(1)

    async def read_secret(self, namespace: str, name: str) -> SecretData | None:
        self.calls.append(f"read {name}")
        body = self.secrets.get((namespace, name))
        return SecretData(body) if body is not None else None

    async def create_secret(
        self, namespace: str, manifest: dict[str, Any], data: dict[str, bytes]
    ) -> str | None:
        name = manifest["metadata"]["name"]
        self.calls.append(f"create {name}")
        if (namespace, name) in self.secrets:
            return None
        self.log.append(f"store {name}")
        return self._put(namespace, manifest, data)

    async def apply_secret(
        self,
        namespace: str,
        manifest: dict[str, Any],
        data: dict[str, bytes],
        *,
        checked: bool = False,
    ) -> None:
        name = manifest["metadata"]["name"]
        self.calls.append(f"apply {name}" + (" checked" if checked else ""))
        self._put(namespace, manifest, data)
        annotations = manifest["metadata"].get("annotations") or {}
        order = annotations.get(labels.ORDER_URL)
        self.log.append(f"store {name}" + (f" order={order}" if order else ""))

    def _put(self, namespace: str, manifest: dict[str, Any], data: dict[str, bytes]) -> str:
        name = manifest["metadata"]["name"]
        known = self.secrets.get((namespace, name), {}).get("metadata", {}).get("uid")
        uid = known or f"uid-{next(self._uids)}"
        encoded = {key: base64.b64encode(value).decode() for key, value in data.items()}
        metadata = {**manifest["metadata"], "uid": uid}
        self.secrets[(namespace, name)] = {**manifest, "metadata": metadata, "data": encoded}
        return uid

    async def delete_secret(
        self, namespace: str, name: str, *, owner: str, uid: str | None = None
    ) -> None:
        self.calls.append(f"delete {name}" + (" by uid" if uid else ""))
        stored = self.secrets.get((namespace, name))
        if uid is not None and stored is not None and stored["metadata"].get("uid") != uid:
            raise AssertionError(f"deleting {name} by a uid it does not have")
        self.secrets.pop((namespace, name), None)
        self.log.append(f"delete {name}")

    async def annotate_secret(self, namespace: str, name: str, annotations: dict[str, str]) -> None:
        self.calls.append(f"annotate {name}")
        metadata = self.secrets[(namespace, name)]["metadata"]
        metadata["annotations"] = {**(metadata.get("annotations") or {}), **annotations}
        self.log.append(f"annotate {name} " + ",".join(annotations))

    def data(self, secret: tuple[str, str]) -> dict[str, bytes]:
        stored = SecretData(self.secrets[secret])
        return stored.data


class Stack:
    """The step with its fake CA, in-memory Secrets and challenge store."""

    def __init__(
        self, budget: BudgetLimits | None = None, earlier: EarlierAttempts | None = None
    ) -> None:
        self.log: list[str] = []
        self.ca = FakeAcme()
        self.secrets = MemorySecrets(self.log)
        self.challenges = ChallengeStore()
        self.account = AcmeAccount(self.ca, self.secrets, SETTINGS)
        ledger = None
        if budget is not None:
            ledger = OrderLedger(budget, self.secrets, ACCOUNT, clock=lambda: self.now)
        self.now = datetime(2026, 1, 1, tzinfo=UTC)
        self.step = CertificateStep(
            self.account, self.challenges, self.secrets, SETTINGS, budget=ledger, earlier=earlier
        )

    def run(self) -> StepOutcome:
        return run(self.step.run(HOST))


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def orders(outcome: str) -> float:
    """The ``vhost_operator_acme_orders_total`` counter of ``outcome`` so far."""
    value = REGISTRY.get_sample_value("vhost_operator_acme_orders_total", {"outcome": outcome})
    return value or 0.0


def test_a_new_host_gets_a_certificate_for_a_key_stored_before_the_order() -> None:
    stack = Stack()
    outcome = stack.run()

    [order] = stack.ca.orders.values()
    assert stack.log == [
        f"store {TLS[1]}",  # the key, before the CA hears of it
        "store vhost-operator-acme-account",
        f"store {TLS[1]} order={order.url}",  # resumable from here
        f"store {TLS[1]}",  # the certificate beside it, the order URL gone
    ]
    assert labels_of(stack, TLS)[labels.COMPONENT] == labels.TLS_COMPONENT
    assert labels.ORDER_URL not in stack.secrets.secrets[TLS]["metadata"]["annotations"]
    tls = stack.secrets.data(TLS)
    info = inspect_certificate(tls["tls.crt"])
    assert certificate_matches_key(tls["tls.crt"], tls["tls.key"])
    assert info.dns_names == ("mail.example.com",)
    assert outcome.message == f"certificate {info.serial} issued by order {order.url}"
    assert outcome.certificate is not None and outcome.certificate.serial == info.serial
    assert stack.secrets.data(ACCOUNT)["account.key"] == stack.ca.account_key
    assert len(stack.challenges) == 0


def test_a_current_certificate_is_kept_without_ordering() -> None:
    stack = Stack()
    first = stack.run()
    stack.log.clear()

    again = stack.run()

    assert again.message == "current certificate kept"
    assert again.certificate == first.certificate
    assert stack.log == [] and len(stack.ca.orders) == 1


def test_a_kept_certificate_removes_the_pending_key_it_already_holds() -> None:
    """Killed (or the leader lost) after storing the certificate and before removing the
    pending key: the next run keeps the certificate and removes the spent key; a pending key
    of another (a renewal in flight) stays."""
    stack = Stack()
    stack.run()
    spent = {"metadata": {"name": NEXT_KEY[1]}, "data": stack.secrets.secrets[TLS]["data"]}
    stack.secrets.secrets[NEXT_KEY] = {**spent, "data": {"tls.key": spent["data"]["tls.key"]}}
    stack.log.clear()

    assert stack.run().message == "current certificate kept"
    assert stack.log == [f"delete {NEXT_KEY[1]}"] and len(stack.ca.orders) == 1

    other = base64.b64encode(b"another key").decode()
    stack.secrets.secrets[NEXT_KEY] = {
        "metadata": {"name": NEXT_KEY[1]},
        "data": {"tls.key": other},
    }
    stack.log.clear()
    assert stack.run().message == "current certificate kept"
    assert stack.log == [] and NEXT_KEY in stack.secrets.secrets


def test_a_certificate_due_for_renewal_is_ordered_again() -> None:
    stack = Stack()
    # Valid from a minute ago for ten more seconds: less than a third is left, so it is due.
    stack.ca.validity = timedelta(seconds=10)
    first = stack.run()

    again = stack.run()

    assert len(stack.ca.orders) == 2
    assert again.certificate is not None and first.certificate is not None
    assert again.certificate.serial != first.certificate.serial


def test_after_an_interruption_the_stored_order_is_resumed_with_the_stored_key() -> None:
    stack = Stack()
    stack.ca.fail_validation = AcmeUnavailable("validating mail.example.com: timed out")
    with pytest.raises(AcmeUnavailable):
        stack.run()
    key = stack.secrets.data(TLS)["tls.key"]
    [order] = stack.ca.orders.values()
    stack.ca.fail_validation = None
    stack.log.clear()

    outcome = stack.run()

    assert len(stack.ca.orders) == 1  # no second order
    assert stack.log == [f"store {TLS[1]}"]
    assert stack.secrets.data(TLS)["tls.key"] == key
    assert outcome.message.endswith(f"issued by order {order.url}")


def test_a_new_host_costs_three_writes_of_its_tls_secret_and_no_read() -> None:
    """Three requests on the host's Secrets: the key stored by creating the TLS Secret (refused
    if the name were taken), the order URL and the certificate written to it without reading;
    no next-key Secret to create, read or delete."""
    stack = Stack()
    stack.run()
    assert [call for call in stack.secrets.calls if ACCOUNT[1] not in call] == [
        f"create {TLS[1]}",
        f"apply {TLS[1]} checked",
        f"apply {TLS[1]} checked",
    ]
    assert NEXT_KEY not in stack.secrets.secrets


def test_a_renewal_keeps_its_key_beside_the_serving_certificate_until_it_replaces_it() -> None:
    """The TLS Secret serves on during a renewal: the new key waits in the next-key Secret
    (read once, created outright, deleted by its uid)."""
    stack = Stack()
    stack.ca.validity = timedelta(seconds=10)  # due for renewal at once
    first = stack.run()
    stack.secrets.calls.clear()

    run(stack.step.renew(with_certificate(HOST, first)))

    assert [call for call in stack.secrets.calls if ACCOUNT[1] not in call] == [
        f"read {TLS[1]}",
        f"create {NEXT_KEY[1]}",
        f"apply {NEXT_KEY[1]} checked",
        f"apply {TLS[1]} checked",
        f"delete {NEXT_KEY[1]} by uid",
    ]
    assert NEXT_KEY not in stack.secrets.secrets


def test_a_pending_key_refuses_the_create_and_is_read_and_resumed() -> None:
    stack = Stack()
    stack.ca.fail_validation = AcmeUnavailable("validating mail.example.com: timed out")
    with pytest.raises(AcmeUnavailable):
        stack.run()
    stack.ca.fail_validation = None
    stack.secrets.calls.clear()

    stack.run()

    assert len(stack.ca.orders) == 1
    assert stack.secrets.calls == [
        f"create {TLS[1]}",  # refused: a key is pending in it
        f"read {TLS[1]}",
        f"apply {TLS[1]} checked",
    ]
    assert NEXT_KEY not in stack.secrets.secrets


def test_a_spent_pending_key_is_deleted_and_a_new_one_created() -> None:
    """A renewal finding the pending key the TLS Secret already holds (stored, then killed
    before the key was removed) orders with a new key, created after the spent one is gone."""
    stack = Stack()
    stack.ca.validity = timedelta(seconds=10)  # due for renewal at once
    first = stack.run()
    spent = stack.secrets.data(TLS)["tls.key"]
    run(
        stack.secrets.apply_secret(
            "nginx",
            {"metadata": {"name": NEXT_KEY[1], "annotations": {labels.VIRTUALHOST: HOST.name}}},
            {"tls.key": spent},
        )
    )
    stack.secrets.calls.clear()

    run(stack.step.renew(with_certificate(HOST, first)))

    assert len(stack.ca.orders) == 2
    assert stack.secrets.data(TLS)["tls.key"] != spent
    assert stack.secrets.calls[:5] == [
        f"read {TLS[1]}",
        f"create {NEXT_KEY[1]}",
        f"read {NEXT_KEY[1]}",
        f"delete {NEXT_KEY[1]} by uid",
        f"create {NEXT_KEY[1]}",
    ]


class Begun:
    """Stands in for the catalog (``EarlierAttempts``): the hosts it names as having begun a
    first certificate, or ``None`` before its first list."""

    def __init__(self, names: frozenset[str] | None) -> None:
        self.names = names
        self.asked = 0

    def begun_first_certificates(self) -> frozenset[str] | None:
        self.asked += 1
        return self.names


def left_by_an_earlier_release(stack: Stack, owner: str = HOST.name) -> tuple[bytes, str]:
    """A first key and its order pending in the next-key Secret and no TLS Secret, as a release
    before pending keys went into the TLS Secret left a host killed in its certificate step."""
    stack.ca.fail_validation = AcmeUnavailable("validating mail.example.com: timed out")
    with pytest.raises(AcmeUnavailable):
        stack.run()
    stack.ca.fail_validation = None
    pending = stack.secrets.secrets.pop(TLS)
    key = base64.b64decode(pending["data"]["tls.key"])
    annotations = {**pending["metadata"]["annotations"], labels.VIRTUALHOST: owner}
    manifest = {
        "metadata": {
            "name": NEXT_KEY[1],
            "labels": labels.component_labels(labels.NEXT_KEY_COMPONENT),
            "annotations": annotations,
        },
        "type": "Opaque",
    }
    run(stack.secrets.apply_secret("nginx", manifest, {"tls.key": key}))
    [order] = stack.ca.orders.values()
    stack.secrets.calls.clear()
    stack.log.clear()
    return key, order.url


def test_a_first_key_an_earlier_release_left_in_the_next_key_secret_is_resumed() -> None:
    """Its order resumed, not a second one placed: the key moves into the TLS Secret the step
    created (before the next-key Secret goes: a restart in between resumes from there), the
    certificate is stored beside it."""
    stack = Stack(earlier=Begun(frozenset({HOST.name})))
    key, order_url = left_by_an_earlier_release(stack)

    outcome = stack.run()

    assert len(stack.ca.orders) == 1, "no second order"
    assert outcome.message.endswith(f"issued by order {order_url}")
    assert stack.secrets.data(TLS)["tls.key"] == key
    assert certificate_matches_key(stack.secrets.data(TLS)["tls.crt"], key)
    assert NEXT_KEY not in stack.secrets.secrets
    assert stack.secrets.calls == [
        f"create {TLS[1]}",
        f"read {NEXT_KEY[1]}",
        f"apply {TLS[1]} checked",
        f"delete {NEXT_KEY[1]} by uid",
        f"apply {TLS[1]} checked",
    ]
    assert stack.log[:3] == [
        f"store {TLS[1]}",
        f"store {TLS[1]} order={order_url}",
        f"delete {NEXT_KEY[1]}",
    ]


def test_an_adopted_key_keeps_the_cas_pause() -> None:
    stack = Stack(earlier=Begun(frozenset({HOST.name})))
    key, order_url = left_by_an_earlier_release(stack)
    until = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    pause = {labels.CA_NOT_BEFORE: until.isoformat(), labels.CA_WAIT_REASON: "rate limited"}
    stack.secrets.secrets[NEXT_KEY]["metadata"]["annotations"].update(pause)

    with pytest.raises(StepDeferred) as waiting:
        stack.run()

    assert waiting.value.until == until
    annotations = stack.secrets.secrets[TLS]["metadata"]["annotations"]
    assert annotations[labels.ORDER_URL] == order_url
    assert annotations[labels.CA_NOT_BEFORE] == until.isoformat()
    assert stack.secrets.data(TLS)["tls.key"] == key and NEXT_KEY not in stack.secrets.secrets
    assert len(stack.ca.orders) == 1


def test_a_host_the_catalog_does_not_name_is_not_looked_for_in_the_next_key_secret() -> None:
    """New hosts keep their three requests; the catalog is asked once per process."""
    begun = Begun(frozenset({"another-host"}))
    stack = Stack(earlier=begun)
    left_by_an_earlier_release(stack)

    stack.run()

    assert len(stack.ca.orders) == 2
    assert [call for call in stack.secrets.calls if ACCOUNT[1] not in call] == [
        f"create {TLS[1]}",
        f"apply {TLS[1]} checked",
        f"apply {TLS[1]} checked",
    ]
    other = virtualhost("other.example.com", name="other", uid="uid-2")
    run(stack.step.run(other))
    assert begun.asked == 1


def test_before_the_catalogs_first_list_a_first_certificate_looks_and_asks_again() -> None:
    begun = Begun(None)
    stack = Stack(earlier=begun)

    stack.run()

    assert stack.secrets.calls[:2] == [f"create {TLS[1]}", f"read {NEXT_KEY[1]}"]
    assert len(stack.ca.orders) == 1
    begun.names = frozenset()
    stack.secrets.secrets.pop(TLS)
    stack.secrets.calls.clear()
    stack.run()
    assert f"read {NEXT_KEY[1]}" not in stack.secrets.calls and begun.asked == 2


def test_a_key_kept_for_another_host_is_not_adopted() -> None:
    stack = Stack(earlier=Begun(frozenset({HOST.name})))
    key, _ = left_by_an_earlier_release(stack, owner="another-host")

    stack.run()

    assert len(stack.ca.orders) == 2
    assert stack.secrets.data(TLS)["tls.key"] != key
    assert NEXT_KEY in stack.secrets.secrets, "another's Secret is left as it is"


@pytest.mark.parametrize("secret", [TLS, NEXT_KEY], ids=["tls", "next-key"])
def test_a_secret_of_another_host_under_the_name_stops_the_step_before_any_order(
    secret: tuple[str, str],
) -> None:
    """A new host's TLS Secret, a renewal's next-key Secret (a new host uses none)."""
    stack = Stack()
    host = HOST
    if secret == NEXT_KEY:
        stack.ca.validity = timedelta(seconds=10)  # due for renewal at once
        host = with_certificate(HOST, stack.run())
    other = {
        "metadata": {"name": secret[1], "annotations": {labels.VIRTUALHOST: "someone-else"}},
        "data": {"tls.key": base64.b64encode(b"their key").decode()},
    }
    stack.secrets.secrets[secret] = other
    ordered = dict(stack.ca.orders)

    with pytest.raises(ForeignObjectError) as refused:
        run(stack.step.run(host))

    assert "belongs to VirtualHost someone-else" in str(refused.value)
    assert stack.ca.orders == ordered
    assert stack.secrets.secrets[secret] == other


def test_a_new_order_beyond_the_budget_waits_for_its_slot_before_any_call_to_the_ca() -> None:
    stack = Stack(BudgetLimits(1, timedelta(seconds=60)))
    stack.ca.fail_validation = AcmeUnavailable("validating mail.example.com: timed out")
    with pytest.raises(AcmeUnavailable):
        stack.run()  # the budget's one order, counted before it was placed
    assert stack.log[1:3] == [
        "store vhost-operator-acme-account",
        f"annotate vhost-operator-acme-account {labels.ORDER_BUCKET}",
    ]
    stack.ca.fail_validation = None
    stack.run()  # resumed: the CA counted that order already
    assert len(stack.ca.orders) == 1

    stack.secrets.secrets.pop(TLS)  # its certificate lost: a new order
    with pytest.raises(StepDeferred) as waiting:
        stack.run()
    assert waiting.value.until == stack.now + timedelta(seconds=60)
    assert waiting.value.reason == "WaitingForOrderBudget"
    assert len(stack.ca.orders) == 1, "no new order beyond the budget"
    stack.now = waiting.value.until
    stack.run()
    assert len(stack.ca.orders) == 2


def test_an_order_the_ca_refused_to_create_does_not_count_against_the_budget() -> None:
    stack = Stack(BudgetLimits(1, timedelta(seconds=60)))
    stack.ca.refuse_orders = AcmeRetryLater(
        "creating the order: rateLimited",
        until=datetime.now(UTC) - timedelta(seconds=1),  # over by the next attempt
        reason="rateLimited",
    )
    with pytest.raises(StepDeferred):
        stack.run()
    stack.ca.refuse_orders = None
    stack.run()  # the budget's one order is still there
    assert len(stack.ca.orders) == 1


def test_an_order_placed_in_place_of_an_invalid_one_counts_against_the_budget() -> None:
    stack = Stack(BudgetLimits(2, timedelta(seconds=60)))
    stack.ca.fail_validation = ChallengeFailed("the CA could not fetch the challenge")
    with pytest.raises(ChallengeFailed):
        stack.run()  # order 1, admitted
    stack.ca.fail_validation = None
    stack.run()  # order 1 is invalid: order 2 is created in its place, and counted
    assert len(stack.ca.orders) == 2
    stack.secrets.secrets.pop(TLS)
    with pytest.raises(StepDeferred):
        stack.run()  # a third would exceed the budget
    assert len(stack.ca.orders) == 2


def test_a_renewal_inside_the_cas_window_is_not_counted_against_the_budget() -> None:
    for offers_renewal_info in (True, False):
        stack = Stack(BudgetLimits(1, timedelta(seconds=60)))
        stack.ca.validity = timedelta(seconds=10)  # issued a minute ago: any window has begun
        if offers_renewal_info:
            stack.ca.renewal_windows = {}
        first = stack.run()  # the budget's one order
        if offers_renewal_info:  # Let's Encrypt exempts it: no wait for the budget
            run(stack.step.renew(with_certificate(HOST, first)))
        else:
            with pytest.raises(StepDeferred):
                run(stack.step.renew(with_certificate(HOST, first)))
        assert len(stack.ca.orders) == (2 if offers_renewal_info else 1)


def test_an_order_the_ca_invalidated_is_replaced_by_a_new_one_for_the_same_key() -> None:
    stack = Stack()
    stack.ca.fail_validation = ChallengeFailed("the CA could not fetch the challenge")
    with pytest.raises(ChallengeFailed):
        stack.run()
    key = stack.secrets.data(TLS)["tls.key"]
    stack.ca.fail_validation = None

    stack.run()

    assert [order.status for order in stack.ca.orders.values()] == ["invalid", "valid"]
    assert stack.secrets.data(TLS)["tls.key"] == key


def test_a_certificate_for_another_key_is_never_stored() -> None:
    stack = Stack()
    stack.ca.sign_another_key = True

    with pytest.raises(StepFailed) as failed:
        stack.run()

    assert str(failed.value) == ("the CA returned a certificate that does not match the stored key")
    assert_only_a_pending_key(stack)  # kept for the next attempt


@pytest.mark.parametrize(
    "refusal",
    [
        pytest.param(
            AcmeRefused(
                "creating the order at https://ca.fake: rateLimited: too many new orders",
                problem_type="urn:ietf:params:acme:error:rateLimited",
            ),
            id="refused",
        ),
        pytest.param(
            AcmeUnavailable("creating the order at https://ca.fake: connection refused"),
            id="unavailable",
        ),
    ],
)
def test_a_ca_failure_reaches_the_status_as_the_ca_client_worded_it(
    refusal: AcmeRefused | AcmeUnavailable,
) -> None:
    stack = Stack()
    stack.ca.refuse_orders = refusal
    counted = orders(type(refusal).__name__)

    with pytest.raises(type(refusal)) as failed:
        stack.run()

    assert failed.value is refusal
    assert orders(type(refusal).__name__) == counted + 1
    assert_only_a_pending_key(stack)


def test_a_failed_challenge_is_unpublished_and_its_detail_reported() -> None:
    stack = Stack()
    published: list[str] = []

    async def publish(token: str, key_authorization: str) -> None:
        published.append(token)
        await ChallengeStore.publish(stack.challenges, token, key_authorization)

    stack.challenges.publish = publish  # type: ignore[method-assign]
    stack.ca.fail_validation = ChallengeFailed(
        "validating mail.example.com at https://ca.fake: connection refused"
    )

    with pytest.raises(ChallengeFailed, match="connection refused"):
        stack.run()

    assert len(published) == 1
    assert len(stack.challenges) == 0


def test_an_unusable_stored_key_fails_the_step_with_the_reason() -> None:
    stack = Stack()
    run(
        stack.secrets.apply_secret(
            "nginx",
            {"metadata": {"name": TLS[1], "annotations": {labels.VIRTUALHOST: HOST.name}}},
            {"tls.crt": b"", "tls.key": b"not a key"},
        )
    )

    with pytest.raises(StepFailed) as failed:
        stack.run()

    assert str(failed.value) == (
        "the stored private key is unusable: not an unencrypted PEM private key"
    )
    assert stack.ca.orders == {}


def test_the_account_is_registered_once_and_its_key_stored_once() -> None:
    stack = Stack()
    stack.run()
    assert stack.ca.registrations == 1
    stored = stack.secrets.data(ACCOUNT)["account.key"]

    stack.account = AcmeAccount(stack.ca, stack.secrets, SETTINGS)  # a restart: same Secret
    run(stack.account.ensure_registered())
    run(stack.account.ensure_registered())

    assert stack.ca.registrations == 2
    assert stack.secrets.data(ACCOUNT)["account.key"] == stored
    assert stack.log.count("store vhost-operator-acme-account") == 1


def labels_of(stack: Stack, secret: tuple[str, str]) -> dict[str, str]:
    return dict(stack.secrets.secrets[secret]["metadata"].get("labels") or {})


def assert_only_a_pending_key(stack: Stack) -> None:
    """No certificate stored: the host's TLS Secret holds its key alone, labelled a pending
    key (the agents watch the label ``tls`` only), and no next-key Secret exists."""
    assert stack.secrets.data(TLS)["tls.crt"] == b""
    assert stack.secrets.data(TLS)["tls.key"]
    assert labels_of(stack, TLS)[labels.COMPONENT] == labels.NEXT_KEY_COMPONENT
    assert stack.secrets.secrets[TLS]["type"] == "kubernetes.io/tls"
    assert NEXT_KEY not in stack.secrets.secrets


def with_certificate(host: VirtualHost, outcome: StepOutcome) -> VirtualHost:
    """``host`` as the chain leaves it: its status names the certificate just issued."""
    return host.model_copy(update={"status": VirtualHostStatus(certificate=outcome.certificate)})


def test_with_renewal_information_the_renewal_time_lies_in_the_cas_window() -> None:
    stack = Stack()
    stack.ca.renewal_windows = {}  # the CA offers ARI; the fake suggests the middle third
    outcome = stack.run()

    status = outcome.certificate
    assert status is not None and status.renewal_window is not None
    chain = stack.secrets.data(TLS)["tls.crt"]
    assert status.certificate_id == certificate_id(chain)
    assert stack.ca.renewal_info_requests == [status.certificate_id]
    window = status.renewal_window
    assert window.source == "ari"
    third = (status.not_after - status.not_before) / 3
    assert (window.start, window.end) == (status.not_before + third, status.not_after - third)
    assert window.start <= status.renewal_time <= window.end


def test_without_renewal_information_the_lifetime_rule_stays() -> None:
    outcome = Stack().run()
    status = outcome.certificate
    assert status is not None and status.renewal_window is not None
    assert status.renewal_window.source == "lifetime"
    assert status.renewal_window.start == status.renewal_time == status.renewal_window.end


def test_a_renewal_order_names_the_certificate_it_replaces_and_keeps_the_profile() -> None:
    stack = Stack()
    stack.ca.renewal_windows = {}
    stack.ca.profiles = {"classic": timedelta(days=90), "shortlived": timedelta(days=6)}
    host = HOST.model_copy(
        update={"spec": HOST.spec.model_copy(update={"acme_profile": "shortlived"})}
    )
    first = run(stack.step.run(host))
    assert first.certificate is not None and first.certificate.profile == "shortlived"

    renewed = run(stack.step.renew(with_certificate(host, first)))

    original, renewal = stack.ca.orders.values()
    assert original.options.replaces is None
    assert renewal.options.replaces == first.certificate.certificate_id
    assert renewal.options.profile == "shortlived"
    assert renewed.certificate is not None and renewed.certificate.profile == "shortlived"


def test_a_profile_gives_its_lifetime_and_renewal_follows_that_lifetime() -> None:
    stack = Stack()
    stack.ca.profiles = {"classic": timedelta(days=90), "shortlived": timedelta(days=6)}
    settings = SETTINGS.model_copy(update={"acme_profile": "shortlived"})  # the global default
    stack.step = CertificateStep(stack.account, stack.challenges, stack.secrets, settings)

    status = stack.run().certificate

    assert status is not None
    lifetime = status.not_after - status.not_before
    assert timedelta(days=6) <= lifetime <= timedelta(days=6, minutes=1)
    latest = lifetime * 2 / 3  # every 4 days, or up to the spread earlier
    earliest = latest - lifetime / 3 * settings.renewal_spread
    assert earliest <= status.renewal_time - status.not_before <= latest


def test_a_profile_the_ca_does_not_offer_fails_naming_those_it_offers() -> None:
    stack = Stack()
    stack.ca.profiles = {"shortlived": timedelta(days=6), "classic": timedelta(days=90)}
    host = HOST.model_copy(update={"spec": HOST.spec.model_copy(update={"acme_profile": "tls"})})

    with pytest.raises(AcmeRefused) as refused:
        run(stack.step.run(host))

    assert str(refused.value) == (
        "the CA at https://ca.fake offers no ACME profile 'tls'; it offers: classic, shortlived"
    )
    assert stack.ca.orders == {}


def test_a_profile_at_a_ca_without_profiles_fails_saying_so() -> None:
    stack = Stack()
    host = HOST.model_copy(update={"spec": HOST.spec.model_copy(update={"acme_profile": "x"})})
    with pytest.raises(AcmeRefused, match="offers no ACME profiles, so profile 'x' cannot be"):
        run(stack.step.run(host))


def test_a_window_in_the_past_makes_the_current_certificate_due_at_once() -> None:
    stack = Stack()
    stack.ca.renewal_windows = {}
    first = stack.run()
    assert first.certificate is not None and first.certificate.certificate_id is not None
    # The CA revoked it: RFC 9773 asks for renewal now, with a window that has passed.
    past = datetime.now(UTC) - timedelta(hours=1)
    stack.ca.renewal_windows[first.certificate.certificate_id] = RenewalInfo(
        past, past + timedelta(seconds=1), None
    )

    again = stack.run()  # a status without the window (a restart): asked again, due, renewed

    assert len(stack.ca.orders) == 2
    assert again.certificate is not None
    assert again.certificate.serial != first.certificate.serial


def test_renewal_information_switched_off_keeps_the_lifetime_rule_and_no_replaces() -> None:
    stack = Stack()
    stack.ca.renewal_windows = {}
    settings = SETTINGS.model_copy(update={"renewal_info_enabled": False})
    stack.account = AcmeAccount(stack.ca, stack.secrets, settings)
    stack.step = CertificateStep(stack.account, stack.challenges, stack.secrets, settings)
    first = stack.run()
    assert first.certificate is not None and first.certificate.renewal_window is not None
    assert first.certificate.renewal_window.source == "lifetime"

    run(stack.step.renew(with_certificate(HOST, first)))

    assert stack.ca.renewal_info_requests == []
    assert [order.options.replaces for order in stack.ca.orders.values()] == [None, None]


def test_a_kept_certificate_keeps_its_window_without_asking_the_ca_again() -> None:
    stack = Stack()
    stack.ca.renewal_windows = {}
    first = stack.run()
    asked = list(stack.ca.renewal_info_requests)

    again = run(stack.step.run(with_certificate(HOST, first)))

    assert again.message == "current certificate kept"
    assert again.certificate == first.certificate
    assert stack.ca.renewal_info_requests == asked  # renewal_info keeps it current instead
