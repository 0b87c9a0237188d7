"""The provisioning chain of a VirtualHost, in order. This file is the contract.

    bootstrap    nginx: publish the port-80 config that serves ACME challenges
    certificate  ACME: order the certificate over HTTP-01, store it as the host's TLS Secret
    final        nginx: publish the serving config (HTTPS with that certificate)
    ready        check that everything the steps made is in place; the host becomes Ready

ACME disabled: no ``certificate`` step, and the final config is HTTP only. nginx disabled: no
``bootstrap`` and ``final`` steps. Both disabled: nothing to provision, the host is Ready at once.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

from vhost_operator.kube.objects import NamespacedObjects
from vhost_operator.provisioning.certificates import CertificateStep
from vhost_operator.provisioning.chain import Step, StepFailed, StepOutcome
from vhost_operator.provisioning.serving import SiteApplications
from vhost_operator.provisioning.sites import BootstrapStep, FinalStep, SitePublisher
from vhost_operator.resources.models import VirtualHost
from vhost_operator.resources.naming import site_configmap_name, tls_secret_name
from vhost_operator.settings import Settings

READY = "ready"


class ObjectReader(Protocol):
    async def read_configmap(self, namespace: str, name: str) -> Any | None: ...

    async def read_secret(self, namespace: str, name: str) -> Any | None: ...


@dataclasses.dataclass(frozen=True)
class ReadyStep:
    """The last gate: the host's site ConfigMap and TLS Secret exist, as the steps left them.

    Where the nginx agent reports through the watch of site ConfigMaps, that watch already
    shows both: the ConfigMap is in it, and the agent reporting the host's certificate serial
    applied means it has read the Secret. Only what the watch cannot vouch for is read from the
    API server (two reads per host fewer in the common case).
    """

    objects: ObjectReader
    settings: Settings
    applications: SiteApplications | None = None
    name: str = READY
    quick = True
    """A check: its start is not written to status on its own (see ``chain.Step``)."""

    async def run(self, host: VirtualHost) -> StepOutcome:
        namespace = self.settings.nginx_namespace
        site = None
        if self.settings.nginx_enabled:
            name = site_configmap_name(host.name)
            if self.applications is not None and self.settings.nginx_wait_for_agent:
                site = self.applications.get(name)
            if site is None and await self.objects.read_configmap(namespace, name) is None:
                raise StepFailed(f"the site ConfigMap {namespace}/{name} has disappeared")
        if self.settings.acme_enabled:
            certificate = host.status.certificate
            loaded = (
                site is not None
                and certificate is not None
                and self.applications is not None
                and site.serves(None, certificate.serial, self.applications.replicas)
            )
            name = tls_secret_name(host.name)
            if not loaded and await self.objects.read_secret(namespace, name) is None:
                raise StepFailed(f"the TLS Secret {namespace}/{name} has disappeared")
        return StepOutcome(message="provisioned")


@dataclasses.dataclass(frozen=True)
class StepServices:
    """What the steps talk to, built once by the entry point."""

    settings: Settings
    objects: NamespacedObjects
    certificate: CertificateStep | None
    """``None`` when ACME is disabled."""
    applications: SiteApplications | None
    """The nginx agent's reports; ``None`` when nginx is disabled."""


def plan_steps(services: StepServices) -> list[Step]:
    """The steps for these settings, in chain order."""
    settings, objects = services.settings, services.objects
    steps: list[Step] = []
    publisher = SitePublisher(objects, settings, services.applications)
    if settings.nginx_enabled:
        steps.append(BootstrapStep(publisher, settings, objects))
    if settings.acme_enabled:
        if services.certificate is None:
            raise ValueError("ACME is enabled but no certificate step was given")
        steps.append(services.certificate)
    if settings.nginx_enabled:
        steps.append(FinalStep(publisher, settings))
    if steps:
        steps.append(ReadyStep(objects, settings, services.applications))
    return steps
