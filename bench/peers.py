"""Item 1's peers: the same N certificates from the same pebble settings, without the operator.

* **bare client**: a minimal concurrent ACME client on the ``acme`` library the operator uses
  (one account, a thread pool, EC keys, HTTP-01 answered from memory). It does nothing but
  issue: no Kubernetes, no nginx, no stored keys. The floor of what this pebble on this machine
  allows; pebble 2.4 hangs for good when pushed beyond about 68 certificates/s, so its
  concurrency stays at a level pebble survives (``CONCURRENCY``).
* **certbot** (from PyPI, in its own virtualenv in the build cache): what an administrator
  would run, a few processes in parallel, each with its own config directory (so its own
  account) and one ``certbot certonly --webroot`` per hostname, the webroot served on the port
  pebble validates.

Each gets its own pebble (same settings as item 1's: ``PEBBLE_VA_NOSLEEP=1``, no nonce
rejection, no authorization reuse) whose names all resolve to 127.0.0.1, and the time from the
first request to the last certificate is measured.
"""

from __future__ import annotations

import concurrent.futures
import functools
import http.server
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from acme import challenges, client, crypto_util, messages
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from josepy.jwa import ES256
from josepy.jwk import JWKEC

from bench.report import Figure, say
from tests.harness.node_images import cache_root
from tests.harness.pebble import Pebble
from tests.harness.processes import free_port
from vhost_operator.provisioning.budget import BudgetLimits, time_for_orders
from vhost_operator.settings import Settings

CONCURRENCY = 8
"""Threads of the bare client: about 60 certificates/s here, below where pebble 2.4 hangs."""
CERTBOT_VERSION = "5.8.0"
CERTBOT_PROCESSES = 4
"""certbot processes at once, each with its own config directory."""
LOCALHOST = "127.0.0.1"
WELL_KNOWN = "/.well-known/acme-challenge/"


@contextmanager
def _http_server(handler: Callable[..., http.server.BaseHTTPRequestHandler]) -> Iterator[int]:
    """A threaded HTTP server on a free loopback port for the ``with`` block; yields the port."""
    server = http.server.ThreadingHTTPServer((LOCALHOST, free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def _memory_handler(tokens: dict[str, bytes]) -> type[http.server.BaseHTTPRequestHandler]:
    class Answer(_Quiet):
        def do_GET(self) -> None:
            body = tokens.get(self.path.removeprefix(WELL_KNOWN))
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

    return Answer


# -- the bare client ------------------------------------------------------------------------


def _private_key_pem() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class _BareClient:
    """One ACME account; each thread of the pool keeps its own connection (``ClientV2``)."""

    def __init__(self, pebble: Pebble, tokens: dict[str, bytes]) -> None:
        self._pebble = pebble
        self._tokens = tokens
        key = ec.generate_private_key(ec.SECP256R1())
        self._jwk = JWKEC(key=key)
        self._local = threading.local()
        net = self._network(None)
        directory = client.ClientV2.get_directory(pebble.directory_url, net)
        registration = messages.NewRegistration.from_data(terms_of_service_agreed=True)
        self._account = client.ClientV2(directory, net).new_account(registration)
        self._directory = directory

    def _network(self, account: messages.RegistrationResource | None) -> client.ClientNetwork:
        return client.ClientNetwork(
            self._jwk,
            alg=ES256,
            account=account,
            user_agent="vhost-operator-bench-bare",
            # requests takes a CA bundle's path where acme's annotation says bool
            verify_ssl=str(self._pebble.ca_bundle_path),  # type: ignore[arg-type]
        )

    def _client(self) -> client.ClientV2:
        if not hasattr(self._local, "client"):
            self._local.client = client.ClientV2(self._directory, self._network(self._account))
        acme: client.ClientV2 = self._local.client
        return acme

    def issue(self, hostname: str) -> None:
        """Order, answer HTTP-01, finalize, download; polling every ``POLL`` seconds (the
        library's own loops sleep a whole second, which would measure the sleeps)."""
        acme = self._client()
        csr = crypto_util.make_csr(_private_key_pem(), [hostname])
        order = acme.new_order(csr)
        for authorization in order.authorizations:
            challenge = next(
                c for c in authorization.body.challenges if isinstance(c.chall, challenges.HTTP01)
            )
            response, validation = challenge.response_and_validation(acme.net.key)
            self._tokens[challenge.chall.encode("token")] = validation.encode()
            acme.answer_challenge(challenge, response)
        for authorization in order.authorizations:
            _until(functools.partial(_decided, acme, authorization))
        order = acme.begin_finalization(order)

        def issued() -> bool:
            nonlocal order
            body = messages.Order.from_json(acme._post_as_get(order.uri).json())
            order = order.update(body=body)
            return body.status == messages.STATUS_VALID and body.certificate is not None

        _until(issued)
        assert order.body.certificate is not None
        certificate = acme._post_as_get(order.body.certificate).text
        assert "BEGIN CERTIFICATE" in certificate, f"no certificate for {hostname}"


def _decided(acme: client.ClientV2, authorization: messages.AuthorizationResource) -> bool:
    status: messages.Status = acme.poll(authorization)[0].body.status
    return status != messages.STATUS_PENDING


POLL = 0.05
"""Seconds between two polls of an authorization or an order (pebble validates at once)."""


def _until(done: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError("pebble did not finish in time")
        time.sleep(POLL)


def bare_client(count: int, workdir: Path, concurrency: int = CONCURRENCY) -> float:
    """Seconds for a minimal concurrent client to get ``count`` certificates from pebble."""
    tokens: dict[str, bytes] = {}
    with (
        _http_server(_memory_handler(tokens)) as port,
        Pebble(http_port=port, workdir=workdir / "pebble-bare") as pebble,
    ):
        bare = _BareClient(pebble, tokens)
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(bare.issue, [f"bare-{i}.example.com" for i in range(count)]))
        elapsed = time.monotonic() - started
    say(
        f"bare acme client ({concurrency} threads): {count} certificates in {elapsed:.1f}s "
        f"({count / elapsed:.1f}/s)"
    )
    return elapsed


# -- certbot --------------------------------------------------------------------------------


def certbot_binary() -> Path:
    """certbot from PyPI in a virtualenv of its own under the build cache, made on first use
    (about a minute) and kept: ``certbot-<version>``, complete once ``.installed`` exists."""
    home = cache_root() / f"certbot-{CERTBOT_VERSION}"
    if not (home / ".installed").exists():
        subprocess.run(["rm", "-rf", str(home)], check=True)
        subprocess.run(["python3", "-m", "venv", str(home)], check=True)
        pip = [str(home / "bin" / "pip"), "install", "--quiet", f"certbot=={CERTBOT_VERSION}"]
        subprocess.run(pip, check=True)
        (home / ".installed").touch()
    return home / "bin" / "certbot"


def _certbot_worker(
    certbot: Path, pebble: Pebble, webroot: Path, directory: Path, hostnames: list[str]
) -> None:
    directory.mkdir(parents=True)
    env = {**os.environ, "REQUESTS_CA_BUNDLE": str(pebble.ca_bundle_path)}
    for hostname in hostnames:
        argv = [
            str(certbot), "certonly", "--non-interactive", "--agree-tos",
            "--register-unsafely-without-email", "--server", pebble.directory_url,
            "--config-dir", str(directory / "config"), "--work-dir", str(directory / "work"),
            "--logs-dir", str(directory / "logs"), "--webroot", "--webroot-path", str(webroot),
            "--key-type", "ecdsa", "-d", hostname,
        ]  # fmt: skip
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"certbot for {hostname}: {done.stderr.strip()[-400:]}")


def certbot(count: int, workdir: Path, processes: int = CERTBOT_PROCESSES) -> float:
    """Seconds for ``processes`` certbots in parallel to get ``count`` certificates."""
    binary = certbot_binary()
    webroot = workdir / "certbot-webroot"
    (webroot / WELL_KNOWN.strip("/")).mkdir(parents=True, exist_ok=True)
    handler = functools.partial(_Quiet, directory=str(webroot))
    hostnames = [f"certbot-{i}.example.com" for i in range(count)]
    with (
        _http_server(handler) as port,
        Pebble(http_port=port, workdir=workdir / "pebble-certbot") as pebble,
    ):
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(processes) as pool:
            shares = [hostnames[i::processes] for i in range(processes)]
            work = [
                pool.submit(
                    _certbot_worker, binary, pebble, webroot, workdir / f"certbot-{i}", share
                )
                for i, share in enumerate(shares)
                if share
            ]
            for future in work:
                future.result()
        elapsed = time.monotonic() - started
    say(
        f"certbot {CERTBOT_VERSION} ({processes} at a time, one config directory each): "
        f"{count} certificates in {elapsed:.1f}s ({count / elapsed:.1f}/s)"
    )
    return elapsed


# -- the comparison -------------------------------------------------------------------------


def compare(
    count: int, operator_seconds: float | None, workdir: Path, *, with_certbot: bool
) -> list[Figure]:
    """Run the peers for ``count`` certificates; the operator's time as a ratio of each."""
    item = f"1. peers, {count} certificates"
    say(f"\n== {item} (own pebble each, same settings) ==")
    figures: list[Figure] = []
    runs: list[tuple[str, str, Callable[[int, Path], float]]] = [
        (f"bare acme client ({CONCURRENCY} threads)", "bare client", bare_client)
    ]
    if with_certbot:
        runs.append((f"certbot ({CERTBOT_PROCESSES} at a time)", "certbot", certbot))
    for name, short, run in runs:
        seconds = run(count, workdir)
        figures.append(Figure(item, name, f"{seconds:.1f} s", seconds=seconds))
        if operator_seconds is not None:
            ratio = operator_seconds / seconds
            say(f"operator / {short}: {operator_seconds:.1f}s / {seconds:.1f}s = {ratio:.2f}x")
            figures.append(Figure(item, f"operator / {short}", f"{ratio:.2f}x"))
    return figures


def production_limits(count: int = 10_000) -> Figure:
    """How long ``count`` new hosts take against the production CA's order limit (the
    operator's default budget), from a full bucket."""
    settings = Settings()
    limits = BudgetLimits(settings.acme_order_limit, timedelta(seconds=settings.acme_order_window))
    hours = time_for_orders(count, limits).total_seconds() / 3600
    say(
        f"\n{count:,} new hosts against the production CA's limit ({limits.describe()}, one more "
        f"every {limits.interval.total_seconds():g}s) would take {hours:.1f} h"
    )
    return Figure(f"1. {count:,} hosts, production CA limits", limits.describe(), f"{hours:.1f} h")
