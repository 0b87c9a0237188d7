"""Looking at what nginx really serves: a TLS handshake with SNI, and the certificate it shows.

"Ready" means serving: the chain's last nginx step finishes only when nginx presents the newly
issued certificate for the hostname. No verification here (the operator may not trust the CA,
e.g. a staging CA); the caller compares the serial with the one it just stored.
"""

from __future__ import annotations

import asyncio
import functools
import ssl

from cryptography import x509


class ProbeFailed(Exception):
    """nginx could not be reached, or did not complete a TLS handshake."""


@functools.cache
def _probe_context() -> ssl.SSLContext:
    """One client context for every probe. It verifies nothing, so it loads no CA store:
    ``ssl.create_default_context()`` reads the system's whole bundle each time, tens of
    milliseconds of CPU on the event loop per probe, which a burst of 1,000 hosts felt."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def served_certificate_serial(address: str, hostname: str, timeout: float = 5.0) -> str:
    """The serial (lowercase hex, as ``certs`` writes it) nginx presents for ``hostname``."""
    host, _, port = address.rpartition(":")
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(
                host, int(port), ssl=_probe_context(), server_hostname=hostname
            ),
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
