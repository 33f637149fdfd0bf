"""The trigger feed on its own (runtime/triggerfeed.py): it holds the triggers in etcd as its
watch last saw them, a newer trigger replacing an older one, and the sender's `forget` never
drops the newer one; once it stops, the gauges read zero."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import pytest

from statemanager.core.ports import Fence, Snapshot
from statemanager.core.triggers import Trigger, encode, trigger_key, trigger_prefix
from statemanager.runtime.metrics import Metrics
from statemanager.runtime.outage import Outage
from statemanager.runtime.records import LaterFormats
from statemanager.runtime.triggerfeed import TriggerFeed

from support.memetcd import MemEtcd, StoreSnapshot
from support.runtime import LAYOUT, until

pytestmark = pytest.mark.looptime

FENCE = Fence(b"leader-key", 1)


def _put_trigger(mem: MemEtcd, package: str, transition_id: str) -> int:
    """Write `package`'s trigger as the writer does; its revision."""
    record = encode(Trigger(package, transition_id, 0))
    return mem.put_now(trigger_key(LAYOUT, package), record)


def _gauge(metrics: Metrics) -> float:
    sample = metrics.registry.get_sample_value("statemanager_reconcile_pending_triggers")
    return sample or 0.0


def _feed(mem: MemEtcd, metrics: Metrics) -> TriggerFeed:
    return TriggerFeed(
        store=mem,
        layout=LAYOUT,
        metrics=metrics,
        outage=Outage(),
        later_formats=LaterFormats(metrics),
        max_backoff=2.0,
        silence_limit=3.0,
    )


@asynccontextmanager
async def _following(mem: MemEtcd, metrics: Metrics) -> AsyncIterator[TriggerFeed]:
    feed = _feed(mem, metrics)
    task = asyncio.create_task(feed.follow(FENCE))
    try:
        yield feed
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def _revisions(feed: TriggerFeed) -> list[tuple[str, int]]:
    return [(t.package, t.revision) for t, _ in feed.pending()]


async def test_the_feed_holds_etcds_triggers_as_they_come_and_go() -> None:
    """A listed trigger, one written later and a newer one for the same package are pending at
    their revisions; a deleted one is no longer; the gauge follows, and reads 0 once stopped."""
    mem, metrics = MemEtcd(), Metrics()
    listed = _put_trigger(mem, "a", "t1")
    async with _following(mem, metrics) as feed:
        await until(lambda: _revisions(feed) == [("a", listed)])
        written = _put_trigger(mem, "b", "t2")
        await until(lambda: _revisions(feed) == [("a", listed), ("b", written)])
        newer = _put_trigger(mem, "a", "t3")
        await until(lambda: _revisions(feed) == [("a", newer), ("b", written)])
        assert [p.trigger.transition_id for p in feed.due()] == ["t3", "t2"]
        mem.delete_now(trigger_key(LAYOUT, "b"))
        await until(lambda: _revisions(feed) == [("a", newer)])
        assert _gauge(metrics) == 1
    assert _gauge(metrics) == 0


async def test_forget_drops_the_entry_it_is_given_never_its_replacement() -> None:
    """The sender forgets a trigger it removed; one replaced meanwhile by a newer trigger for
    its package leaves the newer one pending."""
    mem, metrics = MemEtcd(), Metrics()
    first = _put_trigger(mem, "a", "t1")
    async with _following(mem, metrics) as feed:
        await until(lambda: _revisions(feed) == [("a", first)])
        [old] = feed.due()
        newer = _put_trigger(mem, "a", "t2")
        await until(lambda: _revisions(feed) == [("a", newer)])
        feed.forget(old)
        assert _revisions(feed) == [("a", newer)]
        [current] = feed.due()
        feed.forget(current)
        assert feed.pending() == []
        assert _gauge(metrics) == 0


async def test_a_listing_replaces_a_pending_trigger_with_the_record_etcd_holds() -> None:
    """etcd restored from a snapshot, and another entry into Error recorded since at a lower
    revision than the one pending: the listing after the watch broke is what etcd holds, so
    its record replaces the pending one (a lower revision there is a newer trigger of a new
    history, not an older one). Found by the simulator (a trigger awaiting its scenarios when
    etcd was restored)."""
    mem, metrics = MemEtcd(), Metrics()
    snapshot = mem.snapshot_now()
    mem.put_now(b"/elsewhere", b"x")
    pending = _put_trigger(mem, "a", "t1")
    async with _following(mem, metrics) as feed:
        await until(lambda: _revisions(feed) == [("a", pending)])
        mem.replace_history(snapshot)
        restored = _put_trigger(mem, "a", "t2")
        assert restored < pending
        await until(
            lambda: [(t.transition_id, t.revision) for t, _ in feed.pending()] == [("t2", restored)]
        )


async def test_a_restore_brings_back_an_older_trigger_which_the_listing_makes_pending() -> None:
    """etcd is restored from a snapshot holding an older trigger of a package whose newer one
    was pending: the feed's listing after the break makes the restored trigger pending at its
    own revision (etcd's history now), not the newer one of the history that is gone."""
    mem, metrics = MemEtcd(), Metrics()
    older = _put_trigger(mem, "a", "t1")
    snapshot = mem.snapshot_now()
    async with _following(mem, metrics) as feed:
        await until(lambda: _revisions(feed) == [("a", older)])
        newer = _put_trigger(mem, "a", "t2")
        await until(lambda: _revisions(feed) == [("a", newer)])
        mem.replace_history(snapshot)
        await until(lambda: _revisions(feed) == [("a", older)])
        assert [p.trigger.transition_id for p in feed.due()] == ["t1"]


async def test_no_trigger_is_due_before_a_new_leaderships_first_listing() -> None:
    """A trigger the feed held when its leadership ended is delivered and removed by another
    leader meanwhile: when this daemon leads again, nothing is due until the new leadership's
    listing is in, and that listing drops it (before, the sender delivered the entry kept from
    the earlier leadership at once: the simulation's seed 508416, a Reconcile with no
    trigger)."""
    mem = MemEtcd()
    metrics = Metrics()
    feed = _feed(mem, metrics)
    _put_trigger(mem, "p", "t-1")
    first = asyncio.create_task(feed.follow(FENCE))
    await until(lambda: [p.trigger.package for p in feed.due()] == ["p"])
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    mem.delete_now(trigger_key(LAYOUT, "p"))  # another leader delivered it
    assert feed.due() == []
    mem.outage()  # the new leadership's listing waits for etcd
    second = asyncio.create_task(feed.follow(Fence(b"leader-key-2", 9)))
    try:
        await feed.wait(1.0)
        assert feed.due() == []
        mem.restore()
        await until(lambda: _gauge(metrics) == 0 and feed.pending() == [])
        assert feed.due() == []
    finally:
        second.cancel()
        await asyncio.gather(second, return_exceptions=True)


class _RestoredAfterListing(MemEtcd):
    """An etcd restored from `restore_to` right after it answers the next listing: before the
    watch that follows the listing opens (a request of its own)."""

    restore_to: StoreSnapshot | None = None

    async def snapshot(self, prefixes: Sequence[str], page_size: int = 1000) -> Snapshot:
        listed = await super().snapshot(prefixes, page_size)
        if self.restore_to is not None:
            self.replace_history(self.restore_to, keep_term=True)
            self.restore_to = None
        return listed


async def test_a_restore_between_the_listing_and_the_watch_is_relisted() -> None:
    """etcd is restored to an older snapshot after answering the feed's listing and before its
    watch opens: the watch, from past the new history's end, answers with a revision below the
    listing's, so the feed lists again and holds the trigger the new history records below the
    listed revision (before, it kept the listed one and waited for revisions the new history
    had not reached: the simulation's swarm seed 3032553, a trigger never delivered)."""
    mem, metrics = _RestoredAfterListing(), Metrics()
    mem.restore_to = mem.snapshot_now()
    for _ in range(3):
        mem.put_now(b"/elsewhere", b"x")
    listed = _put_trigger(mem, "a", "t1")
    async with _following(mem, metrics) as feed:
        await until(lambda: mem.restore_to is None and mem.watching(trigger_prefix(LAYOUT)))
        restored = _put_trigger(mem, "b", "t2")
        assert restored < listed
        await until(lambda: _revisions(feed) == [("b", restored)])
