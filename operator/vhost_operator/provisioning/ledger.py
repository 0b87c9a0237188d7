"""Where the account's order budget (``provisioning.budget``) is kept: on the ACME account Secret.

The bucket is one time, stored as an annotation on the account Secret (``labels.ORDER_BUCKET``)
before the order it counts is placed, so that an operator restarted at any moment, even
between the two, never counts fewer orders than the CA did. It is read once, at the first order
of the process. Orders admitted together share one write: a write covers every order admitted
before it started, so a burst of concurrent orders costs one or two writes, not one each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from vhost_operator.kube.objects import SecretData
from vhost_operator.metrics import ORDER_BUDGET_WAITING
from vhost_operator.provisioning.budget import BudgetLimits, OrderBudget
from vhost_operator.provisioning.chain import StepDeferred
from vhost_operator.resources import labels

WAITING_FOR_BUDGET = "WaitingForOrderBudget"
"""Reason on the Ready condition (and the renewal condition) of a host waiting for its slot."""


class AccountSecretStore(Protocol):
    async def read_secret(self, namespace: str, name: str) -> SecretData | None: ...

    async def annotate_secret(
        self, namespace: str, name: str, annotations: dict[str, str]
    ) -> None: ...


class OrderLedger:
    """The budget, loaded from and saved to the account Secret; see the module docstring."""

    def __init__(
        self,
        limits: BudgetLimits,
        secrets: AccountSecretStore,
        account_secret: tuple[str, str],
        clock: Callable[[], datetime],
    ) -> None:
        self._budget = OrderBudget(limits)
        self._secrets = secrets
        self._namespace, self._name = account_secret
        self._clock = clock
        self._loaded = False
        self._admitted = 0
        """Orders admitted so far; ``_saved`` of them are covered by a finished write."""
        self._saved = 0
        self._lock = asyncio.Lock()
        self._saving = asyncio.Lock()

    @property
    def limits(self) -> BudgetLimits:
        return self._budget.limits

    async def admit(self, name: str) -> None:
        """Return once ``name`` may place a new order, counted and stored; raise
        :class:`StepDeferred` naming the time its order will be placed if it must wait."""
        async with self._lock:
            await self._load()
            now = self._clock()
            until = self._budget.admit(name, now)
            ORDER_BUDGET_WAITING.set(self._budget.waiting)
            if until is not None:
                raise StepDeferred(
                    f"waiting for the order budget ({self.limits.describe()}): the order will "
                    f"be placed at {until.isoformat()}",
                    until=until,
                    reason=WAITING_FOR_BUDGET,
                )
            self._admitted += 1
            mine = self._admitted
        await self._save(mine)

    async def record(self) -> None:
        """See :meth:`OrderBudget.record`; stored like an admitted order."""
        async with self._lock:
            await self._load()
            self._budget.record(self._clock())
            self._admitted += 1
            mine = self._admitted
        await self._save(mine)

    def refund(self) -> None:
        """See :meth:`OrderBudget.refund`. Not written at once: until the next order's write
        the stored bucket counts one order too many, which is the safe side."""
        self._budget.refund()

    async def _load(self) -> None:
        if self._loaded:
            return
        stored = await self._secrets.read_secret(self._namespace, self._name)
        text = stored.annotations.get(labels.ORDER_BUCKET) if stored else None
        if text:
            try:
                self._budget.tat = datetime.fromisoformat(text)
            except ValueError:
                # Edited by hand into nonsense: count the bucket as empty for one window
                # rather than as full (which could exceed the CA's limit).
                self._budget.tat = self._clock() + self.limits.window
        self._loaded = True

    async def _save(self, mine: int) -> None:
        async with self._saving:
            if self._saved >= mine:
                return  # a write that started after this order was admitted covered it
            covered, latest = self._admitted, self._budget.tat
            assert latest is not None
            await self._secrets.annotate_secret(
                self._namespace, self._name, {labels.ORDER_BUCKET: latest.isoformat()}
            )
            self._saved = max(self._saved, covered)
