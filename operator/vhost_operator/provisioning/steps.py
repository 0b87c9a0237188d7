"""Which steps a host's chain has, given the settings.

The order is the contract (see SPEC "Provisioning chain"): bootstrap → certificate → final →
ready. ACME disabled: no certificate step and an HTTP-only final config. nginx disabled: no
bootstrap and final steps. Both disabled: nothing to provision, the host is Ready at once.
"""

from __future__ import annotations

from vhost_operator.provisioning.chain import Step
from vhost_operator.settings import Settings


def plan_steps(settings: Settings) -> list[Step]:
    if not settings.nginx_enabled and not settings.acme_enabled:
        return []
    raise NotImplementedError(
        "the nginx and ACME steps are not implemented yet; run with "
        "VHOST_OPERATOR_NGINX_ENABLED=false and VHOST_OPERATOR_ACME_ENABLED=false"
    )
