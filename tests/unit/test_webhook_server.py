"""The client config the webhook server registers (``handlers.webhook_server``)."""

from __future__ import annotations

from vhost_operator.handlers.webhook_server import through_service


def test_service_reference_replaces_the_url_and_keeps_the_ca() -> None:
    kopf_config = {"url": "https://vhost-operator-webhook.ops.svc:9443", "caBundle": "Q0E="}

    config = through_service(kopf_config, "ops", "vhost-operator-webhook", 9443)

    assert config == {
        "caBundle": "Q0E=",
        # kopf appends "/<handler id>" to the path, as it does to a URL.
        "service": {"namespace": "ops", "name": "vhost-operator-webhook", "port": 9443, "path": ""},
    }
    assert kopf_config["url"], "kopf's own config is left as it was"
