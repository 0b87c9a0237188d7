"""Which certificate serves which names, from the TLS Secrets. Pure: raw API dicts in, values out.

A host's names are the DNS names of its certificate's subjectAltName: one today, several once a
VirtualHost carries additional names. Nothing else is read, so the agent needs no view of
VirtualHosts and serves exactly what the CA certified.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from typing import Any

from vhost_operator.certs import Certificate, KeyMaterialError, secret_certificate
from vhost_operator.resources.hostnames import MAX_NAME_LENGTH, hostname_problem

Object = Mapping[str, Any]

_NAME_CHARS = re.compile(r"[a-z0-9.-]+")
"""Names end up in Postfix tables and Dovecot config: an allow-list keeps quoting out of it."""


@dataclasses.dataclass(frozen=True)
class MailHost:
    """One TLS Secret's certificate and the names it serves."""

    secret: str
    names: tuple[str, ...]
    """Its certificate's DNS names that are valid, not wildcards, and no older Secret's."""
    certificate: Certificate

    @property
    def serial(self) -> str:
        return self.certificate.serial


@dataclasses.dataclass(frozen=True)
class MailState:
    hosts: tuple[MailHost, ...]
    """By Secret name."""
    problems: Mapping[str, str]
    """Secret name → why it serves no name (unusable key material, no name of its own)."""


def mail_state(secrets: Iterable[Object]) -> MailState:
    """The hosts the TLS ``secrets`` ask the mail services to serve.

    When two certificates carry one name (a host renamed, or claimed twice), the older Secret
    keeps it, so the outcome depends on neither event order nor listing order; the younger
    serves its other names.
    """
    taken: set[str] = set()
    hosts = []
    problems = {}
    for secret in sorted(secrets, key=_age):
        name = secret["metadata"]["name"]
        try:
            certificate = secret_certificate(secret)
        except KeyMaterialError as error:
            problems[name] = f"TLS Secret {name}: {error}"
            continue
        names = tuple(n for n in dict.fromkeys(certificate.dns_names) if _servable(n, taken))
        if not names:
            problems[name] = (
                f"TLS Secret {name}: its certificate has no name to serve "
                f"({', '.join(certificate.dns_names) or 'no DNS names'}; wildcards and names "
                "an older Secret serves are left out)"
            )
            continue
        taken.update(names)
        hosts.append(MailHost(name, names, certificate))
    return MailState(tuple(sorted(hosts, key=lambda host: host.secret)), problems)


def relevant_secret(secret: Object | None) -> object:
    """What of a TLS Secret the files depend on (its age decides name conflicts)."""
    if secret is None:
        return None
    return _age(secret), tuple(sorted((secret.get("data") or {}).items()))


def _servable(name: str, taken: set[str]) -> bool:
    return (
        name not in taken
        and _NAME_CHARS.fullmatch(name) is not None
        and hostname_problem(name, max_length=MAX_NAME_LENGTH) is None
    )


def _age(secret: Object) -> tuple[str, str]:
    metadata = secret["metadata"]
    return metadata.get("creationTimestamp") or "", metadata["name"]
