"""The client config the webhook server registers (``handlers.webhook_server``)."""

from __future__ import annotations

import asyncio
from typing import Any

from vhost_operator.handlers.webhook_server import answering, through_service


def test_service_reference_replaces_the_url_and_keeps_the_ca() -> None:
    kopf_config = {"url": "https://vhost-operator-webhook.ops.svc:9443", "caBundle": "Q0E="}

    config = through_service(kopf_config, "ops", "vhost-operator-webhook", 9443)

    assert config == {
        "caBundle": "Q0E=",
        # kopf appends "/<handler id>" to the path, as it does to a URL.
        "service": {"namespace": "ops", "name": "vhost-operator-webhook", "port": 9443, "path": ""},
    }
    assert kopf_config["url"], "kopf's own config is left as it was"


def request(operation: str, spec: dict[str, Any], old_spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "0f1e",
            "operation": operation,
            "object": {"metadata": {"finalizers": ["f"]}, "spec": spec},
            "oldObject": {"metadata": {}, "spec": old_spec},
        },
    }


class KopfReview:
    """Stands in for kopf's review function: records its calls, refuses with a bare 409."""

    def __init__(self) -> None:
        self.calls: list[Any] = []

    async def __call__(self, review: Any, **kwargs: Any) -> Any:
        self.calls.append(review)
        status = {"code": 409, "message": "no"}
        return {"response": {"uid": review["request"]["uid"], "allowed": False, "status": status}}


def test_an_update_that_keeps_the_spec_is_allowed_without_kopf() -> None:
    kopf_review = KopfReview()
    spec = {"hostname": "mail.example.com"}

    answer = asyncio.run(answering(kopf_review)(request("UPDATE", spec, dict(spec)), webhook="v"))

    assert kopf_review.calls == []
    assert answer == {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": "0f1e", "allowed": True},
    }


def test_a_spec_change_goes_to_kopf_and_its_refusal_gets_a_reason() -> None:
    kopf_review = KopfReview()
    review = request("UPDATE", {"hostname": "a.example.com"}, {"hostname": "b.example.com"})

    answer = asyncio.run(answering(kopf_review)(review, webhook="v"))

    assert kopf_review.calls == [review]
    assert answer["response"]["status"]["reason"] == "Conflict"
