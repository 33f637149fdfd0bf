"""Delivers reconcile triggers to ActionController: at least once, durably, never blocking writes.

While this daemon leads, the sender delivers the triggers its feed (runtime/triggerfeed.py)
holds: the feed follows the trigger prefix in etcd, so a trigger whose commit answer was lost
is delivered all the same.

A trigger is one package's entry into Error; it is sent to each scenario targeting the package
(sorted by name, as the index has them at delivery) until ActionController answers status 0 for
each, with capped exponential backoff per trigger while it is down or answers non-zero. A
trigger whose package is no longer in Error (as etcd has it when the attempt is due) is
dropped, logged. The index may not know every scenario yet: etcd delivers the daemon's prefix
watches out of revision order while they catch up, so a Scenario written before the death that
led to the Error can reach the index after it; and after etcd's history was replaced (a
restore, a wipe), the trigger prefix may be listed before the watcher has noticed, its index
still of the history before. Scenarios are therefore asked for (and "no scenario" concluded)
only once the index's Scenario view is known current as of the trigger's revision, in etcd's
history as it is now; "no scenario" then drops the trigger with a warning and a metric, and no
request. Removing a trigger is a transaction guarded by its revision, so a newer trigger for
the same package (it entered Error again) is never removed by the older one's delivery.

Refusals (see actioncontroller's delivery policy) are counted per trigger: the refusal that
reaches `max_refusals`, or any refusal once the trigger is `max_age` old (since this daemon
took it on), moves it to the dead letters in one transaction, guarded and fenced like the
removal. Unavailability never does: it is retried for as long as it lasts. `statemanager
triggers` redelivers a dead letter by putting its trigger back, which the feed then picks up
like any other.

Records of every trigger format are delivered (core/triggers.py): a format-1 record, one per
scenario, written by the first releases, is sent to the scenario it names and removed alone,
guarded on its own revision. A trigger refused until given up on stays pending rather than
overwrite a dead letter of its package in a format newer than this daemon knows.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import structlog

from statemanager.core.errors import EtcdError, EtcdUnavailable
from statemanager.core.keys import KeyLayout, Resource, WorkKey
from statemanager.core.ports import (
    Delete,
    Fence,
    Guard,
    Header,
    KeyValue,
    Put,
    ReconcileOutcome,
    Snapshot,
    TxnResult,
)
from statemanager.core.states import PackageState
from statemanager.core.triggers import (
    DeadLetter,
    Trigger,
    dead_letter_key,
    encode_dead_letter,
    record_key,
)
from statemanager.runtime.metrics import Metrics
from statemanager.runtime.outage import Outage
from statemanager.runtime.triggerfeed import PendingTrigger, TriggerFeed, log_fields

log = structlog.get_logger("statemanager.reconcile")

# The longest the delivery loop sleeps with nothing due. Every delivery looks at the fence
# first, so this does not bound what a deposed leader sends; it bounds how long one goes on
# following the trigger prefix and reporting its pending gauges (scraped every 15-60 s).
LOOK_SECONDS = 10.0


class ReconcileClient(Protocol):
    """ReconcileClient asks ActionController to reconcile a scenario and says how it answered."""

    async def reconcile(self, scenario: str) -> ReconcileOutcome: ...


class TriggerStore(Protocol):
    """TriggerStore reads keys and transacts the trigger and dead-letter keys."""

    async def snapshot(self, prefixes: Sequence[str], page_size: int = ...) -> Snapshot: ...

    async def get(self, key: bytes) -> KeyValue | None: ...

    async def header(self) -> Header: ...

    async def txn(
        self, guards: Sequence[Guard], ops: Sequence[Put | Delete], fence: Fence | None = None
    ) -> TxnResult: ...


class Scenarios(Protocol):
    """Scenarios names the scenarios that target a package (the index knows)."""

    def scenarios_of(self, package: str) -> list[str]: ...


class Applied(Protocol):
    """Applied tells how far the index has followed etcd, and in which history (the watcher
    knows)."""

    def applied(self, prefix: str) -> int:
        """The newest revision up to which every event under `prefix` is in the index."""
        ...

    def followed(self) -> Header:
        """The newest revision delivered and the highest raft term seen, in the history the
        index follows."""
        ...


class Leading(Protocol):
    """Leading is what the sender needs of the election: wait to lead, whether it still
    does, and report a write that was fenced off."""

    async def wait_leader(self) -> Fence: ...
    def fence(self) -> Fence | None: ...
    def lost(self) -> None: ...


class _FencedOff(Exception):
    """A removal was fenced off: etcd says this daemon's leader key is gone or replaced."""


class ReconcileSender:
    """ReconcileSender delivers the triggers its feed holds to ActionController while this
    daemon leads, and removes each from etcd once done (see the module docstring)."""

    def __init__(
        self,
        *,
        client: ReconcileClient,
        feed: TriggerFeed,
        store: TriggerStore,
        layout: KeyLayout,
        scenarios: Scenarios,
        applied: Applied,
        metrics: Metrics,
        outage: Outage,
        max_backoff: float,
        max_refusals: int,
        max_age: float,
        on_removed: Callable[[Trigger], None] = lambda trigger: None,
    ) -> None:
        """`on_removed` is told of each trigger about to be removed (delivered, dropped or
        dead-lettered): the trigger feed holds it, so etcd's current history does (the writer
        learns from it: StateWriter.removed)."""
        self._client = client
        self._feed = feed
        self._store = store
        self._layout = layout
        self._scenarios = scenarios
        self._applied = applied
        self._metrics = metrics
        self._outage = outage
        self._max_backoff = max_backoff
        self._max_refusals = max_refusals
        self._max_age = max_age
        self._on_removed = on_removed

    def pending(self) -> list[tuple[Trigger, int]]:
        """Pending lists the triggers not yet delivered or removed, with the attempts made so
        far, by package (the feed's). Current only while this daemon leads."""
        return self._feed.pending()

    async def run(self, leadership: Leading) -> None:
        """Run delivers triggers while this daemon leads, until cancelled; nothing etcd answers
        ends it (a refusal is retried with backoff, like an outage)."""
        while True:
            fence = await leadership.wait_leader()
            follower = asyncio.create_task(self._feed.follow(fence), name="reconcile-triggers")
            try:
                await self._deliver(fence, leadership, follower)
            finally:
                follower.cancel()
                await asyncio.gather(follower, return_exceptions=True)

    async def _deliver(
        self, fence: Fence, leadership: Leading, follower: asyncio.Task[None]
    ) -> None:
        """Attempt due triggers until leadership ends or changes hands (returns), or the
        follower fails (raises its error)."""
        while leadership.fence() == fence:
            if follower.done():
                follower.result()  # a permanent etcd error: let the supervisor see it
            try:
                for pending in self._feed.due():
                    await self._attempt(pending, fence)
            except _FencedOff:
                # Stop now and let the election find out where we stand (the next leader lists
                # the trigger and decides): retrying at once would hammer etcd until its next look.
                leadership.lost()
                return
            await self._feed.wait(LOOK_SECONDS)

    async def _attempt(self, pending: PendingTrigger, fence: Fence) -> None:
        """Attempt delivers `pending` to each scenario that has not acknowledged it yet, then
        removes its record; it ends early with the trigger deferred, dropped or dead-lettered,
        or no longer the feed's (an earlier attempt of this round took long enough for a
        listing to drop or replace it)."""
        if not self._feed.holds(pending):
            return
        if not pending.delivered:
            scenarios = await self._scenarios_to_ask(pending, fence)
            if scenarios is None or not await self._send(pending, scenarios, fence):
                return
            pending.delivered = True
        await self._remove(pending, "delivered", fence)

    async def _scenarios_to_ask(self, pending: PendingTrigger, fence: Fence) -> list[str] | None:
        """The scenarios to send `pending` to while its package is still in Error; None when
        the attempt ends here (etcd unreadable, the package out of Error, no scenario yet)."""
        trigger = pending.trigger
        # Read from etcd, not the index: the index follows another watch stream and may not
        # have seen the Error write that this trigger came with yet.
        key = self._layout.state_key(WorkKey(Resource.PACKAGE, trigger.package)).encode()
        try:
            found = await self._store.get(key)
            scenarios = await self._targets(trigger)
        except (EtcdUnavailable, EtcdError) as exc:
            self._defer(pending, exc)
            return None
        if scenarios is None:  # the watch still brings scenario changes made before it
            # Or the index is of a history etcd's was replaced by: a drop waits for its relist
            # too, so that the writer, whose previous states are then carried, looks for this
            # trigger before it is gone (else putting Error back after someone changed the state
            # was a new entry: the simulation's swarm seed 71), or learns of it (`on_removed`).
            pending.defer()
            log.info("reconcile_awaiting_scenarios", **log_fields(trigger))
            return None
        state = found.value.decode("utf-8", "replace") if found is not None else None
        if state != PackageState.ERROR:
            log.info("reconcile_dropped", **log_fields(trigger), package_state=state)
            await self._remove(pending, "dropped", fence)
            return None
        if not scenarios:
            # Nobody to ask for a reconcile: say so rather than stay silent.
            self._metrics.reconcile_no_scenario.inc()
            log.warning("reconcile_no_scenario", **log_fields(trigger))
            await self._remove(pending, "dropped", fence)
            return None
        return scenarios

    async def _send(self, pending: PendingTrigger, scenarios: list[str], fence: Fence) -> bool:
        """Reconcile each of `scenarios` that has not acknowledged `pending`; True when all
        have, False when a retry is scheduled or the trigger moved to the dead letters."""
        trigger = pending.trigger
        for scenario in scenarios:
            if scenario in pending.acknowledged:
                continue
            if not self._feed.holds(pending):
                # Dropped or replaced while an earlier call was answered (a relist after a
                # restore that took its record back): never send what etcd no longer records.
                return False
            pending.attempts += 1
            outcome = await self._client.reconcile(scenario)
            self._metrics.reconcile_requests.labels(outcome.result).inc()
            if outcome.refused:
                pending.refusals += 1
                if self._given_up(pending):
                    await self._dead_letter(pending, scenario, outcome.detail, fence)
                    return False
            if not outcome.acknowledged:
                delay = pending.defer()
                log.warning(
                    "reconcile_retry",
                    **log_fields(trigger, scenario),
                    attempt=pending.attempts,
                    refusals=pending.refusals,
                    result=outcome.result,
                    error=outcome.detail,
                    retry_in=round(delay, 2),
                )
                return False
            pending.acknowledged.add(scenario)
            log.info(
                "reconcile_delivered", **log_fields(trigger, scenario), attempt=pending.attempts
            )
        return True

    async def _targets(self, trigger: Trigger) -> list[str] | None:
        """The scenarios to send `trigger` to, or None while the index may still miss one."""
        if trigger.scenario is not None:
            return [trigger.scenario]  # a format-1 record: the one scenario it was written for
        # Even with scenarios known: one retargeted to this package just before the Error may
        # not have reached the index yet, and would never be asked. The index is read after
        # the check, whose reads let the watcher apply what it holds: read before, it could
        # miss the very scenario the check then finds applied (soak seed 1069783).
        if not await self._scenarios_current(trigger):
            return None
        return self._scenarios.scenarios_of(trigger.package)

    async def _scenarios_current(self, trigger: Trigger) -> bool:
        """Whether the index's scenarios are etcd's as of `trigger`'s revision or later."""
        prefix = self._layout.scenarios
        # The index's revisions count in the history its watcher follows. After etcd's history
        # was replaced (a restore, a wipe), the feed may list a trigger of the new one before
        # the watcher has noticed: the index then holds the old history's scenarios, at
        # revisions that say nothing of the new one's.
        if not await self._watcher_follows_etcd():
            return False  # the watcher relists the new history on its next answer
        applied = self._applied.applied(prefix)
        if applied >= trigger.revision:
            return True
        # The index holds the prefix as etcd had it at `applied`; since then deletions can only
        # take scenarios away, so no key modified since means none is missing.
        _, listing = await self._store.snapshot([prefix])
        return all(kv.mod_revision <= applied for kv in listing[prefix])

    async def _watcher_follows_etcd(self) -> bool:
        """Whether the watcher (whose controller tells the writer) follows etcd's current
        history: not while etcd's header has gone back from where the watcher stands (a restore
        or wipe it has not noticed yet). Where the watcher stood is taken before etcd is asked,
        so that events applied meanwhile never make it look behind."""
        followed = self._applied.followed()
        return not (await self._store.header()).went_back_from(followed)

    def _given_up(self, pending: PendingTrigger) -> bool:
        too_old = time.time() - pending.taken_at >= self._max_age
        return pending.refusals >= self._max_refusals or too_old

    async def _dead_letter(
        self, pending: PendingTrigger, scenario: str, error: str, fence: Fence
    ) -> None:
        """Move the trigger to the dead letters: kept in etcd, no longer sent."""
        trigger = pending.trigger
        dead = dead_letter_key(self._layout, trigger.package)
        if self._feed.later_dead_letter(dead):
            # A newer daemon's dead letter holds the key: overwriting it would lose it, so the
            # trigger stays pending (retried at the longest backoff) until that one is gone.
            pending.defer(self._max_backoff)
            log.warning("reconcile_dead_letter_taken", **log_fields(trigger, scenario), error=error)
            return
        acknowledged = tuple(sorted(pending.acknowledged))
        letter = DeadLetter(trigger, scenario, error, pending.refusals, acknowledged, time.time())
        move = Put(dead, encode_dead_letter(letter))
        if await self._remove(pending, "dead_lettered", fence, move):
            log.warning(
                "reconcile_dead_lettered",
                **log_fields(trigger, scenario),
                refusals=pending.refusals,
                error=error,
            )

    async def _remove(
        self, pending: PendingTrigger, outcome: str, fence: Fence, move: Put | None = None
    ) -> bool:
        """Delete the trigger (writing `move` in the same transaction); True when done. The
        writer is told first (`on_removed`): else, after a restore put the trigger back, the
        writer could look for it between its removal and the telling, find none, and take
        putting Error back as a new entry (the simulation's swarm seeds 13099827, a drop, and
        16023248, a delivery made before the restore). Not before the watcher follows etcd's
        history, the writer with it: told of a trigger of a history it has not seen replaced,
        it learns nothing."""
        trigger = pending.trigger
        key = record_key(self._layout, trigger)
        ops: list[Put | Delete] = [Delete(key)] if move is None else [Delete(key), move]
        try:
            if not await self._watcher_follows_etcd():  # the writer would be told too soon
                pending.defer()
                log.info("reconcile_awaiting_relist", **log_fields(trigger), outcome=outcome)
                return False
            self._on_removed(trigger)
            pending.removing = True
            result = await self._store.txn([Guard(key, trigger.revision)], ops, fence)
        except (EtcdUnavailable, EtcdError) as exc:
            self._defer(pending, exc)
            return False
        if result.fenced:
            raise _FencedOff
        # A failed guard means a newer trigger took the key: the feed has replaced our entry.
        self._feed.forget(pending)
        if not result.succeeded and move is not None:
            return False  # nothing moved: the newer trigger is delivered on its own
        self._metrics.reconcile_triggers.labels(outcome).inc()
        return True

    def _defer(self, pending: PendingTrigger, exc: EtcdUnavailable | EtcdError) -> None:
        """Retry `pending` after its backoff, reporting the failed request to the outage
        reporter (a warning, or only a debug line while that reporter speaks for etcd)."""
        pending.defer()
        self._outage.failed(str(exc))
        fields = log_fields(pending.trigger)
        (log.debug if self._outage.down else log.warning)(
            "reconcile_deferred", **fields, error=str(exc)
        )
