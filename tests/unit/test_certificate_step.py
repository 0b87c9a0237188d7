"""The ``certificate`` step against an in-memory CA (``provisioning.certificates``, ``acme.fake``).

The step's own decisions: when to order, which key and order to resume, what it stores in which
order, what it refuses to store, and the message each failure leaves for ``status.error``. The
real client against a real CA (pebble) is tested in ``tests/integration/test_acme_pebble.py``.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any, TypeVar

import pytest
from prometheus_client import REGISTRY

from vhost_operator.acme.challenges import ChallengeStore
from vhost_operator.acme.errors import AcmeRefused, AcmeUnavailable, ChallengeFailed
from vhost_operator.acme.fake import FakeAcme
from vhost_operator.certs import certificate_matches_key, inspect_certificate
from vhost_operator.kube.objects import SecretData
from vhost_operator.provisioning.certificates import AcmeAccount, CertificateStep
from vhost_operator.provisioning.chain import StepFailed, StepOutcome
from vhost_operator.resources import labels
from vhost_operator.resources.models import VirtualHost, VirtualHostSpec
from vhost_operator.resources.naming import next_key_secret_name, tls_secret_name
from vhost_operator.settings import Settings

T = TypeVar("T")

SETTINGS = Settings(
    acme_enabled=True,
    self_check_enabled=False,  # the self-check fetches over HTTP; the fake CA asks nobody
    nginx_namespace="nginx",
    operator_namespace="operator",
)
HOST = VirtualHost(
    name="mail-example-com",
    uid="uid-1",
    generation=1,
    spec=VirtualHostSpec(hostname="mail.example.com"),
)
TLS = ("nginx", tls_secret_name("mail-example-com"))
NEXT_KEY = ("nginx", next_key_secret_name("mail-example-com"))
ACCOUNT = ("operator", "vhost-operator-acme-account")


class MemorySecrets:
    """Secrets by (namespace, name), and a log of every write, for the order of writes."""

    def __init__(self, log: list[str]) -> None:
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.log = log

    async def read_secret(self, namespace: str, name: str) -> SecretData | None:
        body = self.secrets.get((namespace, name))
        return SecretData(body) if body is not None else None

    async def apply_secret(
        self, namespace: str, manifest: dict[str, Any], data: dict[str, bytes]
    ) -> None:
        name = manifest["metadata"]["name"]
        encoded = {key: base64.b64encode(value).decode() for key, value in data.items()}
        self.secrets[(namespace, name)] = {**manifest, "data": encoded}
        annotations = manifest["metadata"].get("annotations") or {}
        order = annotations.get(labels.ORDER_URL)
        self.log.append(f"store {name}" + (f" order={order}" if order else ""))

    async def delete_secret(self, namespace: str, name: str, *, owner: str) -> None:
        self.secrets.pop((namespace, name), None)
        self.log.append(f"delete {name}")

    def data(self, secret: tuple[str, str]) -> dict[str, bytes]:
        stored = SecretData(self.secrets[secret])
        return stored.data


class Stack:
    """The step with its fake CA, in-memory Secrets and challenge store."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.ca = FakeAcme()
        self.secrets = MemorySecrets(self.log)
        self.challenges = ChallengeStore()
        self.account = AcmeAccount(self.ca, self.secrets, SETTINGS)
        self.step = CertificateStep(self.account, self.challenges, self.secrets, SETTINGS)

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
        f"store {NEXT_KEY[1]}",  # the key, before the CA hears of it
        "store vhost-operator-acme-account",
        f"store {NEXT_KEY[1]} order={order.url}",  # resumable from here
        f"store {TLS[1]}",
        f"delete {NEXT_KEY[1]}",
    ]
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
    key = stack.secrets.data(NEXT_KEY)["tls.key"]
    [order] = stack.ca.orders.values()
    stack.ca.fail_validation = None
    stack.log.clear()

    outcome = stack.run()

    assert len(stack.ca.orders) == 1  # no second order
    assert stack.log == [
        f"store {TLS[1]}",
        f"delete {NEXT_KEY[1]}",
    ]
    assert stack.secrets.data(TLS)["tls.key"] == key
    assert outcome.message.endswith(f"issued by order {order.url}")


def test_an_order_the_ca_invalidated_is_replaced_by_a_new_one_for_the_same_key() -> None:
    stack = Stack()
    stack.ca.fail_validation = ChallengeFailed("the CA could not fetch the challenge")
    with pytest.raises(ChallengeFailed):
        stack.run()
    key = stack.secrets.data(NEXT_KEY)["tls.key"]
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
    assert TLS not in stack.secrets.secrets
    assert NEXT_KEY in stack.secrets.secrets  # the key is kept for the next attempt


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
    assert TLS not in stack.secrets.secrets
    assert NEXT_KEY in stack.secrets.secrets


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
            {"metadata": {"name": NEXT_KEY[1], "annotations": {labels.VIRTUALHOST: HOST.name}}},
            {"tls.key": b"not a key"},
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
