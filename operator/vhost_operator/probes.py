"""Looking at what nginx really serves: a TLS handshake with SNI, and the certificate it shows.

"Ready" means serving: the chain's last nginx step finishes only when nginx presents the newly
issued certificate for the hostname. No verification here (the operator may not trust the CA,
e.g. a staging CA); the caller compares the serial with the one it just stored.
"""

from __future__ import annotations

import asyncio
import ssl

from cryptography import x509


class ProbeFailed(Exception):
    """nginx could not be reached, or did not complete a TLS handshake."""


async def served_certificate_serial(address: str, hostname: str, timeout: float = 5.0) -> str:
    """The serial (lowercase hex, as ``acme.keys`` writes it) nginx presents for ``hostname``."""
    host, _, port = address.rpartition(":")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host, int(port), ssl=context, server_hostname=hostname),
            timeout,
        )
    except (OSError, TimeoutError, ssl.SSLError) as error:
        raise ProbeFailed(
            f"no TLS handshake with nginx at {address} for {hostname} ({type(error).__name__})"
        ) from None
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
    return format(x509.load_der_x509_certificate(der).serial_number, "x")
