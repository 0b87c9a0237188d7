"""The admission rules for VirtualHost and MailDomain. Pure: no I/O, no kopf.

Each check returns nothing or raises :class:`Refusal`, whose HTTP code the webhook passes on to
the API server (and so to ``kubectl``): 422 for an invalid object, 409 for a conflict with
another object or with the host's current state.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from pydantic import ValidationError

from vhost_operator.resources.hostnames import (
    MAX_HOSTNAME_LENGTH,
    MAX_NAME_LENGTH,
    additional_names_problem,
    hostname_problem,
    primary_hostname_problem,
)
from vhost_operator.resources.models import (
    RETRY_ANNOTATION,
    Phase,
    VirtualHostSpec,
    mta_sts_names_problem,
    served_names,
)
from vhost_operator.resources.mtasts import MtaStsPolicy
from vhost_operator.tenancy.themes import check_color, check_logo_url

INVALID = 422
CONFLICT = 409

Body = Mapping[str, Any]


class Refusal(Exception):
    """The object is refused; ``message`` is shown to the user as is."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def review_virtualhost(
    new: Body,
    old: Body | None,
    *,
    name: str,
    hostname_owners: Collection[str],
    domain_owners: Mapping[str, Collection[str]] | None = None,
    primary_hostnames: Collection[str] = (),
    name_owners: Mapping[str, Collection[str]] | None = None,
) -> None:
    """Refuse an invalid VirtualHost create or update.

    ``hostname_owners`` are the names of the VirtualHosts that already serve the new hostname
    (as their hostname or an additional name); ``name_owners`` maps each additional name to
    the same; ``domain_owners`` maps a domain to the names of the VirtualHosts listing it;
    ``primary_hostnames`` are the instance's own, which no VirtualHost may have.
    """
    spec = new.get("spec") or {}
    hostname = spec.get("hostname", "")
    _check_hostname(hostname, what="hostname")
    _check_not_primary(hostname, primary_hostnames)
    _check_additional_names(hostname, spec, primary_hostnames)
    _check_mta_sts(spec)
    _check_spec(spec)
    if old is not None:
        previous = (old.get("spec") or {}).get("hostname")
        if previous is not None and previous != hostname:
            raise Refusal(
                f"hostname is immutable: {name} serves {previous}; create a new VirtualHost "
                f"for {hostname}",
                INVALID,
            )
        _check_retry(new, old, name=name)
    others = sorted(set(hostname_owners) - {name})
    if others:
        raise Refusal(f"hostname {hostname} is already used by VirtualHost {others[0]}", CONFLICT)
    # Only names this change adds: a clash that predates the rule (or got in while the webhook
    # was down) must not block unrelated edits, or the very edit that removes it.
    before = set(served_names((old or {}).get("spec") or {})[1:])
    additional = set(spec.get("additionalNames") or ())
    for extra in served_names(spec)[1:]:
        if extra in before:
            continue
        others = sorted(set((name_owners or {}).get(extra, ())) - {name})
        if others:
            kind = "additional name" if extra in additional else "MTA-STS policy host"
            raise Refusal(
                f"{kind} {extra} is already used by VirtualHost {others[0]} (as its "
                "hostname or another name it serves); a name is served by one host only",
                CONFLICT,
            )
    _check_domains(spec, old, name=name, domain_owners=domain_owners or {})


def review_needed(request: Mapping[str, Any]) -> bool:
    """Whether the rules could answer this AdmissionReview request differently than they
    answered for the object as it stands: not for an update that leaves the spec and the retry
    annotation as they were. Those are kopf's own writes (its finalizer, its record of the
    last handled configuration), the operator's wake-up annotation, label edits and the
    finalizer's removal on deletion: a VirtualHost brings two or more of them for its one
    create, each a full review (both objects parsed, diffed, copied) for nothing. Such an
    update is allowed, like the edits that keep a clash predating a rule (see
    :func:`review_virtualhost`): refusing kopf's own bookkeeping would only stall the host."""
    payload = request.get("request") or {}
    if payload.get("operation") != "UPDATE" or payload.get("subResource"):
        return True
    new, old = payload.get("object") or {}, payload.get("oldObject") or {}
    return new.get("spec") != old.get("spec") or _retry_of(new) != _retry_of(old)


def _retry_of(body: Body) -> Any:
    return ((body.get("metadata") or {}).get("annotations") or {}).get(RETRY_ANNOTATION)


def review_maildomain(
    new: Body,
    *,
    name: str,
    domain_owners: Collection[str],
    primary_hostnames: Collection[str] = (),
    served_as_other_name: Mapping[str, str] | None = None,
) -> None:
    """Refuse an invalid MailDomain; a domain is described by one MailDomain only, and links to
    no primary hostname (linking would create a VirtualHost for it), nor to a name another host
    serves besides its hostname (``served_as_other_name``: VirtualHost -> its hostname)."""
    spec = new.get("spec") or {}
    domain = spec.get("name", "")
    _check_hostname(domain, what="domain")
    virtual_host = spec.get("virtualHost")
    if virtual_host:
        _check_hostname(virtual_host, what="hostname")
        _check_not_primary(virtual_host, primary_hostnames)
        if served_as_other_name:
            host, its_hostname = min(served_as_other_name.items())
            raise Refusal(
                f"virtualHost {virtual_host} is a name VirtualHost {host} serves besides its "
                f"hostname; link the domain to {its_hostname} instead",
                CONFLICT,
            )
    others = sorted(set(domain_owners) - {name})
    if others:
        raise Refusal(
            f"domain {domain} is already described by MailDomain {others[0]}; a domain links to "
            "at most one virtual host",
            CONFLICT,
        )


def _check_domains(
    spec: Mapping[str, Any],
    old: Body | None,
    *,
    name: str,
    domain_owners: Mapping[str, Collection[str]],
) -> None:
    """A domain is a valid, lowercase name (as the CRD's pattern says, with the webhook's clear
    message) and links to at most one host. Only domains this change adds are checked: a
    duplicate that predates the rule must not block unrelated edits (or its own removal)."""
    before = set(((old or {}).get("spec") or {}).get("domains") or ())
    for domain in spec.get("domains") or ():
        if domain in before:
            continue
        _check_hostname(domain, what="domain")
        others = sorted(set(domain_owners.get(domain, ())) - {name})
        if others:
            raise Refusal(
                f"domain {domain} is already linked to VirtualHost {others[0]}; a domain links "
                "to at most one virtual host (remove it there first, or set the MailDomain's "
                "virtualHost, which moves it)",
                CONFLICT,
            )


def _check_hostname(value: str, *, what: str) -> None:
    # A mail domain never names a file: it may use the full length of a DNS name.
    limit = MAX_HOSTNAME_LENGTH if what == "hostname" else MAX_NAME_LENGTH
    problem = hostname_problem(value, max_length=limit)
    if problem is not None:
        raise Refusal(
            problem if what == "hostname" else problem.replace("hostname", what, 1), INVALID
        )


def _check_additional_names(
    hostname: str, spec: Mapping[str, Any], primary_hostnames: Collection[str]
) -> None:
    """Each additional name passes the hostname's checks (with its own clear message), then
    the list as a whole (length, duplicates, the hostname itself)."""
    names = spec.get("additionalNames") or []
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise Refusal("spec.additionalNames must be a list of hostnames", INVALID)
    for extra in names:
        problem = hostname_problem(extra) or primary_hostname_problem(extra, primary_hostnames)
        if problem is not None:
            raise Refusal(f"spec.additionalNames: {problem}", INVALID)
    problem = additional_names_problem(hostname, names)
    if problem is not None:
        raise Refusal(f"spec.additionalNames: {problem}", INVALID)


def _check_mta_sts(spec: Mapping[str, Any]) -> None:
    """The policy's fields, then the ``mta-sts.<domain>`` names it adds to the certificate."""
    wire = spec.get("mtaSts")
    if wire is None:
        return
    try:
        MtaStsPolicy.model_validate(wire)
    except ValidationError as error:
        first = error.errors()[0]
        where = "".join(f".{part}" for part in first["loc"])
        message = str(first["msg"]).removeprefix("Value error, ")
        raise Refusal(f"spec.mtaSts{where}: {message}", INVALID) from error
    problem = mta_sts_names_problem(served_names(spec))
    if problem is not None:
        raise Refusal(f"spec.mtaSts: {problem.removeprefix('mtaSts: ')}", INVALID)


def _check_not_primary(hostname: str, primary_hostnames: Collection[str]) -> None:
    problem = primary_hostname_problem(hostname, primary_hostnames)
    if problem is not None:
        raise Refusal(problem, INVALID)


def _check_spec(spec: Mapping[str, Any]) -> None:
    try:
        parsed = VirtualHostSpec.model_validate(dict(spec))
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise Refusal(f"spec.{where}: {first['msg']}", INVALID) from error
    _check_theme(parsed)


def _check_theme(spec: VirtualHostSpec) -> None:
    """The gate's allow-lists, so a value the gate would drop is refused at ``kubectl apply``."""
    checks = (
        ("colors", spec.theme.colors.to_wire(), check_color),
        ("logos", spec.theme.logos.to_wire(), check_logo_url),
    )
    for group, values, check in checks:
        for field, value in values.items():
            try:
                check(value)
            except ValueError as error:
                raise Refusal(f"spec.theme.{group}.{field}: {error}", INVALID) from None


def _check_retry(new: Body, old: Body, *, name: str) -> None:
    """A changed retry annotation is accepted only on a Failed host (the seed's 409)."""
    requested = (new.get("metadata", {}).get("annotations") or {}).get(RETRY_ANNOTATION)
    before = (old.get("metadata", {}).get("annotations") or {}).get(RETRY_ANNOTATION)
    if requested is None or requested == before:
        return
    phase = (old.get("status") or {}).get("phase") or Phase.PENDING.value
    if phase != Phase.FAILED.value:
        raise Refusal(
            f"retry refused: VirtualHost {name} is {phase}; retry is only accepted for Failed "
            "hosts, so it cannot fight an in-flight chain or redo a healthy host",
            CONFLICT,
        )
