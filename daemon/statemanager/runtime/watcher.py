"""Keeps the controller fed from etcd: list at one revision, then watch from the next one.

Thin on purpose (docs/design.md, The path of a container event). On a broken or silent
stream it backs off and resumes each prefix from the revision after its last fully delivered
one; on compaction, on a watch response over the receive limit, and periodically as a
backstop, it relists and lets the controller diff; it hands events over and does nothing else.

etcd accepts a watch from a revision it has not reached yet and stays silent until it gets
there, so after a member is wiped or restored from an older snapshot a resumed watch would hear
nothing for a long time, or resume in the middle of the new history if it has grown past the
old revision. Every watch response carries the store's revision and raft term: a revision below
what was already delivered, or a term below one already seen (confirmed by a linearizable read,
since a lagging member may answer a little behind), means the history was replaced, and the
answer is a full relist that trusts no revision learnt before.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    Mapping,
    Sequence,
)
from typing import Protocol

import structlog

from statemanager.core.errors import Compacted, EtcdError, EtcdUnavailable, TooLarge
from statemanager.core.ports import Event, Header, Page, WatchBatch
from statemanager.runtime.backoff import Backoff
from statemanager.runtime.health import Health
from statemanager.runtime.metrics import Metrics
from statemanager.runtime.outage import Outage

log = structlog.get_logger("statemanager.watcher")

NEVER = 2**31 - 1  # a collection threshold that is never reached


class WatchClient(Protocol):
    """The watcher's etcd: paged listings, a watch from given revisions, and a linearizable
    read of its header."""

    def pages(
        self, prefixes: Sequence[str], page_size: int = ...
    ) -> AsyncGenerator[Page, None]: ...

    def watch(
        self,
        starts: Mapping[str, int],
        progress_every: float,
        together: Sequence[Sequence[str]] = ...,
    ) -> AsyncGenerator[WatchBatch, None]: ...

    async def header(self) -> Header: ...


class EventSink(Protocol):
    """Where the watcher hands what etcd holds (the controller)."""

    async def load(
        self, pages: AsyncIterator[Page], delivered: Mapping[str, int] | None = ...
    ) -> int: ...

    def apply(self, prefix: str, events: Sequence[Event]) -> None: ...
    def caught_up(self, revision: int) -> None: ...
    def forget_history(self) -> None: ...
    def newest_answer(self) -> int: ...


@contextlib.contextmanager
def _no_full_collections() -> Iterator[None]:
    """Keep Python's cycle collector to its young generations while a listing is read and
    loaded.

    A listing builds a few long-lived objects per key (a million and more at 100,000
    containers), and each full collection while that heap grows walks all of it: seven took
    ~0.4 s of a 100,000-container cold start. The young collections go on, so cyclic garbage
    made meanwhile is still freed: with the collector off altogether, the cycles spec parsing
    made then (recursive closures, since untangled) piled up to 600 MB. The usual schedule
    resumes afterwards.
    """
    young, middle, old = gc.get_threshold()
    gc.set_threshold(young, middle, NEVER)
    try:
        yield
    finally:
        gc.set_threshold(young, middle, old)


class SilentWatch(EtcdUnavailable):
    """Neither events nor progress notifications arrived within the silence limit."""


class HistoryReplaced(Exception):
    """etcd's revision is below one already delivered, or its raft term below one already
    seen: its history is not the one we followed."""

    def __init__(self, what: str, before: int, now: int) -> None:
        super().__init__(f"etcd's {what} went back from {before} to {now}")
        self.what = what
        self.before = before
        self.now = now


async def confirmed_header(
    header: Header, seen: Header, read: Callable[[], Awaitable[Header]]
) -> Header:
    """`header` when it has not gone back from `seen`; else etcd's linearizable header (`read`:
    not a lagging member's view), raising HistoryReplaced when that too is below `seen` in
    revision or raft term (the term catches a replaced history already grown past the
    revision)."""
    if not header.went_back_from(seen):
        return header
    header = await read()
    if header.revision < seen.revision:
        raise HistoryReplaced("revision", seen.revision, header.revision)
    if header.raft_term < seen.raft_term:
        raise HistoryReplaced("raft term", seen.raft_term, header.raft_term)
    return header


class Watcher:
    """Watcher feeds the sink (the controller) from etcd: a listing at one revision, then the
    watch from the next one, relisting when the watch cannot go on where it was."""

    def __init__(
        self,
        *,
        client: WatchClient,
        sink: EventSink,
        prefixes: Sequence[str],
        together: Sequence[Sequence[str]] = (),
        metrics: Metrics,
        on_listed: Callable[[int], None],
        silence_limit: float,
        resync_interval: float,
        health: Health,
        outage: Outage,
    ) -> None:
        self._health = health
        self._outage = outage
        self._client = client
        self._sink = sink
        self._prefixes = list(prefixes)
        self._together = together  # groups of prefixes watched as one range
        self._metrics = metrics
        self._on_listed = on_listed
        self._silence_limit = silence_limit
        self._resync_interval = resync_interval
        self._backoff = Backoff(initial=0.2, cap=2.0)  # bounds how long etcd's return goes unseen
        # Per prefix, the newest revision whose events have all been applied.
        self._delivered: dict[str, int] = {}
        self._term = 0  # the highest raft term etcd has answered with
        # Relists asked for (`resync`), each told the revision of the first listing begun
        # after it was asked; and the wait for the next batch, cut short by such an ask.
        self._resyncs: list[asyncio.Future[int]] = []
        self._waiting: asyncio.Timeout | None = None
        # Set by `replaced`: raised from the stream's wait, to relist as after a replacement.
        self._told: HistoryReplaced | None = None

    def applied(self, prefix: str) -> int:
        """The newest revision up to which every event under `prefix` is in the index (0 before
        the first listing)."""
        return self._delivered.get(prefix, 0)

    def followed(self) -> Header:
        """Where etcd stood as far as this watcher has followed it: the newest revision
        delivered and the highest raft term seen. Both count in the history the watcher
        follows, which is not etcd's from a replacement (a restore, a wipe) until the watcher
        notices it (both 0 then, until its relist)."""
        return Header(max(self._delivered.values(), default=0), self._term)

    def replaced(self, before: int, now: int) -> None:
        """etcd answered a write of ours at revision `now`, not above `before` (a revision it
        gave, or an event the write was planned from): its history was replaced, though the
        stream may never show it (a new history grown back to our revision). Relist as after
        a replacement the stream shows, without waiting for the stream."""
        self._told = HistoryReplaced("revision of a write's answer", before, now)
        if self._waiting is not None:
            self._waiting.reschedule(asyncio.get_running_loop().time())

    def resync(self) -> asyncio.Future[int]:
        """Relist now rather than at the next periodic resync (ForceSynchronization): the
        future gets the revision of the first listing begun after this call, once the
        controller has it (every key queued for evaluation)."""
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._resyncs.append(done)
        if self._waiting is not None:
            self._waiting.reschedule(asyncio.get_running_loop().time())
        return done

    async def run(self) -> None:
        """Run lists etcd, then follows its watch, until cancelled; nothing etcd answers ends
        it (a refusal is retried as an outage)."""
        resync_at: float | None = None  # when the next resync is due; None: a listing is due
        while True:
            try:
                if resync_at is None:
                    resync_at = await self._list()
                await self._follow(resync_at)
                self._metrics.watch_restarts.labels("resync").inc()
                log.info("resync_due", asked=len(self._resyncs))
                resync_at = None
            except (Compacted, HistoryReplaced, EtcdUnavailable, EtcdError) as exc:
                if await self._recover(exc, listed=resync_at is not None):
                    resync_at = None  # relist; the controller diffs, deletions included

    async def _list(self) -> float:
        """List every prefix into the sink, at one revision; returns when a resync is due.
        Whoever asked for a relist before it began (`resync`) is told its revision; one that
        fails leaves them to the next."""
        asked, self._resyncs = self._resyncs, []
        try:
            with _no_full_collections():
                async with contextlib.aclosing(self._client.pages(self._prefixes)) as pages:
                    revision = await self._sink.load(pages, self._delivered)
        except BaseException:
            self._resyncs[:0] = asked
            raise
        self._delivered = dict.fromkeys(self._prefixes, revision)
        self._metrics.last_revision.set(revision)
        self._health.listed(revision)
        log.info("listed", revision=revision)
        self._on_listed(revision)
        for done in asked:
            if not done.done():
                done.set_result(revision)
        # Jitter keeps a fleet of daemons from relisting in step.
        jitter = random.uniform(0.8, 1.2)
        return asyncio.get_running_loop().time() + self._resync_interval * jitter

    async def _recover(self, exc: Exception, listed: bool) -> bool:
        """Report what broke the stream; True when a relist is the answer, else (etcd is
        unreachable) once a backoff delay has passed, to resume."""
        if isinstance(exc, Compacted):
            self._metrics.watch_restarts.labels("compacted").inc()
            log.warning("watch_compacted", compact_revision=exc.compact_revision)
            return True
        if isinstance(exc, HistoryReplaced):
            self._metrics.watch_restarts.labels("revision_backwards").inc()
            self._health.broken(f"{exc}: relisting")  # blind until the relist is applied
            log.error(
                "etcd_revision_backwards",
                went_back=exc.what,
                before=exc.before,
                now=exc.now,
                hint="etcd was wiped or restored from an older snapshot; relisting",
            )
            self._sink.forget_history()
            # Learnt anew from the new history, so the relist reports no drift against the old.
            self._delivered = {}
            self._term = 0
            return True
        if isinstance(exc, TooLarge) and listed:
            # A watch response over the receive limit (one revision's events are never split)
            # fails the same way at every resume; a listing pages it.
            self._metrics.watch_restarts.labels("too_large").inc()
            log.warning("watch_response_too_large", error=str(exc), hint="relisting")
            return True
        reason = "silent" if isinstance(exc, SilentWatch) else "unavailable"
        self._metrics.watch_restarts.labels(reason).inc()
        self._health.broken(f"etcd unreachable ({reason}): {exc}")
        delay = self._backoff.next()
        if not isinstance(exc, SilentWatch):  # silence is the stream's, not etcd's
            self._outage.failed(str(exc))
        # During an etcd outage the outage lines say it all; each retry only at debug.
        (log.debug if self._outage.down else log.warning)(
            "watch_broken", reason=reason, error=str(exc), retry_in=round(delay, 2)
        )
        await asyncio.sleep(delay)
        return False

    async def _follow(self, resync_at: float) -> None:
        """Apply watch batches until the resync is due (returns) or the stream fails (raises).

        Each prefix is a watch of its own on the stream, and etcd keeps order within a watch
        only: a resumed stream replays each prefix's missed history one prefix after another,
        and a live watch that etcd could not send to at once (the stream's buffer full) is set
        aside and sent its events later, after other watches' newer ones. Applied as they came,
        the index would mix one prefix's newer events with another's older state, a combination
        etcd never held, and the controller would write states derived from it (a package
        moved off its models seen in Error as their containers die, with a Reconcile; or out of
        Error and back in, with a second). So batches are held until a stream-wide progress
        answer, which etcd sends only when every watch has been sent every event up to its
        revision, then applied together: the index is etcd's state at that revision. The
        client asks for one as soon as events come (adapters/etcd.py).
        """
        starts = {prefix: revision + 1 for prefix, revision in self._delivered.items()}
        # Our writes answered before this stream opened: a replaced history (a restore or wipe
        # restarts the member, so it breaks every stream) shows on the new stream as a
        # revision below them. Writes answered while it is open need no such check: a response
        # sent before one committed is normal then, and asking etcd about each would cost a
        # request per change.
        answered = self._sink.newest_answer()
        stream = self._client.watch(
            starts, progress_every=self._silence_limit / 3, together=self._together
        )
        held: list[tuple[str, WatchBatch]] = []  # since the last progress answer
        try:
            while (batch := await self._next(stream, resync_at)) is not None:
                self._backoff.reset()
                await self._check_history(batch.header, answered)
                if batch.foreign:
                    self._metrics.watch_foreign_events.inc(batch.foreign)
                if batch.prefix is not None:
                    held.append((batch.prefix, batch))
                    continue
                self._health.watching()  # created or progress: the stream is alive
                if batch.revision:
                    for prefix, waiting in held:
                        self._apply(prefix, waiting)
                    held.clear()
                    self._sink.caught_up(batch.revision)
        finally:
            await stream.aclose()

    async def _next(
        self, stream: AsyncGenerator[WatchBatch, None], resync_at: float
    ) -> WatchBatch | None:
        """The stream's next batch; None when a relist comes due first (the periodic resync,
        or one asked for by `resync`, which cuts the wait short). Raises SilentWatch when
        neither events nor progress came within the silence limit, HistoryReplaced when
        `replaced` was told so."""
        loop = asyncio.get_running_loop()
        budget = min(self._silence_limit, resync_at - loop.time())
        self._raise_told()
        if budget <= 0 or self._resyncs:
            return None
        try:
            async with asyncio.timeout(budget) as self._waiting:
                return await anext(stream)
        except TimeoutError:
            self._raise_told()
            if self._resyncs or loop.time() >= resync_at:
                return None
            raise SilentWatch(f"no events or progress for {self._silence_limit:g} s") from None
        finally:
            self._waiting = None

    def _raise_told(self) -> None:
        told, self._told = self._told, None
        if told is not None:
            raise told

    def _apply(self, prefix: str, batch: WatchBatch) -> None:
        self._health.watching(batch.revision)
        self._sink.apply(prefix, batch.events)
        self._delivered[prefix] = batch.revision
        self._metrics.last_revision.set(batch.revision)

    async def _check_history(self, header: Header, answered: int) -> None:
        """Raise HistoryReplaced when etcd's revision is below the newest one delivered or
        answered to one of our writes before the stream opened (`answered`: its echo may not
        have come yet), or its raft term
        below the highest one seen. The term catches a replaced history that has already
        grown past our revision by the time we reconnect (it restarts at 2)."""
        followed = self.followed()
        seen = Header(max(answered, followed.revision), followed.raft_term)
        header = await confirmed_header(header, seen, self._client.header)
        self._term = max(self._term, header.raft_term)
