"""Keys, CSRs and certificates: what the ACME step stores and the renewal scanner reads."""

from __future__ import annotations

import base64
import dataclasses
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from vhost_operator.certs import (
    ARI,
    CERTIFICATE_KEY,
    LIFETIME,
    PRIVATE_KEY_KEY,
    CertificateInfo,
    KeyMaterialError,
    RenewalWindow,
    certificate_id,
    certificate_matches_key,
    csr_pem,
    inspect_certificate,
    lifetime_window,
    load_private_key,
    new_private_key_pem,
    renewal_time,
    secret_certificate,
    time_in_window,
)

START = datetime(2026, 1, 1, tzinfo=UTC)


def certificate_pem(
    key_pem: bytes,
    *,
    dns_names: tuple[str, ...] = ("mail.example.com",),
    lifetime: timedelta = timedelta(days=90),
    serial: int = 0x0ABCDEF,
) -> bytes:
    """A self-signed certificate for ``key_pem``: enough to inspect, no CA needed."""
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(START)
        .not_valid_after(START + lifetime)
    )
    if dns_names:
        san = x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names])
        builder = builder.add_extension(san, critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def rsa_key_pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def info(lifetime: timedelta) -> CertificateInfo:
    return CertificateInfo(
        not_before=START, not_after=START + lifetime, serial="1", dns_names=("a.example",)
    )


# -- keys -----------------------------------------------------------------------------------


def test_new_private_key_is_an_unencrypted_p256_sec1_pem() -> None:
    pem = new_private_key_pem()
    assert pem.startswith(b"-----BEGIN EC PRIVATE KEY-----")
    key = load_private_key(pem)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.curve.name == "secp256r1"
    assert new_private_key_pem() != pem


def test_pkcs8_keys_stored_by_earlier_versions_still_load() -> None:
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    assert isinstance(load_private_key(pem), ec.EllipticCurvePrivateKey)


@pytest.mark.parametrize(
    "pem",
    [
        b"",
        b"not a key",
        ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        ),
    ],
    ids=["empty", "garbage", "ed25519", "encrypted"],
)
def test_unusable_keys_are_refused_with_a_value_error(pem: bytes) -> None:
    with pytest.raises(KeyMaterialError):
        load_private_key(pem)
    assert issubclass(KeyMaterialError, ValueError)


# -- CSRs -----------------------------------------------------------------------------------


def test_csr_names_the_host_and_is_signed_by_the_key() -> None:
    key_pem = new_private_key_pem()
    csr = x509.load_pem_x509_csr(csr_pem(key_pem, "mail.example.com"))
    assert csr.is_signature_valid
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["mail.example.com"]
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "mail.example.com"
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    assert csr.public_key().public_bytes(*spki) == (
        load_private_key(key_pem).public_key().public_bytes(*spki)
    )


def test_csr_for_a_hostname_longer_than_a_common_name_uses_only_the_san() -> None:
    hostname = ".".join(["a" * 63, "b" * 63, "example"])
    csr = x509.load_pem_x509_csr(csr_pem(new_private_key_pem(), hostname))
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME) == []
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [hostname]


def test_csr_works_with_rsa_keys_too() -> None:
    assert x509.load_pem_x509_csr(csr_pem(rsa_key_pem(), "mail.example.com")).is_signature_valid


# -- certificates ---------------------------------------------------------------------------


def test_inspect_describes_the_leaf_of_a_chain() -> None:
    key_pem = new_private_key_pem()
    leaf = certificate_pem(key_pem, dns_names=("mail.example.com", "www.example.com"))
    other = certificate_pem(new_private_key_pem(), dns_names=("ca.example",), serial=7)
    described = inspect_certificate(leaf + other)
    assert described == CertificateInfo(
        not_before=START,
        not_after=START + timedelta(days=90),
        serial="abcdef",
        dns_names=("mail.example.com", "www.example.com"),
    )
    assert described.not_after.tzinfo is not None
    assert described.lifetime_seconds == timedelta(days=90).total_seconds()


def test_inspect_a_certificate_without_san() -> None:
    assert inspect_certificate(certificate_pem(new_private_key_pem(), dns_names=())).dns_names == ()


@pytest.mark.parametrize("pem", [b"", b"garbage", b"-----BEGIN CERTIFICATE-----\nAAAA\n"])
def test_inspect_refuses_what_is_not_a_chain(pem: bytes) -> None:
    with pytest.raises(KeyMaterialError):
        inspect_certificate(pem)


@pytest.mark.parametrize("make_key", [new_private_key_pem, rsa_key_pem], ids=["ec", "rsa"])
def test_certificate_matches_only_its_own_key(make_key: Callable[[], bytes]) -> None:
    key_pem = make_key()
    chain = certificate_pem(key_pem)
    assert certificate_matches_key(chain, key_pem)
    assert not certificate_matches_key(chain, new_private_key_pem())
    assert not certificate_matches_key(chain, rsa_key_pem())


def test_a_secret_s_chain_and_key_are_each_parsed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # Parsing is most of what a new TLS Secret costs the agents: inspecting the leaf, matching
    # it with the key and checking its strength share one parse of each.
    key_pem = new_private_key_pem()
    chain = certificate_pem(key_pem, serial=0x5EC2E7)
    parsed: Counter[str] = Counter()
    load_chain, load_key = x509.load_pem_x509_certificates, serialization.load_pem_private_key

    def counting_chain(data: bytes) -> list[x509.Certificate]:
        parsed["chain"] += 1
        return load_chain(data)

    def counting_key(data: bytes, password: bytes | None) -> object:
        parsed["key"] += 1
        return load_key(data, password)

    monkeypatch.setattr(x509, "load_pem_x509_certificates", counting_chain)
    monkeypatch.setattr(serialization, "load_pem_private_key", counting_key)
    data = {
        CERTIFICATE_KEY: base64.b64encode(chain).decode(),
        PRIVATE_KEY_KEY: base64.b64encode(key_pem).decode(),
    }
    certificate = secret_certificate({"data": data})
    assert (certificate.serial, certificate.dns_names) == ("5ec2e7", ("mail.example.com",))
    assert parsed == {"chain": 1, "key": 1}


# -- renewal --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lifetime_days", "renew_after_days"),
    [(90, 60), (45, 30), (6, 4), (5 * 365, 5 * 365 * 2 / 3)],
)
def test_renewal_is_due_when_a_third_of_the_actual_lifetime_remains(
    lifetime_days: float, renew_after_days: float
) -> None:
    due = renewal_time(info(timedelta(days=lifetime_days)))
    assert due == START + timedelta(days=renew_after_days)
    assert due.tzinfo is not None


def test_renewal_fraction_can_be_widened() -> None:
    assert renewal_time(info(timedelta(days=100)), fraction_remaining=0.9) == START + timedelta(
        days=10
    )


def test_renewal_times_are_spread_before_the_latest_time_by_serial() -> None:
    """A thousand 90-day certificates issued together: renewed between 40 and 30 days before
    expiry, spread evenly, each at the same time whenever it is computed again."""
    issued = [dataclasses.replace(info(timedelta(days=90)), serial=f"{n:x}") for n in range(1000)]
    times = [renewal_time(i, spread=1 / 3) for i in issued]
    latest = START + timedelta(days=60)
    assert all(latest - timedelta(days=10) <= t <= latest for t in times)
    per_day = Counter((latest - t).days for t in times)
    assert sorted(per_day) == list(range(10)), per_day
    assert all(70 <= count <= 130 for count in per_day.values()), per_day
    assert times == [renewal_time(i, spread=1 / 3) for i in issued]
    assert renewal_time(issued[0], spread=0) == latest


def test_a_spread_renewal_never_comes_before_the_certificate() -> None:
    certificate = dataclasses.replace(info(timedelta(days=90)), serial="ab")
    assert renewal_time(certificate, fraction_remaining=0.99, spread=1) >= START


@pytest.mark.parametrize("fraction", [0, 1, -0.5, 1.5])
def test_renewal_fraction_must_be_a_proper_fraction(fraction: float) -> None:
    with pytest.raises(ValueError):
        renewal_time(info(timedelta(days=90)), fraction_remaining=fraction)


def test_the_ari_certificate_id_is_the_one_the_acme_library_derives() -> None:
    from acme.client import _renewal_info_path_component

    ca_key = ec.generate_private_key(ec.SECP256R1())
    leaf_key = load_private_key(new_private_key_pem())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ca")])
    for serial in (0x7F, 0x80, 0xFF00, x509.random_serial_number()):  # sign bit, leading zero
        leaf = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(leaf_key.public_key())
            .serial_number(serial)
            .not_valid_before(START)
            .not_valid_after(START + timedelta(days=6))
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        pem = leaf.public_bytes(serialization.Encoding.PEM)
        assert certificate_id(pem) == _renewal_info_path_component(leaf)
    assert certificate_id(certificate_pem(new_private_key_pem())) == ""  # no AKI: no ARI


def test_the_renewal_time_is_a_point_in_the_window_fixed_per_certificate() -> None:
    window = RenewalWindow(START, START + timedelta(days=2), ARI)
    times = {time_in_window(window, format(serial, "x")) for serial in range(200)}
    assert all(window.start <= t <= window.end for t in times)
    assert len(times) == 200  # spread out, not one instant
    spread = max(times) - min(times)
    assert spread > timedelta(days=1.5)
    assert time_in_window(window, "abc") == time_in_window(window, "abc")  # stable status


def test_without_ari_the_window_is_the_instant_a_third_of_the_lifetime_remains() -> None:
    six_days = CertificateInfo(START, START + timedelta(days=6), "1", ("a.example",))
    window = lifetime_window(six_days)
    assert window == RenewalWindow(START + timedelta(days=4), START + timedelta(days=4), LIFETIME)
    assert time_in_window(window, "1") == START + timedelta(days=4)  # every 4 days, not 30
