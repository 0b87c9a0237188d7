"""The files one generation holds for a mail service, and the report. Pure.

A generation is a directory the agent writes whole and then makes current (``generations``)::

    postfix/current/sni                     tls_server_sni_maps source: name → key+chain file
    postfix/current/sni.db                  built by ``postmap -F`` (holds the files' contents)
    postfix/current/chains/<secret>.<serial>.pem     key, then the full chain (mode 0600)
    dovecot/current/local_names.conf        one ``local_name`` block per name
    dovecot/current/certs/<secret>.<serial>.crt, .key
    <service>/current/served.json           Secret → serial, what this generation serves

Files name the certificate by serial, so a file of a host that did not change is the same file
in the next generation (linked, not written again), and a renewal is a new file, never a file
changed under a running server.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping, Sequence

from vhost_operator.mailtls.desired import MailHost, MailState
from vhost_operator.resources.mailtls import MailServing, encode

POSTFIX = "postfix"
DOVECOT = "dovecot"
SERVICES = (POSTFIX, DOVECOT)

SERVED_FILE = "served.json"
POSTFIX_MAP = "sni"
DOVECOT_CONFIG = "local_names.conf"

MAX_ERROR_LENGTH = 1024
"""Characters of a service's complaint kept in the report."""


@dataclasses.dataclass(frozen=True)
class GenerationFile:
    path: str
    """Relative to the generation's directory."""
    content: bytes
    private: bool = False
    """Holds a private key: mode 0600."""
    named_by_content: bool = False
    """Its name identifies its content (Secret and serial): a generation that has it already
    passes it on to the next one as a hard link."""


def generation_files(
    service: str, hosts: Sequence[MailHost], directory: str
) -> list[GenerationFile]:
    """Everything ``service`` reads from a generation in ``directory`` (an absolute path: the
    files refer to each other by it)."""
    files = (
        postfix_files(hosts, directory) if service == POSTFIX else dovecot_files(hosts, directory)
    )
    return [*files, GenerationFile(SERVED_FILE, json.dumps(served(hosts)).encode())]


def served(hosts: Iterable[MailHost]) -> dict[str, list[str]]:
    """What a generation serves: Secret → its serial, then its names (``served.json``)."""
    return {host.secret: [host.serial, *host.names] for host in hosts}


def postfix_files(hosts: Iterable[MailHost], directory: str) -> list[GenerationFile]:
    """One key+chain file per host (the key must come first, ``smtpd_tls_chain_files`` order),
    and the map from each name to it. ``postmap -F`` copies the files into the indexed table."""
    files = []
    lines = ["# Written by the vhost-operator mail TLS agent; replaced on every change.\n"]
    for host in hosts:
        chain = f"chains/{_stem(host)}.pem"
        files.append(
            GenerationFile(chain, host.certificate.key_pem + host.certificate.chain_pem, True, True)
        )
        lines += [f"{name} {directory}/{chain}\n" for name in host.names]
    return [*files, GenerationFile(POSTFIX_MAP, "".join(lines).encode())]


def dovecot_files(hosts: Iterable[MailHost], directory: str) -> list[GenerationFile]:
    """Certificate and key per host, and a ``local_name`` block per name (Dovecot 2.3 takes one
    name per block). ``<file`` makes Dovecot read the file when it loads its config."""
    files = []
    blocks = ["# Written by the vhost-operator mail TLS agent; replaced on every change.\n"]
    for host in hosts:
        crt, key = f"certs/{_stem(host)}.crt", f"certs/{_stem(host)}.key"
        files.append(GenerationFile(crt, host.certificate.chain_pem, False, True))
        files.append(GenerationFile(key, host.certificate.key_pem, True, True))
        blocks += [
            f"local_name {name} {{\n"
            f"  ssl_cert = <{directory}/{crt}\n"
            f"  ssl_key = <{directory}/{key}\n"
            "}\n"
            for name in host.names
        ]
    return [*files, GenerationFile(DOVECOT_CONFIG, "".join(blocks).encode())]


def _stem(host: MailHost) -> str:
    return f"{host.secret}.{host.serial}"


# -- the report ----------------------------------------------------------------------------------


def report(
    state: MailState,
    served: Mapping[str, Mapping[str, str]],
    refusals: Mapping[str, str],
) -> dict[str, str]:
    """The report ConfigMap's data: per TLS Secret, the serial each service serves and why a
    service does not serve the Secret's current certificate.

    ``served``: service → Secret → serial its current generation serves; ``refusals``: service →
    why it refused the latest generation (its last good one keeps serving).
    """
    data = {}
    for host in state.hosts:
        serving = {service: secrets.get(host.secret) for service, secrets in served.items()}
        errors = {
            service: _clip(message)
            for service, message in refusals.items()
            if serving.get(service) != host.serial
        }
        data[host.secret] = encode(MailServing(serving, errors))
    for secret, problem in state.problems.items():
        serving = {service: secrets.get(secret) for service, secrets in served.items()}
        data[secret] = encode(MailServing(serving, dict.fromkeys(served, _clip(problem))))
    return data


def report_patch(current: Mapping[str, str], wanted: Mapping[str, str]) -> dict[str, str | None]:
    """A merge patch from ``current`` data to ``wanted``: changed keys, and ``None`` (removal)
    for Secrets gone."""
    patch: dict[str, str | None] = {k: v for k, v in wanted.items() if current.get(k) != v}
    patch.update(dict.fromkeys(set(current) - set(wanted)))
    return patch


def _clip(message: str) -> str:
    return message if len(message) <= MAX_ERROR_LENGTH else message[: MAX_ERROR_LENGTH - 3] + "..."
