"""A local control plane whose API server keeps an audit log of some users' requests, and the
questions the RBAC tests ask of it: which permissions were used, and was anything refused.

The audit log is the API server's own record of every request it authorized (or refused), with
the RBAC verb, resource, namespace, name and response code, so it shows exactly what a
ServiceAccount needed, whichever client library made the call.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.harness.controlplane import LocalControlPlane
from tests.harness.processes import ManagedProcess


class AuditedControlPlane(LocalControlPlane):
    """:class:`LocalControlPlane` with ``--audit-log-path``, recording the requests of users in
    ``groups`` (e.g. ``system:serviceaccounts:<namespace>``) at the Metadata level. No groups:
    no audit log at all (the benchmark's headline runs on such a plane, since auditing costs
    the API server CPU on every request)."""

    def __init__(self, workdir: Path, groups: Iterable[str]) -> None:
        super().__init__(workdir)
        self.audit_log = self.workdir / "audit.log"
        self._groups = list(groups)

    def _spawn(
        self, name: str, argv: list[str], env: dict[str, str] | None = None
    ) -> ManagedProcess:
        if name == "kube-apiserver" and self.audited:
            policy = self.workdir / "audit-policy.yaml"
            policy.write_text(
                yaml.safe_dump(
                    {
                        "apiVersion": "audit.k8s.io/v1",
                        "kind": "Policy",
                        "omitStages": ["RequestReceived"],
                        "rules": [
                            {"level": "Metadata", "userGroups": self._groups},
                            {"level": "None"},
                        ],
                    }
                )
            )
            argv = [
                *argv,
                f"--audit-policy-file={policy}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-format=json",
                "--audit-log-mode=blocking",  # every request is on disk before it is answered
            ]
        return super()._spawn(name, argv, env)

    @property
    def audited(self) -> bool:
        """Whether the API server writes an audit log."""
        return bool(self._groups)

    def requests(self) -> list[AuditedRequest]:
        if not self.audit_log.exists():
            raise AssertionError(f"the API server wrote no audit log at {self.audit_log}")
        return list(parse_audit_log(self.audit_log.read_text()))


@dataclass(frozen=True)
class AuditedRequest:
    user: str
    verb: str
    api_group: str
    resource: str
    """With the subresource, as RBAC names it: ``virtualhosts/status``."""
    namespace: str | None
    name: str | None
    code: int
    user_agent: str

    @property
    def rbac_verbs(self) -> set[str]:
        """The RBAC verbs this request needed. A server-side apply that created its object is
        a ``patch`` that the API server also authorized as ``create`` (answered 201)."""
        if self.verb == "patch" and self.code == 201:
            return {"patch", "create"}
        return {self.verb}


STAGES = ("ResponseStarted", "ResponseComplete")


def parse_audit_log(text: str) -> Iterator[AuditedRequest]:
    for line in text.splitlines():
        event: dict[str, Any] = json.loads(line)
        # A watch is still open when the log is read: its ResponseStarted event is the record.
        if event.get("stage") not in STAGES or "objectRef" not in event:
            continue
        ref = event["objectRef"]
        resource = ref.get("resource", "")
        if ref.get("subresource"):
            resource = f"{resource}/{ref['subresource']}"
        yield AuditedRequest(
            user=event["user"]["username"],
            verb=event["verb"],
            api_group=ref.get("apiGroup", ""),
            resource=resource,
            namespace=ref.get("namespace"),
            name=ref.get("name"),
            code=int(event.get("responseStatus", {}).get("code", 0)),
            user_agent=event.get("userAgent", ""),
        )


@dataclass(frozen=True)
class Grant:
    """One verb on one resource that a Role or ClusterRole gives, where it gives it."""

    verb: str
    api_group: str
    resource: str
    namespace: str | None
    """``None``: cluster-wide (a ClusterRole)."""
    resource_names: tuple[str, ...] = ()

    def covers(self, request: AuditedRequest) -> bool:
        return (
            self.verb in request.rbac_verbs
            and self.api_group == request.api_group
            and self.resource == request.resource
            and (self.namespace is None or self.namespace == request.namespace)
            and (not self.resource_names or request.name in self.resource_names)
        )

    def __str__(self) -> str:
        where = f"in {self.namespace}" if self.namespace else "cluster-wide"
        names = f" {list(self.resource_names)}" if self.resource_names else ""
        return f"{self.verb} {self.api_group or 'core'}/{self.resource}{names} {where}"


def grants_of(role: dict[str, Any]) -> list[Grant]:
    """Every (verb, resource) a rendered Role or ClusterRole grants."""
    namespace = role["metadata"].get("namespace") if role["kind"] == "Role" else None
    return [
        Grant(verb, group, resource, namespace, tuple(rule.get("resourceNames") or ()))
        for rule in role.get("rules") or []
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    ]
