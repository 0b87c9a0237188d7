"""The webhooks of the operator's webhook configurations (``admission.configuration``)."""

from __future__ import annotations

from vhost_operator.admission.configuration import (
    FINALIZER_MISSING,
    REVIEW_NEEDED,
    mutating_webhooks,
    validating_webhooks,
)


def test_each_handler_gets_its_path_and_the_match_condition() -> None:
    kopf_config = {"url": "https://127.0.0.1:9443", "caBundle": "Q0E="}

    webhooks = validating_webhooks(kopf_config, suffix="vhost-operator.io")

    assert [w["name"] for w in webhooks] == [
        "virtualhosts.vhost-operator.io",
        "maildomains.vhost-operator.io",
    ]
    assert [w["clientConfig"] for w in webhooks] == [
        {"url": "https://127.0.0.1:9443/virtualhosts", "caBundle": "Q0E="},
        {"url": "https://127.0.0.1:9443/maildomains", "caBundle": "Q0E="},
    ]
    assert webhooks[0]["rules"][0]["resources"] == ["virtualhosts"]
    assert webhooks[0]["rules"][0]["apiGroups"] == ["vhost-operator.io"]
    assert all(w["failurePolicy"] == "Ignore" for w in webhooks)
    assert all(w["matchConditions"][0]["expression"] == REVIEW_NEEDED for w in webhooks)
    assert kopf_config["url"] == "https://127.0.0.1:9443", "kopf's own config is left as it was"


def test_a_service_reference_gets_the_handler_in_its_path() -> None:
    service = {"namespace": "ops", "name": "webhook", "port": 9443, "path": ""}

    [first, _] = validating_webhooks({"service": service, "caBundle": "Q0E="}, suffix="x")

    assert first["clientConfig"]["service"] == service | {"path": "/virtualhosts"}
    assert service["path"] == ""


def test_the_mutating_webhook_adds_the_finalizer_on_create_only() -> None:
    """To both kinds kopf handles (both get kopf's one finalizer), in one webhook."""
    kopf_config = {"url": "https://127.0.0.1:9443", "caBundle": "Q0E="}

    [webhook] = mutating_webhooks(kopf_config, suffix="vhost-operator.io")

    assert webhook["name"] == "finalizer.vhost-operator.io"
    assert webhook["clientConfig"] == {
        "url": "https://127.0.0.1:9443/finalizer",
        "caBundle": "Q0E=",
    }
    assert webhook["rules"] == [
        {
            "apiGroups": ["vhost-operator.io"],
            "apiVersions": ["v1alpha1"],
            "resources": ["virtualhosts", "maildomains"],
            "operations": ["CREATE"],
            "scope": "*",
        }
    ]
    # Never a failed or stalled create because the operator is down: kopf adds it then.
    assert webhook["failurePolicy"] == "Ignore"
    assert webhook["timeoutSeconds"] <= 5
    assert webhook["sideEffects"] == "None"
    assert webhook["matchConditions"] == [
        {"name": "finalizer-missing", "expression": FINALIZER_MISSING}
    ]
    assert "'vhost-operator.io/finalizer'" in FINALIZER_MISSING
