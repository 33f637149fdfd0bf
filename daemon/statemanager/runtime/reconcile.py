"""Delivers reconcile triggers to ActionController: at least once, durably, never blocking writes.

While this daemon leads, the sender lists the trigger prefix and watches it from the listed
revision: triggers come from etcd itself, not from the writer's transaction response, so a
trigger whose commit answer was lost (etcd restart, reset connection, timeout) is delivered
all the same. A broken or compacted watch is answered with a fresh listing, and every new
leadership starts with one (another leader may have recorded, delivered or dropped some).

A trigger is one package's entry into Error; it is sent to each scenario targeting the package
(sorted by name, as the index has them at delivery) until ActionController answers status 0
for each, with capped exponential backoff per trigger while it is down or answers non-zero.
A trigger whose package is no longer in Error (as etcd has it when the attempt is due) is
dropped, logged. The index may not know every scenario yet: etcd delivers the daemon's prefix
watches out of revision order while they catch up, so a Scenario written before the death that
led to the Error can reach the index after it. "No scenario" is therefore concluded only once
the index's Scenario view is known current as of the trigger's revision; then the trigger is
dropped with a warning and a metric, and no request. Removing a trigger is a transaction
guarded by its revision, so a newer trigger for the same package (it entered Error again) is
never removed by the older one's delivery.

Refusals (see actioncontroller's delivery policy) are counted per trigger: the refusal that
reaches `max_refusals`, or any refusal once the trigger is `max_age` old (since this daemon
took it on), moves it to the dead letters in one transaction, guarded and fenced like the
removal. Unavailability never does: it is retried for as long as it lasts. The dead letters
are followed too (for the gauge); `statemanager triggers` redelivers one by putting its
trigger back, which the watch then picks up like any other.

Records of every trigger format are delivered (core/triggers.py): a format-1 record, one per
scenario, written by the first releases, is sent to the scenario it names and removed alone,
guarded on its own revision. A trigger or dead letter in a format newer than this daemon knows
is never sent, removed or overwritten; it is reported once (runtime/records.py). A trigger
refused until given up on stays pending rather than overwrite such a dead letter of its
package.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from statemanager.core.errors import Compacted, EtcdError, EtcdUnavailable
from statemanager.core.keys import KeyLayout, Resource, WorkKey
from statemanager.core.ports import (
    Delete,
    Event,
    Fence,
    Guard,
    KeyValue,
    Put,
    ReconcileOutcome,
    Snapshot,
    TxnResult,
    WatchBatch,
)
from statemanager.core.records import LaterFormat, LaterFormatReporter
from statemanager.core.states import PackageState
from statemanager.core.triggers import (
    DeadLetter,
    Trigger,
    dead_letter_key,
    dead_letter_prefix,
    decode,
    decode_dead_letter,
    encode_dead_letter,
    record_key,
    trigger_prefix,
)
from statemanager.runtime.backoff import Backoff, wait_woken
from statemanager.runtime.metrics import Metrics
from statemanager.runtime.outage import Outage

log = structlog.get_logger("statemanager.reconcile")


class ReconcileClient(Protocol):
    """ReconcileClient asks ActionController to reconcile a scenario and says how it answered."""

    async def reconcile(self, scenario: str) -> ReconcileOutcome: ...


class TriggerStore(Protocol):
    """TriggerStore lists, watches, reads and transacts the trigger and dead-letter keys."""

    async def snapshot(self, prefixes: Sequence[str], page_size: int = ...) -> Snapshot: ...

    def watch(
        self, starts: Mapping[str, int], progress_every: float
    ) -> AsyncGenerator[WatchBatch, None]: ...

    async def get(self, key: bytes) -> KeyValue | None: ...

    async def txn(
        self, guards: Sequence[Guard], ops: Sequence[Put | Delete], fence: Fence | None = None
    ) -> TxnResult: ...


class Scenarios(Protocol):
    """Scenarios names the scenarios that target a package (the index knows)."""

    def scenarios_of(self, package: str) -> list[str]: ...


class Applied(Protocol):
    """Applied tells how far the index has followed etcd (the watcher knows)."""

    def applied(self, prefix: str) -> int:
        """The newest revision up to which every event under `prefix` is in the index."""
        ...


class Leading(Protocol):
    """Leading is what the sender needs of the election: wait to lead, whether it still
    does, and report a write that was fenced off."""

    async def wait_leader(self) -> Fence: ...
    def fence(self) -> Fence | None: ...
    def lost(self) -> None: ...


class _FencedOff(Exception):
    """A removal was fenced off: etcd says this daemon's leader key is gone or replaced."""


@dataclass(slots=True)
class _Pending:
    trigger: Trigger
    backoff: Backoff
    taken_at: float  # unix time this process took it on, for the oldest-pending gauge
    due: float = 0.0
    attempts: int = 0
    refusals: int = 0  # answers that said no (see actioncontroller's delivery policy)
    acknowledged: set[str] = field(default_factory=set)  # scenarios that answered status 0
    delivered: bool = False  # acknowledged by all; only its removal from etcd is outstanding
    removing: bool = False  # a removal (or move to the dead letters) has been sent


class ReconcileSender:
    """ReconcileSender delivers the triggers in etcd to ActionController while this daemon
    leads (see the module docstring)."""

    def __init__(
        self,
        *,
        client: ReconcileClient,
        store: TriggerStore,
        layout: KeyLayout,
        scenarios: Scenarios,
        applied: Applied,
        metrics: Metrics,
        outage: Outage,
        later_formats: LaterFormatReporter,
        max_backoff: float,
        silence_limit: float,
        max_refusals: int,
        max_age: float,
    ) -> None:
        self._client = client
        self._store = store
        self._layout = layout
        self._scenarios = scenarios
        self._applied = applied
        self._metrics = metrics
        self._outage = outage
        self._max_backoff = max_backoff
        self._silence_limit = silence_limit
        self._max_refusals = max_refusals
        self._max_age = max_age
        self._prefix = trigger_prefix(layout)
        self._dead_prefix = dead_letter_prefix(layout)
        # Every trigger in etcd as of the watch, by key; delivery works through it.
        self._pending: dict[bytes, _Pending] = {}
        # The dead-letter keys in etcd (for the gauge), each True when in a later format.
        self._dead: dict[bytes, bool] = {}
        self._later = later_formats
        self._listed_for: Fence | None = None
        self._wake = asyncio.Event()

    def pending(self) -> list[tuple[Trigger, int]]:
        """Pending lists the triggers not yet delivered or removed, with the attempts made so
        far, by package. Current only while this daemon leads (a follower's may be stale)."""
        items = sorted(self._pending.values(), key=lambda p: p.trigger.package)
        return [(p.trigger, p.attempts) for p in items]

    async def run(self, leadership: Leading) -> None:
        """Run delivers triggers while this daemon leads, until cancelled; nothing etcd answers
        ends it (a refusal is retried with backoff, like an outage)."""
        while True:
            fence = await leadership.wait_leader()
            follower = asyncio.create_task(self._follow(fence), name="reconcile-triggers")
            try:
                await self._deliver(fence, leadership, follower)
            finally:
                follower.cancel()
                await asyncio.gather(follower, return_exceptions=True)
                # A follower reports nothing pending; the next leadership lists the triggers
                # again (what is still there keeps its attempts and backoff).
                self._metrics.reconcile_pending.set(0)
                self._metrics.reconcile_oldest.set(0)
                self._metrics.reconcile_dead_letters.set(0)

    async def _deliver(
        self, fence: Fence, leadership: Leading, follower: asyncio.Task[None]
    ) -> None:
        """Attempt due triggers until leadership ends or changes hands (returns), or the
        follower fails (raises its error)."""
        while leadership.fence() == fence:
            if follower.done():
                follower.result()  # a permanent etcd error: let the supervisor see it
            self._wake.clear()  # before looking, so a trigger taken meanwhile wakes us
            # The loop's clock, not time.monotonic(): tests run the sender on virtual time.
            now = asyncio.get_running_loop().time()
            due = sorted(
                (p for p in self._pending.values() if p.due <= now),
                key=lambda p: p.trigger.package,
            )
            try:
                for pending in due:
                    await self._attempt(pending, fence)
            except _FencedOff:
                # Stop now and let the election find out where we stand (the next leader lists
                # the trigger and decides): retrying at once would hammer etcd until its next look.
                leadership.lost()
                return
            upcoming = [p.due for p in self._pending.values()]
            # At most a second: a leadership change must stop delivery promptly.
            now = asyncio.get_running_loop().time()
            await wait_woken(self._wake, min([1.0, *(due - now for due in upcoming)]))

    async def _follow(self, fence: Fence) -> None:
        """Keep `_pending` equal to the trigger prefix in etcd (and `_dead` to the dead
        letters): list, then watch from the listed revision; list again whenever the watch
        breaks, goes silent or is compacted."""
        backoff = Backoff(initial=0.2, cap=2.0)
        while True:
            try:
                revision, listing = await self._store.snapshot([self._prefix, self._dead_prefix])
                self._dead = {}
                for kv in listing[self._dead_prefix]:
                    self._letter(kv)
                # Under a leadership already listed for (an outage came and went), what is new
                # was recorded meanwhile; under a new one, it was left by earlier leaders.
                self._relisted(listing[self._prefix], resumed=fence != self._listed_for)
                self._listed_for = fence
                await self._watch(revision + 1, backoff)
            except (Compacted, EtcdUnavailable, EtcdError, TimeoutError) as exc:
                delay = backoff.next()
                self._failed(exc)
                self._log_failure(
                    "reconcile_watch_broken",
                    error=str(exc) or type(exc).__name__,
                    retry_in=round(delay, 2),
                )
                await asyncio.sleep(delay)

    async def _watch(self, start: int, backoff: Backoff) -> None:
        starts = {self._prefix: start, self._dead_prefix: start}
        stream = self._store.watch(starts, self._silence_limit / 3)
        try:
            while True:
                # Progress notifications are asked for every third of the limit: silence
                # this long means the stream is dead (TimeoutError).
                async with asyncio.timeout(self._silence_limit):
                    batch = await anext(stream)
                backoff.reset()
                for event in batch.events:
                    if batch.prefix == self._dead_prefix:
                        self._dead.pop(event.key, None)
                        if event.value is not None:
                            self._letter(KeyValue(event.key, event.value, event.revision))
                    else:
                        self._observe(event)
                self._update_gauges()
        finally:
            await stream.aclose()

    def _relisted(self, listing: Sequence[KeyValue], resumed: bool) -> None:
        """Replace the pending set with a listing; triggers already pending keep their state."""
        found: dict[bytes, Trigger] = {}
        for key, value, revision in listing:
            trigger = self._decode(key, value, revision)
            if trigger is not None:
                found[key] = trigger
        for key in [k for k, p in self._pending.items() if k not in found]:
            del self._pending[key]  # removed while the watch was down
        if resumed and found:
            log.info("reconcile_resumed", triggers=len(found))
        for trigger in found.values():
            self._take(trigger, recorded=not resumed)
        self._update_gauges()

    def _observe(self, event: Event) -> None:
        if event.value is None:
            # Removed: normally by our own delivery (already forgotten); otherwise by another
            # leader, or by our removal whose answer was lost.
            pending = self._pending.get(event.key)
            if pending is not None and pending.trigger.revision < event.revision:
                del self._pending[event.key]
                if not pending.removing:  # our own removal, its answer still on the way
                    log.info("reconcile_removed", **_fields(pending.trigger))
        else:
            trigger = self._decode(event.key, event.value, event.revision)
            if trigger is not None:
                self._take(trigger, recorded=True)

    def _decode(self, key: bytes, value: bytes, revision: int) -> Trigger | None:
        trigger = decode(self._layout, key, value, revision)
        if isinstance(trigger, LaterFormat):
            self._later.report(key, trigger)
            return None
        if trigger is None:
            log.warning("reconcile_trigger_unreadable", key=key.decode("utf-8", "replace"))
        return trigger

    def _letter(self, kv: KeyValue) -> None:
        """Note a dead letter in etcd (reporting one in a later format)."""
        letter = decode_dead_letter(self._layout, kv.key, kv.value, kv.mod_revision)
        if isinstance(letter, LaterFormat):
            self._later.report(kv.key, letter)
        self._dead[kv.key] = isinstance(letter, LaterFormat)

    def _take(self, trigger: Trigger, recorded: bool) -> None:
        """Make `trigger` pending unless it already is; a newer one replaces an older one.
        `recorded`: it appeared while this daemon leads (counted here, once), rather than
        being left by an earlier leader or run."""
        key = record_key(self._layout, trigger)
        known = self._pending.get(key)
        if known is not None and known.trigger.revision >= trigger.revision:
            return
        if known is not None:
            log.info("reconcile_superseded", **_fields(known.trigger), by=trigger.revision)
        backoff = Backoff(initial=0.5, cap=self._max_backoff)
        self._pending[key] = _Pending(trigger, backoff, time.time())
        if recorded:
            self._metrics.reconcile_triggers.labels("recorded").inc()
        log.info("reconcile_recorded" if recorded else "reconcile_loaded", **_fields(trigger))
        self._wake.set()

    async def _attempt(self, pending: _Pending, fence: Fence) -> None:
        """Attempt delivers `pending` to each scenario that has not acknowledged it yet, then
        removes its record; it ends early with the trigger deferred, dropped or dead-lettered."""
        if not pending.delivered:
            scenarios = await self._scenarios_to_ask(pending, fence)
            if scenarios is None or not await self._send(pending, scenarios, fence):
                return
            pending.delivered = True
        await self._remove(pending, "delivered", fence)

    async def _scenarios_to_ask(self, pending: _Pending, fence: Fence) -> list[str] | None:
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
        state = found.value.decode("utf-8", "replace") if found is not None else None
        if state != PackageState.ERROR:
            log.info("reconcile_dropped", **_fields(trigger), package_state=state)
            await self._remove(pending, "dropped", fence)
            return None
        if scenarios is None:  # the watch still brings scenario changes made before it
            pending.due = asyncio.get_running_loop().time() + pending.backoff.next()
            log.info("reconcile_awaiting_scenarios", **_fields(trigger))
            return None
        if not scenarios:
            # Nobody to ask for a reconcile: say so rather than stay silent.
            self._metrics.reconcile_no_scenario.inc()
            log.warning("reconcile_no_scenario", **_fields(trigger))
            await self._remove(pending, "dropped", fence)
            return None
        return scenarios

    async def _send(self, pending: _Pending, scenarios: list[str], fence: Fence) -> bool:
        """Reconcile each of `scenarios` that has not acknowledged `pending`; True when all
        have, False when a retry is scheduled or the trigger moved to the dead letters."""
        trigger = pending.trigger
        for scenario in scenarios:
            if scenario in pending.acknowledged:
                continue
            pending.attempts += 1
            outcome = await self._client.reconcile(scenario)
            self._metrics.reconcile_requests.labels(outcome.result).inc()
            if outcome.refused:
                pending.refusals += 1
                if self._given_up(pending):
                    await self._dead_letter(pending, scenario, outcome.detail, fence)
                    return False
            if not outcome.acknowledged:
                delay = pending.backoff.next()
                pending.due = asyncio.get_running_loop().time() + delay
                log.warning(
                    "reconcile_retry",
                    **_fields(trigger, scenario),
                    attempt=pending.attempts,
                    refusals=pending.refusals,
                    result=outcome.result,
                    error=outcome.detail,
                    retry_in=round(delay, 2),
                )
                return False
            pending.acknowledged.add(scenario)
            log.info("reconcile_delivered", **_fields(trigger, scenario), attempt=pending.attempts)
        return True

    async def _targets(self, trigger: Trigger) -> list[str] | None:
        """The scenarios to send `trigger` to, or None while the index may still miss one."""
        if trigger.scenario is not None:
            return [trigger.scenario]  # a format-1 record: the one scenario it was written for
        scenarios = self._scenarios.scenarios_of(trigger.package)
        # Even with scenarios known: one retargeted to this package just before the Error may
        # not have reached the index yet, and would never be asked.
        return scenarios if await self._scenarios_current(trigger) else None

    async def _scenarios_current(self, trigger: Trigger) -> bool:
        """Whether the index's scenarios are etcd's as of `trigger`'s revision or later."""
        prefix = self._layout.scenarios
        applied = self._applied.applied(prefix)
        if applied >= trigger.revision:
            return True
        # The index holds the prefix as etcd had it at `applied`; since then deletions can only
        # take scenarios away, so no key modified since means none is missing.
        _, listing = await self._store.snapshot([prefix])
        return all(kv.mod_revision <= applied for kv in listing[prefix])

    def _given_up(self, pending: _Pending) -> bool:
        too_old = time.time() - pending.taken_at >= self._max_age
        return pending.refusals >= self._max_refusals or too_old

    async def _dead_letter(
        self, pending: _Pending, scenario: str, error: str, fence: Fence
    ) -> None:
        """Move the trigger to the dead letters: kept in etcd, no longer sent."""
        trigger = pending.trigger
        dead = dead_letter_key(self._layout, trigger.package)
        if self._dead.get(dead):
            # A newer daemon's dead letter holds the key: overwriting it would lose it, so the
            # trigger stays pending (retried at the longest backoff) until that one is gone.
            pending.due = asyncio.get_running_loop().time() + self._max_backoff
            log.warning("reconcile_dead_letter_taken", **_fields(trigger, scenario), error=error)
            return
        acknowledged = tuple(sorted(pending.acknowledged))
        letter = DeadLetter(trigger, scenario, error, pending.refusals, acknowledged, time.time())
        move = Put(dead, encode_dead_letter(letter))
        if await self._remove(pending, "dead_lettered", fence, move):
            log.warning(
                "reconcile_dead_lettered",
                **_fields(trigger, scenario),
                refusals=pending.refusals,
                error=error,
            )

    async def _remove(
        self, pending: _Pending, outcome: str, fence: Fence, move: Put | None = None
    ) -> bool:
        """Delete the trigger (writing `move` in the same transaction); True when done."""
        trigger = pending.trigger
        key = record_key(self._layout, trigger)
        ops: list[Put | Delete] = [Delete(key)] if move is None else [Delete(key), move]
        pending.removing = True
        try:
            result = await self._store.txn([Guard(key, trigger.revision)], ops, fence)
        except (EtcdUnavailable, EtcdError) as exc:
            self._defer(pending, exc)
            return False
        if result.fenced:
            raise _FencedOff
        # A failed guard means a newer trigger took the key; _take has replaced our entry then.
        if self._pending.get(key) is pending:
            del self._pending[key]
        self._update_gauges()
        if not result.succeeded and move is not None:
            return False  # nothing moved: the newer trigger is delivered on its own
        self._metrics.reconcile_triggers.labels(outcome).inc()
        return True

    def _defer(self, pending: _Pending, exc: EtcdUnavailable | EtcdError) -> None:
        pending.due = asyncio.get_running_loop().time() + pending.backoff.next()
        self._failed(exc)
        self._log_failure("reconcile_deferred", **_fields(pending.trigger), error=str(exc))

    def _failed(self, exc: Exception) -> None:
        """Report a request etcd failed or refused to the outage reporter (a broken or silent
        stream, or a compaction, says nothing about etcd's reachability)."""
        if isinstance(exc, (EtcdUnavailable, EtcdError)):
            self._outage.failed(str(exc))

    def _log_failure(self, event: str, **fields: object) -> None:
        """A warning, or only a debug line while the outage reporter speaks for etcd."""
        (log.debug if self._outage.down else log.warning)(event, **fields)

    def _update_gauges(self) -> None:
        self._metrics.reconcile_pending.set(len(self._pending))
        oldest = min((p.taken_at for p in self._pending.values()), default=0.0)
        self._metrics.reconcile_oldest.set(oldest)
        self._metrics.reconcile_dead_letters.set(len(self._dead))


def _fields(trigger: Trigger, scenario: str | None = None) -> dict[str, object]:
    """The log fields that identify one delivery (an idempotency key for ActionController):
    the package's entry into Error and, once known, the scenario it goes to."""
    fields: dict[str, object] = {
        "package": trigger.package,
        "revision": trigger.revision,
        "transition_id": trigger.transition_id,
        "trigger": trigger.identity()
        if scenario is None
        else f"{trigger.package}/{scenario}@{trigger.revision}",
    }
    if scenario is not None:
        fields["scenario"] = scenario
    return fields
