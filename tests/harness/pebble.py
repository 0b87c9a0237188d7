"""A real ACME CA for tests: Let's Encrypt's ``pebble`` with ``pebble-challtestsrv`` as its DNS.

Both are built from their Go module, pinned in ``hack/pebble/go.mod``, by
``hack/build-pebble.sh`` (cached in ``~/.cache/vhost-operator``; ``$VHOST_OPERATOR_PEBBLE_DIR``
names a directory with both binaries instead): pebble 2.7 and later offer ACME Renewal
Information and ACME profiles, which Debian's 2.4 lacks.

Everything listens on 127.0.0.1 on free ports. The challenge test server answers every name with
127.0.0.1 (and no AAAA), so pebble validates HTTP-01 against ``http://127.0.0.1:<http_port>``,
where the test runs its own challenge responder. ``address`` moves both, the ACME API and the
address every name resolves to, to another local address (a real node's, which pods reach).
Environment that matters:

- ``PEBBLE_VA_NOSLEEP=1``: validate at once instead of after up to 15 random seconds.
- ``PEBBLE_VA_ALWAYS_VALID=0``: really fetch the challenge (failing-challenge tests need it).
- ``PEBBLE_WFE_NONCEREJECT=0``: pebble rejects 5% of good nonces by default and the acme
  library retries only once, so two rejections in a row would make tests flaky.
- ``PEBBLE_AUTHZREUSE=0``: pebble reuses valid authorizations 50% of the time by default, which
  would let a test that expects a validation to happen skip it by chance.

Usage::

    with Pebble(http_port=responder_port) as pebble:
        AcmeConfig(directory_url=pebble.directory_url, ca_bundle_path=pebble.ca_bundle_path)
"""

from __future__ import annotations

import functools
import json
import os
import re
import ssl
import subprocess
import tempfile
import urllib.request
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from acme import client, messages
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from josepy.jwa import ES256
from josepy.jwk import JWKEC

from tests.harness.controlplane import REPO
from tests.harness.pki import CertificateAuthority
from tests.harness.processes import ManagedProcess, free_port, http_ok, log_tail
from vhost_operator import certs
from vhost_operator.acme.connections import TrustingAdapter

PEBBLE = "pebble"
CHALLTESTSRV = "pebble-challtestsrv"
LOCALHOST = "127.0.0.1"
BUILD_SCRIPT = REPO / "hack" / "build-pebble.sh"
PEBBLE_DIR_ENV = "VHOST_OPERATOR_PEBBLE_DIR"
"""Environment variable naming a directory with ``pebble`` and ``pebble-challtestsrv`` to use
instead of the ones the script builds."""

DEFAULT_VALIDITY = 5 * 365 * 24 * 3600
"""Seconds issued certificates last unless a test says otherwise: pebble 2.4's default, so a
certificate never comes due for renewal during a test by accident (pebble 2.7 and later
default to 90 days)."""

_ISSUED = re.compile(r"Issued certificate serial ([0-9a-f]+) for order")

_ENVIRONMENT = {
    "PEBBLE_VA_NOSLEEP": "1",
    "PEBBLE_VA_ALWAYS_VALID": "0",
    "PEBBLE_WFE_NONCEREJECT": "0",
    "PEBBLE_AUTHZREUSE": "0",
}


@functools.cache
def binary_dir() -> Path:
    """``$VHOST_OPERATOR_PEBBLE_DIR``, else the cached build (built on first use: seconds)."""
    configured = os.environ.get(PEBBLE_DIR_ENV)
    if configured:
        return Path(configured)
    built = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], check=True, stdout=subprocess.PIPE, text=True
    )
    return Path(built.stdout.strip().splitlines()[-1])


def available() -> bool:
    """Whether both binaries are there (built from the pinned module)."""
    directory = binary_dir()
    return (directory / PEBBLE).is_file() and (directory / CHALLTESTSRV).is_file()


class Pebble:
    """Runs pebble and its DNS for the length of a ``with`` block; see the module docstring.

    ``eab_keys`` (key id → base64url MAC key) makes External Account Binding mandatory;
    ``certificate_validity`` is how many seconds issued certificates last (default: 5 years).
    ``profiles`` (name → validity in seconds) lists ACME profiles in the directory instead of
    the single ``default`` one; an order that names none gets one of them at random (pebble's
    way of keeping clients honest). ``environment`` overrides the settings above (the fault
    suite turns pebble's own faults on).
    """

    def __init__(
        self,
        http_port: int,
        *,
        eab_keys: dict[str, str] | None = None,
        workdir: Path | None = None,
        acme_port: int | None = None,
        certificate_validity: int | None = None,
        environment: Mapping[str, str] | None = None,
        address: str = LOCALHOST,
        profiles: Mapping[str, int] | None = None,
    ) -> None:
        self.http_port = http_port
        self.address = address
        validity = certificate_validity or DEFAULT_VALIDITY
        self.profiles = dict(profiles) if profiles is not None else {"default": validity}
        self.acme_port = acme_port or free_port()
        self.management_port = free_port()
        self._eab_keys = eab_keys
        self._environment = {**_ENVIRONMENT, **(environment or {})}
        self._workdir = workdir or Path(tempfile.mkdtemp(prefix="vhost-pebble-"))
        self._workdir.mkdir(parents=True, exist_ok=True)
        self._processes: list[ManagedProcess] = []

    @property
    def directory_url(self) -> str:
        return f"https://{self.address}:{self.acme_port}/dir"

    @property
    def ca_bundle_path(self) -> Path:
        """The CA of pebble's own HTTPS certificate (the ACME API's, not the issuing root)."""
        return self._workdir / "tls-ca.crt"

    def __enter__(self) -> Pebble:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is not None:
            print(self.logs())
        self.stop()

    def start(self) -> None:
        """Start the DNS server, then pebble, and wait until the directory answers."""
        try:
            dns = f"{LOCALHOST}:{free_port()}"
            self._spawn("pebble-challtestsrv", self._challtestsrv_argv(dns, self.address), {})
            pebble_binary = str(binary_dir() / PEBBLE)
            argv = [pebble_binary, "-config", str(self._write_config()), "-dnsserver", dns]
            pebble = self._spawn("pebble", argv, self._environment)
            pebble.wait_until(
                lambda: http_ok(self.directory_url, self._tls_context()),
                timeout=15,
                what="ACME directory",
            )
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop both processes; their logs stay in the work directory for :meth:`logs`."""
        for process in reversed(self._processes):
            process.stop(timeout=5)
        self._processes.clear()

    def logs(self, lines: int = 60) -> str:
        """The tail of both processes' output, for failure reports."""
        return "\n".join(
            f"----- {log.name} -----\n{log_tail(log, lines)}"
            for log in sorted(self._workdir.glob("*.log"))
        )

    def log_count(self, text: str) -> int:
        """How often ``text`` occurs in pebble's log: "Added order" once per order created,
        "Issued certificate" once per certificate."""
        return (self._workdir / "pebble.log").read_text(errors="replace").count(text)

    def root_pem(self) -> bytes:
        """The root pebble issues under (new at every start), from its management interface."""
        url = f"https://{LOCALHOST}:{self.management_port}/roots/0"
        with urllib.request.urlopen(url, context=self._tls_context(), timeout=5) as response:
            body: bytes = response.read()
            return body

    def revoke(self, chain_pem: bytes, key_pem: bytes) -> None:
        """Revoke a certificate through ACME (RFC 8555 section 7.6), signed with its own key:
        what a key holder (or the CA, in an incident) does. Its renewal information then
        suggests renewing at once."""
        key = certs.load_private_key(key_pem)
        net = client.ClientNetwork(JWKEC(key=key), alg=ES256, user_agent="vhost-operator-test")
        net.session.mount("https://", TrustingAdapter(str(self.ca_bundle_path)))
        directory = messages.Directory.from_json(
            net.get(self.directory_url, content_type="application/json").json()
        )
        leaf = x509.load_pem_x509_certificate(chain_pem)
        client.ClientV2(directory, net).revoke(leaf, rsn=1)  # keyCompromise

    def set_renewal_window(self, chain_pem: bytes, start: datetime, end: datetime) -> None:
        """Make pebble's renewal information suggest ``start``..``end`` for the chain's leaf
        (its management interface), as a CA moves a window in an incident."""
        leaf = x509.load_pem_x509_certificates(chain_pem)[0]
        window = {"start": _rfc3339(start), "end": _rfc3339(end)}
        body = json.dumps(
            {
                "Certificate": leaf.public_bytes(serialization.Encoding.PEM).decode(),
                "ARIResponse": json.dumps({"suggestedWindow": window}),
            }
        ).encode()
        url = f"https://{LOCALHOST}:{self.management_port}/set-renewal-info/"
        request = urllib.request.Request(url, data=body, method="POST")
        with urllib.request.urlopen(request, context=self._tls_context(), timeout=5) as answer:
            answer.read()

    def issued_serials(self) -> list[int]:
        """The serial number of every certificate issued since start, from pebble's log (one
        line per issuance): how tests tell "issued once" from "ordered twice"."""
        log = self._workdir / "pebble.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        return [int(serial, 16) for serial in _ISSUED.findall(text)]

    def _tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_bundle_path))

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> ManagedProcess:
        process = ManagedProcess(name, argv, self._workdir / f"{name}.log", env)
        self._processes.append(process)
        return process

    @staticmethod
    def _challtestsrv_argv(dns: str, answer: str) -> list[str]:
        no_server = ""  # an empty address disables that challenge server
        return [
            str(binary_dir() / CHALLTESTSRV),
            "-defaultIPv4",
            answer,
            "-defaultIPv6",
            no_server,  # no AAAA answers: pebble must not try ::1, where nothing listens
            "-dnsserver",  # pebble 2.4's challtestsrv called it -dns01
            dns,
            "-doh",
            no_server,
            "-management",
            f"{LOCALHOST}:{free_port()}",
            "-http01",
            no_server,
            "-https01",
            no_server,
            "-tlsalpn01",
            no_server,
        ]

    def _write_config(self) -> Path:
        certificate, key = self._write_tls_material()
        settings: dict[str, object] = {
            "listenAddress": f"{self.address}:{self.acme_port}",
            "managementListenAddress": f"{LOCALHOST}:{self.management_port}",
            "certificate": str(certificate),
            "privateKey": str(key),
            "httpPort": self.http_port,
            "tlsPort": free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": self._eab_keys is not None,
        }
        if self._eab_keys is not None:
            settings["externalAccountMACKeys"] = self._eab_keys
        settings["profiles"] = {
            name: {"description": f"{name} ({validity} s)", "validityPeriod": validity}
            for name, validity in self.profiles.items()
        }
        path = self._workdir / "pebble-config.json"
        path.write_text(json.dumps({"pebble": settings}, indent=2))
        return path

    def _write_tls_material(self) -> tuple[Path, Path]:
        """Pebble's HTTPS identity for its addresses, from a throwaway CA that clients must
        trust."""
        ca = CertificateAuthority("pebble test TLS CA")
        self.ca_bundle_path.write_bytes(ca.pair.certificate_pem)
        addresses = tuple(sorted({LOCALHOST, self.address}))
        pair = ca.issue("localhost", dns_names=("localhost",), ip_addresses=addresses)
        return pair.write(self._workdir, "pebble-tls")


def _rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


__all__ = ["Pebble", "available", "binary_dir"]
