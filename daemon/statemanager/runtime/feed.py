"""The live feed of committed transitions behind SubscribeToStateChanges: every history record
etcd commits, handed to every subscriber that wants it, on any daemon, leader or follower.

Each new key under the history prefix is one committed transition (core/history.py), written
in the transaction of the state it records, so watching that prefix in etcd is watching the
transitions as they commit, whoever writes them: a follower's feed flows on through a leader
failover, since etcd, not the leader, is its source. One watch per daemon, opened while anyone
subscribes (no subscriber, no watch, no cost per change), feeds every subscriber; each record
is decoded once.

A slow or vanished subscriber never slows the daemon: each has a bounded buffer of
`BUFFER` revisions, filled without waiting; the one that would overflow it is cut off
(`CutOff`, naming the newest revision it was handed whole, to resume after). A revision's
transitions are handed out together, never part of one, so "everything after revision N" is
an exact resume point. A subscriber resuming from an older revision than the feed has reached
first replays the gap from etcd's history with a watch of its own, then goes on from its
buffer (docs/contract.md, Queries).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from itertools import groupby

import structlog

from statemanager.core.errors import BadInput, Compacted, EtcdError, EtcdUnavailable
from statemanager.core.history import Transition, decode, history_prefix
from statemanager.core.keys import KeyLayout
from statemanager.core.ports import Event
from statemanager.core.records import LaterFormat, LaterFormatReporter
from statemanager.core.subscriptions import FEED_LOST, FELL_BEHIND, Committed, CutOff, Wanted
from statemanager.runtime.backoff import Backoff
from statemanager.runtime.metrics import Metrics
from statemanager.runtime.watcher import WatchClient

log = structlog.get_logger("statemanager.feed")

BUFFER = 1024  # revisions buffered per subscriber before it is cut off
# The event loop's lateness over which messages to subscribers wait (`calm`), and how often
# it is sampled while anyone subscribes.
MAX_LAG_SECONDS = 0.005
LAG_PROBE_SECONDS = 0.01
PROGRESS_SECONDS = 5.0  # etcd's progress answers: how soon an idle feed notices it is unwanted


class Subscription:
    """One subscriber's view of the feed: `stream()` hands out what it wants, a revision at a
    time, after `after`; `close()` when done (the feed stops filling it)."""

    def __init__(self, feed: TransitionFeed, wanted: Wanted, after: int | None) -> None:
        self._feed = feed
        self.wanted = wanted
        self._resume_from = after  # None: from when it joins
        self.joined_at: int | None = None  # the feed's revision when it began filling us
        self.after = 0  # the newest revision handed out whole
        self._queue: asyncio.Queue[Committed | CutOff] = asyncio.Queue(BUFFER)
        self._ready = asyncio.Event()
        self._ended = False

    def join(self, revision: int) -> None:
        """The feed fills this subscription with every revision after `revision` from now."""
        self.joined_at = revision
        self.after = revision if self._resume_from is None else self._resume_from
        self._ready.set()

    async def ready(self) -> int:
        """The revision after which this subscription delivers (its first transition's
        revision is above it)."""
        await self._ready.wait()
        return self.after

    def offer(self, item: Committed | CutOff) -> bool:
        """Buffer `item` without waiting; False (and the subscription is cut off) when the
        buffer is full."""
        if self._ended:
            return True
        if isinstance(item, CutOff):
            self._end(item)
            return True
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            detail = f"fell {BUFFER} revisions behind the transitions being committed"
            self._end(CutOff(FELL_BEHIND, 0, detail))
            return False
        return True

    def _end(self, why: CutOff) -> None:
        """Make `why` the next thing `stream()` raises, ahead of anything still buffered: what
        is buffered is not sent, so the resume point stays the last revision handed out."""
        self._ended = True
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(why)
        self._feed.leave(self)

    async def stream(self) -> AsyncIterator[Committed]:
        """Every wanted revision after `after`, in order; raises CutOff (naming the revision
        to resume after), or Compacted when the revision to resume from is no longer in etcd's
        history."""
        await self._ready.wait()
        joined_at = self.joined_at or 0
        if self.after < joined_at:
            async for item in self._feed.replay(self.after, joined_at, self.wanted):
                self.after = item.revision
                yield item
            self.after = max(self.after, joined_at)
        while True:
            got = await self._queue.get()
            if isinstance(got, CutOff):
                got.resume_after = self.after  # what was buffered behind it is not sent
                raise got
            if got.revision > self.after:
                self.after = got.revision
                yield got

    def close(self) -> None:
        """End the subscription: the feed stops filling it (and stops watching when it was the
        last)."""
        self._ended = True
        self._feed.leave(self)


class TransitionFeed:
    """The daemon's one watch of the history prefix, opened while anyone subscribes (see the
    module docstring). Run `run()` as a task; `subscribe()` from the gRPC service."""

    def __init__(
        self,
        *,
        client: WatchClient,
        layout: KeyLayout,
        metrics: Metrics,
        later_formats: LaterFormatReporter,
    ) -> None:
        self._client = client
        self._layout = layout
        self._prefix = history_prefix(layout)
        self._metrics = metrics
        self._later_formats = later_formats
        self._subscribers: set[Subscription] = set()
        self._wanted = asyncio.Event()  # set while anyone subscribes
        self._calm = asyncio.Event()  # clear while the event loop runs late (`calm`)
        self._calm.set()
        self._position = 0  # the revision up to which every record was handed out; 0: idle

    def subscribe(self, wanted: Wanted, after: int | None = None) -> Subscription:
        """A subscription to the transitions `wanted` accepts, committed after `after`
        (None: after the feed's revision when it joins; `ready()` says which)."""
        sub = Subscription(self, wanted, after)
        self._subscribers.add(sub)
        self._metrics.subscribers.set(len(self._subscribers))
        if self._position:
            sub.join(self._position)
        self._wanted.set()
        return sub

    def leave(self, sub: Subscription) -> None:
        """Stop filling `sub`; with nobody left, the watch closes at its next answer."""
        self._subscribers.discard(sub)
        self._metrics.subscribers.set(len(self._subscribers))
        if not self._subscribers:
            self._wanted.clear()

    async def run(self) -> None:
        """Feed the subscribers while there are any, and watch how late the event loop runs
        meanwhile (`calm`); nothing etcd answers ends it."""
        async with asyncio.TaskGroup() as both:
            both.create_task(self._feed())
            both.create_task(self._watch_lag())

    async def calm(self) -> None:
        """Return once the event loop keeps time (at once, as a rule): a message to a
        subscriber waits while it lags, so the daemon's own work goes first whatever the
        number of subscribers; the ones that fall behind so are cut off."""
        await self._calm.wait()

    async def _watch_lag(self) -> None:
        """While anyone subscribes, sleep LAG_PROBE_SECONDS at a time and clear `calm` while
        the wake-up comes more than MAX_LAG_SECONDS late."""
        loop = asyncio.get_running_loop()
        while True:
            if not self._wanted.is_set():
                self._calm.set()
                await self._wanted.wait()
            before = loop.time()
            await asyncio.sleep(LAG_PROBE_SECONDS)
            if loop.time() - before - LAG_PROBE_SECONDS > MAX_LAG_SECONDS:
                self._calm.clear()
            else:
                self._calm.set()

    async def _feed(self) -> None:
        backoff = Backoff(initial=0.2, cap=2.0)
        while True:
            await self._wanted.wait()
            try:
                await self._follow(backoff)
            except Compacted as exc:
                self._lose_all(f"etcd compacted its history past the feed ({exc})")
            except (EtcdUnavailable, EtcdError) as exc:
                delay = backoff.next()
                log.info("feed_broken", error=str(exc), retry_in=round(delay, 2))
                await asyncio.sleep(delay)

    async def _follow(self, backoff: Backoff) -> None:
        """Hand out every record from the feed's position on, until nobody subscribes
        (returns) or the watch fails (raises)."""
        if not self._position:
            self._position = (await self._client.header()).revision
            for sub in list(self._subscribers):
                sub.join(self._position)
        stream = self._client.watch(
            {self._prefix: self._position + 1}, progress_every=PROGRESS_SECONDS
        )
        async with contextlib.aclosing(stream):
            async for batch in stream:
                backoff.reset()
                if batch.prefix is not None:
                    self._hand_out(batch.events)
                    self._position = batch.revision
                if not self._subscribers:
                    self._position = 0  # the next subscriber starts from then
                    return

    def _hand_out(self, events: Sequence[Event]) -> None:
        for revision, transitions in _by_revision(self._decoded(events)):
            for sub in list(self._subscribers):
                if sub.joined_at is None or revision <= sub.joined_at:
                    continue
                mine = tuple(t for t in transitions if sub.wanted(t))
                if mine and not sub.offer(Committed(revision, mine)):
                    self._metrics.subscribers_cut_off.inc()
                    log.warning("subscriber_cut_off", after=sub.after, buffer=BUFFER)

    def _decoded(self, events: Sequence[Event]) -> list[Transition]:
        """The transitions new records hold; a deleted record (retention) is none, nor is a
        correction's (a key put back: no transition, docs/contract.md, History), and a record
        this daemon cannot read is skipped and reported."""
        found = []
        for event in events:
            if event.value is None:
                continue
            try:
                record = decode(self._layout, event.key, event.value, event.revision)
            except BadInput as exc:
                log.warning("history_record_skipped", error=exc.detail, revision=event.revision)
                continue
            if isinstance(record, LaterFormat):
                self._later_formats.report(event.key, record)
                continue
            if not record.correction:
                found.append(record)
        return found

    def _lose_all(self, why: str) -> None:
        self._position = 0
        for sub in list(self._subscribers):
            sub.offer(CutOff(FEED_LOST, 0, why))

    async def replay(self, after: int, until: int, wanted: Wanted) -> AsyncIterator[Committed]:
        """The wanted transitions committed after `after` up to `until`, from etcd's history
        (a watch of one subscriber's own). Raises Compacted when `after + 1` is no longer in
        it, EtcdUnavailable when etcd cannot be reached."""
        stream = self._client.watch({self._prefix: after + 1}, progress_every=PROGRESS_SECONDS)
        async with contextlib.aclosing(stream):
            async for batch in stream:
                for revision, transitions in _by_revision(self._decoded(batch.events)):
                    mine = tuple(t for t in transitions if wanted(t))
                    if mine and revision <= until:
                        yield Committed(revision, mine)
                # Only events say how far it got: etcd before 3.5.8 may send a progress
                # answer ahead of events still to come. Past `until` the buffer takes over
                # (it holds the same events; `stream` skips what was handed out already).
                if batch.prefix is not None and batch.revision >= until:
                    return


def _by_revision(transitions: list[Transition]) -> list[tuple[int, list[Transition]]]:
    return [(rev, list(group)) for rev, group in groupby(transitions, key=lambda t: t.revision)]
