"""Commits planned state changes to etcd as guarded transactions and records the transitions.

Every write is one transaction guarded by the mod revision of each state key it touches, as
the index last saw it (with its value when present: `_guard`), and (with history) by each
history record's key being absent, so that a retry of an attempt that landed cannot land
again after someone deleted a key it found absent: a key someone else changed fails the
guard, the transaction applies nothing, the index learns the current values from the same
round trip and the keys are re-evaluated (never forced). Transient etcd errors are retried
with capped, jittered backoff (tenacity); if they persist the caller re-queues the keys. A
retry whose guard fails because the attempt before it committed (its answer was lost) is
told apart by reading back this transaction's own values (with history, its own history
record), and its transitions are recorded all the same.

Each transition's history record goes in the transaction that writes its state, the records a
resource keeps beyond `keep` deleted in it too (docs/decisions/transition-history.md).

The writer owns the previous derived states (core/previous.py) and alone changes them; the
planner reads them through `previous`, and the controller hands on what it learns (`echoed`,
`agreed`, `leading`). It records etcd's answers to its own transactions in the index itself,
beside ingest: the worker plans again right after a failed guard, on the values that failed it
(docs/design.md, The path of a container event).
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Protocol

import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from statemanager.core.errors import AnswerFromAnotherHistory, BadInput, EtcdUnavailable
from statemanager.core.history import Transition, history_prefix
from statemanager.core.history import decode as decode_record
from statemanager.core.index import Index
from statemanager.core.keys import MAX_NAME_LENGTH, KeyLayout, Resource, WorkKey
from statemanager.core.planner import Change, PreviousView, pack
from statemanager.core.ports import (
    TXN_LIMITS,
    Delete,
    Fence,
    Guard,
    KeyValue,
    Put,
    TxnClient,
    TxnLimits,
    TxnResult,
)
from statemanager.core.previous import PreviousStates, Records, Remembered, StateSeen
from statemanager.core.states import PackageState
from statemanager.core.timestamps import timestamp
from statemanager.core.triggers import Trigger, decode, encode, trigger_key
from statemanager.runtime.history import Generations, HistoryLog
from statemanager.runtime.metrics import Metrics

log = structlog.get_logger("statemanager.writer")

# How many of our latest transactions' keys are kept by revision: enough for the watch's lag
# behind the writer, which answers one transaction at a time.
LANDED_KEPT = 256
DELETED = "deleted"  # a transition's to_state in logs and metrics when the key is deleted
_DELETED_BECAUSE = {
    Resource.PACKAGE: "its Package spec is gone",
    Resource.MODEL: "no package lists it and it has no containers",
    Resource.SCENARIO: "its Scenario spec is gone",
}


class NotLeader(Exception):
    """The write was fenced off: this daemon does not (or no longer) lead. Nothing was written;
    the keys wait for the next leadership (this daemon's or another's, which re-evaluates all)."""


class TransitionIds:
    """Unique ids: a random per-process prefix and a counter (cheaper than uuid4 per change)."""

    def __init__(self) -> None:
        self._prefix = os.urandom(6).hex()
        self._counter = itertools.count(1)

    def next(self) -> str:
        """A new id, unlike any other this process gives."""
        return f"{self._prefix}-{next(self._counter):x}"


class WriterClient(TxnClient, Protocol):
    """The writer's etcd: guarded transactions, and reading one key back."""

    async def get(self, key: bytes) -> KeyValue | None: ...


class StateWriter:
    """StateWriter commits planned changes as guarded transactions, records their transitions,
    and owns the previous derived states its writes and their echoes establish."""

    def __init__(
        self,
        client: WriterClient,
        layout: KeyLayout,
        index: Index,
        metrics: Metrics,
        attempts: int = 5,
        max_backoff: float = 2.0,
        limits: TxnLimits = TXN_LIMITS,
        history: Generations | None = None,
        keep: int = 0,
        node: str | None = None,
    ) -> None:
        """`history` and `keep` > 0: record each transition, keeping the last `keep` per
        resource; `node` names this daemon in the records."""
        self._client = client
        self._layout = layout
        self._index = index
        self._metrics = metrics
        self._ids = TransitionIds()
        self._attempts = attempts
        self._max_backoff = max_backoff
        self._limits = limits
        self._states = PreviousStates()  # changed by this writer only
        # The newest revision etcd answered one of our transactions with, in the history the
        # watcher follows (forgotten when that history is replaced).
        self._newest = 0
        # The state keys each of our latest transactions wrote, and their values, by the
        # revision it landed at (the newest LANDED_KEPT; forgotten when the history is
        # replaced): no other key of etcd's, nor another value, can come at that revision in
        # the same history (`foreign`).
        self._wrote_at: dict[int, _Wrote] = {}
        # The same, of the histories replaced since the last whole listing, and per key the
        # newest revision among them it was written at: that listing shows where the new
        # history differs from them (`diverged`).
        self._wrote_before: dict[int, _Wrote] = {}
        self._newest_before: dict[bytes, int] = {}
        # The largest a trigger record's value can be (a transition id is under 40 characters).
        self._trigger_bytes = len(encode(Trigger("x" * MAX_NAME_LENGTH, "x" * 40, 0)))
        # The generations of history records, when transitions are recorded.
        self._history = (
            HistoryLog(history, layout, keep, limits) if history is not None and keep > 0 else None
        )
        self._node = node

    @property
    def previous(self) -> PreviousView:
        """The previous derived states, read-only: what the planner plans with."""
        return self._states

    def leading(self, fence: Fence | None, revision: int) -> None:
        """Leading begins under `fence`, found at `revision`: PreviousStates.leading."""
        self._states.leading(fence, revision)

    def another_leads(self, revision: int) -> None:
        """Another daemon was found leading at `revision`: PreviousStates.another_leads; the
        history generations learnt are forgotten (that leader may have written records)."""
        self._states.another_leads(revision)
        if self._history is not None:
            self._history.forget()

    def echoed(self, seen: Sequence[StateSeen]) -> None:
        """The watch showed these state keys' values (through ingest): PreviousStates.echoed."""
        self._states.echoed(seen)

    def ruled_meanwhile(
        self, seen: Iterable[StateSeen], rules: Callable[[WorkKey], str | None]
    ) -> None:
        """The watch, or a whole listing, showed these state keys' values, `rules` giving what
        the rules give each as of then: PreviousStates.ruled_meanwhile."""
        self._states.ruled_meanwhile(seen, rules)

    def listed(self, seen: Sequence[StateSeen]) -> None:
        """A listing showed these state keys' values (through ingest): PreviousStates.listed."""
        self._states.listed(seen)

    def relisted(self, revision: int) -> None:
        """The first whole listing since etcd's history was replaced was taken at `revision`:
        PreviousStates.relisted."""
        self._states.relisted(revision)
        self._wrote_before.clear()
        self._newest_before.clear()

    def agreed(self, found: Mapping[WorkKey, str | None], cause: int) -> None:
        """A plan found these keys agreeing with the rules, each as the index holds it, the
        rules giving it from inputs up to revision `cause`: PreviousStates.agreed, at the later
        of the two revisions."""
        written = self._index.written
        self._states.agreed(
            (key, state, max(written(key).mod_revision, cause)) for key, state in found.items()
        )

    def remembered(self, keys: Iterable[WorkKey]) -> dict[WorkKey, Remembered]:
        """PreviousStates.remembered."""
        return self._states.remembered(keys)

    def put_back(self, remembered: Mapping[WorkKey, Remembered]) -> None:
        """Learning these keys' previous states was undone: PreviousStates.put_back."""
        self._states.put_back(remembered)

    def newest_answer(self) -> int:
        """The newest revision etcd answered one of this daemon's transactions with (0 when
        none since the history was last replaced): etcd's revision is never below it while
        its history stays the one the daemon follows."""
        return self._newest

    def foreign(self, key: bytes, value: bytes | None, revision: int) -> bool:
        """Whether etcd shows `key` changed to `value` (None: deleted) at `revision`, at which
        one of our transactions landed without writing that: in one history a revision is one
        transaction's, so etcd's history was replaced (a restore that took our write back, at
        the same raft term, and grew back past it: only its events tell)."""
        return _other(self._wrote_at.get(revision), key, value)

    def remembers_writes(self) -> bool:
        """Whether any write of ours is known by the revision it landed at, on etcd's current
        history or on one replaced since the last whole listing (`foreign`, `compared`)."""
        return bool(self._wrote_at or self._wrote_before)

    def compared(self, key: bytes, value: bytes, revision: int) -> None:
        """A listing of the history that replaced ours shows `key` holding `value`, modified
        at `revision`, which is compared with our writes on the replaced histories.

        Where one of our transactions landed at that revision without writing that, or wrote
        `key` at a later revision (which the new history would show), the two histories
        differ from that transaction's revision on, and nothing learnt there at or above it is
        held by the new one (PreviousStates.diverged). Else a restore to below our Error
        write, the new history grown past it by others' writes and the key absent there, left
        our Error standing, carried, and putting Error in again was a correction, with its
        Reconcile lost (the simulation's swarm seed 13071009).

        Where it is our very write, the new history holds it (PreviousStates.held): an
        older state of ours than the one learnt last (else, that later one dropped, a restored
        trigger older than the held write made putting Error back a correction: the
        simulation's swarm seed 14005423)."""
        newest = self._newest_before.get(key, 0)
        if revision < newest:
            self._states.diverged(newest)
        wrote = self._wrote_before.get(revision)
        if wrote is None:
            return
        if _other(wrote, key, value):
            self._states.diverged(revision)
        else:
            self._states.held(wrote[key][0], value.decode(), revision)

    def forget_history(self) -> None:
        """etcd's history was replaced: the revisions of earlier answers, and the generations
        of history records learnt, belong to no history; the revisions our writes landed at
        are kept till the next whole listing, to tell where the new history differs."""
        self._newest = 0
        self._wrote_before.update(self._wrote_at)
        self._wrote_at.clear()
        for revision, wrote in sorted(self._wrote_before.items()):
            self._newest_before.update(dict.fromkeys(wrote, revision))
        self._states.replaced()
        if self._history is not None:
            self._history.forget()

    def batches(self, groups: Sequence[list[Change]], fence: Fence) -> list[list[Change]]:
        """Pack write groups into transactions etcd accepts, with `fence` on each."""
        # One compare (and one failure read) go to the fence, and one to the history's anchor.
        guard_ops, guard_bytes = 1, self._limits.guarded_write_bytes(fence.key, None)
        if self._history is not None:
            self._history.leading(fence)
            anchor_ops, anchor_bytes = self._history.anchor_cost()
            guard_ops, guard_bytes = guard_ops + anchor_ops, guard_bytes + anchor_bytes
        return pack(
            groups,
            self._limits.max_ops - guard_ops,
            self._limits.byte_budget - guard_bytes,
            self._cost,
        )

    def _cost(self, change: Change) -> tuple[int, int]:
        """Operations and bytes `change` adds to a transaction, its trigger and history records
        included (the retention delete counted unless the generation is known to need none)."""
        key = self._layout.state_key(change.key).encode()
        ops, size = (
            1,
            self._limits.guarded_write_bytes(key, change.new.encode() if change.new else None),
        )
        compares = 1
        if (value := _guard(key, change).value) is not None:
            # The value's compare: its key and value, and no more overhead than a put's.
            compares, size = 2, size + self._limits.put_bytes(key, value)
        if change.entering_error:
            record = trigger_key(self._layout, change.key.name)
            ops, size = ops + 1, size + self._limits.put_bytes(record, b"x" * self._trigger_bytes)
        if self._history is not None:
            history_ops, history_size = self._history.cost(change)
            # One compare per record (its key absent) beside its put.
            ops, compares, size = ops + history_ops, compares + 1, size + history_size
        # etcd caps the compares and each branch's operations separately (TxnLimits).
        return max(ops, compares), size

    def _recorded(self, planned: Mapping[WorkKey, Transition], landed: int | None) -> None:
        if self._history is not None:
            self._history.recorded(planned, landed)

    async def commit(
        self, changes: Sequence[Change], causes: Mapping[WorkKey, int], fence: Fence
    ) -> list[Transition] | None:
        """Commit writes `changes` in one transaction and returns their transitions (corrections
        are logged, not returned), or None when a guard failed (the index now holds etcd's
        current values; re-plan the keys).

        A guard that failed because an earlier attempt landed is told by the history record it
        wrote (without history: the keys holding this transaction's values, or else a trigger
        record it wrote) still being there: its transitions are then recorded (`answer_lost`)
        all the same. Raises EtcdUnavailable when etcd stayed unreachable (or busy) through
        every retry, NotLeader when the fence failed, EtcdError when etcd refused the
        transaction (TooLarge: split it).
        """
        keys = [self._layout.state_key(c.key).encode() for c in changes]
        guards = [_guard(k, c) for k, c in zip(keys, changes, strict=True)]
        ids = {c.key: self._ids.next() for c in changes}
        now = time.time_ns()
        # Corrections too: the history replays to every state this daemon writes.
        planned = {c.key: self._transition(c, causes, ids, now) for c in changes}
        entering = [c for c in changes if c.entering_error]
        triggers = [Trigger(c.key.name, ids[c.key], 0) for c in entering]
        planned_over = {c.key: self._states.previous(c.key) for c in entering}
        if await self._heard_of(changes) or await self._carried_over(changes):
            return None
        ops = await self._ops(keys, changes, planned, triggers, fence)
        # After `_ops`, which learns the generations the record keys are named from.
        record_guards = self._history.guards(planned) if self._history is not None else []
        # The records this transaction puts, named now: a wipe or restore noticed while it is
        # on its way makes the history forget the generations these keys were computed from.
        wrote = self._records(planned, triggers)
        if self._learnt_meanwhile(planned_over):
            return None
        # Until etcd answers (its answer may be lost and the attempt have landed all the same).
        self._states.sent((c.key, c.new) for c in changes)
        try:
            result, retried = await self._txn_with_retries([*guards, *record_guards], ops, fence)
        except EtcdUnavailable:
            self._unheard(entering, ids, wrote, planned)
            raise
        try:
            self._check_history(keys, changes, result, causes)
        except AnswerFromAnotherHistory:
            # What its failed guard shows is of the new history, where no write of ours was
            # waiting for it (else a value someone put there, the same as ours, was learnt as
            # ours, and the relist kept it: the simulation's swarm seed 13032263).
            self._states.answered(c.key for c in changes)
            if retried:  # an earlier attempt may have landed, on either history
                self._unheard(entering, ids, wrote, planned)
            raise
        # A failed guard shows each key as etcd holds it: where an earlier transaction of ours
        # went unanswered (every answer lost, then deferred and planned again), that is what it
        # wrote if it landed, before this one's answer ends the wait for it (else its state,
        # ours, is taken as someone else's: the simulation's swarm seed 11052761).
        shown = [] if result.succeeded else _shown(changes, keys, result)
        self._states.echoed(shown)
        self._states.answered(c.key for c in changes)
        self._newest = result.revision
        if result.fenced:
            raise NotLeader(f"leader key {fence.key.decode()} is gone or replaced")
        if result.succeeded or retried:
            landed, held = await self._outcome(keys, changes, result, wrote)
            # A failed guard after a retry may hide an earlier attempt that landed unseen.
            self._recorded(planned, landed=landed)
            if landed is not None:
                self._wrote_at[landed] = {
                    k: (c.key, c.new) for k, c in zip(keys, changes, strict=True)
                }
                if len(self._wrote_at) > LANDED_KEPT:
                    del self._wrote_at[next(iter(self._wrote_at))]
                transitions = self._record(changes, planned, landed, not result.succeeded)
                if held:
                    return transitions
                # An earlier attempt landed, and someone else changed a key since: what it
                # wrote is the previous derived state (putting it back is a correction), and
                # the index takes what etcd holds now (below), to plan again.
        if not result.succeeded:
            current = [result.current.get(g.key) for g in record_guards]
            if any(
                (kv.mod_revision if kv else 0) != g.mod_revision
                for kv, g in zip(current, record_guards, strict=True)
            ):
                # A record key is taken, or the anchor gone: read the generations again.
                self._recorded(planned, landed=None)
            self._conflict(shown)
            return None
        raise AssertionError("unreachable: a success is recorded above")

    def _unheard(
        self,
        entering: Sequence[Change],
        ids: Mapping[WorkKey, str],
        wrote: Records,
        planned: Mapping[WorkKey, Transition],
    ) -> None:
        """A transaction's attempt may have landed unanswered: each entry into Error it wrote
        is unheard until its records tell (PreviousStates.lost), and the generations of
        history records are read again. Without it, an attempt that landed on a history that
        replaced the one it was planned on (its answer lost, the retry's answer showing the
        replacement) left its trigger there, and putting Error back after someone else's
        write recorded a second one (the simulation's swarm seed 7072400)."""
        for change in entering:  # its records are those naming its transition
            mine = [r for r in wrote if r[1] == ids[change.key]]
            self._states.lost(change.key, change.new, mine)
        self._recorded(planned, landed=None)

    async def _ops(
        self,
        keys: Sequence[bytes],
        changes: Sequence[Change],
        planned: Mapping[WorkKey, Transition],
        triggers: Sequence[Trigger],
        fence: Fence,
    ) -> list[Put | Delete]:
        """The transaction's writes: each state, each trigger record (in the transaction that
        writes Error: a crash cannot separate them) and each transition's history record (the
        state and its history never disagree)."""
        ops: list[Put | Delete] = [
            Put(k, c.new.encode()) if c.new is not None else Delete(k)
            for k, c in zip(keys, changes, strict=True)
        ]
        ops += [Put(trigger_key(self._layout, t.package), encode(t)) for t in triggers]
        if self._history is not None and planned:
            await self._history.learn(changes, fence)
            ops += self._history.ops(planned)
        return ops

    def _check_history(
        self,
        keys: Sequence[bytes],
        changes: Sequence[Change],
        result: TxnResult,
        causes: Mapping[WorkKey, int],
    ) -> None:
        """Raise EtcdUnavailable when etcd's history was replaced under the transaction.

        A revision below one etcd gave before (our last answer, a revision the index saw a key
        at, or that of an event the transaction was planned from), a success at no revision
        above that event (every change the planner sends changes its key, so a success makes
        a new revision), or a key last modified otherwise than the index knew it and at or
        below the revision the index knew it at (in one history, a change after that revision
        is modified above it: a key known absent at D is never found modified at D or before),
        means a wipe or a restore the watcher has not noticed yet. A write planned from an
        input the restore took back may have landed on the new history: it is no transition
        (never committed as the previous state), so once the relist shows the inputs, putting
        the state back is a correction. A failed guard would teach the index nothing (it keeps
        the newer revision), and planning again at once would retry the same guard in a tight
        loop, or plan from the old history's inputs and the new history's states: the caller
        defers, plans nothing more, and has the watcher relist (AnswerFromAnotherHistory).
        """
        cause = max(causes.get(c.key, 0) for c in changes)
        floor = max(self._newest, cause, *(c.old.seen for c in changes))
        older = [
            kv.mod_revision
            for key, change in zip(keys, changes, strict=True)
            if (kv := result.current.get(key)) is not None
            and kv.mod_revision != change.old.mod_revision
            and kv.mod_revision <= max(change.old.mod_revision, change.old.seen)
        ]
        landed_below = result.succeeded and result.revision <= cause
        if result.revision < floor or landed_below or older:
            self.forget_history()  # the history that was replaced
            raise AnswerFromAnotherHistory(
                f"etcd answered at revision {result.revision} (keys modified at {older}), "
                f"not above revisions it gave before ({floor}): its history was replaced",
                floor,
                result.revision,
            )

    def _conflict(self, shown: Sequence[StateSeen]) -> None:
        """A guard failed: count it, and give the index etcd's current values of the keys
        (`shown`: the failed guard's answer)."""
        self._metrics.write_conflicts.inc()
        for key, value, seen in shown:
            self._index.observe_written(key, value, seen)

    async def _outcome(
        self,
        keys: Sequence[bytes],
        changes: Sequence[Change],
        result: TxnResult,
        wrote: Records,
    ) -> tuple[int | None, bool]:
        """The revision this transaction landed at (None: it did not, or it cannot be told),
        and whether the keys still hold what it wrote. A success says so; after a failed guard
        on a retry, with history each write names itself in etcd (the keys' values cannot:
        someone else may have written the same), and without it the keys, or else a trigger
        record, may tell. The reconcile sender learns triggers from etcd (it watches their
        prefix), so a lost answer loses no delivery."""
        if result.succeeded:
            return result.revision, True
        own = _own_write(keys, changes, result)
        if own is not None and self._history is None:
            return own, True
        landed = await self._landed(wrote)
        return landed, landed is not None and landed == own

    async def _landed(self, wrote: Records) -> int | None:
        """The revision an earlier attempt of this transaction landed at, when etcd still holds
        one of the history or trigger records it wrote (each names this transaction's
        transition id, so no one else wrote it); None when none is there, or etcd cannot say
        now. The state keys cannot tell when someone else changed them since, nor whether
        someone else wrote the very values this transaction did."""
        try:
            return await self._found(wrote)
        except EtcdUnavailable:
            return None

    def _records(
        self, planned: Mapping[WorkKey, Transition], triggers: Sequence[Trigger]
    ) -> list[tuple[bytes, str]]:
        """The history and trigger records a transaction of `planned` and `triggers` puts, each
        with the transition id its value names."""
        history = self._history
        wrote = (
            [(history.record_key(k), t.transition_id) for k, t in planned.items()]
            if history
            else []
        )
        wrote += [(trigger_key(self._layout, t.package), t.transition_id) for t in triggers]
        return wrote

    async def _found(self, records: Records) -> int | None:
        """The revision the first of `records` etcd still holds was put at (None: none is);
        raises EtcdUnavailable when etcd cannot say now."""
        for key, transition_id in records:
            kv = await self._client.get(key)
            if kv is not None and _names(self._layout, kv, transition_id):
                return kv.mod_revision
        return None

    async def _heard_of(self, changes: Sequence[Change]) -> bool:
        """Whether an earlier transaction entering Error at a key `changes` enter Error at
        again, every answer of it lost, landed after all (its records are in etcd): its Error
        is then the previous derived state, and the keys must be planned again (putting Error
        back after someone else's write is a correction, not a new entry into Error). Its echo
        cannot tell when the watch lost it and history was compacted: a listing shows the
        value after someone else's write. Raises EtcdUnavailable when etcd cannot say now (the
        key stays unheard)."""
        landed = False
        for change in changes:
            unheard = self._states.heard(change.key) if change.entering_error else None
            if unheard is None:
                continue
            state, records = unheard
            try:
                found = await self._found(records)
            except EtcdUnavailable:
                self._states.lost(change.key, state, records)
                raise
            if found is not None:
                self._states.committed(change.key, state, found)
                landed = True
        return landed

    def _learnt_meanwhile(self, planned_over: Mapping[WorkKey, str | None]) -> bool:
        """Whether a package this commit enters Error at (each with the previous state it was
        planned over) has learnt Error as its previous state while the commit waited on etcd
        (the reconcile sender's word of a trigger it removes: StateWriter.removed): putting
        Error there is a correction, and the keys must be planned again (else the entry went
        out with a second trigger: the simulation's swarm seed 13099827, once the sender first
        asked etcd where its history stood). Checked last before the transaction goes out,
        with nothing awaited between."""
        return any(
            before != PackageState.ERROR == self._states.previous(key)
            for key, before in planned_over.items()
        )

    async def _carried_over(self, changes: Sequence[Change]) -> bool:
        """Whether a package `changes` enter Error at, its previous state carried from a
        replaced history of etcd's, has a trigger in the new one: that is an entry into Error
        recorded there and not yet removed (a trigger goes in the transaction that writes
        Error), so Error is its previous derived state on the new history, and the keys must be
        planned again (putting Error back is a correction, not a second trigger of the same
        Error: the simulation's swarm seed 6106668). Without a trigger, or with one older than
        the carried state (PreviousStates.triggered), the carried state stands
        (docs/decisions/previous-states-across-replacement.md). Each key is asked once; raises
        EtcdUnavailable when etcd cannot say now (asked again next time)."""
        carried = False
        for change in changes:
            if not (change.entering_error and self._states.carried(change.key)):
                continue
            record = trigger_key(self._layout, change.key.name)
            kv = await self._client.get(record)
            found = None if kv is None else decode(self._layout, record, kv.value, kv.mod_revision)
            if (
                kv is not None
                and found is not None
                and self._states.triggered(change.key, kv.mod_revision)
            ):
                carried = True
            else:
                self._states.kept(change.key)
        return carried

    def removed(self, trigger: Trigger) -> None:
        """The reconcile sender is removing `trigger` from etcd's current history (delivered,
        dropped as its package left Error, or dead-lettered): PreviousStates.triggered. Else a
        trigger a restore put back, removed before the writer looked for it (`_carried_over`),
        would leave putting Error back a new entry, with a second trigger."""
        self._states.triggered(WorkKey(Resource.PACKAGE, trigger.package), trigger.revision)

    async def _txn_with_retries(
        self, guards: Sequence[Guard], ops: Sequence[Put | Delete], fence: Fence
    ) -> tuple[TxnResult, bool]:
        """etcd's answer, and whether an earlier attempt failed (it may have committed)."""

        def count_retry(state: RetryCallState) -> None:
            self._metrics.write_retries.inc()
            log.warning(
                "etcd_write_retry",
                attempt=state.attempt_number,
                error=str(state.outcome.exception()) if state.outcome else None,
            )

        retrying = AsyncRetrying(
            retry=retry_if_exception_type(EtcdUnavailable),
            stop=stop_after_attempt(self._attempts),
            # Full jitter over a capped exponential (tenacity's exponential_jitter would add up to
            # a whole second to every retry, whatever the delay).
            wait=wait_random_exponential(multiplier=0.05, max=self._max_backoff),
            before_sleep=count_retry,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                result = await self._client.txn(guards, ops, fence)
                return result, attempt.retry_state.attempt_number > 1
        raise AssertionError("unreachable: tenacity reraises the last error")

    def _transition(
        self,
        change: Change,
        causes: Mapping[WorkKey, int],
        ids: Mapping[WorkKey, str],
        now: int,
    ) -> Transition:
        """The transition `change` makes (its revision 0 until committed)."""
        verdict = change.verdict
        cause_key = change.cause or change.key
        return Transition(
            transition_id=ids[change.key],
            resource=change.key.resource,
            name=change.key.name,
            from_state=change.old.value,
            to_state=change.new,
            rule=verdict.rule if verdict else None,
            reason=verdict.reason if verdict else None,
            timestamp_ns=now,
            cause_revision=causes.get(cause_key, causes.get(change.key, 0)),
            revision=0,
            caused_by=ids.get(change.cause) if change.cause else None,
            node=self._node,
            correction=change.correction,
        )

    def _record(
        self,
        changes: Sequence[Change],
        planned: Mapping[WorkKey, Transition],
        revision: int,
        answer_lost: bool = False,
    ) -> list[Transition]:
        """Apply a committed write to the index and the previous derived states; log and count
        its transitions and corrections. `answer_lost`: etcd's answer never came; `revision`
        was read back from the keys."""
        lost = {"answer_lost": True} if answer_lost else {}
        transitions: list[Transition] = []
        for change in changes:
            self._index.observe_written(change.key, change.new, revision)
            self._states.committed(change.key, change.new, revision)
            if change.correction:
                # The rules did not move: someone else changed the key and it is put back.
                self._log_correction(change, revision, lost)
                continue
            t = replace(planned[change.key], revision=revision)
            transitions.append(t)
            self._log_transition(t, lost)
        return transitions

    def _log_correction(self, change: Change, revision: int, lost: Mapping[str, bool]) -> None:
        self._metrics.corrections.labels(change.key.resource.value).inc()
        log.info(
            "correction",
            type=change.key.resource.value,
            name=change.key.name,
            found=change.old.value,
            restored=change.new,
            rule=change.verdict.rule if change.verdict else None,
            revision=revision,
            **lost,
        )

    def _log_transition(self, t: Transition, lost: Mapping[str, bool]) -> None:
        self._metrics.transitions.labels(t.resource.value, t.to_state or DELETED).inc()
        log.info(
            "transition",
            transition_id=t.transition_id,
            type=t.resource.value,
            name=t.name,
            from_state=t.from_state,
            to_state=t.to_state or DELETED,
            rule=t.rule,
            reason=t.reason or _DELETED_BECAUSE[t.resource],
            cause_revision=t.cause_revision,
            revision=t.revision,
            caused_by=t.caused_by,
            timestamp=timestamp(t.timestamp_ns),  # the line's only timestamp
            source=t.source,
            **lost,
        )


def _names(layout: KeyLayout, kv: KeyValue, transition_id: str) -> bool:
    """Whether the history or trigger record `kv` is one of transition `transition_id`."""
    decoder = decode_record if kv.key.startswith(history_prefix(layout).encode()) else decode
    try:
        found = decoder(layout, kv.key, kv.value, kv.mod_revision)
    except BadInput:
        return False
    return isinstance(found, Transition | Trigger) and found.transition_id == transition_id


# The state keys a transaction of ours wrote, each with its work key and the state it wrote
# (None: deleted).
_Wrote = dict[bytes, tuple[WorkKey, str | None]]


def _other(wrote: _Wrote | None, key: bytes, value: bytes | None) -> bool:
    """Whether a transaction that `wrote` those keys (None: none of ours at that revision)
    did not write `key` as `value`."""
    if wrote is None:
        return False
    if key not in wrote:
        return True
    state = wrote[key][1]
    return (None if state is None else state.encode()) != value


def _guard(key: bytes, change: Change) -> Guard:
    """The guard of `change`'s state `key`: its mod revision as the index last saw it, and its
    value when present, so that a transaction sent before etcd was restored or wiped does not
    land on a write the new history holds at that same revision (its transition would record a
    `from` etcd did not hold). A value read as not UTF-8 is known only by its replacement
    characters: its guard is the mod revision alone."""
    value = change.old.value
    if value is None or "\ufffd" in value:
        return Guard(key, change.old.mod_revision)
    return Guard(key, change.old.mod_revision, value.encode())


def _shown(changes: Sequence[Change], keys: Sequence[bytes], result: TxnResult) -> list[StateSeen]:
    """Each changed key as a failed guard's answer shows it: its value and mod revision, or
    None as of the answer's revision (a key found absent is known absent then)."""
    shown: list[StateSeen] = []
    for change, key in zip(changes, keys, strict=True):
        kv = result.current.get(key)
        if kv is None:
            shown.append((change.key, None, result.revision))
        else:
            shown.append((change.key, kv.value.decode("utf-8", "replace"), kv.mod_revision))
    return shown


def _own_write(keys: Sequence[bytes], changes: Sequence[Change], result: TxnResult) -> int | None:
    """The revision at which an earlier attempt of this transaction committed, read back from a
    failed guard's answer: every key holds what it wrote (a deleted key is absent), each put
    newer than its guard and all at one revision. None when anything differs (someone else
    wrote: a real conflict) or nothing was put (a deletion carries no revision to check)."""
    revisions: set[int] = set()
    for key, change in zip(keys, changes, strict=True):
        kv = result.current.get(key)
        if change.new is None:
            if kv is not None:
                return None
            continue
        if (
            kv is None
            or kv.value != change.new.encode()
            or kv.mod_revision <= change.old.mod_revision
        ):
            return None
        revisions.add(kv.mod_revision)
    return revisions.pop() if len(revisions) == 1 else None
