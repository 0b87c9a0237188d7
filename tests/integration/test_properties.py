"""Property-based tests (hypothesis): every layer that judges a hostname or a theme value agrees,
and every hostname they accept renders nginx config that a real nginx accepts and that names no
other host.

The layers: the CRD schema (asked of the real API server by server-side dry-run, so its OpenAPI
patterns are evaluated by the API server's own regular expressions and CEL, not by an imitation),
the webhook's rules (``admission.rules``), the spec model (``resources``), the renderer's
``SiteConfig`` (``nginx``) and the tenancy gate's name and theme checks. Inputs are drawn to be
plausible as well as hostile: uppercase, unicode look-alikes, dots in odd places, labels and names
at and past their limits, IP literals, newlines, ``;``, braces, quotes.

These found, among others, that IP literals passed as hostnames, that hostnames of 249-253
characters passed every check but could not be laid out as files, and that the CRD's logo
pattern was looser than the webhook's; none is tolerated any more.
"""

from __future__ import annotations

import ipaddress
import re
import string
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from tests.harness.clusters import Cluster
from tests.harness.nginx import nginx_check, self_signed_certificate
from vhost_operator.admission.rules import Refusal, review_maildomain, review_virtualhost
from vhost_operator.agent.plan import certificate_dir, config_path
from vhost_operator.kube.api import connect
from vhost_operator.nginx import (
    SiteConfig,
    render_bootstrap,
    render_final,
)
from vhost_operator.provisioning.sites import site_config
from vhost_operator.resources.hostnames import MAX_HOSTNAME_LENGTH
from vhost_operator.resources.models import (
    GROUP,
    MAILDOMAINS,
    VERSION,
    VIRTUALHOSTS,
    Theme,
    ThemeColors,
    ThemeLogos,
    VirtualHost,
    VirtualHostSpec,
)
from vhost_operator.settings import Settings
from vhost_operator.tenancy.names import normalise_hostname
from vhost_operator.tenancy.themes import check_logo_url, sanitise

pytestmark = [pytest.mark.cluster, pytest.mark.faults]

MAX_FILE_NAME = 255
"""Bytes in one file name (Linux, every common file system)."""

EXAMPLES = 150
"""Examples per agreement property: each costs one dry-run request to the API server."""

NGINX_EXAMPLES = 40
"""Batches for the nginx property: each costs one ``nginx -t``."""

# -- strategies ----------------------------------------------------------------------------------

HOSTILE_CHARACTERS = [
    *";{}\"'`$\\/#*:_@%()<>[]|!^~=+, ",
    "\n",
    "\r",
    "\t",
    "\x00",
    "\x0b",
    "\x7f",
    "\u0085",  # NEXT LINE: a line break to some parsers
    "\u2028",  # LINE SEPARATOR
    "\u00a0",  # NO-BREAK SPACE
    "\u212a",  # KELVIN SIGN: lowercases to ASCII "k" in Python
    "\u0131",  # DOTLESS I: uppercases to ASCII "I"
    "\u00e9",
    "\u00df",
    "\uff41",  # FULLWIDTH a
    "\u0430",  # CYRILLIC a, looks like ASCII "a"
]

LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", fullmatch=True)
HOSTNAMES = st.lists(LABEL, min_size=2, max_size=5).map(".".join).filter(lambda h: len(h) <= 253)


@st.composite
def sized_hostnames(draw: st.DrawFn) -> str:
    """A name of labels of up to 63 characters, totalling around the 253-character limit."""
    total = draw(st.integers(min_value=240, max_value=258))
    labels: list[str] = []
    while sum(map(len, labels)) + len(labels) < total:
        remaining = total - sum(map(len, labels)) - len(labels)
        size = min(draw(st.integers(min_value=1, max_value=63)), remaining)
        labels.append(
            draw(st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=size, max_size=size))
        )
    if len(labels) == 1:
        labels.append("com")
    return ".".join(labels)


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[str]) -> str:
    """A plausible value with one hostile edit."""
    value: str = draw(base)
    position = draw(st.integers(min_value=0, max_value=len(value)))
    edit = draw(st.sampled_from(["insert", "replace", "upper", "append", "prepend", "double"]))
    character: str = draw(st.sampled_from([*HOSTILE_CHARACTERS, ".", "-", "A", "Z"]))
    if edit == "insert":
        return value[:position] + character + value[position:]
    if edit == "replace" and value:
        position = min(position, len(value) - 1)
        return value[:position] + character + value[position + 1 :]
    if edit == "upper":
        return value[:position] + value[position:].upper()
    if edit == "append":
        return value + draw(st.sampled_from([".", "\n", ";", " ", "..", ":443", "\u2028"]))
    if edit == "prepend":
        return draw(st.sampled_from([".", "-", "*.", " ", "\n"])) + value
    return value.replace(".", "..", 1)


TEXT = st.text(st.characters(codec="utf-8") | st.sampled_from(HOSTILE_CHARACTERS), max_size=80)

ANY_HOSTNAME = st.one_of(
    HOSTNAMES,
    HOSTNAMES,
    sized_hostnames(),
    mutated(HOSTNAMES),
    mutated(HOSTNAMES),
    st.from_regex(r"[a-z0-9]{60,66}\.[a-z]{2,4}", fullmatch=True),  # a label at its limit
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
    TEXT,
)

COLOR = st.from_regex(r"#[0-9A-Fa-f]{6}", fullmatch=True)
ANY_COLOR = st.one_of(
    COLOR,
    mutated(COLOR),
    st.from_regex(r"#[0-9A-Fa-f]{3}|#[0-9A-Fa-f]{8}|[0-9A-Fa-f]{6}", fullmatch=True),
    st.text(st.sampled_from(["#", "a", "F", "0", "9", *HOSTILE_CHARACTERS]), max_size=9),
)

URL_PATH = st.text(string.ascii_letters + string.digits + "-._~/?#@&=+,%:", max_size=40)
LOGO = st.builds(lambda host, path: f"https://{host}/{path}", HOSTNAMES, URL_PATH)
ANY_LOGO = st.one_of(
    LOGO,
    mutated(LOGO),
    mutated(LOGO),
    st.sampled_from(
        [
            "http://example.com/logo.svg",
            "javascript:alert(1)",
            "https://user:secret@example.com/logo.svg",
            "https://example.com:99999/logo.svg",
            "https://example.com:x/logo.svg",
            "https:///logo.svg",
            "https://exa mple.com/",
            "https://example.com/a%2",
            "https://example.com/" + "a" * 2040,
            "https://example.com/" + "a" * 2030,
        ]
    ),
    st.builds(lambda host, rest: f"https://{host}/{rest}", HOSTNAMES, TEXT),
)

COLOR_FIELDS = [field.alias or name for name, field in ThemeColors.model_fields.items()]
LOGO_FIELDS = [field.alias or name for name, field in ThemeLogos.model_fields.items()]


# -- what each layer says ------------------------------------------------------------------------


class ApiServer:
    """The CRD's verdict, from the real API server: server-side dry-run creates, which run the
    schema (patterns, lengths) and the CEL rules but store nothing and call no webhook of ours
    (none runs in this test)."""

    def __init__(self, client: kubernetes.client.ApiClient) -> None:
        self._objects = kubernetes.client.CustomObjectsApi(client)

    def accepts(self, spec: dict[str, Any], *, kind: str = "VirtualHost") -> bool:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": kind,
            "metadata": {"name": "property-probe"},
            "spec": spec,
        }
        plural = VIRTUALHOSTS if kind == "VirtualHost" else MAILDOMAINS
        try:
            self._objects.create_cluster_custom_object(GROUP, VERSION, plural, body, dry_run="All")
        except ApiException as error:
            # 422 Invalid is the schema's refusal; anything else is no verdict at all.
            assert error.status == 422, f"dry-run answered {error.status}: {error.body}"
            return False
        return True


def webhook_accepts(spec: dict[str, Any]) -> bool:
    try:
        review_virtualhost({"spec": spec}, None, name="property-probe", hostname_owners=())
    except Refusal as refusal:
        assert "Traceback" not in refusal.message
        return False
    return True


def maildomain_webhook_accepts(spec: dict[str, Any]) -> bool:
    try:
        review_maildomain({"spec": spec}, name="property-probe", domain_owners=())
    except Refusal:
        return False
    return True


def model_accepts(hostname: str) -> bool:
    try:
        VirtualHostSpec.model_validate({"hostname": hostname})
    except ValidationError:
        return False
    return True


def renderer_accepts(hostname: str) -> bool:
    try:
        SiteConfig(hostname=hostname, challenge_upstream="challenges:8089", upstream="http://app")
    except ValidationError:
        return False
    return True


def gate_resolves(hostname: str) -> bool:
    """The gate maps a login through ``hostname`` to the host of exactly that name."""
    try:
        return normalise_hostname(hostname) == hostname
    except ValueError:
        return False


def is_ip_literal(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def gate_keeps(field: str, value: str, *, logo: bool) -> bool:
    """Whether the gate's sanitiser keeps a host's theme value (instead of dropping it)."""
    group = {"logos": {field: value}} if logo else {"colors": {field: value}}
    clean, _ = sanitise(Theme.model_validate(group))
    kept = clean.logos.to_wire() if logo else clean.colors.to_wire()
    return bool(kept)


@pytest.fixture(scope="module")
def apiserver(cluster: Cluster) -> Iterator[ApiServer]:
    with connect(kubeconfig=cluster.kubeconfig) as client:
        yield ApiServer(client)


# -- agreement -----------------------------------------------------------------------------------

AGREEMENT = settings(
    max_examples=EXAMPLES,
    deadline=None,  # an API request on a loaded machine takes what it takes
    suppress_health_check=[HealthCheck.too_slow],
)


@AGREEMENT
@given(hostname=ANY_HOSTNAME)
def test_every_layer_judges_a_hostname_alike(apiserver: ApiServer, hostname: str) -> None:
    spec = {"hostname": hostname}
    verdicts = {
        "crd": apiserver.accepts(spec),
        "webhook": webhook_accepts(spec),
        "model": model_accepts(hostname),
        "renderer": renderer_accepts(hostname),
    }
    note(f"verdicts for {hostname!r}: {verdicts}")
    event("accepted" if verdicts["webhook"] else "refused")
    if is_ip_literal(hostname):
        event("IP literal")
    assert len(set(verdicts.values())) == 1, f"{hostname!r}: {verdicts}"
    if verdicts["webhook"]:
        assert gate_resolves(hostname), f"the gate maps {hostname!r} to another name"


@AGREEMENT
@given(domain=ANY_HOSTNAME)
def test_every_layer_judges_a_linked_domain_alike(apiserver: ApiServer, domain: str) -> None:
    """A domain listed on a VirtualHost, and a MailDomain's domain and hostname: the CRD and
    the webhook agree on each, and all three take the same names (``virtualHost`` may also be
    empty: not linked)."""
    listed = {"hostname": "domains.example.com", "domains": [domain]}
    described = {"name": domain}
    linked = {"name": "example.com", "virtualHost": domain}
    verdicts = {
        "VirtualHost spec.domains": (apiserver.accepts(listed), webhook_accepts(listed)),
        "MailDomain spec.name": (
            apiserver.accepts(described, kind="MailDomain"),
            maildomain_webhook_accepts(described),
        ),
        "MailDomain spec.virtualHost": (
            apiserver.accepts(linked, kind="MailDomain"),
            maildomain_webhook_accepts(linked),
        ),
    }
    note(f"(CRD, webhook) verdicts for {domain!r}: {verdicts}")
    if is_ip_literal(domain):
        event("IP literal")
    for field, (crd, webhook) in verdicts.items():
        assert crd == webhook, f"{field}={domain!r}: CRD {crd}, webhook {webhook}"
    if domain and len(domain) <= MAX_HOSTNAME_LENGTH:
        # Longer domains are valid, but no host can be served under such a name.
        assert len({crd for crd, _ in verdicts.values()}) == 1, f"{domain!r}: {verdicts}"


@AGREEMENT
@given(
    names=st.lists(
        st.one_of(ANY_HOSTNAME, st.sampled_from(["extra.example.com", "imap.example.com"])),
        max_size=3,
    )
)
def test_every_layer_judges_additional_names_alike(apiserver: ApiServer, names: list[str]) -> None:
    """``spec.additionalNames``: each name as the hostname is judged, and the list (no name
    twice, not the hostname ``extra.example.com``) by the CRD, the webhook, the model and the
    renderer alike."""
    spec = {"hostname": "extra.example.com", "additionalNames": names}
    verdicts = {
        "crd": apiserver.accepts(spec),
        "webhook": webhook_accepts(spec),
        "model": _accepts(lambda: VirtualHostSpec.model_validate(spec)),
        "renderer": _accepts(
            lambda: SiteConfig(
                hostname="extra.example.com",
                additional_names=tuple(names),
                challenge_upstream="challenges:8089",
                upstream="http://app",
            )
        ),
    }
    note(f"verdicts for {names!r}: {verdicts}")
    event("accepted" if verdicts["webhook"] else "refused")
    assert len(set(verdicts.values())) == 1, f"{names!r}: {verdicts}"


@AGREEMENT
@given(domain=st.one_of(ANY_HOSTNAME, sized_hostnames()))
def test_every_layer_judges_a_domain_with_mta_sts_alike(apiserver: ApiServer, domain: str) -> None:
    """With ``spec.mtaSts`` every linked domain's ``mta-sts.<domain>`` must be a servable
    name: the CRD's limit and the webhook's (and the model's) agree."""
    spec = {
        "hostname": "sts.example.com",
        "domains": [domain],
        "mtaSts": {"mode": "enforce", "mx": ["sts.example.com"]},
    }
    verdicts = {"crd": apiserver.accepts(spec), "webhook": webhook_accepts(spec)}
    note(f"verdicts for {domain!r} ({len(domain)} characters): {verdicts}")
    event("accepted" if verdicts["webhook"] else "refused")
    assert len(set(verdicts.values())) == 1, f"{domain!r}: {verdicts}"
    if verdicts["webhook"]:
        assert _accepts(lambda: VirtualHostSpec.model_validate(spec))


@AGREEMENT
@given(
    mx=st.one_of(ANY_HOSTNAME, HOSTNAMES.map("*.{}".format), mutated(HOSTNAMES.map("*.{}".format)))
)
def test_every_layer_judges_an_mta_sts_mx_alike(apiserver: ApiServer, mx: str) -> None:
    """An MX pattern of ``spec.mtaSts``: a hostname, or ``*.`` and one. What the CRD accepts the
    model must read (a host it could not read would stall), and the webhook agrees."""
    spec = {"hostname": "mx.example.com", "mtaSts": {"mode": "testing", "mx": [mx]}}
    verdicts = {
        "crd": apiserver.accepts(spec),
        "webhook": webhook_accepts(spec),
        "model": _accepts(lambda: VirtualHostSpec.model_validate(spec)),
    }
    note(f"verdicts for {mx!r}: {verdicts}")
    event("accepted" if verdicts["webhook"] else "refused")
    assert len(set(verdicts.values())) == 1, f"{mx!r}: {verdicts}"


def _accepts(build: Callable[[], object]) -> bool:
    try:
        build()
    except ValidationError:
        return False
    return True


@AGREEMENT
@given(field=st.sampled_from(COLOR_FIELDS), value=ANY_COLOR)
def test_every_layer_judges_a_theme_colour_alike(
    apiserver: ApiServer, field: str, value: str
) -> None:
    spec = {"hostname": "theme.example.com", "theme": {"colors": {field: value}}}
    verdicts = {
        "crd": apiserver.accepts(spec),
        "webhook": webhook_accepts(spec),
        "gate": gate_keeps(field, value, logo=False),
    }
    event("accepted" if verdicts["webhook"] else "refused")
    assert len(set(verdicts.values())) == 1, f"colors.{field}={value!r}: {verdicts}"


@AGREEMENT
@given(field=st.sampled_from(LOGO_FIELDS), value=ANY_LOGO)
def test_every_layer_judges_a_theme_logo_alike(
    apiserver: ApiServer, field: str, value: str
) -> None:
    spec = {"hostname": "theme.example.com", "theme": {"logos": {field: value}}}
    crd, webhook = apiserver.accepts(spec), webhook_accepts(spec)
    event("accepted" if webhook else "refused")
    # The gate serves exactly what the webhook lets in.
    assert gate_keeps(field, value, logo=True) == webhook, f"logos.{field}={value!r}"
    # One pattern, and user info refused by both. What the CRD cannot say is whether the host
    # part is a valid hostname (and the port a number): that is the webhook's and the gate's.
    assert crd or not webhook, f"logos.{field}={value!r}: refused by the CRD only"
    if crd and not webhook:
        with pytest.raises(ValueError, match="has no valid host"):
            check_logo_url(value)
        event("host part judged by the webhook only")


# -- rendering -----------------------------------------------------------------------------------

STAGES = ("bootstrap", "final", "final-http")


def render(hostname: str, stage: str, certificate_root: Path) -> str:
    """The config the operator publishes for ``hostname`` at ``stage``, through its own code."""
    operator_settings = Settings(
        challenge_upstream="localhost:8089",
        upstream="http://localhost:8000/app",
        nginx_http_port=18080,
        nginx_https_port=18443,
        nginx_certificate_dir=str(certificate_root),
    )
    host = VirtualHost.from_body({"metadata": {"name": "probe"}, "spec": {"hostname": hostname}})
    if stage == "bootstrap":
        return render_bootstrap(site_config(host, operator_settings, with_certificate=False))
    return render_final(site_config(host, operator_settings, with_certificate=stage == "final"))


PLACEHOLDER = "placeholder.invalid"
"""A hostname no generated one can be (``.invalid`` is reserved): what the templates make of
any hostname is seen by rendering this one."""


BATCH = st.lists(
    st.tuples(
        st.one_of(HOSTNAMES, HOSTNAMES, sized_hostnames(), ANY_HOSTNAME), st.sampled_from(STAGES)
    ),
    min_size=1,
    max_size=12,
    unique_by=lambda pair: pair[0],
)


@settings(
    max_examples=NGINX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(batch=BATCH)
def test_accepted_hostnames_render_configs_nginx_loads_and_that_name_only_their_host(
    tmp_path_factory: pytest.TempPathFactory, batch: list[tuple[str, str]]
) -> None:
    workdir = tmp_path_factory.mktemp("nginx-property")
    certificate_root = workdir / "certs"
    files: dict[str, bytes] = {}
    configs: dict[str, str] = {}
    for hostname, stage in batch:
        if not webhook_accepts({"hostname": hostname}):
            continue
        assert model_accepts(hostname) and renderer_accepts(hostname), hostname
        name = config_path(hostname).name
        assert len(name.encode()) <= MAX_FILE_NAME, f"{hostname!r}: file name too long"
        config = render(hostname, stage, certificate_root)
        configs[hostname] = config
        # The agent's layout: sites-available/<hostname>.conf, certs/<hostname>/tls.*.
        files[f"sites/{name}"] = config.encode()
        if stage == "final":
            chain, key = self_signed_certificate([hostname])
            directory = certificate_dir(hostname).relative_to("certs")
            files[f"certs/{directory}/tls.crt"] = chain
            files[f"certs/{directory}/tls.key"] = key
    event(f"{len(configs)} hosts rendered")
    if not configs:
        return

    for hostname, config in configs.items():
        stage = dict(batch)[hostname]
        # The hostname is the only thing that varies with it: no other name, path or text.
        assert config == render(PLACEHOLDER, stage, certificate_root).replace(
            PLACEHOLDER, hostname
        ), hostname
        names = re.findall(r"^\s*server_name\s+([^;]*);", config, flags=re.MULTILINE)
        assert names and all(found.split() == [hostname] for found in names), (hostname, names)
        # No certificate path at all: the shared TLS context loads the files of the server's
        # first name, which is the hostname (asserted above).
        assert "ssl_certificate" not in config, hostname

    checked = nginx_check([], tmp_dir=workdir, extra_files=files, https_port=18443)
    assert checked.returncode == 0, checked.stderr
    assert "conflicting server name" not in checked.stderr, checked.stderr
