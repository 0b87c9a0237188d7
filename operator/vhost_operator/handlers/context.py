"""What every handler needs, built once at start-up and handed over through kopf's ``memo``."""

from __future__ import annotations

import dataclasses

import kopf

from vhost_operator.kube.virtualhosts import VirtualHostApi
from vhost_operator.provisioning.chain import Step
from vhost_operator.settings import Settings

_KEY = "vhost_operator_context"


@dataclasses.dataclass(frozen=True)
class OperatorContext:
    settings: Settings
    virtualhosts: VirtualHostApi
    steps: list[Step]

    def as_memo(self) -> kopf.Memo:
        # kopf copies the memo per object; a plain Memo holding one shared context copies cleanly.
        return kopf.Memo({_KEY: self})


def context_of(memo: kopf.Memo) -> OperatorContext:
    context = memo.get(_KEY)
    assert isinstance(context, OperatorContext), "start the operator with `vhost-operator run`"
    return context
