"""What every handler needs, built once at start-up and handed over through kopf's ``memo``."""

from __future__ import annotations

import dataclasses

import kopf

from vhost_operator.acme import AcmeClient, AcmeConfig, ChallengeStore
from vhost_operator.kube.api import connect
from vhost_operator.kube.objects import NamespacedObjects
from vhost_operator.kube.virtualhosts import VirtualHostApi
from vhost_operator.provisioning.certificates import AcmeAccount, CertificateStep
from vhost_operator.provisioning.chain import Step
from vhost_operator.provisioning.steps import StepServices, plan_steps
from vhost_operator.settings import Settings

_KEY = "vhost_operator_context"


@dataclasses.dataclass(frozen=True)
class OperatorContext:
    settings: Settings
    virtualhosts: VirtualHostApi
    objects: NamespacedObjects
    challenges: ChallengeStore
    steps: list[Step]
    certificates: CertificateStep | None
    """The certificate step, also used alone for renewals; ``None`` when ACME is disabled."""

    def as_memo(self) -> kopf.Memo:
        # kopf copies the memo per object; a plain Memo holding one shared context copies cleanly.
        return kopf.Memo({_KEY: self})


def build_context(settings: Settings) -> OperatorContext:
    client = connect()
    objects = NamespacedObjects(client)
    challenges = ChallengeStore()
    certificates = None
    if settings.acme_enabled:
        account = AcmeAccount(AcmeClient(acme_config(settings)), objects, settings)
        certificates = CertificateStep(account, challenges, objects, settings)
    steps = plan_steps(StepServices(settings, objects, certificates))
    return OperatorContext(
        settings, VirtualHostApi(client), objects, challenges, steps, certificates
    )


def acme_config(settings: Settings) -> AcmeConfig:
    return AcmeConfig(
        directory_url=settings.acme_directory_url,
        contact_email=settings.acme_email,
        eab_kid=settings.acme_eab_kid,
        eab_hmac_key=settings.acme_eab_hmac_key,
        ca_bundle_path=settings.acme_ca_bundle,
        order_timeout=settings.acme_order_timeout,
    )


def context_of(memo: kopf.Memo) -> OperatorContext:
    context = memo.get(_KEY)
    assert isinstance(context, OperatorContext), "start the operator with `vhost-operator run`"
    return context
