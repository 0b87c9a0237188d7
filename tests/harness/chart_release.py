"""The chart installed by Helm on the harness's real node, the way the README's quick start
installs it: the Dockerfile's images (imported into the node's containerd), nginx with its agent,
ACME against pebble, the webhook. Used by ``tests/integration/test_chart_on_node.py`` and by
``make demo-node``.

What stands in for the outside world, all on the node's own address (198.18.0.1, local to this
machine, reached by pods through their bridge):

- **The ACME CA**: pebble listens there, so the operator pod reaches its API; its DNS answers
  every name with that address, and it validates HTTP-01 on the nginx Service's fixed NodePort
  there (``nginx.service.nodePorts.http``), i.e. through kube-proxy into the nginx pod, as a
  public CA reaches a cluster through its load balancer. The operator trusts pebble's TLS
  certificate through the chart's CA-bundle value (a ConfigMap).
- **The load balancer** the operator's self-check goes through (``acme.selfCheckAddress``; pods
  cannot resolve the hostnames): :class:`Hairpin`, which forwards to the same NodePort.
- **The mail web app** the hosts proxy to (``nginx.upstream``): a tiny HTTP server there.
- **The webhook**: nothing stands in. The chart's webhook configuration names the webhook
  Service, and the API server (a process on the host) reaches its ClusterIP through kube-proxy.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import json
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509

from tests.harness.controlplane import REPO
from tests.harness.helm import CHART, Helm, helm_binary
from tests.harness.images import BuiltImages, built_images
from tests.harness.node import LocalNode
from tests.harness.pebble import Pebble
from tests.harness.standin import Handler, StandIn

RELEASE = "vhost-operator"
NAMESPACE = "vhost-system"
"""The release's namespace: one of its own, because the session's other tests run their
operators as local processes with ``vhost-operator`` as theirs (its ACME account Secret is
another pebble's), and a user's cluster has no such leftovers either."""
CA_CONFIGMAP = "acme-ca"
HTTP_NODE_PORT = 30080
HTTPS_NODE_PORT = 30443
EXAMPLES = REPO / "examples"


def merged(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``extra`` laid over ``base``, nested mappings merged as Helm merges values files."""
    result = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result


class Hairpin:
    """The hairpin the operator's self-check goes through (``acme.selfCheckAddress``): an HTTP
    forwarder on the node's address to nginx's HTTP NodePort, as a load balancer in front of the
    node (pods cannot resolve the hostnames). Requests for a host in :attr:`holding` wait first
    (until :attr:`released` or ``hold`` seconds), which keeps the operator in the middle of its
    order: after the order was placed, before the CA is asked to validate."""

    def __init__(self, address: str, hold: float) -> None:
        self.holding: set[str] = set()
        self.held = 0
        self.released = threading.Event()
        hairpin = self

        class Forwarding(Handler):
            def do_GET(self) -> None:
                host = self.headers["Host"].split(":")[0]
                if host in hairpin.holding:
                    hairpin.held += 1
                    hairpin.released.wait(hold)
                try:
                    connection = http.client.HTTPConnection(address, HTTP_NODE_PORT, timeout=5)
                    connection.request("GET", self.path, headers={"Host": host})
                    answer = connection.getresponse()
                    status, body = answer.status, answer.read()
                    connection.close()
                    self.reply(body, status)
                except OSError:  # the operator pod was deleted meanwhile: that is the point
                    pass

        self.server = StandIn(Forwarding, address, report_errors=False)
        self.url = self.server.url

    def close(self) -> None:
        self.released.set()
        self.server.close()


class Webmail(Handler):
    """The mail web app behind every host: answers ``webmail <Host>``."""

    def do_GET(self) -> None:
        self.reply(f"webmail {self.headers['Host']}\n".encode())


def release_values(
    images: BuiltImages, pebble: Pebble, webmail_url: str, self_check_address: str
) -> dict[str, Any]:
    """The values of the quick start (nginx and ACME on, a NodePort Service) plus what points
    at this machine's stand-ins."""
    return merged(
        images.chart_values(),
        {
            "acme": {
                "enabled": True,
                "directoryUrl": pebble.directory_url,
                "email": "hostmaster@example.com",
                "caBundleConfigMapName": CA_CONFIGMAP,
                "orderTimeout": 60,
                "selfCheckAddress": self_check_address,
            },
            "nginx": {
                "enabled": True,
                "upstream": webmail_url,
                "service": {
                    "type": "NodePort",
                    "nodePorts": {"http": HTTP_NODE_PORT, "https": HTTPS_NODE_PORT},
                },
            },
        },
    )


@dataclass
class ChartOnNode:
    """A release of the chart on ``node``; see the module docstring."""

    node: LocalNode
    helm: Helm
    pebble: Pebble
    hairpin: Hairpin
    images: BuiltImages
    values: dict[str, Any]
    workdir: Path
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return self.node.address

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.node.plane.kubectl(*args, check=check)

    def install(self) -> float:
        """``helm install --wait``: seconds until every pod of the release is Ready."""
        return self._helm_with_values("install", self.values)

    def upgrade(self, extra: Mapping[str, Any]) -> float:
        """``helm upgrade --wait`` with ``extra`` over the installed values: seconds until the
        rolled pods are Ready."""
        self.values = merged(self.values, extra)
        return self._helm_with_values("upgrade", self.values)

    def _helm_with_values(self, verb: str, values: Mapping[str, Any]) -> float:
        started = time.monotonic()
        self.helm.run(
            verb,
            RELEASE,
            str(CHART),
            "--namespace",
            NAMESPACE,
            "--values",
            str(self.helm.values_file(values)),
            "--wait",
            "--timeout=5m",
            timeout=330,
        )
        return time.monotonic() - started

    def uninstall(self) -> None:
        self.helm.run("uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", timeout=200)

    @functools.cached_property
    def nginx_namespace(self) -> str:
        """Where nginx runs and the hosts' ConfigMaps and Secrets live, as the operator is told
        (the chart's default depends on its version)."""
        found = self.kubectl(
            "get", "deployment", RELEASE, "-n", NAMESPACE, "-o",
            "jsonpath={.spec.template.spec.containers[0].env"
            "[?(@.name=='VHOST_OPERATOR_NGINX_NAMESPACE')].value}",
        )  # fmt: skip
        return found.stdout.strip() or NAMESPACE

    def pods(self, selector: str = "") -> list[dict[str, Any]]:
        """The release's pods (``selector``: a label selector), in both its namespaces."""
        items: list[dict[str, Any]] = []
        for namespace in sorted({NAMESPACE, self.nginx_namespace}):
            listed = self.kubectl(
                "get", "pods", "-n", namespace, f"--selector=app.kubernetes.io/instance={RELEASE}"
                + (f",{selector}" if selector else ""), "-o", "json",
            )  # fmt: skip
            items += json.loads(listed.stdout)["items"]
        return items

    def https_get(
        self, hostname: str, address: str | None = None, port: int = HTTPS_NODE_PORT
    ) -> tuple[int, str, x509.Certificate]:
        """``GET /`` with SNI ``hostname`` through the nginx Service's HTTPS NodePort (or at
        ``address:port``, e.g. a pod's), verifying the served chain against pebble's root as a
        browser would: (status, body, leaf)."""
        context = ssl.create_default_context(cadata=self.pebble.root_pem().decode())
        target = (address or self.address, port)
        with (
            socket.create_connection(target, timeout=5) as raw,
            context.wrap_socket(raw, server_hostname=hostname) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
            assert der is not None
            request = f"GET / HTTP/1.1\r\nHost: {hostname}\r\nConnection: close\r\n\r\n"
            tls.sendall(request.encode())
            chunks = []
            while chunk := tls.recv(65536):
                chunks.append(chunk)
        head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        return status, body.decode(errors="replace"), x509.load_der_x509_certificate(der)


def wait_for_default_service_account(node: LocalNode, namespace: str) -> None:
    """Pods are refused until the namespace's default ServiceAccount exists."""
    deadline = time.monotonic() + 60
    while node.plane.kubectl("get", "sa", "default", "-n", namespace, check=False).returncode:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no default ServiceAccount in {namespace}")
        time.sleep(0.5)


def strip_finalizers_and_delete(node: LocalNode, kind: str) -> None:
    """Deleting objects whose operator is gone: its finalizers would hold them forever."""
    listed = node.plane.kubectl("get", kind, "-o", "json", check=False)
    held = [
        item
        for item in (json.loads(listed.stdout)["items"] if listed.returncode == 0 else [])
        if item["metadata"].get("finalizers")
    ]
    if held:
        for item in held:
            item["metadata"]["finalizers"] = []
        # One kubectl for all of them (a process per object took 11 s for 200 hosts).
        with tempfile.NamedTemporaryFile("w", suffix=".json") as manifest:
            json.dump({"apiVersion": "v1", "kind": "List", "items": held}, manifest)
            manifest.flush()
            node.plane.kubectl("replace", "-f", manifest.name, check=False)
    node.plane.kubectl("delete", kind, "--all", "--wait=false", check=False)


@contextlib.contextmanager
def chart_on_node(node: LocalNode, workdir: Path, *, hold: float = 8) -> Iterator[ChartOnNode]:
    """pebble and the web app on the node's address, the images in its containerd, the
    namespace with pebble's CA bundle: ready for :meth:`ChartOnNode.install`. Afterwards the
    release, what it left behind by design (VirtualHosts, webhook configuration) and the
    stand-ins are removed."""
    plane = node.plane
    images = built_images()
    started = time.monotonic()
    for image in (images.operator, images.agent):
        node.import_image(image.tar)
    imported = time.monotonic() - started
    webmail = StandIn(Webmail, node.address)
    hairpin = Hairpin(node.address, hold)
    pebble = Pebble(http_port=HTTP_NODE_PORT, address=node.address, workdir=workdir / "pebble")
    helm = Helm(helm_binary(), plane.kubeconfig)
    release: ChartOnNode | None = None
    try:
        pebble.start()
        plane.kubectl("create", "namespace", NAMESPACE)
        wait_for_default_service_account(node, NAMESPACE)
        plane.kubectl(
            "create", "configmap", CA_CONFIGMAP, "-n", NAMESPACE,
            f"--from-file=ca.crt={pebble.ca_bundle_path}",
        )  # fmt: skip
        values = release_values(images, pebble, webmail.url, hairpin.url)
        release = ChartOnNode(node, helm, pebble, hairpin, images, values, workdir)
        release.timings["image import"] = imported
        yield release
    finally:
        namespaces = [NAMESPACE]
        if release is not None and "nginx_namespace" in vars(release):  # looked up: installed
            namespaces.append(release.nginx_namespace)
        helm.run("uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", check=False)
        strip_finalizers_and_delete(node, "maildomains")
        strip_finalizers_and_delete(node, "virtualhosts")
        plane.kubectl(
            "delete", "validatingwebhookconfiguration,mutatingwebhookconfiguration",
            "vhost-operator.io", "--ignore-not-found", check=False,
        )  # fmt: skip
        # One call: kubectl deletes both, then waits for each, so their finalizations overlap.
        plane.kubectl(
            "delete", "namespace", *sorted(set(namespaces)), "--ignore-not-found", check=False
        )
        pebble.stop()
        hairpin.close()
        webmail.close()


__all__ = [
    "HTTPS_NODE_PORT",
    "HTTP_NODE_PORT",
    "NAMESPACE",
    "RELEASE",
    "ChartOnNode",
    "Hairpin",
    "chart_on_node",
]
