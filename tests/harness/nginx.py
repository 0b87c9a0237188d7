"""The real nginx in tests: check rendered server blocks with ``nginx -t`` (:func:`nginx_check`),
run a serving nginx for the nginx agent (:class:`NginxServer`), and talk to it as clients do
(:func:`http_request`, :func:`https_request`, :func:`served_certificate`).

For checks, the blocks are wrapped in a minimal but complete ``nginx.conf`` whose every writable
path (pid, error and access logs, request temp directories) lies inside a throwaway directory, so
the check touches nothing under /etc or /var and works without root.

``nginx -t`` does more than parse: it loads certificates, resolves upstream hosts and binds every
``listen`` port. A port already in use is tolerated in test mode (so parallel checks do not
collide), but a privileged port is not: without root, blocks must listen on ports >= 1024.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import http.client
import os
import shutil
import signal
import socket
import ssl
import subprocess
import textwrap
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from tests.harness.processes import ManagedProcess, log_tail
from vhost_operator.nginx import (
    SERVER_NAMES_HASH_BUCKET_SIZE,
    SERVER_NAMES_HASH_MAX_SIZE,
    SiteConfig,
    http_definitions,
    render_final,
)

NGINX_ENV = "VHOST_OPERATOR_TEST_NGINX"
"""Environment variable naming the nginx binary to test with, if not the one on PATH."""

T = TypeVar("T")

_FALLBACK_NGINX = "/usr/sbin/nginx"  # Debian's location; /usr/sbin is not on every user's PATH
_TIMEOUT_SECONDS = 30
CHECK_HTTPS_PORT = 8443
"""The HTTPS port of :func:`nginx_check`'s config: TLS sites checked there listen on it."""
CHECK_HTTP_PORT = 8080
"""The plain HTTP port of :func:`nginx_check`'s config (the agent's shared server's)."""
UNUSED_CHALLENGE_UPSTREAM = "127.0.0.1:9"
"""A challenge responder for configs whose challenges no test fetches (nginx only resolves it)."""
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


def nginx_check_final(config: SiteConfig, *, tmp_dir: Path) -> subprocess.CompletedProcess[str]:
    """``nginx -t`` of ``config``'s final (TLS) site on unprivileged ports, with a self-signed
    certificate for all its names where the rendered config points."""
    chain, key = self_signed_certificate([config.hostname, *config.additional_names])
    directory = tmp_dir.resolve() / "tls"
    paths = {"certificate_path": f"{directory}/tls.crt", "key_path": f"{directory}/tls.key"}
    ports = {"http_port": CHECK_HTTP_PORT, "https_port": CHECK_HTTPS_PORT}
    rendered = render_final(config.model_copy(update={**paths, **ports}))
    files = {"tls/tls.crt": chain, "tls/tls.key": key}
    return nginx_check([rendered], tmp_dir=tmp_dir, extra_files=files)


def nginx_check(
    server_blocks: Sequence[str],
    *,
    tmp_dir: Path,
    extra_files: Mapping[str, bytes] | None = None,
    https_port: int = CHECK_HTTPS_PORT,
) -> subprocess.CompletedProcess[str]:
    """Run ``nginx -t`` on ``server_blocks`` inside a full config rooted at ``tmp_dir``.

    ``extra_files`` are written first, relative to ``tmp_dir`` (certificates and keys that the
    blocks reference by absolute path). The config has the agent's http-level definitions, with
    ``tmp_dir/certs`` as the certificate directory and ``https_port`` as the HTTPS port (TLS
    sites on another port would lack a default server with a certificate). Returns the finished
    process: ``returncode`` 0 means nginx accepted the config, and ``stderr`` holds nginx's
    verdict either way.
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
    conf.write_text(_main_config(tmp_dir, sites, https_port), encoding="utf-8")
    for included in ("http-names.conf", "https-map.conf"):
        (tmp_dir / included).touch()  # the definitions include them by name
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


def _main_config(tmp_dir: Path, sites: Path, https_port: int) -> str:
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
    server_names_hash_max_size {SERVER_NAMES_HASH_MAX_SIZE};
    # What the nginx agent writes next to the sites it mirrors.
{textwrap.indent(agent_definitions(tmp_dir, https_port, CHECK_HTTP_PORT), "    ")}
    include {sites}/*.conf;
}}
"""


def agent_definitions(
    root: Path,
    https_port: int,
    http_port: int,
    challenge_upstream: str = UNUSED_CHALLENGE_UPSTREAM,
) -> str:
    """The nginx agent's http-level definitions for its directory ``root`` (certificates in
    ``root/certs``, the shared plain HTTP server's names in ``root/http-names.conf``, the shared
    HTTPS servers' certificate map in ``root/https-map.conf``)."""
    return http_definitions(
        f"{root}/certs",
        https_port,
        http_port=http_port,
        challenge_upstream=challenge_upstream,
        names_file=f"{root}/http-names.conf",
        https_map_file=f"{root}/https-map.conf",
    )


def self_signed_certificate(
    hostnames: Sequence[str], *, rsa_bits: int | None = None
) -> tuple[bytes, bytes]:
    """A throwaway certificate for ``hostnames`` and its key, as PEM ``(fullchain, key)``.

    P-256 rather than RSA: key generation takes microseconds instead of tens of milliseconds.
    ``rsa_bits``: an RSA key of that size instead (1024: one nginx's OpenSSL refuses to use).
    """
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = (
        ec.generate_private_key(ec.SECP256R1())
        if rsa_bits is None
        else rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
    )
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


# -- a running nginx, as the nginx agent drives it -------------------------------------------


class NginxServer:
    """A real nginx on unprivileged ports, everything it writes inside ``workdir``.

    Its ``nginx.conf`` is what a deployer provides next to the agent: the ``http {}`` block sets
    the hash sizes thousands of (long) hostnames need, has the HTTP default server (404) and
    includes ``<root>/sites-enabled/*.conf``, where ``root`` is the agent's directory; the HTTPS
    default server is the agent's (its definitions file), so before the agent's first batch
    nginx does not listen on the HTTPS port. nginx runs in the foreground (``daemon off``) under
    the harness, with a pid file the agent signals to reload.
    """

    def __init__(
        self, workdir: Path, http_port: int, https_port: int, *, seen_at: Path | None = None
    ) -> None:
        """``seen_at``: another nginx's directory. This nginx then runs in network and mount
        namespaces of its own (root only) in which ``workdir`` is mounted at ``seen_at``: a
        second replica that loads the same site configs, which name the other's certificate
        paths and listen on its ports. Its paths (``root``, ``conf``...) are those it sees;
        reach it with :meth:`inside`, run its agent with :meth:`enter`."""
        self.real_dir = workdir.resolve()
        self.isolated = seen_at is not None
        self.workdir = seen_at.resolve() if seen_at is not None else self.real_dir
        self.http_port = http_port
        self.https_port = https_port
        self.root = self.workdir / "agent-root"
        self.conf = self.workdir / "nginx.conf"
        self.pid_file = self.workdir / "nginx.pid"
        self.error_log = self.workdir / "error.log"
        self.binary = nginx_binary()
        self._process: ManagedProcess | None = None

    def start(self) -> NginxServer:
        (self.real(self.root) / "sites-enabled").mkdir(parents=True, exist_ok=True)
        self.real(self.conf).write_text(self._config(), encoding="utf-8")
        argv_tail = [
            "-c",
            str(self.conf),
            "-p",
            f"{self.workdir}/",
            "-e",
            str(self.error_log),
            "-g",
            "daemon off;",
        ]
        argv = [self.binary, *argv_tail]
        if self.isolated:
            # unshare execs (no fork): the process stays nginx's master. A new network
            # namespace has its loopback down; mounts made in it stay in it.
            script = 'mount --bind "$1" "$2" && ip link set lo up && shift 2 && exec "$@"'
            argv = ["unshare", "--mount", "--net", "--", "sh", "-c", script, "sh"]
            argv += [str(self.real_dir), str(self.workdir), self.binary, *argv_tail]
        self._process = ManagedProcess("nginx", argv, self.real_dir / "nginx.out")
        self._process.wait_until(
            lambda: (
                self.real(self.pid_file).exists()
                and self.inside(lambda: http_status(self.http_port, "probe.invalid")) == 404
            ),
            timeout=20,
            what="nginx answering on its HTTP port",
        )
        return self

    def stop(self) -> None:
        if self._process is not None:
            # SIGTERM would be nginx's "fast shutdown"; it is what the harness sends.
            self._process.stop()
            self._process = None

    @property
    def master_pid(self) -> int:
        assert self._process is not None, "not started"
        return self._process.process.pid

    def kill(self) -> None:
        """SIGKILL the master and its workers, as a container runtime does when nginx dies (its
        workers would otherwise go on serving, and holding the ports); :meth:`start` brings
        nginx back, on what is on disk."""
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.process.pid, signal.SIGKILL)  # its own session
            self._process.stop()  # reaps the master: the agent sees it gone, not a zombie
            self._process = None

    def real(self, path: Path) -> Path:
        """Where ``path``, as nginx sees it, is for the test."""
        return self.real_dir / path.relative_to(self.workdir)

    def enter(self) -> list[str]:
        """The command prefix that runs a process (its agent) in nginx's mount namespace."""
        if not self.isolated:
            return []
        return ["nsenter", f"--mount=/proc/{self.master_pid}/ns/mnt", "--"]

    def inside(self, call: Callable[[], T]) -> T:
        """``call()`` in nginx's network (a thread that joins its namespace, if it has one)."""
        if not self.isolated:
            return call()
        assert self._process is not None, "not started"
        return in_network_of(self._process.process.pid, call)

    def __enter__(self) -> NginxServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _config(self) -> str:
        temp_paths = "\n".join(
            f"    {directive} {self.workdir}/{directive.removesuffix('_temp_path')}_temp;"
            for directive in _TEMP_PATH_DIRECTIVES
        )
        return f"""\
{self._user()}pid {self.pid_file};
error_log {self.error_log} notice;
worker_processes 1;

events {{
    worker_connections 512;
}}

http {{
    access_log {self.workdir}/access.log;
{temp_paths}
    server_names_hash_bucket_size {SERVER_NAMES_HASH_BUCKET_SIZE};
    server_names_hash_max_size {SERVER_NAMES_HASH_MAX_SIZE};

    # Requests for a host nginx does not serve (unknown, disabled, deleted) end here. (On the
    # HTTPS port, the agent's definitions hold the default server.)
    server {{
        listen {self.http_port} default_server;
        server_name _;
        default_type text/plain;
        return 404 "no such site\\n";
    }}

    include {self.root}/sites-enabled/*.conf;
}}
"""

    @staticmethod
    def _user() -> str:
        """A root master's workers run as root too, like the chart's nginx, whose master,
        workers and agent share one UID: the workers load each key per handshake, and the
        agent writes keys 0600. (nginx's default would drop them to ``nobody``, who cannot
        even reach pytest's 0700 temporary directories.)"""
        return "user root root;\n" if os.geteuid() == 0 else ""

    def error_log_tail(self, lines: int = 40) -> str:
        return log_tail(self.real(self.error_log), lines)


# -- clients -----------------------------------------------------------------------------------


def in_network_of(pid: int, call: Callable[[], T]) -> T:
    """``call()`` in a thread that has joined process ``pid``'s network namespace (setns
    affects the calling thread only; the thread, and its namespace membership, then ends)."""
    results: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        try:
            with open(f"/proc/{pid}/ns/net", "rb") as namespace:
                if libc.setns(namespace.fileno(), _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns")
            results.append(call())
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return results[0]


_CLONE_NEWNET = 0x40000000


def http_request(port: int, host: str, path: str = "/") -> tuple[int, str, dict[str, str]]:
    """``GET path`` on 127.0.0.1:port with ``Host: host``: (status, body, headers)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path, headers={"Host": host})
        response = connection.getresponse()
        body = response.read().decode(errors="replace")
        return response.status, body, dict(response.getheaders())
    finally:
        connection.close()


def http_status(port: int, host: str, path: str = "/") -> int | None:
    """The status of ``GET path`` with ``Host: host``, or ``None`` when nginx does not answer."""
    try:
        return http_request(port, host, path)[0]
    except OSError:
        return None


def served_certificate(port: int, hostname: str | None) -> x509.Certificate | None:
    """The leaf certificate nginx presents for SNI ``hostname`` (``None``: a client sending no
    SNI); ``None`` if it refuses the handshake (no site for that name)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # only looking: https_request verifies
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname=hostname) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except (ssl.SSLError, OSError):
        return None
    return x509.load_der_x509_certificate(der) if der else None


def https_request(port: int, hostname: str, trusted_pem: bytes, path: str = "/") -> tuple[int, str]:
    """``GET path`` over TLS with SNI ``hostname``, verifying nginx's certificate against
    ``trusted_pem`` and the hostname, as a browser would: (status, body)."""
    status, body, _ = https_exchange(port, hostname, trusted_pem, path)
    return status, body


def https_exchange(
    port: int, hostname: str, trusted_pem: bytes, path: str = "/"
) -> tuple[int, str, dict[str, str]]:
    """:func:`https_request` with the response headers (names lowercased): (status, body,
    headers)."""
    context = ssl.create_default_context(cadata=trusted_pem.decode())
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=hostname) as tls,
    ):
        request = f"GET {path} HTTP/1.1\r\nHost: {hostname}\r\nConnection: close\r\n\r\n"
        tls.sendall(request.encode())
        chunks = []
        while chunk := tls.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode(errors="replace").split("\r\n")
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in header_lines)
    }
    return int(status_line.split(" ", 2)[1]), body.decode(errors="replace"), headers
