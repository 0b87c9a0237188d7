"""VirtualHosts for unit tests, as the API server sends them and as the operator models them.

Two builders instead of one per test module: ``virtualhost_body`` gives the raw object a watch,
the webhook or the gate receives; ``virtualhost`` gives the typed model the provisioning code
works on. Both fill only what a test names, so a test reads as the fields it cares about.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vhost_operator.resources.models import VirtualHost, VirtualHostSpec, VirtualHostStatus

HOSTNAME = "h.example.com"


def virtualhost_body(
    hostname: str = HOSTNAME,
    *,
    metadata: Mapping[str, Any] | None = None,
    status: Mapping[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A raw VirtualHost object: ``metadata`` as given, ``spec`` with the hostname and ``spec``."""
    body: dict[str, Any] = {
        "metadata": dict(metadata or {}),
        "spec": {"hostname": hostname, **spec},
    }
    if status is not None:
        body["status"] = dict(status)
    return body


def virtualhost(
    hostname: str = HOSTNAME,
    *,
    name: str = "h",
    uid: str = "u",
    generation: int = 1,
    annotations: Mapping[str, str] | None = None,
    status: VirtualHostStatus | None = None,
) -> VirtualHost:
    """The operator's model of a host (an empty status unless one is given)."""
    return VirtualHost(
        name=name,
        uid=uid,
        generation=generation,
        annotations=dict(annotations or {}),
        spec=VirtualHostSpec(hostname=hostname),
        status=status or VirtualHostStatus(),
    )
