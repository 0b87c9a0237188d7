"""The ACME errors, and how the failures of ``acme``, ``josepy`` and ``requests`` map onto them.

Every failure of the CA or the network is mapped onto this tree at the package's boundary::

    VhostOperatorError
    └── AcmeError                 protocol nonsense, a certificate not matching its key
        ├── AcmeUnavailable       the CA could not be reached, timed out, answered 5xx or
        │   │                     kept rejecting nonces; transient-ish: retrying later may help
        │   └── AcmeRetryLater    the CA answered 429 or 503 with ``Retry-After``: it named
        │                         the time before which it must not be asked again
        ├── AcmeRefused           the CA answered with an ACME problem (rejectedIdentifier,
        │                         unauthorized, rateLimited without Retry-After, ...)
        ├── ChallengeFailed       the CA tried to validate and could not; carries its detail
        └── SelfCheckFailed       (challenges.py) our own fetch of the challenge URL failed;
                                  the CA was not asked

Every message is stable: it names the step, the CA's address from the configuration, the host
and the CA's problem type and detail, with random identifiers (tokens, order and authorization
ids), timestamps and object addresses removed. Identical failures therefore write identical
``status.error`` text and do not cause reconcile hot loops.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime

import requests
from acme import errors as acme_errors
from acme import messages
from josepy import errors as jose_errors

from vhost_operator.errors import VhostOperatorError


class AcmeError(VhostOperatorError):
    """Base of the ACME errors; its message is meant for ``status.error`` as it is."""

    def __init__(self, message: str, *, problem_type: str | None = None) -> None:
        super().__init__(message)
        self.problem_type = problem_type
        """The CA's ``urn:ietf:params:acme:error:*`` type, when the CA sent a problem."""


class AcmeUnavailable(AcmeError):
    """The CA could not be reached or did not finish in time; a later retry may succeed."""


class AcmeRetryLater(AcmeUnavailable):
    """The CA asked to be left alone until ``until`` (``429``/``503`` with ``Retry-After``).

    Nothing is wrong with the host: its order waits, and no request may reach the CA before
    ``until``. ``reason`` is the CA's problem (or HTTP status) without the host or the step, so
    that hosts that never called the CA can be told why they wait too.
    """

    def __init__(
        self, message: str, *, until: datetime, reason: str, problem_type: str | None = None
    ) -> None:
        super().__init__(message, problem_type=problem_type)
        self.until = until
        self.reason = reason


class AcmeRefused(AcmeError):
    """The CA understood the request and refused it (an ACME problem document)."""


class ChallengeFailed(AcmeError):
    """The CA could not validate the HTTP-01 challenge; the message carries the CA's detail."""


def retry_later(
    error: Exception, origin: str, doing: str, hostname: str, until: datetime
) -> AcmeRetryLater:
    problem_type = None
    if isinstance(error, messages.Error):
        reason, problem_type = describe_problem(error, hostname), error.typ
    elif isinstance(error, acme_errors.ClientError) and isinstance(
        response := error.args[0] if error.args else None, requests.Response
    ):
        reason = f"HTTP {response.status_code}"
    else:
        reason = "the CA is busy"
    return AcmeRetryLater(
        f"the CA at {origin} asked to wait while {doing}: {reason}",
        until=until,
        reason=reason,
        problem_type=problem_type,
    )


# What the acme library, josepy and requests raise for failures of the CA or the network.
# KeyError/ValueError cover answers missing a field or not being JSON at all.
LIBRARY_ERRORS = (
    requests.RequestException,
    acme_errors.Error,
    jose_errors.Error,
    ValueError,
    KeyError,
)


def translate(error: Exception, origin: str, doing: str, hostname: str) -> AcmeError:
    """The stable :class:`AcmeError` for a library failure while ``doing`` something."""
    if isinstance(error, messages.Error):
        return _from_problem(error, origin, doing, hostname)
    if isinstance(error, requests.RequestException) and not isinstance(
        error, requests.exceptions.InvalidJSONError
    ):
        return AcmeUnavailable(
            f"cannot reach the ACME server {origin} while {doing}: {_network_cause(error)}"
        )
    if isinstance(error, acme_errors.ClientError) and isinstance(
        response := error.args[0] if error.args else None, requests.Response
    ):
        return _from_status(response.status_code, origin, doing)
    if isinstance(error, acme_errors.NonceError):
        return AcmeRefused(f"the CA at {origin} kept rejecting replay nonces while {doing}")
    return AcmeError(
        f"the ACME server {origin} sent an answer that is not valid ACME while {doing}"
    )


def _network_cause(error: requests.RequestException) -> str:
    # Never str(error): requests puts object addresses and changing ports into it.
    if isinstance(error, requests.exceptions.SSLError):
        return "TLS verification failed; trust its CA (ca_bundle_path) or check directory_url"
    if isinstance(error, requests.exceptions.Timeout):
        return "timed out"
    if isinstance(error, requests.exceptions.ConnectionError):
        return "connection failed"
    return f"request failed ({type(error).__name__})"


def _from_status(status: int, origin: str, doing: str) -> AcmeError:
    """An HTTP error without an ACME problem document (a proxy in between, a wrong URL)."""
    message = f"the ACME server {origin} answered HTTP {status} while {doing}"
    if status >= 500 or status == 429:
        return AcmeUnavailable(message)
    return AcmeRefused(message)


def _from_problem(problem: messages.Error, origin: str, doing: str, hostname: str) -> AcmeError:
    description = describe_problem(problem, hostname)
    if problem.code == "badNonce":  # after BAD_NONCE_ATTEMPTS tries: the CA is unwell
        return AcmeUnavailable(
            f"the CA at {origin} kept rejecting replay nonces while {doing}",
            problem_type=problem.typ,
        )
    if problem.code == "serverInternal":
        return AcmeUnavailable(
            f"the CA at {origin} failed internally while {doing}: {description}",
            problem_type=problem.typ,
        )
    return AcmeRefused(
        f"the CA at {origin} refused {doing}: {description}", problem_type=problem.typ
    )


def describe_problem(problem: messages.Error, hostname: str) -> str:
    """``code: detail`` of a CA problem, with volatile parts (ids, tokens, times) removed."""
    kind = problem.code or problem.typ
    if not problem.detail:
        return kind
    return f"{kind}: {stable_text(problem.detail, keep=hostname)}"


_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?")
_BASE64URL_RUN = re.compile(r"[A-Za-z0-9_-]{16,}")
_MAX_DETAIL = 300


def stable_text(text: str, keep: str = "") -> str:
    """``text`` with random-looking identifiers and timestamps replaced, and kept short.

    CAs put tokens, order and authorization ids and times into their problem details; status
    must not change between identical failures, so those become ``<id>`` and ``<time>``. A
    run of 16+ base64url characters mixing lower case with upper case or digits counts as an
    id; ``keep`` (the hostname, whose labels can look like that) is never touched.
    """
    placeholder = "\x00"
    masked = text.replace(keep, placeholder) if keep else text
    masked = _TIMESTAMP.sub("<time>", masked)
    masked = _BASE64URL_RUN.sub(_redact_if_random, masked)
    masked = masked.replace(placeholder, keep) if keep else masked
    return masked if len(masked) <= _MAX_DETAIL else masked[: _MAX_DETAIL - 1] + "…"


def _redact_if_random(match: re.Match[str]) -> str:
    run = match.group()
    has_lower = any(c.islower() for c in run)
    has_other = any(c.isupper() or c.isdigit() for c in run)
    return "<id>" if has_lower and has_other else run


def check_profile(requested: str | None, offered: Mapping[str, str] | None, origin: str) -> None:
    """Refuse an ACME profile the CA's directory does not list, naming the ones it does.

    Checked before ordering, so a typo costs no order (and no failed-order rate limit), and the
    message says what to write instead of the CA's generic ``invalidProfile``.
    """
    if requested is None:
        return
    if not offered:
        raise AcmeRefused(
            f"the CA at {origin} offers no ACME profiles, so profile {requested!r} cannot be "
            "requested; remove the profile setting"
        )
    if requested not in offered:
        names = ", ".join(sorted(offered))
        raise AcmeRefused(
            f"the CA at {origin} offers no ACME profile {requested!r}; it offers: {names}",
            problem_type="urn:ietf:params:acme:error:invalidProfile",
        )
