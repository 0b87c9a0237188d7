"""What deleting a VirtualHost removes (``provisioning.cleanup.release``), against Secrets and
ConfigMaps in memory: with the TLS Secret retained, a pending key alone in it is no certificate
to keep."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest

from tests.unit.builders import virtualhost
from vhost_operator.kube.objects import SecretData
from vhost_operator.provisioning.cleanup import release
from vhost_operator.resources import labels
from vhost_operator.resources.naming import next_key_secret_name, tls_secret_name
from vhost_operator.settings import Settings

HOST = virtualhost("mail.example.com", name="mail-example-com")
TLS = tls_secret_name(HOST.name)


class MemoryObjects:
    """Secrets by name in one namespace (the ConfigMap is not looked at here)."""

    def __init__(self) -> None:
        self.secrets: dict[str, dict[str, Any]] = {}

    async def delete_configmap(self, namespace: str, name: str, *, owner: str) -> None:
        pass

    async def delete_secret(
        self, namespace: str, name: str, *, owner: str, uid: str | None = None
    ) -> None:
        stored = self.secrets.get(name)
        if stored is not None and uid is not None:
            assert stored["metadata"]["uid"] == uid
        self.secrets.pop(name, None)

    async def read_secret(self, namespace: str, name: str) -> SecretData | None:
        body = self.secrets.get(name)
        return SecretData(body) if body is not None else None


def tls_secret(certificate: bytes, owner: str = HOST.name) -> dict[str, Any]:
    data = {"tls.crt": certificate, "tls.key": b"a key"}
    return {
        "metadata": {"name": TLS, "uid": "uid-tls", "annotations": {labels.VIRTUALHOST: owner}},
        "data": {key: base64.b64encode(value).decode() for key, value in data.items()},
    }


def released(objects: MemoryObjects, *, retain: bool) -> None:
    settings = Settings(nginx_namespace="nginx", retain_certificate_secret=retain)
    asyncio.run(release(HOST, objects, settings))


@pytest.mark.parametrize("retain", [False, True], ids=["deleted", "retained"])
def test_a_certificate_goes_unless_retained(retain: bool) -> None:
    objects = MemoryObjects()
    objects.secrets[TLS] = tls_secret(b"a certificate")
    objects.secrets[next_key_secret_name(HOST.name)] = {"metadata": {"uid": "uid-next"}}

    released(objects, retain=retain)

    assert (TLS in objects.secrets) == retain
    assert next_key_secret_name(HOST.name) not in objects.secrets


def test_a_pending_key_alone_in_the_tls_secret_goes_even_when_certificates_are_retained() -> None:
    """A host deleted before its first certificate was stored: nothing to retain."""
    objects = MemoryObjects()
    objects.secrets[TLS] = tls_secret(b"")

    released(objects, retain=True)

    assert TLS not in objects.secrets


def test_another_hosts_secret_under_the_name_stays() -> None:
    objects = MemoryObjects()
    objects.secrets[TLS] = tls_secret(b"", owner="someone-else")

    released(objects, retain=True)

    assert TLS in objects.secrets
