"""Keys, CSRs and certificate inspection: pure functions over PEM bytes, no I/O, no ACME.

Everything crosses module boundaries as PEM ``bytes`` because that is how the material is stored
(Kubernetes Secrets) and handed to nginx. Malformed input raises :class:`KeyMaterialError`, a
``ValueError``, so callers can report "the stored key is unusable" instead of a library trace.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import hashlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import NameOID

# A certificate subject's common name may hold at most 64 characters (RFC 5280 ub-common-name);
# longer hostnames go into the subjectAltName only, which is what CAs validate anyway.
_MAX_COMMON_NAME = 64

SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
"""The key types a certificate or ACME account key may have here (what ACME CAs accept)."""


class KeyMaterialError(ValueError):
    """PEM input is not a usable key, CSR or certificate (corrupt, empty or unsupported type)."""


@dataclasses.dataclass(frozen=True)
class CertificateInfo:
    """The facts about a leaf certificate that status and renewal decisions need."""

    not_before: datetime
    """Start of validity, timezone-aware UTC."""
    not_after: datetime
    """End of validity, timezone-aware UTC."""
    serial: str
    """Serial number in lowercase hex without ``0x`` (the form ``openssl x509 -serial`` shows,
    ignoring case), as CAs and revocation tools look it up."""
    dns_names: tuple[str, ...]
    """DNS names of the subjectAltName extension, in certificate order."""

    @property
    def lifetime_seconds(self) -> float:
        """The certificate's full validity period, which renewal timing is based on."""
        return (self.not_after - self.not_before).total_seconds()


def new_private_key_pem() -> bytes:
    """Generate a fresh ECDSA P-256 key as unencrypted SEC 1 PEM ("EC PRIVATE KEY").

    P-256 is accepted by every public ACME CA, small enough to store by the thousand and fast in
    TLS handshakes; the same type serves for ACME account keys. SEC 1 rather than PKCS#8, like
    cert-manager's default encoding: nginx (OpenSSL 3) loads it about 15% faster, which counts
    when every reload loads a thousand keys.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.TraditionalOpenSSL,
        encryption_algorithm=serialization.NoEncryption(),
    )


def load_private_key(key_pem: bytes) -> SigningKey:
    """Parse an unencrypted PEM private key of a type ACME CAs sign for (EC or RSA)."""
    try:
        key: PrivateKeyTypes = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as error:
        raise KeyMaterialError("not an unencrypted PEM private key") from error
    if isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        return key
    raise KeyMaterialError(f"unsupported private key type {type(key).__name__}")


def csr_pem(key_pem: bytes, hostname: str, additional_names: Sequence[str] = ()) -> bytes:
    """Build a PEM CSR for ``hostname`` (and ``additional_names``) signed with ``key_pem``.

    The names go into the subjectAltName, hostname first (what ACME identifiers and browsers
    use), and the hostname, when it fits, into the common name too, for tools that still
    display only the subject.
    """
    key = load_private_key(key_pem)
    subject = (
        [x509.NameAttribute(NameOID.COMMON_NAME, hostname)]
        if len(hostname) <= _MAX_COMMON_NAME
        else []
    )
    names = [x509.DNSName(name) for name in (hostname, *additional_names)]
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name(subject))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
    )
    csr = builder.sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


def csr_dns_names(csr: bytes) -> tuple[str, ...]:
    """The DNS names of a PEM CSR's subjectAltName: the identifiers an order asks for."""
    try:
        request = x509.load_pem_x509_csr(csr)
        san = request.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (ValueError, x509.ExtensionNotFound) as error:
        raise KeyMaterialError("not a PEM CSR with DNS names") from error
    return tuple(san.value.get_values_for_type(x509.DNSName))


def load_chain(chain_pem: bytes) -> list[x509.Certificate]:
    """Parse a PEM chain, leaf first, refusing an empty or corrupt one."""
    try:
        chain = x509.load_pem_x509_certificates(chain_pem)
    except ValueError as error:
        raise KeyMaterialError("not a PEM certificate chain") from error
    if not chain:  # pragma: no cover - cryptography already refuses input without certificates
        raise KeyMaterialError("the certificate chain is empty")
    return chain


def inspect_certificate(chain_pem: bytes) -> CertificateInfo:
    """Describe the leaf (first) certificate of a PEM chain."""
    return _describe(load_chain(chain_pem)[0])


def _describe(leaf: x509.Certificate) -> CertificateInfo:
    return CertificateInfo(
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        serial=format(leaf.serial_number, "x"),
        dns_names=_dns_names(leaf),
    )


def _dns_names(certificate: x509.Certificate) -> tuple[str, ...]:
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return ()
    return tuple(san.value.get_values_for_type(x509.DNSName))


def certificate_matches_key(chain_pem: bytes, key_pem: bytes) -> bool:
    """Whether the chain's leaf certificate carries the public half of ``key_pem``.

    Checked before a certificate is stored, so a Secret never pairs a certificate with a key
    nginx would refuse to load together.
    """
    return _belong_together(load_chain(chain_pem)[0], load_private_key(key_pem))


def _belong_together(leaf: x509.Certificate, key: SigningKey) -> bool:
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return leaf.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki)


def renewal_time(
    info: CertificateInfo, fraction_remaining: float = 1 / 3, spread: float = 0.0
) -> datetime:
    """When to renew: the moment ``fraction_remaining`` of the actual lifetime is left, or
    earlier by up to ``spread`` of that remaining stretch.

    Based on the certificate's own lifetime rather than a fixed number of days, so it keeps
    working as CAs shorten lifetimes (90 → 64 → 45 days); a third is Let's Encrypt's advice.
    The spread moves each certificate's time by an amount derived from its serial (the same
    every time it is computed again): certificates issued together, as on a migration day, come
    up for renewal over days instead of in one burst, and never later than the latest time.
    """
    if not 0 < fraction_remaining < 1:
        raise ValueError(f"fraction_remaining must be between 0 and 1, got {fraction_remaining}")
    if not 0 <= spread <= 1:
        raise ValueError(f"spread must be between 0 and 1, got {spread}")
    lifetime = info.not_after - info.not_before
    margin = lifetime * fraction_remaining
    latest = info.not_after - margin
    earlier = margin * spread * _position(info.serial)
    return max(info.not_before, latest - earlier).astimezone(UTC)


def _position(seed: str) -> float:
    """A number in [0, 1) that ``seed`` decides, evenly spread over seeds (certificates)."""
    digest = hashlib.sha256(seed.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclasses.dataclass(frozen=True)
class RenewalWindow:
    """When a certificate should be renewed: any time from ``start`` to ``end``.

    ``source`` says who decided: ``ari`` (the CA's suggested window, ACME Renewal Information,
    RFC 9773) or ``lifetime`` (our rule: when a fraction of the actual lifetime remains, a
    window of a single instant).
    """

    start: datetime
    end: datetime
    source: str


ARI = "ari"
LIFETIME = "lifetime"


def lifetime_window(
    info: CertificateInfo, fraction_remaining: float = 1 / 3, spread: float = 0.0
) -> RenewalWindow:
    """The window of CAs without renewal information: the instant of :func:`renewal_time`."""
    at = renewal_time(info, fraction_remaining, spread)
    return RenewalWindow(start=at, end=at, source=LIFETIME)


def time_in_window(window: RenewalWindow, serial: str) -> datetime:
    """A point in ``window`` that looks random but is fixed per certificate.

    RFC 9773 asks clients to renew at a random point in the window, so that a CA's many
    certificates issued at once are not renewed at once again. Drawn from the serial rather
    than a random generator: the step computes the status again whenever it runs, and a new
    draw each time would rewrite status for nothing (and move the time around).
    """
    span = window.end - window.start
    if span <= timedelta(0):
        return window.start
    fraction = _position(f"{window.start.isoformat()}|{serial}")
    return (window.start + span * fraction).astimezone(UTC)


def certificate_id(chain_pem: bytes) -> str:
    """The leaf's ACME Renewal Information identifier (RFC 9773 section 4.1):
    ``base64url(authorityKeyIdentifier) "." base64url(DER serial)``, unpadded. It names the
    certificate in the renewalInfo URL and in a new order's ``replaces``. Empty when the leaf
    has no authority key identifier (no CA with ARI issues such certificates)."""
    leaf = load_chain(chain_pem)[0]
    try:
        aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound:
        return ""
    if aki.key_identifier is None:
        return ""
    serial = leaf.serial_number
    # DER INTEGER contents: big-endian two's complement, so one more bit for the sign.
    serial_der = serial.to_bytes((serial.bit_length() + 8) // 8, "big", signed=True)
    return f"{_b64url(aki.key_identifier)}.{_b64url(serial_der)}"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


# -- TLS Secrets ---------------------------------------------------------------------------------

CERTIFICATE_KEY = "tls.crt"
"""Data key of the full chain in a ``kubernetes.io/tls`` Secret (and the file name on disk)."""
PRIVATE_KEY_KEY = "tls.key"
"""Data key of the private key in a ``kubernetes.io/tls`` Secret (and the file name on disk)."""

_CACHED_CERTIFICATES = 16384
"""Parsed certificates kept: more than the hosts one server serves, bounded across renewals."""


@dataclasses.dataclass(frozen=True)
class Certificate:
    """A TLS Secret's certificate as a server gets it: PEM full chain, PEM key, the leaf's
    serial and the DNS names it is valid for."""

    chain_pem: bytes
    key_pem: bytes
    serial: str
    dns_names: tuple[str, ...] = ()


def secret_certificate(secret: Mapping[str, Any]) -> Certificate:
    """The certificate of a ``kubernetes.io/tls`` Secret (the raw API dict), checked so a
    server will load it."""
    data: Mapping[str, str] = secret.get("data") or {}
    for key in (CERTIFICATE_KEY, PRIVATE_KEY_KEY):
        if key not in data:
            raise KeyMaterialError(f"data key {key} is missing")
    return _certificate(data[CERTIFICATE_KEY], data[PRIVATE_KEY_KEY])


@functools.lru_cache(maxsize=_CACHED_CERTIFICATES)
def _certificate(chain_base64: str, key_base64: str) -> Certificate:
    """Decode and check one pair. Cached: every batch looks at every Secret again, and parsing
    thousands of keys and certificates each time would be the agents' main cost."""
    try:
        chain = base64.b64decode(chain_base64, validate=True)
        key = base64.b64decode(key_base64, validate=True)
    except (binascii.Error, ValueError) as error:
        raise KeyMaterialError("data is not valid base64") from error
    # Each parsed once: parsing (an EC key's above all) is most of what a new Secret costs the
    # agents, and inspecting, matching and checking the strength each parsed them again.
    try:
        certificates = load_chain(chain)
    except KeyMaterialError as error:
        raise KeyMaterialError(f"{CERTIFICATE_KEY} is not a PEM certificate chain") from error
    info = _describe(certificates[0])
    try:
        private_key = load_private_key(key)
    except KeyMaterialError as error:
        raise KeyMaterialError(f"{PRIVATE_KEY_KEY}: {error}") from error
    # A pair that does not belong together would make the server refuse its whole configuration
    # (or, where it loads certificates per handshake, every handshake of this host).
    if not _belong_together(certificates[0], private_key):
        raise KeyMaterialError(f"{PRIVATE_KEY_KEY} does not belong to the certificate")
    problem = _strength_problem(certificates)
    if problem is not None:
        raise KeyMaterialError(f"{CERTIFICATE_KEY}: {problem}")
    return Certificate(chain, key, info.serial, info.dns_names)


_MIN_RSA_BITS = 2048
_MIN_EC_BITS = 224
_WEAK_HASHES = (hashes.MD5, hashes.SHA1)


def strength_problem(chain_pem: bytes) -> str | None:
    """Why a TLS server's OpenSSL (security level 2, Debian's default: 112-bit security) would
    refuse to use this chain, or ``None``: a key too small in any certificate, or a leaf signed
    with MD5 or SHA-1. ``nginx -t`` found these once; where nginx loads certificates per
    handshake, only a handshake would, so they are checked before the files are written."""
    return _strength_problem(load_chain(chain_pem))


def _strength_problem(chain: Sequence[x509.Certificate]) -> str | None:
    for position, certificate in enumerate(chain):
        which = "the certificate" if position == 0 else f"chain certificate {position}"
        key = certificate.public_key()
        if isinstance(key, rsa.RSAPublicKey) and key.key_size < _MIN_RSA_BITS:
            return f"{which} has a {key.key_size}-bit RSA key (at least {_MIN_RSA_BITS} needed)"
        if isinstance(key, ec.EllipticCurvePublicKey) and key.key_size < _MIN_EC_BITS:
            return f"{which} has a {key.key_size}-bit EC key (at least {_MIN_EC_BITS} needed)"
    try:
        algorithm = chain[0].signature_hash_algorithm
    except UnsupportedAlgorithm:
        return "the certificate's signature algorithm is not supported"
    if isinstance(algorithm, _WEAK_HASHES):
        return f"the certificate is signed with {algorithm.name.upper()}, which TLS refuses"
    return None


@functools.lru_cache(maxsize=_CACHED_CERTIFICATES)
def certificate_serial(chain_pem: bytes) -> str | None:
    """The leaf's serial as :func:`inspect_certificate` formats it, or ``None`` for unusable
    PEM."""
    try:
        return inspect_certificate(chain_pem).serial
    except KeyMaterialError:
        return None
