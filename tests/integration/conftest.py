"""Fixtures for tests that run the operator with ACME (a real pebble) and nginx steps on, and
for the chart's modules (``test_chart_*.py``): the pinned Helm, and the chart installed on a
control plane that records an audit log."""

from __future__ import annotations

import base64
import contextlib
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness import kube
from tests.harness.agent import AgentProcess
from tests.harness.audit import AuditedControlPlane
from tests.harness.chart_install import (
    DEFAULTS_NS,
    EAB_KID,
    FULLNAME,
    MAIL_NS,
    OPERATOR_NS,
    OTHER_NS,
    RELEASE,
    WEB_NS,
    WEBHOOK_CONFIGURATION,
    Installed,
    install_values,
    namespace,
    secret,
)
from tests.harness.clusters import Cluster, install_crds
from tests.harness.helm import CHART, Helm, helm_binary, parse_manifests
from tests.harness.identities import service_account_kubeconfig
from tests.harness.mail import MailServers
from tests.harness.nginx import NginxServer
from tests.harness.operator import OperatorProcess
from tests.harness.pebble import Pebble
from tests.harness.processes import free_port
from tests.harness.standin import Handler, StandIn

OperatorFactory = Callable[..., OperatorProcess]


@pytest.fixture(scope="module")
def upstream() -> Iterator[int]:
    """The mail web app stand-in: answers every request with the Host it was asked for."""

    class Upstream(Handler):
        def do_GET(self) -> None:
            self.reply(f"upstream for {self.headers['Host']}\n".encode())

    with contextlib.closing(StandIn(Upstream)) as server:
        yield server.port


@pytest.fixture(scope="module")
def responder_port() -> int:
    """Where the operator's HTTP-01 responder listens, and where pebble validates."""
    return free_port()


@pytest.fixture(scope="module")
def pebble(responder_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pebble]:
    with Pebble(http_port=responder_port, workdir=tmp_path_factory.mktemp("pebble")) as ca:
        yield ca


def operator_settings(pebble: Pebble, responder_port: int, **overrides: str) -> dict[str, str]:
    """ACME against ``pebble`` and nginx steps on; keyword arguments override settings."""
    settings = {
        "ACME_ENABLED": "true",
        "NGINX_ENABLED": "true",
        "NGINX_NAMESPACE": kube.NAMESPACE,
        "OPERATOR_NAMESPACE": kube.NAMESPACE,
        "ACME_DIRECTORY_URL": pebble.directory_url,
        "ACME_CA_BUNDLE": str(pebble.ca_bundle_path),
        "ACME_EMAIL": "hostmaster@example.com",
        "ACME_ORDER_TIMEOUT": "30",
        # pebble has no order limit, and the account Secret (with the budget's bucket) outlives
        # a test: a budget would count every test's orders. The budget's own test sets one.
        "ACME_ORDER_LIMIT": "0",
        "CHALLENGE_LISTEN_PORT": str(responder_port),
        "CHALLENGE_UPSTREAM": f"127.0.0.1:{responder_port}",
        "SELF_CHECK_ADDRESS": f"http://127.0.0.1:{responder_port}",
        "UPSTREAM": "http://127.0.0.1:8000",
        # No nginx agent in these tests unless one overrides this: publishing is enough.
        "NGINX_WAIT_FOR_AGENT": "false",
        **{key.upper(): value for key, value in overrides.items()},
    }
    return {f"VHOST_OPERATOR_{key}": value for key, value in settings.items()}


@pytest.fixture
def start_operator(
    cluster: Cluster, pebble: Pebble, responder_port: int, tmp_path: Path
) -> Iterator[OperatorFactory]:
    """Start operators (one at a time); all VirtualHosts are deleted and the operators stopped
    when the test ends."""
    kube.ensure_namespace(cluster)
    started: list[OperatorProcess] = []

    def start(**overrides: str) -> OperatorProcess:
        workdir = tmp_path / f"operator-{len(started)}"
        workdir.mkdir()
        settings = operator_settings(pebble, responder_port, **overrides)
        process = OperatorProcess(cluster.kubeconfig, workdir, settings)
        started.append(process.start())
        return process

    yield start
    kube.delete_all_virtualhosts(cluster)
    for process in started:
        process.stop()


# -- the Helm chart (tests/integration/test_chart_*.py) ------------------------------------------


@pytest.fixture(scope="module")
def helm() -> Helm:
    return Helm(helm_binary())


@pytest.fixture(scope="module")
def target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Cluster, AuditedControlPlane | None]]:
    if request.config.getoption("--cluster") != "local":
        yield request.getfixturevalue("cluster"), None
        return
    groups = [f"system:serviceaccounts:{ns}" for ns in (OPERATOR_NS, WEB_NS, MAIL_NS, DEFAULTS_NS)]
    plane = AuditedControlPlane(tmp_path_factory.mktemp("audited-cluster"), groups)
    plane.start()
    try:
        install_crds(plane)
        yield plane, plane
    finally:
        plane.stop()


@pytest.fixture(scope="module")
def installed(
    target: tuple[Cluster, AuditedControlPlane | None],
    helm: Helm,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Installed]:
    cluster, audit = target
    workdir = tmp_path_factory.mktemp("chart")
    mac_key = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    kube.apply_manifests(
        cluster,
        [
            namespace(OPERATOR_NS),
            namespace(WEB_NS),
            namespace(OTHER_NS),
            namespace(MAIL_NS),
            secret("acme-eab", OPERATOR_NS, {"hmacKey": mac_key}),
            secret("unrelated", OTHER_NS, {"password": "not for the operator"}),
        ],
        workdir,
    )
    release_helm = Helm(helm.binary, cluster.kubeconfig)
    nginx = NginxServer(workdir / "nginx", free_port(), free_port())
    # pebble validates HTTP-01 through nginx, which proxies to the operator's responder.
    pebble = Pebble(http_port=nginx.http_port, eab_keys={EAB_KID: mac_key}, workdir=workdir / "ca")
    state: Installed | None = None
    mail = MailServers()
    try:
        mail.start()
        nginx.start()
        pebble.start()
        installing = release_helm.run(
            "install",
            RELEASE,
            str(CHART),
            "--namespace",
            OPERATOR_NS,
            "--values",
            str(release_helm.values_file(install_values(pebble, nginx))),
        )
        # No warning at all, in particular none of Pod Security's "would violate".
        assert installing.stderr.strip() == "", installing.stderr
        manifest = release_helm.run("get", "manifest", RELEASE, "--namespace", OPERATOR_NS)
        state = Installed(
            cluster=cluster,
            audit=audit,
            helm=release_helm,
            manifests=parse_manifests(manifest.stdout),
            operator_kubeconfig=service_account_kubeconfig(
                cluster, OPERATOR_NS, FULLNAME, workdir / "operator.kubeconfig"
            ),
            agent_kubeconfig=service_account_kubeconfig(
                cluster, WEB_NS, f"{FULLNAME}-nginx", workdir / "agent.kubeconfig"
            ),
            gate_kubeconfig=service_account_kubeconfig(
                cluster, OPERATOR_NS, f"{FULLNAME}-gate", workdir / "gate.kubeconfig"
            ),
            mail_kubeconfig=service_account_kubeconfig(
                cluster, MAIL_NS, f"{FULLNAME}-mail-tls", workdir / "mail.kubeconfig"
            ),
            nginx=nginx,
            mail=mail,
            pebble=pebble,
        )
        yield state
    finally:
        if state is not None and state.operator is not None:
            # The operator's finalizers clean up while it still runs.
            cluster.kubectl("delete", "md,vh", "--all", "--wait=true", "--timeout=60s", check=False)
        for _, process in state.processes() if state else ():
            process.stop()
        pebble.stop()
        nginx.stop()
        mail.stop()
        if audit is None:  # a shared cluster: leave nothing behind
            release_helm.run("uninstall", RELEASE, "--namespace", OPERATOR_NS, check=False)
            for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"):
                # kopf empties them when it stops, but never deletes them.
                cluster.kubectl(
                    "delete", kind, WEBHOOK_CONFIGURATION, "--ignore-not-found", check=False
                )
            # Waited for: the next chart module installs into the same namespaces.
            for name in (OPERATOR_NS, WEB_NS, OTHER_NS, MAIL_NS):
                cluster.kubectl("delete", "namespace", name, "--timeout=120s", check=False)


# -- a real nginx and its agent (module-scoped; a module may override either) ----------------


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NginxServer]:
    with NginxServer(tmp_path_factory.mktemp("nginx"), free_port(), free_port()) as server:
        yield server


@pytest.fixture(scope="module")
def agent(
    cluster: Cluster,
    nginx: NginxServer,
    responder_port: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[AgentProcess]:
    kube.ensure_namespace(cluster)
    process = AgentProcess(
        cluster.kubeconfig,
        tmp_path_factory.mktemp("agent"),
        nginx,
        kube.NAMESPACE,
        challenge_upstream=f"127.0.0.1:{responder_port}",  # operator_settings' responder
    )
    yield process.start()
    process.stop()
