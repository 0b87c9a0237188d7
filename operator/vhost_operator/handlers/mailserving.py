"""The ``MailServing`` condition's writes (``provisioning.mailserving`` decides them)."""

from __future__ import annotations

import logging

from vhost_operator.handlers.context import OperatorContext
from vhost_operator.provisioning.chain import utc_now
from vhost_operator.provisioning.mailserving import MailCondition
from vhost_operator.resources.conditions import MAIL_SERVING, set_condition

logger = logging.getLogger(__name__)


class MailConditionWrites:
    def __init__(self, context: OperatorContext) -> None:
        self._context = context

    async def write(self, name: str, condition: MailCondition) -> None:
        # The catalog keeps too little of a host to rewrite its conditions: read it whole. The
        # write is conditional, so it never undoes a status a chain wrote meanwhile; that
        # write's event marks the host again.
        found = await self._context.virtualhosts.read(name)
        if found is None:
            return
        host, version = found
        conditions = set_condition(
            host.status.conditions,
            type=MAIL_SERVING,
            status=condition.status,
            reason=condition.reason,
            message=condition.message,
            now=utc_now(),
            observed_generation=host.generation,
        )
        if conditions != host.status.conditions:
            await self._context.virtualhosts.write_conditions(name, conditions, version)
            logger.info(
                "VirtualHost %s: MailServing %s (%s)", name, condition.status, condition.message
            )
