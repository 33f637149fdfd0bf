"""The reconcile loop: events in, guarded state writes out.

Event handlers only mark work keys dirty (with the revision that dirtied them); one worker
takes batches of keys, plans the writes from the index and commits them. Like client-go's
sample-controller, the truth is read from the index when a key is processed, never carried
by the event, and the error policy sits in one place (`_process`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import structlog

from statemanager.backoff import Backoff
from statemanager.errors import EtcdUnavailable
from statemanager.etcd import Event, KeyValue
from statemanager.index import Index
from statemanager.ingest import Ingest, Report
from statemanager.keys import KeyLayout, WorkKey
from statemanager.metrics import Metrics
from statemanager.planner import pack, plan
from statemanager.triggers import Trigger
from statemanager.workqueue import WorkQueue
from statemanager.writer import StateWriter, TxnClient

log = structlog.get_logger("statemanager.controller")

MAX_TXN_OPS = 128  # etcd's default --max-txn-ops
BATCH_KEYS = 256  # dirty keys planned together; their writes are packed into transactions


class Controller:
    def __init__(
        self,
        client: TxnClient,
        layout: KeyLayout,
        metrics: Metrics,
        max_value_bytes: int,
        on_triggers: Callable[[list[Trigger]], None],
    ) -> None:
        self.index = Index()
        self._layout = layout
        self._kinds = {prefix: kind for kind, prefix in layout.watched().items()}
        self._ingest = Ingest(layout, self.index, max_value_bytes)
        self._metrics = metrics
        self.queue: WorkQueue[WorkKey] = WorkQueue(metrics.queue_depth.set)
        self._writer = StateWriter(client, layout, self.index, metrics, on_triggers)
        self._causes: dict[WorkKey, int] = {}
        self._requeue_backoff = Backoff(initial=0.5, cap=10.0)

    # -- intake -------------------------------------------------------------------------------

    def load(
        self,
        revision: int,
        listing: Mapping[str, Sequence[KeyValue]],
        delivered: Mapping[str, int] | None = None,
    ) -> None:
        """Bring the index to a full listing taken at `revision` and queue every key.

        Used at start, after a compaction and for the periodic resync: keys deleted while we
        were blind are found by the diff, and queueing everything writes all differences.
        `delivered` (per prefix, the newest revision the watch applied) lets the diff tell
        changes the watch missed, which are logged as drift.
        """
        result = self._ingest.resync_all(listing, revision, delivered)
        self._report(result.reports)
        if result.drifted:
            log.error(
                "resync_drift",
                keys=len(result.drifted),
                examples=result.drifted[:5],
                hint="the watch missed these changes; please report it",
            )
        self._mark(result.dirty | self.index.all_keys(), revision)
        self._refresh_gauges()

    def apply(self, prefix: str, events: Sequence[Event]) -> None:
        """Apply one watch response's events for `prefix` (all of a revision's, never part)."""
        kind = self._kinds[prefix]
        for event in events:
            dirty, report = self._ingest.apply(kind, event.key, event.value, event.revision)
            if report is not None:
                self._report([report])
            self._mark(dirty, event.revision)

    def _mark(self, keys: set[WorkKey], revision: int) -> None:
        for key in keys:
            if self._causes.get(key, 0) < revision:
                self._causes[key] = revision
            self.queue.add(key)

    def _report(self, reports: Sequence[Report]) -> None:
        for r in reports:
            if r.rejected:
                self._metrics.invalid_inputs.labels(r.kind).inc()
                log.warning(
                    "invalid_input", key=r.key, kind=r.kind, error=r.detail, revision=r.revision
                )
            else:
                log.warning("unassigned_container", key=r.key, error=r.detail, revision=r.revision)

    def _refresh_gauges(self) -> None:
        containers, models, packages = self.index.sizes()
        self._metrics.objects.labels("container").set(containers)
        self._metrics.objects.labels("model").set(models)
        self._metrics.objects.labels("package").set(packages)
        self._metrics.unassigned_containers.set(self.index.unassigned_count())

    # -- work ---------------------------------------------------------------------------------

    async def run_worker(self) -> None:
        """Process dirty keys until the queue shuts down (ShutDown propagates)."""
        while True:
            keys = await self.queue.get_batch(BATCH_KEYS)
            try:
                await self._process(keys)
            finally:
                self.queue.done(keys)

    async def _process(self, keys: list[WorkKey]) -> None:
        started = time.perf_counter()
        groups = plan(self.index, keys)
        self._metrics.evaluation_seconds.observe(time.perf_counter() - started)
        causes = {k: self._causes.get(k, 0) for k in keys}
        for key in keys:
            self._causes.pop(key, None)
        for batch in pack(groups, MAX_TXN_OPS):
            try:
                transitions = await self._writer.commit(batch, causes)
            except EtcdUnavailable as exc:
                # Never dropped: the keys come back after a growing delay, and keep their cause.
                delay = self._requeue_backoff.next()
                log.warning(
                    "write_deferred", keys=len(keys), retry_in=round(delay, 2), error=str(exc)
                )
                for key in keys:
                    self._causes.setdefault(key, causes.get(key, 0))
                    self.queue.add_after(key, delay)
                return
            if transitions is None:  # a guard failed; the index is fresh, plan again
                for change in batch:
                    self.queue.add(change.key)
                continue
            self._requeue_backoff.reset()
        self._refresh_gauges()
