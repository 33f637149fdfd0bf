"""Keeps the reconcile triggers and dead letters in etcd in memory while this daemon leads.

The feed lists the trigger and dead-letter prefixes and watches them from the listed revision:
triggers come from etcd itself, not from the writer's transaction response, so a trigger whose
commit answer was lost (etcd restart, reset connection, timeout) is pending all the same. A
broken, silent or compacted watch is answered with a fresh listing, and every new leadership
starts with one (another leader may have recorded, delivered or dropped some). So is a watch
that answers from a history the listing was not of: etcd restored or wiped between the listing
and the watch (the watch is a request of its own, and etcd accepts a start revision it has not
reached) would otherwise wait for the revision after the listing's while the new history
records triggers below it, never delivered.

The feed alone decides which triggers are pending (one entry per record key; a newer trigger
for the key replaces the older entry); the reconcile sender (runtime/reconcile.py) alone
advances an entry's delivery, and tells the feed when it removed the record. The dead letters
are followed for the gauge and so that the sender never overwrites one in a format newer than
this daemon knows. Records of every trigger format are read (core/triggers.py); one in a later
format is never made pending, and is reported once (runtime/records.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from statemanager.core.errors import Compacted, EtcdError, EtcdUnavailable
from statemanager.core.keys import KeyLayout
from statemanager.core.ports import Event, Fence, Header, KeyValue, Snapshot, WatchBatch
from statemanager.core.records import LaterFormat, LaterFormatReporter
from statemanager.core.triggers import (
    Trigger,
    dead_letter_prefix,
    decode,
    decode_dead_letter,
    record_key,
    trigger_prefix,
)
from statemanager.runtime.backoff import Backoff, wait_woken
from statemanager.runtime.metrics import Metrics
from statemanager.runtime.outage import Outage
from statemanager.runtime.watcher import HistoryReplaced, confirmed_header

log = structlog.get_logger("statemanager.reconcile")


class TriggerSource(Protocol):
    """TriggerSource lists and watches the trigger and dead-letter prefixes."""

    async def snapshot(self, prefixes: Sequence[str], page_size: int = ...) -> Snapshot: ...

    async def header(self) -> Header: ...

    def watch(
        self, starts: Mapping[str, int], progress_every: float
    ) -> AsyncGenerator[WatchBatch, None]: ...


@dataclass(slots=True)
class PendingTrigger:
    """PendingTrigger is one trigger record in etcd and how far its delivery has come.

    The feed creates it and drops it; only the sender changes the delivery fields.
    """

    trigger: Trigger
    backoff: Backoff
    taken_at: float  # unix time this process took it on, for the oldest-pending gauge
    due: float = 0.0
    attempts: int = 0
    refusals: int = 0  # answers that said no (see actioncontroller's delivery policy)
    acknowledged: set[str] = field(default_factory=set)  # scenarios that answered status 0
    delivered: bool = False  # acknowledged by all; only its removal from etcd is outstanding
    removing: bool = False  # a removal (or move to the dead letters) has been sent

    def defer(self, delay: float | None = None) -> float:
        """Defer makes the trigger due `delay` seconds from now (by default its next backoff
        step) and returns the delay."""
        if delay is None:
            delay = self.backoff.next()
        # The loop's clock, not time.monotonic(): tests run the sender on virtual time.
        self.due = asyncio.get_running_loop().time() + delay
        return delay


class TriggerFeed:
    """TriggerFeed holds the triggers and dead letters in etcd as its `follow` last saw them
    (see the module docstring)."""

    def __init__(
        self,
        *,
        store: TriggerSource,
        layout: KeyLayout,
        metrics: Metrics,
        outage: Outage,
        later_formats: LaterFormatReporter,
        max_backoff: float,
        silence_limit: float,
    ) -> None:
        self._store = store
        self._layout = layout
        self._metrics = metrics
        self._outage = outage
        self._later = later_formats
        self._max_backoff = max_backoff
        self._silence_limit = silence_limit
        self._prefix = trigger_prefix(layout)
        self._dead_prefix = dead_letter_prefix(layout)
        # Every trigger in etcd as of the watch, by key; delivery works through it.
        self._pending: dict[bytes, PendingTrigger] = {}
        # The dead-letter keys in etcd (for the gauge), each True when in a later format.
        self._dead: dict[bytes, bool] = {}
        self._listed_for: Fence | None = None
        self._term = 0  # the highest raft term the watches have answered with in this history
        self._wake = asyncio.Event()  # set when a trigger is taken on
        # Set once this leadership's first listing is in: until then the entries kept from an
        # earlier one may name records since delivered by another leader, or taken back by a
        # restore, and none is due.
        self._listed = asyncio.Event()

    def pending(self) -> list[tuple[Trigger, int]]:
        """Pending lists the triggers not yet delivered or removed, with the attempts made so
        far, by package. Current only while this daemon leads (a follower's may be stale)."""
        items = sorted(self._pending.values(), key=lambda p: p.trigger.package)
        return [(p.trigger, p.attempts) for p in items]

    def due(self) -> list[PendingTrigger]:
        """Due lists the pending triggers whose attempt is due now, by package (none before
        this leadership's first listing is in); a trigger taken on from now on ends the next
        `wait`."""
        self._wake.clear()  # before looking, so a trigger taken meanwhile wakes the waiter
        if not self._listed.is_set():
            return []
        now = asyncio.get_running_loop().time()
        due = (p for p in self._pending.values() if p.due <= now)
        return sorted(due, key=lambda p: p.trigger.package)

    async def wait(self, cap: float) -> None:
        """Wait returns when a pending trigger falls due, one is taken on, or `cap` seconds
        have passed, whichever comes first (until this leadership's first listing is in: when
        it is, or after `cap`)."""
        if not self._listed.is_set():
            await wait_woken(self._listed, cap)
            return
        now = asyncio.get_running_loop().time()
        await wait_woken(self._wake, min([cap, *(p.due - now for p in self._pending.values())]))

    def holds(self, pending: PendingTrigger) -> bool:
        """Holds tells whether `pending` is still the feed's entry for its record: a listing
        drops an entry whose record etcd no longer holds (another leader delivered it, or etcd
        was restored to before it), and a newer trigger replaces it."""
        return self._pending.get(record_key(self._layout, pending.trigger)) is pending

    def forget(self, pending: PendingTrigger) -> None:
        """Forget drops `pending` once the sender has removed its record from etcd (unless a
        newer trigger has replaced it meanwhile)."""
        key = record_key(self._layout, pending.trigger)
        if self._pending.get(key) is pending:
            del self._pending[key]
        self._update_gauges()

    def later_dead_letter(self, key: bytes) -> bool:
        """later_dead_letter tells whether the dead letter at `key` is in a format newer than
        this daemon knows."""
        return self._dead.get(key, False)

    async def follow(self, fence: Fence) -> None:
        """Follow keeps the pending triggers equal to the trigger prefix in etcd (and the dead
        letters to theirs) under leadership `fence`, until cancelled.

        It lists, then watches from the listed revision, and lists again whenever the watch
        breaks, goes silent or is compacted. No trigger is due before its first listing is in.
        Once it ends the gauges read zero: a follower reports nothing pending, and the next
        leadership lists the triggers again (what is still there keeps its attempts and
        backoff).
        """
        backoff = Backoff(initial=0.2, cap=2.0)
        try:
            while True:
                try:
                    revision = await self._list(fence)
                    self._listed.set()
                    await self._watch(revision + 1, backoff)
                except HistoryReplaced as exc:
                    log.warning("reconcile_history_replaced", error=str(exc), hint="relisting")
                    self._term = 0  # learnt anew from the new history
                except (Compacted, EtcdUnavailable, EtcdError, TimeoutError) as exc:
                    delay = backoff.next()
                    if isinstance(exc, (EtcdUnavailable, EtcdError)):
                        # A broken or silent stream, or a compaction, says nothing about
                        # etcd's reachability.
                        self._outage.failed(str(exc))
                    (log.debug if self._outage.down else log.warning)(
                        "reconcile_watch_broken",
                        error=str(exc) or type(exc).__name__,
                        retry_in=round(delay, 2),
                    )
                    await asyncio.sleep(delay)
        finally:
            self._listed.clear()  # cleared as it ends: the next leadership's sender waits
            self._metrics.reconcile_pending.set(0)
            self._metrics.reconcile_oldest.set(0)
            self._metrics.reconcile_dead_letters.set(0)

    async def _list(self, fence: Fence) -> int:
        """Replace the pending triggers and the dead letters with a listing; returns its
        revision."""
        revision, listing = await self._store.snapshot([self._prefix, self._dead_prefix])
        self._dead = {}
        for kv in listing[self._dead_prefix]:
            self._letter(kv)
        # Under a leadership already listed for (an outage came and went), what is new
        # was recorded meanwhile; under a new one, it was left by earlier leaders.
        self._relisted(listing[self._prefix], resumed=fence != self._listed_for)
        self._listed_for = fence
        return revision

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
                await self._check_history(batch.header, start - 1)
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

    async def _check_history(self, header: Header, listed: int) -> None:
        """Raise HistoryReplaced when etcd's revision is below the listing's (`listed`) or its
        raft term below the highest one this feed's watches have answered with: a listing of
        the history before a restore or wipe, and a watch of the new one from past its end
        (the term catches a new history that outgrew the listing's revision meanwhile). A
        lagging member's answer is told apart by a linearizable read (`confirmed_header`)."""
        header = await confirmed_header(header, Header(listed, self._term), self._store.header)
        self._term = max(self._term, header.raft_term)

    def _relisted(self, listing: Sequence[KeyValue], resumed: bool) -> None:
        """Replace the pending set with a listing; triggers already pending keep their state.
        A pending trigger whose key holds another record is replaced by it, whatever their
        revisions: after etcd's history was replaced (a restore), a newer trigger may sit at a
        lower revision than the one pending from the history before, or the snapshot may hold
        an older trigger than the one pending (kept, either would hide etcd's record for good)."""
        found: dict[bytes, Trigger] = {}
        for key, value, revision in listing:
            trigger = self._decode(key, value, revision)
            if trigger is not None:
                found[key] = trigger
        for key in [k for k, p in self._pending.items() if found.get(k) != p.trigger]:
            del self._pending[key]  # removed or replaced while the watch was down
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
                    log.info("reconcile_removed", **log_fields(pending.trigger))
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
            log.info("reconcile_superseded", **log_fields(known.trigger), by=trigger.revision)
        backoff = Backoff(initial=0.5, cap=self._max_backoff)
        self._pending[key] = PendingTrigger(trigger, backoff, time.time())
        if recorded:
            self._metrics.reconcile_triggers.labels("recorded").inc()
        log.info("reconcile_recorded" if recorded else "reconcile_loaded", **log_fields(trigger))
        self._wake.set()

    def _update_gauges(self) -> None:
        self._metrics.reconcile_pending.set(len(self._pending))
        oldest = min((p.taken_at for p in self._pending.values()), default=0.0)
        self._metrics.reconcile_oldest.set(oldest)
        self._metrics.reconcile_dead_letters.set(len(self._dead))


def log_fields(trigger: Trigger, scenario: str | None = None) -> dict[str, object]:
    """log_fields returns the log fields that identify one delivery (an idempotency key for
    ActionController): the package's entry into Error and, once known, its scenario."""
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
