"""The connections to the CA, and one HTTP request over them without a ``requests.Session``.

:class:`TrustingAdapter` trusts a CA bundle per client; :class:`SharedConnections` keeps a
client's connections to the CA open across its issuances and sends one request over them
straight through ``urllib3`` (:meth:`SharedConnections.request`), answering with the
``requests.Response`` the acme library reads and raising the ``requests`` exceptions the error
mapping (``errors``) knows.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urljoin

import requests
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from requests.utils import (
    DEFAULT_CA_BUNDLE_PATH,
    get_encoding_from_headers,
    prepend_scheme_if_needed,
    select_proxy,
    urldefragauth,
)
from urllib3 import BaseHTTPResponse, Timeout
from urllib3 import exceptions as urllib3_errors
from urllib3.util import parse_url

REDIRECTS = 30
"""Redirects a ``GET`` or ``HEAD`` follows: ``requests``' own limit."""

_REDIRECT_STATUSES = frozenset((301, 302, 303, 307, 308))


class TrustingAdapter(HTTPAdapter):
    """Verifies the CA's HTTPS certificate against a given bundle instead of the system store
    (``None``: as ``requests`` verifies).

    ``acme`` passes ``verify=True`` with every request, which overrides a session-level bundle;
    substituting it at the transport keeps the trust decision per client instead of global
    (``REQUESTS_CA_BUNDLE`` would change it for the whole process).
    """

    def __init__(self, ca_bundle_path: str | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._ca_bundle_path = ca_bundle_path
        self._bundle_is_directory: dict[str, bool] = {}

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float | None, float | None] | None = None,
        verify: bool | str = True,
        cert: str | tuple[str, str] | None = None,
        proxies: dict[str, str] | None = None,
    ) -> requests.Response:
        # requests turns verify=True into REQUESTS_CA_BUNDLE when that is set, so anything but
        # an explicit "do not verify" means: verify against the configured bundle.
        if self._ca_bundle_path is not None and verify is not False:
            verify = self._ca_bundle_path
        return super().send(request, stream, timeout, verify, cert, proxies)

    # requests looks at the bundle's path for every request (whether it exists, twice whether
    # it is a directory): three or four filesystem calls per ACME request, about 2 % of the
    # operator's CPU in a profile of a 300-host round. The two methods below give requests'
    # own answers, looking once per path (a missing bundle is looked for again).

    def _bundle(self, verify: bool | str) -> tuple[str, bool]:
        """The bundle ``verify`` names (requests' default for ``True``), and whether it is a
        directory; ``OSError`` as requests raises it if there is none."""
        location = verify if isinstance(verify, str) else DEFAULT_CA_BUNDLE_PATH
        directory = self._bundle_is_directory.get(location)
        if directory is None:
            if not os.path.exists(location):
                raise OSError(
                    f"Could not find a suitable TLS CA certificate bundle, invalid path: {location}"
                )
            directory = self._bundle_is_directory[location] = os.path.isdir(location)
        return location, directory

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: bool | str, cert: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        if not isinstance(verify, str):  # requests looks at nothing then
            return super().build_connection_pool_key_attributes(request, verify, cert)
        host, pool = super().build_connection_pool_key_attributes(request, True, cert)
        location, directory = self._bundle(verify)
        pool["ca_cert_dir" if directory else "ca_certs"] = location
        return host, pool

    def cert_verify(self, conn: Any, url: str, verify: bool | str, cert: Any) -> None:
        if cert or not verify or not url.lower().startswith("https"):
            super().cert_verify(conn, url, verify, cert)
            return
        location, directory = self._bundle(verify)
        conn.cert_reqs = "CERT_REQUIRED"
        if directory:
            conn.ca_cert_dir = location
        else:
            conn.ca_certs = location


class SharedConnections(TrustingAdapter):
    """Connections to the CA kept open for every issuance of one client, up to ``connections``
    (one per thread that may call the CA at the same time), verified as
    :class:`TrustingAdapter` verifies, through ``proxies`` (``requests``' mapping, read from
    the environment once by the client).

    Each issuance used to bring its own connection: a TCP and TLS handshake per issuance and
    per renewal-information fetch, with a TLS context built and the CA bundle loaded for each.
    Issuing against pebble, 16 at a time, that was 2.8 of the client's 15.8 ms of CPU per
    certificate (and the CA's side of every handshake). The pool lives as long as the client;
    :meth:`close_all` closes it.
    """

    def __init__(
        self,
        ca_bundle_path: str | None,
        *,
        connections: int,
        proxies: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(ca_bundle_path, pool_maxsize=connections)
        self._proxies = dict(proxies or {})

    def close(self) -> None:
        """Nothing: a session this is mounted in closes it, while the others go on."""

    def close_all(self) -> None:
        """Close every pooled connection (a later request opens a new one)."""
        super().close()

    def request(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None,
        headers: Mapping[str, str],
        timeout: float,
        verify: bool = True,
    ) -> requests.Response:
        """Send one request as ``requests.Session.request`` sends it through this adapter,
        without the session: the same bytes on the wire, the same ``requests`` exceptions.

        Per ACME request the session's machinery (preparing and merging settings, hooks,
        cookie jars, the adapter's own checks) cost more CPU than ``urllib3``'s sending and
        receiving: in a profile of issuing against pebble, 31 % of the client's samples were
        in ``Session.request``, 16 % in ``urllib3``. ``headers`` are sent as given (the caller
        merges the session's defaults), and cookies are neither kept nor sent: ACME keeps its
        state in URLs and nonces, and every issuance had a session of its own anyway.

        A ``GET`` or ``HEAD`` follows redirects as ``requests`` would (up to
        :data:`REDIRECTS`); a ``POST`` does not: its JWS names the URL it was signed for,
        which a CA checks (RFC 8555 section 6.4), so it could not be accepted elsewhere.
        """
        for _ in range(REDIRECTS + 1):
            response = self._send(method, url, body, headers, timeout, verify)
            location = response.headers.get("Location")
            if method == "POST" or response.status_code not in _REDIRECT_STATUSES or not location:
                return response
            url = urljoin(url, location)
        raise requests.TooManyRedirects(f"Exceeded {REDIRECTS} redirects.", response=response)

    def _send(
        self,
        method: str,
        url: str,
        body: bytes | None,
        headers: Mapping[str, str],
        timeout: float,
        verify: bool,
    ) -> requests.Response:
        proxy = select_proxy(url, self._proxies) if self._proxies else None
        if proxy is not None:
            proxy = prepend_scheme_if_needed(proxy, "http")
        trust = self._trust(url, verify)  # OSError for a missing bundle, as requests raises
        try:
            manager = self.poolmanager if proxy is None else self.proxy_manager_for(proxy)
            pool = manager.connection_from_url(url, pool_kwargs=trust)
        except urllib3_errors.URLSchemeUnknown as error:
            raise requests.exceptions.InvalidSchema(error) from error
        except urllib3_errors.LocationValueError as error:
            raise requests.exceptions.InvalidURL(error) from error
        try:
            raw = pool.urlopen(
                method,
                _target(url, proxy),
                body=body,
                headers=headers,
                redirect=False,
                assert_same_host=False,
                preload_content=False,
                decode_content=False,
                retries=self.max_retries,
                timeout=Timeout(connect=timeout, read=timeout),
                chunked=False,
            )
        except (urllib3_errors.HTTPError, OSError) as error:
            mapped = as_requests_error(error)
            if mapped is error:
                raise
            raise mapped from error
        return _response(raw, url, _read(raw))

    def _trust(self, url: str, verify: bool) -> dict[str, Any]:
        """The pool's TLS settings as :class:`TrustingAdapter` resolves them (nothing to
        verify over plain HTTP, where ``urllib3`` drops them anyway)."""
        if url[:6].lower() != "https:":
            return {}
        if not verify:
            return {"cert_reqs": "CERT_NONE"}
        location, directory = self._bundle(self._ca_bundle_path or True)
        return {"cert_reqs": "CERT_REQUIRED", "ca_cert_dir" if directory else "ca_certs": location}


def _target(url: str, proxy: str | None) -> str:
    """What the request line names: the path, or the whole URL for plain HTTP through an
    HTTP proxy (``HTTPAdapter.request_url``)."""
    http_proxy = proxy is not None and not proxy.lower().startswith("socks")
    if http_proxy and not url.lower().startswith("https:"):
        return urldefragauth(url)
    path = parse_url(url).request_uri
    return f"/{path.lstrip('/')}" if path.startswith("//") else path


def _read(raw: BaseHTTPResponse) -> bytes:
    """The whole body, decoded, as ``Response.content`` reads it, with the errors it raises
    (its generator of 10 kB chunks cost as much as the rest of building the response).
    Read to its end, the connection goes back to the pool."""
    try:
        return raw.read(decode_content=True)
    except urllib3_errors.ProtocolError as error:
        raise requests.exceptions.ChunkedEncodingError(error) from error
    except urllib3_errors.DecodeError as error:
        raise requests.exceptions.ContentDecodingError(error) from error
    except urllib3_errors.ReadTimeoutError as error:
        raise requests.ConnectionError(error) from error
    except urllib3_errors.SSLError as error:
        raise requests.exceptions.SSLError(error) from error


def _response(raw: BaseHTTPResponse, url: str, content: bytes) -> requests.Response:
    """The ``requests.Response`` ``HTTPAdapter.build_response`` makes of ``raw`` (without
    cookies), its body ``content`` already read."""
    response = requests.Response()
    response._content = content
    response._content_consumed = True
    response.status_code = raw.status
    response.headers = CaseInsensitiveDict(raw.headers)
    response.encoding = get_encoding_from_headers(response.headers)
    response.raw = raw
    if raw.reason is not None:  # requests' own default is None too
        response.reason = raw.reason
    response.url = url
    return response


def as_requests_error(error: Exception) -> Exception:
    """The ``requests`` exception ``HTTPAdapter.send`` raises for a ``urllib3`` failure while
    sending (``errors.translate`` and the acme library know only ``requests``' tree)."""
    if isinstance(error, urllib3_errors.ProtocolError | OSError):
        return requests.ConnectionError(error)
    if isinstance(error, urllib3_errors.MaxRetryError):
        reason = error.reason
        if isinstance(reason, urllib3_errors.ConnectTimeoutError) and not isinstance(
            reason, urllib3_errors.NewConnectionError
        ):
            return requests.ConnectTimeout(error)
        if isinstance(reason, urllib3_errors.ResponseError):
            return requests.exceptions.RetryError(error)
        if isinstance(reason, urllib3_errors.ProxyError):
            return requests.exceptions.ProxyError(error)
        if isinstance(reason, urllib3_errors.SSLError):
            return requests.exceptions.SSLError(error)
        return requests.ConnectionError(error)
    if isinstance(error, urllib3_errors.ClosedPoolError):
        return requests.ConnectionError(error)
    if isinstance(error, urllib3_errors.ProxyError):
        return requests.exceptions.ProxyError(error)
    if isinstance(error, urllib3_errors.SSLError):
        return requests.exceptions.SSLError(error)
    if isinstance(error, urllib3_errors.ReadTimeoutError):
        return requests.ReadTimeout(error)
    if isinstance(error, urllib3_errors.InvalidHeader):
        return requests.exceptions.InvalidHeader(error)
    return error  # requests lets any other urllib3 error through as it is
