"""The benchmark's cluster: a local control plane, one ServiceAccount per component, and a fast
Python client for the benchmark's own reads and writes.

An audited plane's API server logs every request of the components under test (so each is
attributed to the process that made it); the audit log costs the API server CPU on every
request, so the headline figures come from a plane without one. The benchmark's own client uses
the admin identity, which the audit policy leaves out: what it does to set a scenario up or to
watch it never counts against the operator.
"""

from __future__ import annotations

import base64
import collections
import concurrent.futures
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes
import yaml

from tests.harness.audit import AuditedControlPlane
from tests.harness.clusters import install_crds
from tests.harness.identities import service_account_kubeconfig
from vhost_operator.kube.api import connect
from vhost_operator.resources.models import GROUP, VERSION, VIRTUALHOSTS

Object = dict[str, Any]

BENCH_NAMESPACE = "bench"
"""Namespace of the components' ServiceAccounts; the audit policy records this group."""
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
APPLY = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"


@contextmanager
def bench_cluster(workdir: Path, *, audited: bool) -> Iterator[AuditedControlPlane]:
    """A local control plane with the CRDs installed; ``audited``: its API server logs the
    requests of ``BENCH_NAMESPACE``'s accounts, else it writes no audit log."""
    groups = [f"system:serviceaccounts:{BENCH_NAMESPACE}"] if audited else []
    plane = AuditedControlPlane(workdir, groups)
    plane.start()
    try:
        install_crds(plane)
        ensure_namespace(plane, BENCH_NAMESPACE)
        # One binding for the whole group: each component stays a distinct user in the log.
        plane.kubectl(
            "create", "clusterrolebinding", "bench-components", "--clusterrole=cluster-admin",
            f"--group=system:serviceaccounts:{BENCH_NAMESPACE}",
        )  # fmt: skip
        yield plane
    finally:
        plane.stop()


def ensure_namespace(plane: AuditedControlPlane, name: str) -> None:
    plane.kubectl("create", "namespace", name, check=False)


def identity(plane: AuditedControlPlane, name: str) -> Path:
    """A kubeconfig acting as ServiceAccount ``bench/<name>`` (cluster-admin)."""
    plane.kubectl("create", "serviceaccount", name, "-n", BENCH_NAMESPACE, check=False)
    path = plane.workdir / f"{name}.kubeconfig"
    return service_account_kubeconfig(plane, BENCH_NAMESPACE, name, path, duration="6h")


def user_of(name: str) -> str:
    return f"system:serviceaccount:{BENCH_NAMESPACE}:{name}"


# -- the audit log, counted --------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    user: str
    verb: str
    resource: str
    code: int

    @property
    def write(self) -> bool:
        return self.verb in WRITE_VERBS


class AuditLog:
    """Reads the requests logged since a mark: ``mark()`` then ``since(mark)``."""

    def __init__(self, plane: AuditedControlPlane) -> None:
        self.path = plane.audit_log

    def mark(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def since(self, offset: int) -> list[Request]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as log:
            log.seek(offset)
            data = log.read()
        requests = []
        for line in data.splitlines():
            event = json.loads(line)
            ref = event.get("objectRef") or {}
            verb = event["verb"]
            # A watch is logged when it starts and again when it ends: count it once, at start.
            wanted = "ResponseStarted" if verb == "watch" else "ResponseComplete"
            if event.get("stage") != wanted:
                continue
            resource = ref.get("resource", event.get("requestURI", "?"))
            if ref.get("subresource"):
                resource = f"{resource}/{ref['subresource']}"
            code = int(event.get("responseStatus", {}).get("code", 0))
            requests.append(Request(event["user"]["username"], verb, resource, code))
        return requests


def breakdown(requests: Iterable[Request], user: str) -> collections.Counter[str]:
    """``verb resource`` → count, for one user."""
    return collections.Counter(f"{r.verb} {r.resource}" for r in requests if r.user == user)


# -- the benchmark's own client ----------------------------------------------------------------


def drained(response: Any) -> None:
    """Read a raw (``_preload_content=False``) answer to its end, which hands its connection
    back to the pool."""
    response.read()


class Client:
    """The kubernetes client with a connection per thread, for parallel writes."""

    def __init__(self, kubeconfig: Path, threads: int = 16) -> None:
        self.threads = threads
        self.api = connect(threads * 2, kubeconfig=kubeconfig)
        self.custom = kubernetes.client.CustomObjectsApi(self.api)
        self.core = kubernetes.client.CoreV1Api(self.api)

    def parallel(self, calls: Iterable[Callable[[], object]]) -> float:
        """Run the calls on ``threads`` threads; seconds until all returned (errors raise)."""
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(self.threads) as pool:
            for future in [pool.submit(call) for call in calls]:
                future.result()
        return time.monotonic() - started

    def create_virtualhosts(self, manifests: Iterable[Object]) -> float:
        def create(manifest: Object) -> Callable[[], object]:
            return lambda: drained(
                self.custom.create_cluster_custom_object(
                    GROUP, VERSION, VIRTUALHOSTS, manifest, _preload_content=False
                )
            )

        return self.parallel(create(m) for m in manifests)

    def patch_virtualhost_status(self, name: str, status: Object) -> None:
        drained(
            self.custom.patch_cluster_custom_object_status(
                GROUP, VERSION, VIRTUALHOSTS, name, {"status": status}, _preload_content=False
            )
        )

    def apply(self, namespace: str, manifest: Object) -> None:
        """Server-side apply of a ConfigMap or Secret."""
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        function = (
            self.core.patch_namespaced_config_map
            if kind == "ConfigMap"
            else self.core.patch_namespaced_secret
        )
        response = function(
            name,
            namespace,
            manifest,
            field_manager="bench",
            force=True,
            _content_type=APPLY,
            _preload_content=False,
        )
        drained(response)


def virtualhost(name: str, labels: Mapping[str, str]) -> Object:
    """Host ``mail.<name>.example.com`` for mail domain ``<name>.example.com`` (a domain links
    to one host only)."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "VirtualHost",
        "metadata": {"name": name, "labels": dict(labels)},
        "spec": {"hostname": f"mail.{name}.example.com", "domains": [f"{name}.example.com"]},
    }


# -- following objects -------------------------------------------------------------------------


class Tracker:
    """List-then-watch in a thread; records, per object name, when ``done(obj)`` first held
    (and when ``started(obj)`` first held, if given: e.g. the operator's first status).

    One watch request however many objects, resumed from the last event's version when the
    API server ends it (a full list again only after an error): the benchmark's own reads cost
    the servers under test almost nothing, also at 10,000 objects. Objects are kept without
    their ``managedFields`` (half of a small object's size, and never asked about).
    """

    def __init__(
        self,
        list_function: Callable[..., Any],
        *arguments: Any,
        done: Callable[[Object], bool],
        label_selector: str,
        started: Callable[[Object], bool] | None = None,
    ) -> None:
        self._list = list_function
        self._arguments = arguments
        self._done = done
        self._selector = label_selector
        self._lock = threading.RLock()
        self.objects: dict[str, Object] = {}
        self.done_at: dict[str, float] = {}
        self._started = started
        self.started_at: dict[str, float] = {}
        self._stopped = threading.Event()
        self._listed = threading.Event()
        self._watch = kubernetes.watch.Watch()
        self._thread = threading.Thread(target=self._run, daemon=True, name="bench-tracker")
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._watch.stop()

    def _see(self, obj: Object, deleted: bool = False) -> None:
        name = obj["metadata"]["name"]
        obj["metadata"].pop("managedFields", None)
        with self._lock:
            if deleted:
                self.objects.pop(name, None)
                self.done_at.pop(name, None)
                return
            self.objects[name] = obj
            if self._started is not None and self._started(obj):
                self.started_at.setdefault(name, time.monotonic())
            if self._done(obj):
                self.done_at.setdefault(name, time.monotonic())
            else:
                self.done_at.pop(name, None)

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                response = self._list(
                    *self._arguments, label_selector=self._selector, _preload_content=False
                )
                body = json.loads(response.data)
                with self._lock:  # a relist forgets what was deleted meanwhile, all at once
                    self.objects = {}
                    for obj in body["items"]:
                        self._see(obj)
                self._listed.set()
                version = body["metadata"]["resourceVersion"]
                # Without timeout_seconds the stream itself watches again from the last event's
                # version whenever the API server closes it.
                for event in self._watch.stream(
                    self._list,
                    *self._arguments,
                    label_selector=self._selector,
                    resource_version=version,
                ):
                    if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                        self._see(event["raw_object"], deleted=event["type"] == "DELETED")
            except Exception:  # a relist fixes whatever went wrong (410 Gone, a reset stream)
                if not self._stopped.is_set():
                    time.sleep(0.5)

    def wait(self, names: Iterable[str], *, timeout: float) -> float | None:
        """Wait until ``done`` held for every name; the time (monotonic) the last one got
        there, or ``None`` on timeout."""
        wanted = set(names)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if wanted <= self.done_at.keys():
                    return max(self.done_at[name] for name in wanted)
            time.sleep(0.1)
        return None

    def wait_gone(self, *, timeout: float) -> bool:
        """Wait until no object is left (after the first list); whether that happened."""
        deadline = time.monotonic() + timeout
        if not self._listed.wait(timeout):
            return False
        while time.monotonic() < deadline:
            with self._lock:
                if not self.objects:
                    return True
            time.sleep(0.2)
        return False

    def count(self, names: Iterable[str], predicate: Callable[[Object], bool]) -> int:
        with self._lock:
            return sum(1 for n in names if n in self.objects and predicate(self.objects[n]))


def phase(obj: Object) -> str | None:
    value: str | None = (obj.get("status") or {}).get("phase")
    return value


def settled(phase_value: str | None) -> bool:
    return phase_value in ("Ready", "Failed")


def webhook_client_config(
    plane: AuditedControlPlane, name: str, kind: str = "validatingwebhookconfigurations"
) -> tuple[str, bytes]:
    """URL and CA bundle of the webhook ``name`` in the operator's configuration of ``kind``."""
    listed = plane.kubectl("get", kind, "-o", "yaml")
    for configuration in yaml.safe_load(listed.stdout)["items"]:
        for webhook in configuration.get("webhooks") or ():
            if webhook["name"] == name:
                config = webhook["clientConfig"]
                return config["url"], base64.b64decode(config["caBundle"])
    raise LookupError(f"no webhook {name} registered")
