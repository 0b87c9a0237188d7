"""The nginx steps: render a host's server block and publish it as its site ConfigMap.

``bootstrap`` publishes the config that serves ACME challenges before any certificate exists;
``final`` publishes the config that serves the site (over HTTPS once a certificate exists).
The nginx agent mirrors these ConfigMaps into nginx; see ``vhost_operator.resources.labels``.
"""

from __future__ import annotations

import asyncio
import contextlib
import posixpath
from typing import Protocol

from vhost_operator.errors import ForeignObjectError
from vhost_operator.kube.objects import SecretData
from vhost_operator.nginx import SiteConfig, config_hash, render_bootstrap, render_final
from vhost_operator.probes import ProbeFailed, served_certificate_serial
from vhost_operator.provisioning.chain import StepFailed, StepOutcome
from vhost_operator.provisioning.serving import SiteApplications
from vhost_operator.resources import labels
from vhost_operator.resources.models import VirtualHost
from vhost_operator.resources.naming import (
    SITE_SUFFIX,
    TLS_SUFFIX,
    legacy_derived_name,
    site_configmap_name,
    tls_secret_name,
)
from vhost_operator.settings import Settings

BOOTSTRAP = "bootstrap"
FINAL = "final"

PROBE_ATTEMPTS = 5
PROBE_SPACING = 1.0
"""The serving probe goes through nginx's Service, so it reaches one replica of several. Every
ready replica has reported the new config by then, but for a second or two after a pod began
to stop, the Service can still send a connection to it (endpoint removal lags): a probe that
fails or sees the old certificate is asked again, a few seconds at most, before the step fails."""


class ConfigMapWriter(Protocol):
    """``kube.objects.NamespacedObjects``; see there for ``checked``."""

    async def apply_configmap(
        self, namespace: str, manifest: dict[str, object], *, checked: bool = False
    ) -> None: ...

    async def create_configmap(self, namespace: str, manifest: dict[str, object]) -> bool: ...

    async def delete_configmap(self, namespace: str, name: str, *, owner: str) -> None: ...

    async def delete_secret(self, namespace: str, name: str, *, owner: str) -> None: ...


def site_config(host: VirtualHost, settings: Settings, *, with_certificate: bool) -> SiteConfig:
    certificate_dir = posixpath.join(settings.nginx_certificate_dir, host.spec.hostname)
    try:
        return SiteConfig(
            hostname=host.spec.hostname,
            additional_names=host.spec.other_names,
            # RFC 8461: the policy is fetched over HTTPS only.
            mta_sts=host.spec.mta_sts if with_certificate else None,
            challenge_upstream=settings.challenge_upstream,
            upstream=settings.upstream,
            http_port=settings.nginx_http_port,
            https_port=settings.nginx_https_port,
            certificate_path=posixpath.join(certificate_dir, "tls.crt")
            if with_certificate
            else None,
            key_path=posixpath.join(certificate_dir, "tls.key") if with_certificate else None,
        )
    except ValueError as error:
        # pydantic names the field and value; settings errors land here too, hence "config".
        raise StepFailed(f"cannot render the nginx config: {error}") from error


def site_manifest(host: VirtualHost, stage: str, config: str, *, tls: bool) -> dict[str, object]:
    """The site ConfigMap: one config key, and what the agent needs to know in annotations."""
    annotations = {
        labels.VIRTUALHOST: host.name,
        labels.VIRTUALHOST_CREATED: host.creation_timestamp,
        labels.HOSTNAME: host.spec.hostname,
        labels.ENABLED: "true" if host.spec.enabled else "false",
        labels.STAGE: stage,
        labels.CONFIG_HASH: config_hash(config),
    }
    if tls:
        annotations[labels.TLS_SECRET] = tls_secret_name(host.name)
    return {
        "metadata": {
            "name": site_configmap_name(host.name),
            "labels": labels.component_labels(labels.SITE_COMPONENT),
            "annotations": annotations,
            "ownerReferences": [host.owner_reference()],
        },
        "data": {f"{host.spec.hostname}.conf": config},
    }


class ConfigMapAnnotator(Protocol):
    async def annotate_configmap(
        self, namespace: str, name: str, annotations: dict[str, str], *, owner: str
    ) -> bool: ...


async def publish_enabled(
    host: VirtualHost, configmaps: ConfigMapAnnotator, settings: Settings
) -> None:
    """Tell the nginx agent whether the site is enabled. Its config stays as it is: a disabled
    site keeps its file, only its inclusion in nginx is dropped."""
    await configmaps.annotate_configmap(
        settings.nginx_namespace,
        site_configmap_name(host.name),
        {labels.ENABLED: "true" if host.spec.enabled else "false"},
        owner=host.name,
    )


class SitePublisher:
    """Publishes a site ConfigMap and, when configured, waits until nginx serves it."""

    def __init__(
        self,
        configmaps: ConfigMapWriter,
        settings: Settings,
        applications: SiteApplications | None,
    ) -> None:
        self._configmaps = configmaps
        self._settings = settings
        self._applications = applications

    async def publish(self, host: VirtualHost, stage: str, config: str, *, tls: bool) -> str:
        """Apply the ConfigMap, wait for the agent; returns what happened, for the chain."""
        manifest = site_manifest(host, stage, config, tls=tls)
        await self._drop_legacy(host, tls=tls)
        await self._write(host, manifest, tls=tls)
        digest = config_hash(config)
        if self._applications is None or not self._settings.nginx_wait_for_agent:
            return f"{stage} config {digest} published"
        serial = host.status.certificate.serial if tls and host.status.certificate else None
        await self._applications.wait_applied(
            site_configmap_name(host.name),
            config_hash=digest,
            serial=serial,
            timeout=self._settings.nginx_apply_timeout,
        )
        if serial is not None and host.spec.enabled and self._settings.nginx_probe_address:
            await self._require_serving(host, serial)
            return f"{stage} config {digest} served with certificate {serial}"
        return f"{stage} config {digest} applied by nginx"

    async def _write(self, host: VirtualHost, manifest: dict[str, object], *, tls: bool) -> None:
        """Write the site ConfigMap in one request where the watch of every site ConfigMap
        vouches for whose it is: the host's (an apply with no read first), or none (a create,
        refused if one exists after all). Otherwise, as every write: read, check, apply.

        Only a config without TLS is created: a create's fields belong to the field manager's
        "Update" entry, which a later apply without them does not remove. A site's first config
        (bootstrap) has exactly the fields every later one has, the TLS Secret's name aside.
        """
        namespace = self._settings.nginx_namespace
        applications = self._applications
        if applications is not None and applications.synced:
            known = applications.get(site_configmap_name(host.name))
            if known is not None and known.belongs_to(host.name):
                await self._configmaps.apply_configmap(namespace, manifest, checked=True)
                return
            first = known is None and not tls
            if first and await self._configmaps.create_configmap(namespace, manifest):
                return
        await self._configmaps.apply_configmap(namespace, manifest)

    async def _drop_legacy(self, host: VirtualHost, *, tls: bool) -> None:
        """Remove the host's ConfigMap of an earlier release (its name had no hash): the agent
        would otherwise see two ConfigMaps for one hostname. It goes first, so a host Ready
        before the upgrade drops out of nginx for one agent batch when its chain or renewal
        next publishes. With the certificate: the TLS Secret of that release too, which only
        the old ConfigMap referred to. Each only if it is this host's: the old names could
        collide, and another host's object under one stays."""
        applications = self._applications
        legacy = legacy_derived_name(host.name, SITE_SUFFIX)
        if applications is not None and applications.synced and applications.get(legacy) is None:
            # The watch of every site ConfigMap shows none under the old name: nothing to read
            # or delete (the usual case: one or two API requests fewer per publish).
            return
        namespace = self._settings.nginx_namespace
        removals = [(self._configmaps.delete_configmap, SITE_SUFFIX)]
        if tls:
            removals.append((self._configmaps.delete_secret, TLS_SUFFIX))
        for delete, suffix in removals:
            with contextlib.suppress(ForeignObjectError):
                await delete(namespace, legacy_derived_name(host.name, suffix), owner=host.name)

    async def _require_serving(self, host: VirtualHost, serial: str) -> None:
        address = self._settings.nginx_probe_address
        assert address is not None
        problem = ""
        for attempt in range(PROBE_ATTEMPTS):
            if attempt:
                await asyncio.sleep(PROBE_SPACING)
            try:
                served = await served_certificate_serial(address, host.spec.hostname)
            except ProbeFailed as failure:
                problem = str(failure)
                continue
            if served == serial:
                return
            problem = (
                f"nginx at {address} presents certificate {served} for {host.spec.hostname}, "
                f"not the new {serial}"
            )
        raise StepFailed(problem)


class SecretReader(Protocol):
    async def read_secret(self, namespace: str, name: str) -> SecretData | None: ...


class BootstrapStep:
    """Publish the port-80 config that answers ACME challenges and holds everything else.

    A host that already holds a certificate (its chain runs again: its names changed, or a
    retry) keeps serving it: the final config with the current certificate is published
    instead, for the spec's names, so that port 80 answers the challenges of every new name
    while HTTPS goes on with the current certificate until the new one replaces it.
    """

    name = BOOTSTRAP

    def __init__(
        self, publisher: SitePublisher, settings: Settings, secrets: SecretReader | None = None
    ) -> None:
        self._publisher = publisher
        self._settings = settings
        self._secrets = secrets

    async def run(self, host: VirtualHost) -> StepOutcome:
        if await self._holds_certificate(host):
            config = render_final(site_config(host, self._settings, with_certificate=True))
            message = await self._publisher.publish(host, FINAL, config, tls=True)
            return StepOutcome(message=f"current certificate kept serving: {message}")
        config = render_bootstrap(site_config(host, self._settings, with_certificate=False))
        message = await self._publisher.publish(host, BOOTSTRAP, config, tls=False)
        return StepOutcome(message=message)

    async def _holds_certificate(self, host: VirtualHost) -> bool:
        """Whether the host's TLS Secret holds a certificate nginx can go on serving."""
        if self._secrets is None or not self._settings.acme_enabled:
            return False
        if host.status.certificate is None:  # a new host: no read needed
            return False
        secret = await self._secrets.read_secret(
            self._settings.nginx_namespace, tls_secret_name(host.name)
        )
        data = secret.data if secret is not None else {}
        return bool(data.get("tls.crt") and data.get("tls.key"))


class FinalStep:
    """Publish the serving config: HTTPS with the host's certificate, or HTTP when ACME is off."""

    name = FINAL

    def __init__(self, publisher: SitePublisher, settings: Settings) -> None:
        self._publisher = publisher
        self._settings = settings

    async def run(self, host: VirtualHost) -> StepOutcome:
        tls = self._settings.acme_enabled
        config = render_final(site_config(host, self._settings, with_certificate=tls))
        message = await self._publisher.publish(host, FINAL, config, tls=tls)
        return StepOutcome(message=message)
