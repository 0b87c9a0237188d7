"""A small HTTP server in a thread of the test, standing in for a peer of the code under test
(the mail web app, a challenge responder, a load balancer in front of nginx). The test gives
the request handler, a subclass of :class:`Handler`; the server answers on a free port of the
given address until :meth:`StandIn.close`.

Usage::

    class Hello(Handler):
        def do_GET(self) -> None:
            self.reply(b"hello\\n")

    with contextlib.closing(StandIn(Hello)) as hello:
        urllib.request.urlopen(hello.url)
"""

from __future__ import annotations

import http.server
import threading


class Handler(http.server.BaseHTTPRequestHandler):
    """A stand-in's request handler: it logs no request (the test's output stays readable)
    and answers with :meth:`reply`."""

    def reply(self, body: bytes, status: int = 200) -> None:
        """``status`` with ``body``, its length said (so an HTTP/1.1 connection may stay open)."""
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


class _HangUpsExpected(http.server.ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass


class StandIn:
    """``handler`` served by a threaded HTTP server on a free port of ``address``.

    ``report_errors=False`` keeps quiet about a request whose client hung up, for a stand-in
    whose client the test kills on purpose (an operator killed mid-request)."""

    def __init__(
        self,
        handler: type[http.server.BaseHTTPRequestHandler],
        address: str = "127.0.0.1",
        *,
        report_errors: bool = True,
    ) -> None:
        server = http.server.ThreadingHTTPServer if report_errors else _HangUpsExpected
        self.server = server((address, 0), handler)
        self.port: int = self.server.server_address[1]
        self.url = f"http://{address}:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stops serving and closes the listening socket."""
        self.server.shutdown()
        self.server.server_close()
        self._thread.join()
