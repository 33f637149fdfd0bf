"""Delivers reconcile triggers to ActionController: at least once, durably, never blocking writes.

Triggers arrive from the writer right after the transaction that recorded them, and from etcd
at start-up (left pending by an earlier run). A trigger is one package's entry into Error; it
is sent to each scenario targeting the package (sorted by name, as the index has them at
delivery) until ActionController answers status 0 for each, with capped exponential backoff
per trigger while it is down or answers non-zero.
A trigger whose package has left Error before delivery is dropped, logged. Removing a trigger
is a transaction guarded by its revision, so a newer trigger for the same package
(it entered Error again) is never removed by the older one's delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from statemanager.actioncontroller import ReconcileOutcome
from statemanager.backoff import Backoff
from statemanager.election import Leadership
from statemanager.errors import EtcdUnavailable
from statemanager.etcd import Delete, Fence, Guard, KeyValue, Put, TxnResult
from statemanager.index import Index
from statemanager.keys import KeyLayout, Resource, WorkKey
from statemanager.metrics import Metrics
from statemanager.states import PackageState
from statemanager.triggers import Trigger, decode, trigger_key, trigger_prefix

log = structlog.get_logger("statemanager.reconcile")


class ReconcileClient(Protocol):
    async def reconcile(self, scenario: str) -> ReconcileOutcome: ...


class TriggerStore(Protocol):
    async def snapshot(
        self, prefixes: Sequence[str], page_size: int = ...
    ) -> tuple[int, dict[str, list[KeyValue]]]: ...

    async def txn(
        self, guards: Sequence[Guard], ops: Sequence[Put | Delete], fence: Fence | None = None
    ) -> TxnResult: ...


@dataclass(slots=True)
class _Pending:
    trigger: Trigger
    backoff: Backoff
    taken_at: float  # unix time this process took it on, for the oldest-pending gauge
    due: float = 0.0
    attempts: int = 0
    acknowledged: set[str] = field(default_factory=set)  # scenarios that answered status 0
    delivered: bool = False  # acknowledged by all; only its removal from etcd is outstanding


class ReconcileSender:
    def __init__(
        self,
        client: ReconcileClient,
        store: TriggerStore,
        layout: KeyLayout,
        index: Index,
        metrics: Metrics,
        max_backoff: float,
    ) -> None:
        self._client = client
        self._store = store
        self._layout = layout
        self._index = index
        self._metrics = metrics
        self._max_backoff = max_backoff
        self._pending: dict[bytes, _Pending] = {}
        self._wake = asyncio.Event()

    def add(self, triggers: list[Trigger], recorded: bool = True) -> None:
        """Take triggers just committed (`recorded`), or found in etcd by `load`; a newer one
        replaces an older one."""
        for trigger in triggers:
            key = trigger_key(self._layout, trigger.package)
            known = self._pending.get(key)
            if known is not None and known.trigger.revision >= trigger.revision:
                continue
            if known is not None:
                log.info("reconcile_superseded", **_fields(known.trigger), by=trigger.revision)
            backoff = Backoff(initial=0.5, cap=self._max_backoff)
            self._pending[key] = _Pending(trigger, backoff, time.time())
            if recorded:  # counted once, by the daemon that wrote it, not at every reload
                self._metrics.reconcile_triggers.labels("recorded").inc()
            log.info("reconcile_recorded" if recorded else "reconcile_loaded", **_fields(trigger))
        self._update_gauges()
        self._wake.set()

    def pending(self) -> list[tuple[Trigger, int]]:
        """Triggers not yet delivered (or not yet removed), with the attempts made so far, by
        package. Only a leader holds any: it loads them when it takes over."""
        items = sorted(self._pending.values(), key=lambda p: p.trigger.package)
        return [(p.trigger, p.attempts) for p in items]

    async def load(self) -> None:
        """Pick up triggers an earlier run left in etcd. Retries while etcd is unreachable."""
        backoff = Backoff(initial=0.2, cap=2.0)
        while True:
            try:
                _, listing = await self._store.snapshot([trigger_prefix(self._layout)])
                break
            except EtcdUnavailable:
                await asyncio.sleep(backoff.next())
        found = []
        for key, value, revision in next(iter(listing.values())):
            trigger = decode(self._layout, key, value, revision)
            if trigger is None:
                log.warning("reconcile_trigger_unreadable", key=key.decode("utf-8", "replace"))
            else:
                found.append(trigger)
        if found:
            log.info("reconcile_resumed", triggers=len(found))
        self.add(found, recorded=False)

    async def run(self, leadership: Leadership) -> None:
        """Deliver pending triggers while this daemon leads (cancel to stop). Each time it
        becomes leader it reloads the triggers from etcd: another leader may have recorded,
        delivered or dropped some meanwhile."""
        loaded_for: Fence | None = None
        while True:
            fence = await leadership.wait_leader()
            if fence != loaded_for:
                self._pending.clear()
                await self.load()
                loaded_for = fence
            now = time.monotonic()
            due = sorted(
                (p for p in self._pending.values() if p.due <= now),
                key=lambda p: p.trigger.package,
            )
            for pending in due:
                await self._attempt(pending, fence)
            self._wake.clear()
            upcoming = [p.due for p in self._pending.values()]
            # At most a second: a leadership change must reload the triggers promptly.
            timeout = min([1.0, *(max(0.0, due - time.monotonic()) for due in upcoming)])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _attempt(self, pending: _Pending, fence: Fence) -> None:
        trigger = pending.trigger
        if not pending.delivered:
            state = self._index.written(WorkKey(Resource.PACKAGE, trigger.package)).value
            scenarios = self._index.scenarios_of(trigger.package)
            if state != PackageState.ERROR or not scenarios:
                log.info("reconcile_dropped", **_fields(trigger), package_state=state)
                await self._remove(pending, "dropped", fence)
                return
            for scenario in scenarios:
                if scenario in pending.acknowledged:
                    continue
                pending.attempts += 1
                outcome = await self._client.reconcile(scenario)
                self._metrics.reconcile_requests.labels(outcome.result).inc()
                if not outcome.acknowledged:
                    delay = pending.backoff.next()
                    pending.due = time.monotonic() + delay
                    log.warning(
                        "reconcile_retry",
                        **_fields(trigger, scenario),
                        attempt=pending.attempts,
                        result=outcome.result,
                        error=outcome.detail,
                        retry_in=round(delay, 2),
                    )
                    return
                pending.acknowledged.add(scenario)
                log.info(
                    "reconcile_delivered", **_fields(trigger, scenario), attempt=pending.attempts
                )
            pending.delivered = True
        await self._remove(pending, "delivered", fence)

    async def _remove(self, pending: _Pending, outcome: str, fence: Fence) -> None:
        trigger = pending.trigger
        key = trigger_key(self._layout, trigger.package)
        try:
            result = await self._store.txn([Guard(key, trigger.revision)], [Delete(key)], fence)
        except EtcdUnavailable as exc:
            pending.due = time.monotonic() + pending.backoff.next()
            log.warning("reconcile_remove_deferred", **_fields(trigger), error=str(exc))
            return
        if result.fenced:
            return  # no longer leader: the next leader reloads the trigger and decides
        # A failed guard means a newer trigger took the key; add() has replaced our entry then.
        if self._pending.get(key) is pending:
            del self._pending[key]
        self._metrics.reconcile_triggers.labels(outcome).inc()
        self._update_gauges()

    def _update_gauges(self) -> None:
        self._metrics.reconcile_pending.set(len(self._pending))
        oldest = min((p.taken_at for p in self._pending.values()), default=0.0)
        self._metrics.reconcile_oldest.set(oldest)


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
