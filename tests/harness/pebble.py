"""A real ACME CA for tests: Let's Encrypt's ``pebble`` with ``pebble-challtestsrv`` as its DNS.

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

import json
import re
import shutil
import ssl
import tempfile
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from tests.harness.pki import CertificateAuthority
from tests.harness.processes import ManagedProcess, free_port, http_ok, log_tail

PEBBLE = "pebble"
CHALLTESTSRV = "pebble-challtestsrv"
LOCALHOST = "127.0.0.1"

_ISSUED = re.compile(r"Issued certificate serial ([0-9a-f]+) for order")

_ENVIRONMENT = {
    "PEBBLE_VA_NOSLEEP": "1",
    "PEBBLE_VA_ALWAYS_VALID": "0",
    "PEBBLE_WFE_NONCEREJECT": "0",
    "PEBBLE_AUTHZREUSE": "0",
}


def available() -> bool:
    """Whether both binaries are installed (Debian package ``pebble``)."""
    return shutil.which(PEBBLE) is not None and shutil.which(CHALLTESTSRV) is not None


class Pebble:
    """Runs pebble and its DNS for the length of a ``with`` block; see the module docstring.

    ``eab_keys`` (key id → base64url MAC key) makes External Account Binding mandatory;
    ``certificate_validity`` is how many seconds issued certificates last (default: 5 years).
    ``environment`` overrides the settings above (the fault suite turns pebble's own faults on).
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
    ) -> None:
        self.http_port = http_port
        self.address = address
        self._certificate_validity = certificate_validity
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
            argv = [PEBBLE, "-config", str(self._write_config()), "-dnsserver", dns]
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
            CHALLTESTSRV,
            "-defaultIPv4",
            answer,
            "-defaultIPv6",
            no_server,  # no AAAA answers: pebble must not try ::1, where nothing listens
            "-dns01",
            dns,
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
        if self._certificate_validity is not None:
            settings["certificateValidityPeriod"] = self._certificate_validity
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


__all__ = ["Pebble", "available"]
