"""Real Postfix and Dovecot for the mail TLS agent's tests: Debian's packages, run as throwaway
instances in a temporary directory on loopback high ports (:class:`MailServers`), and TLS
clients that show which certificate each one serves for a name (:func:`served_leaf`).

Postfix gets its own ``config_directory``, ``queue_directory`` and ``data_directory``; Dovecot its
own ``base_dir`` and ``state_dir``. They live, with the agent's directory, in a directory of
their own under /tmp that every user may traverse: both drop privileges to their own users
(``postfix``, ``dovecot``, ``dovenull``), which pytest's private temporary directories would
lock out. It is removed at the end. Both run in the foreground as children of the test (Postfix
``start-fg``, Dovecot ``-F``) in a process group of their own, which teardown stops and then
kills whole, so nothing of them outlives a test, even a failed one.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from cryptography import x509

from tests.harness.nginx import self_signed_certificate
from tests.harness.processes import ManagedProcess, free_port, log_tail

SMTP = "smtp"
"""Port 25 style: plain, then STARTTLS."""
SUBMISSIONS = "submissions"
"""Port 465 style: TLS from the first byte (smtpd_tls_wrappermode)."""
IMAPS = "imaps"
"""Port 993 style: TLS from the first byte."""
IMAP = "imap"
"""Port 143 style: plain, then STARTTLS."""

_MASTER_CF = """\
127.0.0.1:{smtp} inet n - n - - smtpd
127.0.0.1:{submissions} inet n - n - - smtpd
  -o smtpd_tls_wrappermode=yes -o smtpd_tls_security_level=encrypt
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n -  0 cleanup
qmgr      unix  n - n 300 1 qmgr
tlsmgr    unix  - - n 1000? 1 tlsmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
local     unix  - n n - - local
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""

_DOVECOT_CONF = """\
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = required
ssl_cert = <{default_crt}
ssl_key = <{default_key}
shutdown_clients = no
passdb {{
  driver = static
  args = nopassword=y allow_nets=127.0.0.1/32
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={base}/home
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
!include_try {names}
"""


class MailServers:
    """A Postfix (SMTP with STARTTLS, submissions) and a Dovecot (IMAP, IMAPS) that take their
    per-name certificates from the mail TLS agent's ``agent_root``; a default self-signed
    certificate answers names the agent has not given them."""

    def __init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="vhost-mail-"))
        self.workdir.chmod(0o755)
        self.agent_root = self.workdir / "agent"
        """The mail TLS agent's ``root_dir``."""
        self.ports = {
            SMTP: free_port(),
            SUBMISSIONS: free_port(),
            IMAP: free_port(),
            IMAPS: free_port(),
        }
        self.postfix_dir = self.workdir / "postfix"
        self.postfix_conf = self.postfix_dir / "conf"
        self.dovecot_dir = self.workdir / "dovecot"
        self.dovecot_conf = self.dovecot_dir / "dovecot.conf"
        self._postfix: ManagedProcess | None = None
        self._dovecot: ManagedProcess | None = None

    @property
    def postfix_main_cf(self) -> Path:
        return self.postfix_conf / "main.cf"

    @property
    def sni_map(self) -> str:
        return f"hash:{self.agent_root}/postfix/current/sni"

    @property
    def dovecot_names(self) -> Path:
        return self.agent_root / "dovecot" / "current" / "local_names.conf"

    def __enter__(self) -> MailServers:
        return self.start()

    def start(self) -> MailServers:
        """Both servers up (on failure, everything of them removed again)."""
        try:
            self._write_configs()
            self.start_postfix()
            self.start_dovecot()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _write_configs(self) -> None:
        chain, key = self_signed_certificate(["default.invalid"])
        default = self.workdir / "default"
        default.mkdir()
        (default / "tls.crt").write_bytes(chain)
        (default / "tls.key").write_bytes(key)
        (default / "tls.pem").write_bytes(key + chain)
        for path in default.iterdir():
            path.chmod(0o600)
        for name in ("conf", "queue", "data"):
            (self.postfix_dir / name).mkdir(parents=True)
        postfix_user = pwd.getpwnam("postfix")
        os.chown(self.postfix_dir / "data", postfix_user.pw_uid, postfix_user.pw_gid)
        (self.postfix_conf / "main.cf").write_text(
            "compatibility_level = 3.6\n"
            f"queue_directory = {self.postfix_dir / 'queue'}\n"
            f"data_directory = {self.postfix_dir / 'data'}\n"
            "inet_interfaces = 127.0.0.1\ninet_protocols = ipv4\n"
            "myhostname = mail.test.invalid\nmydestination =\n"
            f"maillog_file_prefixes = {self.workdir}\n"
            f"maillog_file = {self.postfix_dir / 'maillog'}\n"
            "smtpd_tls_security_level = may\n"
            f"smtpd_tls_chain_files = {default / 'tls.pem'}\n"
            f"tls_server_sni_maps = {self.sni_map}\n"
        )
        (self.postfix_conf / "master.cf").write_text(
            _MASTER_CF.format(smtp=self.ports[SMTP], submissions=self.ports[SUBMISSIONS])
        )
        for name in ("run", "state", "home"):
            (self.dovecot_dir / name).mkdir(parents=True)
        self.dovecot_conf.write_text(
            _DOVECOT_CONF.format(
                base=self.dovecot_dir,
                default_crt=default / "tls.crt",
                default_key=default / "tls.key",
                imap=self.ports[IMAP],
                imaps=self.ports[IMAPS],
                names=self.dovecot_names,
            )
        )

    def start_postfix(self) -> None:
        # The agent builds the map; until then Postfix needs one to start (an empty one).
        self._postfix = ManagedProcess(
            "postfix",
            ["postfix", "-c", str(self.postfix_conf), "start-fg"],
            self.postfix_dir / "postfix.out",
        )
        self._postfix.wait_until(
            lambda: _listening(self.ports[SMTP]), timeout=30, what="Postfix listening"
        )

    def start_dovecot(self) -> None:
        self._dovecot = ManagedProcess(
            "dovecot",
            ["dovecot", "-F", "-c", str(self.dovecot_conf)],
            self.dovecot_dir / "dovecot.out",
        )
        self._dovecot.wait_until(
            lambda: _listening(self.ports[IMAPS]), timeout=30, what="Dovecot listening"
        )

    def stop_postfix(self) -> None:
        _stop(
            self._postfix,
            ["postfix", "-c", str(self.postfix_conf), "stop"],
            self.postfix_dir / "queue" / "pid" / "master.pid",
        )
        self._postfix = None

    def stop_dovecot(self) -> None:
        _stop(
            self._dovecot,
            ["doveadm", "-c", str(self.dovecot_conf), "stop"],
            self.dovecot_dir / "run" / "master.pid",
        )
        self._dovecot = None

    def stop(self) -> None:
        self.stop_postfix()
        self.stop_dovecot()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def logs(self) -> str:
        return (
            log_tail(self.postfix_dir / "maillog")
            + "\n"
            + log_tail(self.dovecot_dir / "dovecot.log")
        )


def _stop(process: ManagedProcess | None, stop: list[str], pid_file: Path) -> None:
    if process is None:
        return
    master = _pid(pid_file)
    if process.process.poll() is None:
        subprocess.run(stop, capture_output=True, timeout=30, check=False)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.process.wait(10)
    # Whatever a master left, or a master that ignored the stop: its whole process group
    # (Postfix's master runs in a session of its own), then ours.
    for group in (master, process.process.pid):
        if group is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
    process.kill()
    process.stop()


def _pid(pid_file: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(pid_file.read_text().split()[0])
    return None


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


def client_context(root_pem: bytes) -> ssl.SSLContext:
    """Verifies the chain against ``root_pem`` and the name against the SNI, as a mail client
    that checks certificates does."""
    return ssl.create_default_context(cadata=root_pem.decode())


class Session:
    """An established TLS session with one of the services (kept open across a reload)."""

    def __init__(self, kind: str, port: int, sni: str, context: ssl.SSLContext) -> None:
        self.kind = kind
        self._smtp: smtplib.SMTP | None = None
        self._socket: ssl.SSLSocket | None = None
        if kind == SMTP:
            smtp = smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=10)
            smtp._host = sni  # type: ignore[attr-defined]  # starttls() sends it as SNI
            smtp.ehlo()
            smtp.starttls(context=context)
            smtp.ehlo()
            self._smtp = smtp
        elif kind == SUBMISSIONS:
            self._smtp = _submissions(port, sni, context)
        else:
            raw = socket.create_connection(("127.0.0.1", port), timeout=10)
            if kind == IMAP:
                _expect(raw, b"* OK")
                raw.sendall(b"a STARTTLS\r\n")
                _expect(raw, b"a OK")
            self._socket = context.wrap_socket(raw, server_hostname=sni)
            if kind == IMAPS:
                _expect(self._socket, b"* OK")

    @property
    def leaf(self) -> x509.Certificate:
        sock = self._smtp.sock if self._smtp is not None else self._socket
        assert isinstance(sock, ssl.SSLSocket)
        der = sock.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der)

    def alive(self) -> bool:
        """The session still answers a NOOP over its TLS connection."""
        try:
            if self._smtp is not None:
                return bool(self._smtp.noop()[0] == 250)
            assert self._socket is not None
            self._socket.sendall(b"n NOOP\r\n")
            return _expect(self._socket, b"n OK")
        except (OSError, smtplib.SMTPException, AssertionError):
            return False

    def close(self) -> None:
        with contextlib.suppress(OSError, smtplib.SMTPException):
            if self._smtp is not None:
                self._smtp.close()
            if self._socket is not None:
                self._socket.close()


def _submissions(port: int, sni: str, context: ssl.SSLContext) -> smtplib.SMTP:
    """An implicit-TLS SMTP session that sends ``sni`` (``SMTP_SSL`` would send the address it
    connects to)."""
    smtp = smtplib.SMTP(local_hostname="client.test", timeout=10)
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    smtp.sock = context.wrap_socket(raw, server_hostname=sni)
    smtp.file = None
    code, _ = smtp.getreply()
    assert code == 220, code
    smtp.ehlo()
    return smtp


def _expect(sock: socket.socket, prefix: bytes) -> bool:
    received = b""
    deadline = time.monotonic() + 10
    while b"\r\n" not in received and time.monotonic() < deadline:
        chunk = sock.recv(4096)
        if not chunk:
            break
        received += chunk
    for line in received.split(b"\r\n"):
        if line.startswith(prefix):
            return True
    raise AssertionError(f"expected {prefix!r}, got {received!r}")


def served_leaf(kind: str, port: int, sni: str, context: ssl.SSLContext) -> x509.Certificate:
    """The verified leaf a new session with ``sni`` gets."""
    session = Session(kind, port, sni, context)
    try:
        return session.leaf
    finally:
        session.close()
