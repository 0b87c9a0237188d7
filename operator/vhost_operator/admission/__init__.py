"""Admission: what the validating webhook accepts, and the webhook's own TLS material.

``rules`` is pure (objects in, a refusal or nothing out); ``configuration`` (pure) builds the
webhooks of the ValidatingWebhookConfiguration, with the match condition that spares the API
server the calls the rules have nothing to say about; ``tls`` makes the webhook's CA and serving
certificate. The kopf handlers that call them live in ``vhost_operator.handlers``.
"""
