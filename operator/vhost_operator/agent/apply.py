"""Applying a batch of changes so that a bad host never takes the good ones down. Logic only:
writing files and running ``nginx -t`` are passed in (see :class:`Workspace`).

The whole batch is written and tested at once, which is the common case and costs one
``nginx -t``. If nginx rejects it, the batch is rolled back to the last good files, the last good
state is tested on its own (if nginx rejects that too, no host can be blamed), and the culprits
are isolated: first the host nginx's message names (its config or certificate path), else by
halving the failing group. Accepted parts stay on disk as the new last good state, so a named
culprit costs two more tests and k unnamed ones among n about k·2·log2(n), instead of n. A change
rejected together with a sibling but accepted alone is accepted: the verdict is always "this host
on top of everything accepted so far".

``nginx -t`` does not catch everything: it tolerates a ``listen`` on a port another process
holds, and the reload then fails (nginx keeps running the old configuration). A batch whose
reload fails is isolated the same way (:func:`isolate_reload`), with a reload as the test.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Protocol

from vhost_operator.agent.plan import (
    AVAILABLE_DIR,
    CERTS_DIR,
    ENABLED_DIR,
    Change,
    Enabling,
)

Undo = Callable[[], Awaitable[None]]

_NAMED_HOST = re.compile(
    rf"(?:{AVAILABLE_DIR}|{ENABLED_DIR})/(?P<config>[a-z0-9.-]+)\.conf"
    rf"|{CERTS_DIR}/(?P<certificate>[a-z0-9.-]+)/"
)


class Workspace(Protocol):
    async def apply(self, changes: Sequence[Change]) -> Undo:
        """Write ``changes``; the returned callable puts back what they replaced."""
        ...

    async def test(self) -> str | None:
        """Test what is on disk: ``None`` if nginx accepts it, else nginx's complaint."""
        ...


class BaselineRejected(Exception):
    """nginx rejects the last good configuration too: no host can be blamed, nothing applied."""


@dataclasses.dataclass
class Outcome:
    accepted: list[Change] = dataclasses.field(default_factory=list)
    rejected: dict[str, str] = dataclasses.field(default_factory=dict)
    """Hostname → why nginx refused its change."""
    tests: int = 0
    """How many times ``nginx -t`` ran."""
    undo: list[Undo] = dataclasses.field(default_factory=list)
    """Puts back what each accepted group replaced, in the order they were applied."""


async def apply_batch(changes: Sequence[Change], workspace: Workspace) -> Outcome:
    """Put as many ``changes`` on disk as nginx accepts; the disk ends in a tested state."""
    outcome = Outcome()
    if not changes:
        return outcome
    isolation = _Isolation(workspace, outcome)
    failure = await isolation.attempt(changes)
    if failure is None:
        return outcome
    outcome.tests += 1
    baseline_failure = await workspace.test()
    if baseline_failure is not None:
        raise BaselineRejected(baseline_failure)
    await isolation.isolate(list(changes), failure)
    return outcome


async def quarantine(enabled: Mapping[str, Enabling], workspace: Workspace) -> Outcome:
    """Recover from a rejected baseline: find the enabled sites that break it, and unlink them.

    The files on disk should always be a tested state, but an agent killed between writing a
    batch and rolling it back, or a hand edit, can leave a broken one, and then nginx would not
    even start again. Every site is unlinked (``enabled``: hostname → how; nginx loads neither
    its config nor its certificate then); if nginx accepts that, they are put back as one
    batch, isolating the ones nginx refuses, which stay unlinked. If nginx refuses even no
    sites at all, its main config is broken: :class:`BaselineRejected`, nothing changed.
    """
    hostnames = sorted(enabled)
    undo = await workspace.apply(
        [Change(hostname, enabled[hostname].removal, None) for hostname in hostnames]
    )
    try:
        failure = await workspace.test()
    except BaseException:
        await undo()
        raise
    if failure is not None:
        await undo()
        raise BaselineRejected(f"nginx rejects its configuration even with no site: {failure}")
    relinks = [Change(hostname, enabled[hostname].restoral, None) for hostname in hostnames]
    outcome = await apply_batch(relinks, workspace)
    outcome.tests += 1
    return outcome


async def isolate_reload(outcome: Outcome, reloading: Workspace) -> Outcome:
    """The changes ``outcome`` accepted passed ``nginx -t`` but nginx could not load them.

    The disk goes back to the last good state (what nginx still runs), then the accepted
    changes are applied again as a new batch whose test is ``nginx -t`` *and* a reload
    (``reloading``): the ones nginx loads stay, the culprits are rejected like a failed test,
    and nginx ends up running exactly what is on disk. If even the last good state cannot be
    reloaded (nginx is down), no host is blamed: :class:`BaselineRejected`. The result holds
    only what the retry decided (``outcome.rejected`` stays as it was).
    """
    for undo in reversed(outcome.undo):
        await undo()
    return await apply_batch(outcome.accepted, reloading)


class _Isolation:
    def __init__(self, workspace: Workspace, outcome: Outcome) -> None:
        self._workspace = workspace
        self._outcome = outcome

    async def attempt(self, group: Sequence[Change]) -> str | None:
        """Apply ``group`` on top of the accepted state; keep it if nginx accepts, else undo."""
        undo = await self._workspace.apply(group)
        self._outcome.tests += 1
        try:
            failure = await self._workspace.test()
        except BaseException:
            await undo()  # nginx could not even be asked: back to the last good state
            raise
        if failure is None:
            self._outcome.accepted.extend(group)
            self._outcome.undo.append(undo)
        else:
            await undo()
        return failure

    async def isolate(self, group: list[Change], failure: str) -> None:
        """``group`` fails with ``failure`` on top of the accepted state: find out who fails."""
        if len(group) == 1:
            self._outcome.rejected[group[0].hostname] = failure
            return
        suspect = named_host(failure, group)
        if suspect is not None:
            await self._isolate_suspect(group, suspect, failure)
            return
        middle = len(group) // 2
        for half in (group[:middle], group[middle:]):
            half_failure = await self.attempt(half)
            if half_failure is not None:
                await self.isolate(half, half_failure)

    async def _isolate_suspect(self, group: list[Change], suspect: Change, failure: str) -> None:
        others = [change for change in group if change is not suspect]
        others_failure = await self.attempt(others)
        if others_failure is None:
            # Accepted state + suspect is exactly the state that failed: no need to test again.
            self._outcome.rejected[suspect.hostname] = failure
            return
        await self.isolate(others, others_failure)
        suspect_failure = await self.attempt([suspect])
        if suspect_failure is not None:
            self._outcome.rejected[suspect.hostname] = suspect_failure


def named_host(message: str, group: Sequence[Change]) -> Change | None:
    """The first change whose files nginx's message names, if any."""
    by_hostname = {change.hostname: change for change in group}
    for match in _NAMED_HOST.finditer(message):
        hostname = match["config"] or match["certificate"]
        if hostname in by_hostname:
            return by_hostname[hostname]
    return None
