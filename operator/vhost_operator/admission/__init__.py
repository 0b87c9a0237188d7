"""Admission: what the webhooks accept and add, their configurations, and their TLS material.

``rules`` is pure (objects in, a refusal or nothing out); ``finalizer`` (pure) is what the
mutating webhook adds to a new VirtualHost (kopf's finalizer); ``configuration`` (pure) builds the
webhooks of the Validating- and MutatingWebhookConfiguration, with the match conditions that
spare the API server the calls with nothing to do; ``tls`` makes the webhook's CA and serving
certificate. The kopf handlers that call them live in ``vhost_operator.handlers``.
"""
