"""Check rendered nginx server blocks with the real ``nginx -t``.

The blocks are wrapped in a minimal but complete ``nginx.conf`` whose every writable path (pid,
error and access logs, request temp directories) lies inside a throwaway directory, so the check
touches nothing under /etc or /var and works without root.

``nginx -t`` does more than parse: it loads certificates, resolves upstream hosts and binds every
``listen`` port. A port already in use is tolerated in test mode (so parallel checks do not
collide), but a privileged port is not: without root, blocks must listen on ports >= 1024.
"""

from __future__ import annotations

import datetime
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from vhost_operator.nginx import SERVER_NAMES_HASH_BUCKET_SIZE

NGINX_ENV = "VHOST_OPERATOR_TEST_NGINX"
"""Environment variable naming the nginx binary to test with, if not the one on PATH."""

_FALLBACK_NGINX = "/usr/sbin/nginx"  # Debian's location; /usr/sbin is not on every user's PATH
_TIMEOUT_SECONDS = 30
_MAX_COMMON_NAME = 64

# nginx writes request bodies and buffered responses to these; their compiled-in defaults are
# under /var/lib/nginx, which an unprivileged test cannot create.
_TEMP_PATH_DIRECTIVES = (
    "client_body_temp_path",
    "proxy_temp_path",
    "fastcgi_temp_path",
    "uwsgi_temp_path",
    "scgi_temp_path",
)


def nginx_binary() -> str:
    """The nginx to test with: ``$VHOST_OPERATOR_TEST_NGINX``, else PATH, else /usr/sbin."""
    configured = os.environ.get(NGINX_ENV)
    if configured:
        return configured
    return shutil.which("nginx") or _FALLBACK_NGINX


def nginx_check(
    server_blocks: Sequence[str],
    *,
    tmp_dir: Path,
    extra_files: Mapping[str, bytes] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``nginx -t`` on ``server_blocks`` inside a full config rooted at ``tmp_dir``.

    ``extra_files`` are written first, relative to ``tmp_dir`` (certificates and keys that the
    blocks reference by absolute path). Returns the finished process: ``returncode`` 0 means nginx
    accepted the config, and ``stderr`` holds nginx's verdict either way.
    """
    tmp_dir = tmp_dir.resolve()
    for relative, content in (extra_files or {}).items():
        target = tmp_dir / _safe_relative(relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)

    sites = tmp_dir / "sites"
    sites.mkdir(parents=True, exist_ok=True)
    for index, block in enumerate(server_blocks):
        # One file per block, numbered so include order (and so the default server) is stable.
        (sites / f"{index:04d}.conf").write_text(block, encoding="utf-8")

    conf = tmp_dir / "nginx.conf"
    conf.write_text(_main_config(tmp_dir, sites), encoding="utf-8")
    return subprocess.run(
        [nginx_binary(), "-t", "-c", str(conf), "-p", f"{tmp_dir}/", "-e", f"{tmp_dir}/error.log"],
        capture_output=True,
        text=True,
        timeout=_TIMEOUT_SECONDS,
        check=False,
    )


def _safe_relative(relative: str) -> PurePosixPath:
    # A test bug must not write outside the throwaway directory.
    path = PurePosixPath(relative)
    if path.is_absolute() or ".." in path.parts:
        raise ValueError(f"extra file {relative!r} must be a relative path inside tmp_dir")
    return path


def _main_config(tmp_dir: Path, sites: Path) -> str:
    temp_paths = "\n".join(
        f"    {directive} {tmp_dir}/{directive.removesuffix('_temp_path')}_temp;"
        for directive in _TEMP_PATH_DIRECTIVES
    )
    # The error_log directive covers messages after parsing; "-e" (nginx >= 1.19.5) covers the
    # ones nginx writes while it parses, before it has read error_log.
    return f"""\
pid {tmp_dir}/nginx.pid;
error_log {tmp_dir}/error.log;

events {{}}

http {{
    access_log {tmp_dir}/access.log;
{temp_paths}
    # Long hostnames need a bigger bucket than nginx's default; the renderer says how big.
    server_names_hash_bucket_size {SERVER_NAMES_HASH_BUCKET_SIZE};

    include {sites}/*.conf;
}}
"""


def self_signed_certificate(hostnames: Sequence[str]) -> tuple[bytes, bytes]:
    """A throwaway certificate for ``hostnames`` and its key, as PEM ``(fullchain, key)``.

    P-256 rather than RSA: key generation takes microseconds instead of tens of milliseconds.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    # A common name holds at most 64 characters; for longer hostnames the subject stays empty and
    # the SAN alone names the host, as Let's Encrypt does.
    common_name = hostnames[0] if len(hostnames[0]) <= _MAX_COMMON_NAME else None
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if common_name else [])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(host) for host in hostnames]),
            critical=common_name is None,  # RFC 5280: critical when the subject is empty
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem
