"""The reconcile loop: events in, guarded state writes out.

Event handlers only mark work keys dirty (with the revision that dirtied them); one worker
takes batches of keys, plans the writes from the index and commits them. Like client-go's
sample-controller, the truth is read from the index when a key is processed, never carried
by the event, and the error policy sits in one place (`_process`).
"""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import TypeVar

import structlog

from statemanager.core.errors import (
    AnswerFromAnotherHistory,
    EtcdError,
    EtcdUnavailable,
    TooLarge,
)
from statemanager.core.index import Index
from statemanager.core.ingest import INTERNAL_ERROR, Ingest, Report
from statemanager.core.keys import KeyLayout, Resource, WorkKey
from statemanager.core.planner import Change, plan
from statemanager.core.ports import Event, Fence, KeyValue, Page
from statemanager.core.previous import Remembered, StateSeen
from statemanager.core.records import LATER_FORMAT, NODE_LIST, LaterFormat, LaterFormatReporter
from statemanager.core.states import ContainerStatus, ModelState, PackageState
from statemanager.core.triggers import Trigger
from statemanager.runtime.election import Leadership
from statemanager.runtime.metrics import Metrics
from statemanager.runtime.watcher import HistoryReplaced
from statemanager.runtime.workqueue import WorkQueue
from statemanager.runtime.writer import NotLeader, StateWriter

log = structlog.get_logger("statemanager.controller")

_T = TypeVar("_T")

BATCH_KEYS = 256  # dirty keys planned together; their writes are packed into transactions
# The gauges' known label values (built once: the refresh runs after every batch).
_STATUSES = frozenset(s.value for s in ContainerStatus)
_MODEL_STATES = frozenset(s.value for s in ModelState)
_PACKAGE_STATES = frozenset(s.value for s in PackageState)


def _drained(items: list[_T]) -> Iterator[_T]:
    """Yield `items` in order, taking each out of the list as it goes: a listing's values are
    then freed while the index they become grows, instead of both being held at the peak."""
    items.reverse()
    while items:
        yield items.pop()


class Controller:
    """Controller turns watch events into dirty work keys and works them off while leading.

    Built by the composition root (daemon.py, `build`) around the index it shares with the
    other readers: `ingest` must update that `index`, and `writer` must guard on it.
    """

    def __init__(
        self,
        *,
        index: Index,
        ingest: Ingest,
        queue: WorkQueue[WorkKey],
        writer: StateWriter,
        layout: KeyLayout,
        metrics: Metrics,
        later_formats: LaterFormatReporter,
    ) -> None:
        self._index = index
        self._later_formats = later_formats
        # Told when a write's answer shows etcd's history was replaced (`on_replaced`).
        self._on_replaced: Callable[[int, int], None] = lambda before, now: None
        self._kinds = {prefix: kind for kind, prefix in layout.watched().items()}
        self._ingest = ingest
        self._metrics = metrics
        self._queue = queue
        self._writer = writer
        # Per dirty key: the newest revision that dirtied it (a transition's cause) and when the
        # first unprocessed event for it arrived (event-to-write latency). Kept until written.
        self._causes: dict[WorkKey, int] = {}
        self._seen_at: dict[WorkKey, float] = {}
        # Per key planning raised on: the cause revision it was last reported at (a bug's
        # keys only, so this stays small).
        self._quarantine_logged: dict[WorkKey, int] = {}
        # Set while the index holds a whole listing (clear before the first and during each
        # relist); held by the worker around each batch it plans and writes.
        self._whole = asyncio.Event()
        self._planning = asyncio.Lock()
        # The revision up to which the index holds etcd's state (a listing's, or a watch
        # progress answer's after every event up to it: `caught_up`), and the one a failed
        # guard showed a key modified at; set while the first is not below the second (the
        # worker waits for it before planning: `_behind`).
        self._through = 0
        self._needed = 0
        self._current = asyncio.Event()
        self._current.set()
        # Clear while the leader's worker has work queued or in hand: what can wait (the streams
        # of transitions to subscribers) waits for it (`rested`), so it never slows a change.
        self._resting = asyncio.Event()
        self._resting.set()
        self._leading = False  # the worker holds a fence (a follower's queued keys wait)
        # Set from a replacement of etcd's history until the next whole listing is applied.
        self._relisting = False

    # -- intake -------------------------------------------------------------------------------

    async def load(
        self, pages: AsyncIterator[Page], delivered: Mapping[str, int] | None = None
    ) -> int:
        """Load brings the index to a full listing, applied a page at a time, and queues every
        key; returns the listing's revision.

        Each page's values are let go as they are applied, so the listing never sits whole
        beside the index (docs/design.md, Footprint). Meanwhile the index is part old, part
        new: the worker plans nothing until the last page is applied, and a listing that fails
        half-way leaves it waiting for the next whole one. Used at start, after a compaction
        and for the periodic resync: the diff finds keys deleted while the daemon was blind,
        and queueing everything writes all differences. `delivered` (per prefix, the newest
        revision the watch applied) tells the changes the watch missed, logged as drift.
        Raises HistoryReplaced, the listing left unfinished, when a page shows etcd's history
        was replaced (`_foreign`).
        """
        async with self._planning:  # a batch being planned or written finishes first
            self._whole.clear()
            relist = self._ingest.relist(delivered)
            revision = 0
            async for page in pages:
                revision = page.revision
                self._foreign(page)
                items: Iterator[KeyValue] = _drained(page.items)
                self._writer.listed(self._ingest.page(relist, page.prefix, items))
            result = self._ingest.finish(relist, revision)
            self._writer.listed(result.states)
            self._writer.ruled_meanwhile(self._index_states(revision), self._ruled)
            if self._relisting:  # the first whole listing since the history was replaced
                self._writer.relisted(revision)
                self._relisting = False
        self.caught_up(revision)
        self._report(result.reports)
        if result.drifted:
            self._metrics.resync_drift.inc(len(result.drifted))
            log.error(
                "resync_drift",
                keys=len(result.drifted),
                examples=result.drifted[:5],
                hint="the watch missed these changes; please report it",
            )
        self._mark(result.dirty | self._index.all_keys(), revision)
        self._refresh_gauges()
        self._whole.set()
        return revision

    def _foreign(self, page: Page) -> None:
        """Have the writer compare each key of `page` with its writes on the histories that
        were replaced (StateWriter.compared), and raise HistoryReplaced when `page` shows a key
        modified at a revision one of our writes was answered at, which that write did not
        touch (StateWriter.foreign): etcd's history was replaced and grew back past that
        revision, which only the key's revision shows (as its event does in `apply`; a watch
        compacted meanwhile brings no event, and the listing, its keys older than what the
        index knew, taught it nothing: the simulation's swarm seed 13043743). The watcher then
        forgets the old history and lists the new one. Nothing is asked of a page while the
        writer knows no write of its own to compare with (a daemon that has not led since it
        started: every follower's listings cost no call per key)."""
        if not self._writer.remembers_writes():
            return
        for kv in page.items:
            if self._writer.foreign(kv.key, kv.value, kv.mod_revision):
                raise HistoryReplaced(
                    "revision of a write of ours", kv.mod_revision, kv.mod_revision
                )
            self._writer.compared(kv.key, kv.value, kv.mod_revision)

    def on_replaced(self, relist: Callable[[int, int], None]) -> None:
        """Have `relist(before, now)` called when a write's answer shows etcd's history was
        replaced before the watcher saw it (the composition root wires the watcher's
        `replaced`): planning stops until the relist of the new history is applied."""
        self._on_replaced = relist

    def forget_history(self) -> None:
        """etcd's history was replaced (a wipe, a restore): every revision learnt so far belongs
        to a history that no longer exists. The next `load` then takes each listed key as new."""
        self._ingest.forget_revisions()
        self._writer.forget_history()
        self._relisting = True
        self._causes.clear()
        self._through = self._needed = 0
        self._current.set()

    def caught_up(self, revision: int) -> None:
        """The index holds etcd's state at `revision`: a listing at it was applied, or the
        watch's progress answer at it came after every event up to it (watcher.py)."""
        self._through = max(self._through, revision)
        if self._through >= self._needed:
            self._current.set()

    def newest_answer(self) -> int:
        """The newest revision etcd answered one of our writes with (StateWriter.newest_answer)."""
        return self._writer.newest_answer()

    def removed(self, trigger: Trigger) -> None:
        """The reconcile sender is removing `trigger` from etcd: StateWriter.removed."""
        self._writer.removed(trigger)

    def _replaced(self, before: int, now: int) -> None:
        """etcd's history was replaced, as an answer (at `now`, not above `before`) or an event
        shows: plan nothing more (the index's inputs and etcd's states are of two histories)
        until the relist the watcher is asked for."""
        self._whole.clear()
        self._on_replaced(before, now)

    def apply(self, prefix: str, events: Sequence[Event]) -> None:
        """Apply one watch response's events for `prefix` (all of a revision's, never part)."""
        kind = self._kinds[prefix]
        for event in events:
            if self._writer.foreign(event.key, event.value, event.revision):
                self._writer.forget_history()
                self._replaced(event.revision, event.revision)
            applied = self._ingest.apply(kind, event.key, event.value, event.revision)
            self._writer.echoed(applied.states)
            self._writer.ruled_meanwhile(applied.states, self._ruled)
            self._report(applied.reports)
            self._mark(applied.dirty, event.revision)
        self._metrics.last_event_time.set(time.time())

    def _ruled(self, key: WorkKey) -> str | None:
        """What the rules give `key` on the index (None: no state key)."""
        verdict = self._index.verdict(key)
        return None if verdict is None else verdict.state

    def _index_states(self, revision: int) -> Iterator[StateSeen]:
        """Every model and package state key as the index holds it, after a listing taken at
        `revision` (an absent key shown at that revision); lazy, so nothing is walked when
        the writer has nothing to judge by it."""
        for key in self._index.all_keys():
            if key.resource is not Resource.SCENARIO:
                written = self._index.written(key)
                yield key, written.value, written.mod_revision or revision

    def _mark(self, keys: set[WorkKey], revision: int) -> None:
        now = time.monotonic()
        for key in keys:
            if self._causes.get(key, 0) < revision:
                self._causes[key] = revision
            self._seen_at.setdefault(key, now)
            self._queue.add(key)
        if keys and self._leading:
            self._resting.clear()

    def _report(self, reports: Sequence[Report]) -> None:
        for r in reports:
            if r.kind == LATER_FORMAT:  # a newer daemon's node list: not bad input
                self._later_formats.report(r.key.encode(), LaterFormat(NODE_LIST, int(r.detail)))
            elif r.kind == INTERNAL_ERROR:
                self._quarantined(r.key, "ingest", r.revision, r.detail)
            elif r.rejected:
                self._metrics.invalid_inputs.labels(r.kind).inc()
                log.warning(
                    "invalid_input", key=r.key, kind=r.kind, error=r.detail, revision=r.revision
                )
            else:
                log.warning("unassigned_container", key=r.key, error=r.detail, revision=r.revision)

    def _quarantined(self, key: str, stage: str, revision: int, error: str) -> None:
        """A key set aside after an unexpected exception: a bug to report with its traceback.
        The key is retried when it changes; the rest goes on meanwhile."""
        self._metrics.quarantined.labels(stage).inc()
        log.error("key_quarantined", key=key, stage=stage, revision=revision, error=error)

    def _refresh_gauges(self) -> None:
        """Cheap: a handful of labels from counts the index keeps up to date."""
        m = self._metrics
        m.set_counts(m.containers, self._index.status_counts(), _STATUSES)
        m.set_counts(m.models, self._index.written_counts(Resource.MODEL), _MODEL_STATES)
        m.set_counts(m.packages, self._index.written_counts(Resource.PACKAGE), _PACKAGE_STATES)
        m.unassigned_containers.set(self._index.unassigned_count())

    # -- work ---------------------------------------------------------------------------------

    async def run_worker(self, leadership: Leadership) -> None:
        """Process dirty keys while this daemon leads; a follower's keys wait in the queue
        (deduplicated, so bounded by the number of models and packages)."""
        while True:
            self._leading = False
            self._resting.set()  # a follower's queued keys wait: nothing to make way for
            fence = await leadership.wait_leader()
            self._leading = True
            # A batch taken from a part-applied listing would hold keys its end marks again.
            await self._whole.wait()
            keys = await self._queue.get_batch(BATCH_KEYS)
            try:
                while True:  # until planned on a whole, current index (a listing may begin)
                    await self._whole.wait()
                    await self._current.wait()
                    async with self._planning:
                        if leadership.fence() != fence:
                            # Leading lapsed or moved while the keys were awaited: the fence
                            # would still pass etcd's compare when a restore brought back an
                            # older key than ours, and a follower would write beside the leader.
                            self._queue.add_all(keys)
                            break
                        if self._whole.is_set() and self._current.is_set():
                            self._resting.clear()
                            await self._process(keys, fence, leadership)
                            break
            finally:
                self._queue.done(keys)
                if not self._queue:  # nothing more ready to take (retries come later)
                    self._resting.set()

    async def rested(self) -> None:
        """Return once the worker has no work queued or in hand (at once on a follower)."""
        await self._resting.wait()

    def confirm(self, key: WorkKey) -> None:
        """Someone asserted `key`'s state (gRPC StateChange): make sure etcd holds it."""
        self._mark({key}, 0)

    def mark_all(self, fence: Fence | None, revision: int) -> None:
        """Queue every model and package: a new leader evaluates everything once. What this
        daemon wrote before stays the previous derived state only when it leads again with the
        same leader key (PreviousStates.leading). The worker plans nothing until the index
        holds etcd's state as of `revision`, where this daemon found it leads (`caught_up`): a
        daemon whose watch was away while another led (an outage) would otherwise find states
        agreeing with the rules on inputs the other leader's writes had moved past, learn them
        as its previous states, and take its next entry into Error as a correction, with no
        trigger (the simulation's swarm seed 15011406)."""
        self._writer.leading(fence, revision)
        if revision > self._through:
            self._needed = max(self._needed, revision)
            self._current.clear()
        self._mark(self._index.all_keys(), 0)

    def another_leads(self, revision: int) -> None:
        """Another daemon was found leading at `revision`: StateWriter.another_leads."""
        self._writer.another_leads(revision)

    async def _process(self, keys: list[WorkKey], fence: Fence, leadership: Leadership) -> None:
        """Plan and commit `keys`; the error policy of writing lives here, in one place.

        Nothing etcd answers ends the worker. Fenced off: stop and keep the keys for the next
        leadership. Unreachable or busy (EtcdUnavailable, EtcdBusy): defer every key with a
        growing delay. A transaction etcd can never accept (TooLarge): split it in two and go
        on; a single change refused so is skipped and reported (its key comes back when its
        inputs change). Any other refusal (permission, bad request): defer and report.
        """
        started = time.perf_counter()
        groups, before = self._plan(keys)
        self._metrics.evaluation_seconds.observe(time.perf_counter() - started)
        causes = {k: self._causes.get(k, 0) for k in keys}
        todo = self._writer.batches(groups, fence)
        while todo:
            batch = todo.pop(0)
            try:
                transitions = await self._writer.commit(batch, causes, fence)
            except NotLeader as exc:
                log.warning("write_fenced", keys=len(keys), error=str(exc))
                leadership.lost()
                self._queue.add_all(keys)  # for when this daemon leads again
                return
            except TooLarge as exc:
                todo[:0] = self._split(batch, exc)
                continue
            except AnswerFromAnotherHistory as exc:
                self._unlearn(before, [batch, *todo])
                self._defer(keys, exc)
                self._replaced(exc.before, exc.now)
                return
            except (EtcdUnavailable, EtcdError) as exc:
                self._unlearn(before, [batch, *todo])
                self._defer(keys, exc)
                return
            self._written(batch, transitions is not None)
            if transitions is None and self._behind(batch):
                for rest in todo:  # planned on the same index: planned again once it is current
                    self._written(rest, False)
                break
        self._done(keys)

    def _behind(self, batch: list[Change]) -> bool:
        """Whether the failed guard of `batch` showed a key modified above the revision up to
        which the index holds etcd's state: the watch has not brought that write yet (a lagging
        or half-open stream; a new leader's, before the last leader's final writes). Planned
        again at once, the keys would be derived from the inputs the index still holds, older
        than the state just learnt: a package written over its models' newer states in etcd
        (Paused over Error while its model was Failed, then a second entry into Error once the
        watch caught up: swarm seed 5061923). So the worker plans nothing until the watch has
        brought the index to that revision (`caught_up`); a key found deleted tells no
        revision and is planned again at once."""
        modified = max(self._index.written(c.key).mod_revision for c in batch)
        if modified <= self._through:
            return False
        self._needed = max(self._needed, modified)
        self._current.clear()
        log.info("index_behind", modified=modified, followed=self._through)
        return True

    def _split(self, batch: list[Change], exc: TooLarge) -> list[list[Change]]:
        """The halves of a transaction etcd refused as too large; none for a single change,
        which is skipped."""
        if len(batch) > 1:
            half = len(batch) // 2
            log.warning("write_split", changes=len(batch), reason=exc.reason)
            return [batch[:half], batch[half:]]
        self._skip(batch[0], exc)
        return []

    def _defer(self, keys: list[WorkKey], exc: EtcdError | EtcdUnavailable) -> None:
        """Never dropped: each key comes back after its own growing delay, with its cause."""
        delays = [self._queue.add_rate_limited(key) for key in keys]
        log.warning(
            "write_deferred", keys=len(keys), retry_in=round(min(delays), 2), error=str(exc)
        )
        self._metrics.queue_retries.inc(len(keys))

    def _written(self, batch: list[Change], committed: bool) -> None:
        """A transaction was answered: its keys' latency observed, or, when a guard failed
        (the index is fresh), its keys queued to be planned again."""
        if not committed:
            for change in batch:
                self._queue.add(change.key)
            return
        now = time.monotonic()
        for change in batch:
            seen_at = self._seen_at.get(change.cause or change.key)
            if seen_at is not None:
                self._metrics.event_to_write_seconds.observe(now - seen_at)

    def _done(self, keys: list[WorkKey]) -> None:
        """All written (or nothing to write): this round of events for `keys` is done."""
        for key in keys:
            self._queue.forget(key)
            if key not in self._queue:
                self._causes.pop(key, None)
                self._seen_at.pop(key, None)
        self._refresh_gauges()

    def _plan(self, keys: list[WorkKey]) -> tuple[list[list[Change]], dict[WorkKey, Remembered]]:
        """`plan`, with a bug that planning raises on (not bad data: the parsers took that)
        kept to the keys that hit it: each is quarantined, once per cause revision, and the
        others are planned together. A quarantined key leaves this round like a written one,
        so it is retried when something it depends on changes. Also returns, per key the plan
        found agreeing, its previous derived state before that (for `_unlearn`)."""
        try:
            planned = plan(self._index, keys, self._writer.previous)
        except Exception:
            batch_error = traceback.format_exc()
        else:
            before = self._writer.remembered(planned.agreed)
            # A key's verdict may follow from others' planned with it (a package from its
            # models'): the newest input of the whole plan is what it was derived up to.
            cause = max((self._causes.get(k, 0) for k in keys), default=0)
            self._writer.agreed(planned.agreed, cause)
            return planned.groups, before
        healthy: list[WorkKey] = []
        for key in keys:
            try:  # a dry run: what it found agreeing is left unapplied
                plan(self._index, [key], self._writer.previous)
                healthy.append(key)
            except Exception:
                self._quarantine_planning(key, traceback.format_exc())
        if len(healthy) == len(keys):  # only the batch as a whole fails: set all of it aside
            for key in keys:
                self._quarantine_planning(key, batch_error)
            return [], {}
        return self._plan(healthy)

    def _unlearn(
        self, before: Mapping[WorkKey, Remembered], unwritten: Sequence[list[Change]]
    ) -> None:
        """The writes of `unwritten` were deferred: a model the plan found agreeing whose
        packages it pulled in gets back the previous derived state it had before. Planning it
        again must pull them in again, and only a model whose derived state moved from its
        previous one does (else a package was left out of Error for good after etcd refused its
        cascade: the simulation's swarm seed 9091882). Only the deferred keys come back."""
        models = [c.cause for batch in unwritten for c in batch if c.cause is not None]
        self._writer.put_back({key: before[key] for key in models if key in before})

    def _quarantine_planning(self, key: WorkKey, error: str) -> None:
        cause = self._causes.get(key, 0)
        if self._quarantine_logged.get(key) != cause:
            self._quarantine_logged[key] = cause
            self._quarantined(str(key), "plan", cause, error)

    def _skip(self, change: Change, exc: TooLarge) -> None:
        """etcd will never accept this one change: say so and leave the key until its inputs
        change (retrying it unchanged would fail the same way forever)."""
        log.error(
            "write_refused",
            key=str(change.key),
            to_state=change.new,
            reason=exc.reason,
            error=str(exc),
            hint="etcd's --max-request-bytes or --max-txn-ops is below what one write needs",
        )
        self._metrics.writes_refused.inc()
