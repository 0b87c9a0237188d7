"""The webhook configurations the operator writes. Pure: no I/O, no kopf.

The ValidatingWebhookConfiguration holds the reviews of VirtualHosts and MailDomains, the
MutatingWebhookConfiguration (same name) the webhook that adds kopf's finalizer to a new
VirtualHost or MailDomain (``admission.finalizer``).

kopf's managed mode writes one too, but without ``matchConditions``: the API server then calls
the webhook for every update of a VirtualHost, kopf's own bookkeeping (its finalizer, its record
of the last handled configuration) included, two or more calls per host that the webhook
answers "allowed" without a look (``rules.review_needed``). Each costs the API server an
AdmissionReview of both objects, a TLS request and its wait, and the operator the request's
parsing. With :data:`REVIEW_NEEDED` as a match condition, the API server (Kubernetes >= 1.30;
an older one drops the field and calls, and ``review_needed`` still answers at once) skips
those itself.

Otherwise the webhooks are what kopf's ``build_webhooks`` makes of our two handlers: named
``<handler id>.<configuration name>``, the client config kopf's server yields with the handler
id appended to its URL or Service path (kopf routes ``POST <path>/<handler id>``), failure
policy Ignore (see ``handlers.admission``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Literal

from vhost_operator.resources.models import (
    FINALIZER,
    GROUP,
    MAILDOMAINS,
    RETRY_ANNOTATION,
    VERSION,
    VIRTUALHOSTS,
)

REVIEWED = {VIRTUALHOSTS: VIRTUALHOSTS, MAILDOMAINS: MAILDOMAINS}
"""Webhook handler id → the resource (plural) it reviews."""
OPERATIONS: tuple[Literal["CREATE", "UPDATE"], ...] = ("CREATE", "UPDATE")
"""The operations the webhook reviews (the handlers' ``operations``)."""

REVIEW_NEEDED = (
    "request.operation != 'UPDATE'"
    " || object.?spec != oldObject.?spec"
    f" || object.metadata.?annotations[?'{RETRY_ANNOTATION}']"
    f" != oldObject.metadata.?annotations[?'{RETRY_ANNOTATION}']"
)
"""CEL for ``rules.review_needed``: every create, and an update that changes the spec or the
retry annotation (optional field selection: an absent spec or annotation is a value too, so
adding or removing one is a change, and nothing is ever an evaluation error)."""

TIMEOUT_SECONDS = 30
"""kopf's: the most the API server allows."""

FINALIZING = "finalizer"
"""Handler id of the mutating webhook (kopf routes ``POST <path>/finalizer`` to it)."""
FINALIZED = (VIRTUALHOSTS, MAILDOMAINS)
"""The resources (plural) whose new objects get kopf's finalizer at admission: both kinds kopf
handles, which kopf gives the same finalizer (its ``persistence.finalizer`` is one setting)."""

FINALIZER_MISSING = (
    f"!has(object.metadata.finalizers) || !object.metadata.finalizers.exists(f, f == '{FINALIZER}')"
)
"""CEL: the new object lacks kopf's finalizer (one created with it, from a backup say, needs no
call; the webhook leaves such an object as it is anyway)."""

FINALIZING_TIMEOUT_SECONDS = 2
"""Short: a create waits for the webhook at most this long, and without its answer kopf adds
the finalizer itself (one patch more), so waiting longer buys little."""


def validating_webhooks(client_config: Mapping[str, Any], *, suffix: str) -> list[dict[str, Any]]:
    """The configuration's ``webhooks``, for the client config kopf's server yields."""
    return [
        {
            "name": f"{handler_id}.{suffix}",
            "sideEffects": "None",
            "failurePolicy": "Ignore",
            "matchPolicy": "Equivalent",
            "rules": [
                {
                    "apiGroups": [GROUP],
                    "apiVersions": [VERSION],
                    "resources": [plural],
                    "operations": list(OPERATIONS),
                    "scope": "*",
                }
            ],
            "matchConditions": [{"name": "review-needed", "expression": REVIEW_NEEDED}],
            "clientConfig": _for_handler(client_config, handler_id),
            "timeoutSeconds": TIMEOUT_SECONDS,
            "admissionReviewVersions": ["v1", "v1beta1"],
        }
        for handler_id, plural in REVIEWED.items()
    ]


def mutating_webhooks(client_config: Mapping[str, Any], *, suffix: str) -> list[dict[str, Any]]:
    """The MutatingWebhookConfiguration's ``webhooks``: kopf's finalizer on the create of a
    VirtualHost or a MailDomain (one webhook, one rule: the same change to either).
    failurePolicy Ignore: a create never fails because the operator is down."""
    return [
        {
            "name": f"{FINALIZING}.{suffix}",
            "sideEffects": "None",
            "failurePolicy": "Ignore",
            "matchPolicy": "Equivalent",
            "reinvocationPolicy": "Never",
            "rules": [
                {
                    "apiGroups": [GROUP],
                    "apiVersions": [VERSION],
                    "resources": list(FINALIZED),
                    "operations": ["CREATE"],
                    "scope": "*",
                }
            ],
            "matchConditions": [{"name": "finalizer-missing", "expression": FINALIZER_MISSING}],
            "clientConfig": _for_handler(client_config, FINALIZING),
            "timeoutSeconds": FINALIZING_TIMEOUT_SECONDS,
            "admissionReviewVersions": ["v1", "v1beta1"],
        }
    ]


def _for_handler(client_config: Mapping[str, Any], handler_id: str) -> dict[str, Any]:
    config = copy.deepcopy(dict(client_config))
    if (url := config.get("url")) is not None:
        config["url"] = f"{url.rstrip('/')}/{handler_id}"
    if (service := config.get("service")) is not None:
        service["path"] = f"{service.get('path', '')}/{handler_id}"
    return config
