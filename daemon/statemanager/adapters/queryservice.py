"""The queries Pullpiri's StateManager service plans and never built, answered by any daemon,
leader or follower, from its index and etcd (docs/contract.md, Queries).

`GetResourceState` and `GetResourceStateHistory` read a resource's state from the index and its
retained transitions from the history in etcd (core/history.py); `ListResourcesByState`
answers from the index alone; `ForceSynchronization` has the watcher relist now, which queues
every model and package for evaluation (the leader writes what differs); `GetRecoveryStatus`
reads a package's pending reconcile trigger and dead letter from etcd (core/triggers.py);
`SubscribeToStateChanges` streams the transitions etcd commits (runtime/feed.py). Messages and
field numbers are Pullpiri's; the fields with no meaning here stay empty, as documented.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Protocol

import grpc
import structlog

from statemanager.core.errors import BadInput, Compacted, EtcdError, EtcdUnavailable
from statemanager.core.history import Transition, decode, history_prefix, parse_history_key
from statemanager.core.index import Index
from statemanager.core.keys import KeyLayout, Resource, WorkKey, name_problem
from statemanager.core.ports import KeyValue, Snapshot
from statemanager.core.records import LaterFormat
from statemanager.core.subscriptions import FELL_BEHIND, Committed, CutOff, Wanted, selector
from statemanager.core.triggers import (
    DeadLetter,
    Trigger,
    dead_letter_key,
    decode_dead_letter,
    trigger_key,
)
from statemanager.core.triggers import decode as decode_trigger
from statemanager.proto import statemanager_pb2 as pb

log = structlog.get_logger("statemanager.queries")

RECENT = 10  # transitions GetResourceState returns with a state (the newest, oldest first)
RESYNC_WAIT_SECONDS = 30.0  # how long ForceSynchronization waits for the relist it asked for
# SubscribeToStateChanges: the filter's keys, and the metadata telling the client the revision
# a stream delivers after (initial) or may be resumed after (trailing, when it is cut off).
FILTER_NAMES = "resource_name"  # one or more names, separated by spaces (never in a name)
FILTER_AFTER = "after_revision"  # resume: only transitions committed after this revision
REVISION_METADATA = "statemanager-revision"
RESUME_METADATA = "statemanager-resume-after-revision"

_TYPES = {
    Resource.SCENARIO: pb.ResourceType.SCENARIO,
    Resource.PACKAGE: pb.ResourceType.PACKAGE,
    Resource.MODEL: pb.ResourceType.MODEL,
}
RESOURCES: dict[int, Resource] = {number: resource for resource, number in _TYPES.items()}
_NOT_READ = "this daemon has not read etcd yet (it is starting, or etcd is unreachable)"
_TYPES_KEPT = "statemanager keeps model, package and scenario states only"
_SEVERITY = {"Error": pb.SEVERITY_ERROR, "Failed": pb.SEVERITY_ERROR, "Dead": pb.SEVERITY_ERROR}
_SEVERITY |= {"Degraded": pb.SEVERITY_WARNING}


class QueryStore(Protocol):
    """The reads the queries make of etcd: one key, or prefixes at one revision."""

    async def get(self, key: bytes) -> KeyValue | None: ...
    async def snapshot(self, prefixes: Sequence[str], page_size: int = ...) -> Snapshot: ...


class IndexRevision(Protocol):
    @property
    def revision(self) -> int:
        """The newest etcd revision the index has followed etcd to (0 before any listing)."""
        ...


class Subscription(Protocol):
    """One subscriber's transitions (runtime/feed.py's Subscription)."""

    async def ready(self) -> int: ...
    def stream(self) -> AsyncIterator[Committed]: ...
    def close(self) -> None: ...


class Feed(Protocol):
    """Where subscriptions to the committed transitions come from (runtime/feed.py)."""

    def subscribe(self, wanted: Wanted, after: int | None = None) -> Subscription: ...


class QueryService:
    """The six query RPCs (see the module docstring); registered by stateservice.add_to_server."""

    def __init__(
        self,
        *,
        index: Index,
        layout: KeyLayout,
        store: QueryStore,
        progress: IndexRevision,
        feed: Feed,
        resync: Callable[[], Awaitable[int]],
        rested: Callable[[], Awaitable[None]],
    ) -> None:
        """`rested` returns once the daemon's own work leaves time: each message of a stream
        of transitions waits for it, so subscribers take only the time the daemon leaves over
        (one that falls behind so is cut off; it never delays a change)."""
        self._index = index
        self._layout = layout
        self._store = store
        self._progress = progress
        self._feed = feed
        self._resync = resync
        self._rested = rested

    # -- one resource -------------------------------------------------------------------------

    async def GetResourceState(
        self,
        request: pb.ResourceStateRequest,
        context: grpc.aio.ServicerContext[pb.ResourceStateRequest, pb.ResourceStateResponse],
    ) -> pb.ResourceStateResponse:
        """The state etcd holds (as this daemon's index has it), the time and generation of its
        last recorded change and its RECENT latest transitions."""
        found = await self._history(request.resource_type, request.resource_name)
        if isinstance(found, str):
            return pb.ResourceStateResponse(success=False, message=found)
        key, at, history = found
        state = self._state(key, history)
        if not state.current_state and not history:
            return pb.ResourceStateResponse(
                success=False, message=f"no {key.resource} {key.name!r} (no state, no history)"
            )
        del state.history[: max(0, len(state.history) - RECENT)]
        return pb.ResourceStateResponse(
            resource_state=state,
            success=True,
            message=f"state from this daemon's index at etcd revision {self._progress.revision}; "
            f"history read at etcd revision {at}",
        )

    async def GetResourceStateHistory(
        self,
        request: pb.ResourceStateHistoryRequest,
        context: grpc.aio.ServicerContext[
            pb.ResourceStateHistoryRequest, pb.ResourceStateHistoryResponse
        ],
    ) -> pb.ResourceStateHistoryResponse:
        """The retained transitions whose time is within [start_time_ns, end_time_ns] (0: no
        bound), the newest `limit` of them (≤ 0: all), oldest first."""
        found = await self._history(request.resource_type, request.resource_name)
        if isinstance(found, str):
            return pb.ResourceStateHistoryResponse(success=False, message=found)
        key, at, history = found
        end = request.end_time_ns or None
        chosen = [
            t
            for _, t in history
            if t.timestamp_ns >= request.start_time_ns and (end is None or t.timestamp_ns <= end)
        ]
        if request.limit > 0:
            chosen = chosen[-request.limit :]
        return pb.ResourceStateHistoryResponse(
            history=[_entry(t) for t in chosen],
            success=True,
            message=f"{len(chosen)} of the {len(history)} retained transitions of {key}, read "
            f"at etcd revision {at}",
        )

    def _key(self, resource_type: int, name: str) -> WorkKey | str:
        """The resource a request names, or why it names none."""
        resource = RESOURCES.get(resource_type)
        if resource is None:
            return f"resource_type {_type_name(resource_type)}: {_TYPES_KEPT}"
        problem = name_problem(name)
        if problem is not None:
            return f"resource_name: {problem}"
        if not self._progress.revision:
            return _NOT_READ
        return WorkKey(resource, name)

    async def _history(
        self, resource_type: int, name: str
    ) -> tuple[WorkKey, int, list[tuple[int, Transition]]] | str:
        """The resource a request names, its retained transitions by generation, oldest
        first, and the revision they were read at; or why there are none to give. A record
        this daemon cannot read is skipped and logged."""
        key = self._key(resource_type, name)
        if isinstance(key, str):
            return key
        prefix = history_prefix(self._layout, key)
        try:
            snapshot = await self._store.snapshot([prefix])
        except (EtcdUnavailable, EtcdError) as exc:
            return _etcd_problem(exc)
        found = []
        for kv in snapshot.listing.get(prefix, []):
            try:
                _, generation = parse_history_key(self._layout, kv.key.decode("utf-8", "replace"))
                record = decode(self._layout, kv.key, kv.value, kv.mod_revision)
            except BadInput as exc:
                log.warning("history_record_skipped", error=exc.detail, revision=kv.mod_revision)
                continue
            if not isinstance(record, LaterFormat):
                found.append((generation, record))
        return key, snapshot.revision, sorted(found, key=lambda gt: gt[0])

    def _state(
        self, key: WorkKey, history: Sequence[tuple[int, Transition]] = ()
    ) -> pb.ResourceState:
        written = self._index.written(key)
        metadata = {"state_revision": str(written.mod_revision)}
        verdict = None if key.resource is Resource.SCENARIO else self._index.verdict(key)
        if verdict is not None:
            metadata |= {"derived_state": verdict.state, "rule": verdict.rule}
            metadata["reason"] = verdict.reason
        generation, last = history[-1] if history else (0, None)
        return pb.ResourceState(
            resource_type=_TYPES[key.resource],
            resource_name=key.name,
            current_state=written.value or "",
            last_transition_time_ns=last.timestamp_ns if last else 0,
            state_generation=generation,
            metadata=metadata,
            history=[_entry(t) for _, t in history],
        )

    # -- many resources -----------------------------------------------------------------------

    async def ListResourcesByState(
        self,
        request: pb.ListResourcesByStateRequest,
        context: grpc.aio.ServicerContext[
            pb.ListResourcesByStateRequest, pb.ListResourcesByStateResponse
        ],
    ) -> pb.ListResourcesByStateResponse:
        """From the index: the resources of a type (every type when unspecified) whose state
        is `state` (case ignored; empty: any), by type and name, the first `limit` (≤ 0: all);
        `total_count` counts every match."""
        if request.label_selector:
            return pb.ListResourcesByStateResponse(
                success=False,
                message="label_selector: statemanager's models, packages and scenarios carry "
                "no labels, so a selector would match nothing; leave it empty",
            )
        if request.resource_type:
            resource = RESOURCES.get(request.resource_type)
            if resource is None:
                return pb.ListResourcesByStateResponse(
                    success=False,
                    message=f"resource_type {_type_name(request.resource_type)}: {_TYPES_KEPT}",
                )
            resources = [resource]
        else:
            resources = list(Resource)
        revision = self._progress.revision
        if not revision:
            return pb.ListResourcesByStateResponse(
                success=False,
                message=_NOT_READ,
            )
        wanted = request.state.casefold()
        matches = sorted(
            key
            for resource in resources
            for key in self._index.written_keys(resource)
            if not wanted or (self._index.written(key).value or "").casefold() == wanted
        )
        shown = matches[: request.limit] if request.limit > 0 else matches
        return pb.ListResourcesByStateResponse(
            resources=[self._state(key) for key in shown],
            success=True,
            message=f"from this daemon's index at etcd revision {revision}",
            total_count=len(matches),
        )

    # -- operations ---------------------------------------------------------------------------

    async def ForceSynchronization(
        self,
        request: pb.ForceSynchronizationRequest,
        context: grpc.aio.ServicerContext[pb.ForceSynchronizationRequest, pb.StateChangeResponse],
    ) -> pb.StateChangeResponse:
        """Relist etcd now; answered once the listing is in the index (every model and package
        queued for evaluation), or RESOURCE_UNAVAILABLE when it is not within
        RESYNC_WAIT_SECONDS (it goes on). A relist is whole: the type and name select
        nothing."""
        transition_id = f"sync-{time.time_ns()}"
        try:
            async with asyncio.timeout(RESYNC_WAIT_SECONDS):
                revision = await self._resync()
        except TimeoutError:
            log.warning("force_synchronization", result="not_done", waited=RESYNC_WAIT_SECONDS)
            return pb.StateChangeResponse(
                transition_id=transition_id,
                timestamp_ns=time.time_ns(),
                error_code=pb.ErrorCode.RESOURCE_UNAVAILABLE,
                error_details=f"the relist is not done after {RESYNC_WAIT_SECONDS:g} s "
                "(etcd unreachable or slow?); it goes on",
            )
        log.info("force_synchronization", result="relisted", revision=revision)
        return pb.StateChangeResponse(
            message=f"relisted etcd at revision {revision}: every model and package is queued "
            "for evaluation, and the leader writes each state that differs",
            transition_id=transition_id,
            timestamp_ns=time.time_ns(),
            error_code=pb.ErrorCode.SUCCESS,
        )

    async def GetRecoveryStatus(
        self,
        request: pb.RecoveryStatusRequest,
        context: grpc.aio.ServicerContext[pb.RecoveryStatusRequest, pb.RecoveryStatusResponse],
    ) -> pb.RecoveryStatusResponse:
        """A package's reconcile trigger pending (EXECUTING) or given up on (FAILED: a dead
        letter), read from etcd; no phase when it has neither."""
        if request.resource_type not in (pb.ResourceType.RESOURCE_TYPE_UNSPECIFIED, pb.PACKAGE):
            return pb.RecoveryStatusResponse(
                success=False,
                message=f"resource_type {_type_name(request.resource_type)}: only packages "
                "are reconciled (a package entering Error)",
            )
        package = request.resource_name
        problem = name_problem(package)
        if problem is not None:
            return pb.RecoveryStatusResponse(success=False, message=f"resource_name: {problem}")
        try:
            trigger, letter, at = await self._recovery_records(package)
        except (EtcdUnavailable, EtcdError) as exc:
            return pb.RecoveryStatusResponse(success=False, message=_etcd_problem(exc))
        status = (
            self._pending(trigger)
            if trigger is not None
            else _given_up(letter)
            if letter is not None
            else None
        )
        read = f"read at etcd revision {at}"
        if status is None:
            return pb.RecoveryStatusResponse(
                success=True,
                message=f"package {package}: no pending trigger, no dead letter; {read}",
            )
        if request.recovery_id and request.recovery_id != status.recovery_id:
            return pb.RecoveryStatusResponse(
                success=False,
                message=f"package {package}'s recovery is {status.recovery_id}, not "
                f"{request.recovery_id!r}; {read}",
            )
        also = "; a dead letter is kept too" if trigger is not None and letter else ""
        return pb.RecoveryStatusResponse(
            status=status, success=True, message=f"package {package}{also}; {read}"
        )

    async def _recovery_records(
        self, package: str
    ) -> tuple[Trigger | None, DeadLetter | None, int]:
        """The package's pending trigger (format 2, or the first of its format-1 records) and
        dead letter, read at one revision."""
        pending, letters = (
            trigger_key(self._layout, package),
            dead_letter_key(self._layout, package),
        )
        snapshot = await self._store.snapshot([pending.decode(), letters.decode()])
        triggers = [
            decode_trigger(self._layout, kv.key, kv.value, kv.mod_revision)
            for kv in snapshot.listing.get(pending.decode(), [])
        ]
        dead = [
            decode_dead_letter(self._layout, kv.key, kv.value, kv.mod_revision)
            for kv in snapshot.listing.get(letters.decode(), [])
        ]
        trigger = next(
            (t for t in triggers if isinstance(t, Trigger) and t.package == package), None
        )
        letter = next(
            (d for d in dead if isinstance(d, DeadLetter) and d.trigger.package == package), None
        )
        return trigger, letter, snapshot.revision

    def _pending(self, trigger: Trigger) -> pb.RecoveryStatus:
        scenarios = (
            [trigger.scenario] if trigger.scenario else self._index.scenarios_of(trigger.package)
        )
        return pb.RecoveryStatus(
            recovery_id=trigger.identity(),
            phase=pb.RECOVERY_PHASE_EXECUTING,
            status_message=f"Reconcile pending for the Error entry {trigger.transition_id} at "
            f"etcd revision {trigger.revision}: scenarios {', '.join(scenarios) or '(none)'}",
            steps=[
                pb.RecoveryStep(step_name=f"reconcile {s}", status=pb.RECOVERY_STEP_STATUS_PENDING)
                for s in scenarios
            ],
        )

    # -- the stream ---------------------------------------------------------------------------

    async def SubscribeToStateChanges(
        self,
        request: pb.StateChangeSubscriptionRequest,
        context: grpc.aio.ServicerContext[pb.StateChangeSubscriptionRequest, pb.StateChangeEvent],
    ) -> AsyncIterator[bytes]:
        """Every transition committed from now on (or after `filter["after_revision"]`) of the
        requested type and names, as it commits. The initial metadata names the revision the
        stream delivers after; a stream the daemon ends names, in its status message and
        trailing metadata, the revision to resume after."""
        wanted = _subscription(request)
        if isinstance(wanted, str):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, wanted)
            return
        chosen, after = wanted
        subscription = self._feed.subscribe(chosen, after)
        try:
            start = await subscription.ready()
            await context.send_initial_metadata([(REVISION_METADATA, str(start))])
            async for committed in subscription.stream():
                for t in committed.transitions:
                    await self._rested()
                    yield _encoded(t)
        except CutOff as exc:
            resume = str(exc.resume_after)
            context.set_trailing_metadata([(RESUME_METADATA, resume)])
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED
                if exc.reason == FELL_BEHIND
                else grpc.StatusCode.UNAVAILABLE,
                f"{exc.detail}; every transition up to etcd revision {resume} was sent: "
                f'subscribe again with filter {{"{FILTER_AFTER}": "{resume}"}} to resume',
            )
        except Compacted as exc:
            await context.abort(
                grpc.StatusCode.OUT_OF_RANGE,
                f"etcd no longer holds the history after revision {after} ({exc}): subscribe "
                f"without {FILTER_AFTER}, and read what was missed with GetResourceStateHistory",
            )
        finally:
            subscription.close()


def _subscription(request: pb.StateChangeSubscriptionRequest) -> tuple[Wanted, int | None] | str:
    """The transitions a subscription asks for and the revision to resume after, or why the
    request is invalid."""
    resources: list[Resource] = []
    if request.resource_type:
        resource = RESOURCES.get(request.resource_type)
        if resource is None:
            return f"resource_type {_type_name(request.resource_type)}: {_TYPES_KEPT}"
        resources.append(resource)
    unknown = sorted(set(request.filter) - {FILTER_NAMES, FILTER_AFTER})
    if unknown:
        return f"filter keys {unknown}: only {FILTER_NAMES!r} and {FILTER_AFTER!r} are known"
    names = request.filter.get(FILTER_NAMES, "").split()
    bad = next((f"{n!r}: {p}" for n in names if (p := name_problem(n))), None)
    if bad is not None:
        return f"filter {FILTER_NAMES}: {bad}"
    after_text = request.filter.get(FILTER_AFTER)
    if after_text is not None and not (after_text.isdigit() and after_text.isascii()):
        return f"filter {FILTER_AFTER}: {after_text[:40]!r} is not a revision (digits)"
    return selector(resources, names), int(after_text) if after_text is not None else None


def _given_up(letter: DeadLetter) -> pb.RecoveryStatus:
    acknowledged = [
        pb.RecoveryStep(step_name=f"reconcile {s}", status=pb.RECOVERY_STEP_STATUS_COMPLETED)
        for s in letter.acknowledged
    ]
    refused = pb.RecoveryStep(
        step_name=f"reconcile {letter.scenario}",
        status=pb.RECOVERY_STEP_STATUS_FAILED,
        completion_time_ns=int(letter.dead_lettered_at * 1e9),
        message=letter.error,
    )
    return pb.RecoveryStatus(
        recovery_id=letter.trigger.identity(),
        phase=pb.RECOVERY_PHASE_FAILED,
        retry_count=letter.refusals,
        status_message=f"dead letter: ActionController refused scenario {letter.scenario} "
        f"{letter.refusals} times ({letter.error}); `statemanager triggers redeliver "
        f"{letter.trigger.package}` sends it again",
        steps=[*acknowledged, refused],
    )


def _entry(t: Transition) -> pb.StateTransitionHistory:
    return pb.StateTransitionHistory(
        from_state=t.from_state or "",
        to_state=t.to_state or "",
        timestamp_ns=t.timestamp_ns,
        transition_id=t.transition_id,
        reason=f"{t.rule}: {t.reason}" if t.rule and t.reason else t.rule or t.reason or "",
        source=t.source,
        success=True,  # only committed transitions are recorded
    )


@functools.lru_cache(maxsize=4096)
def _encoded(t: Transition) -> bytes:
    """A transition's StateChangeEvent, serialized once however many subscribers it goes to
    (the cache holds the latest few thousand: every subscriber within its buffer)."""
    return _event(t).SerializeToString()


def _event(t: Transition) -> pb.StateChangeEvent:
    change = pb.StateChange(
        resource_type=_TYPES[t.resource],
        resource_name=t.name,
        current_state=t.from_state or "",
        target_state=t.to_state or "",
        transition_id=t.transition_id,
        timestamp_ns=t.timestamp_ns,
        source=t.source,
    )
    metadata: Mapping[str, str] = {
        k: str(v)
        for k, v in {
            "revision": t.revision,
            "rule": t.rule,
            "reason": t.reason,
            "cause_revision": t.cause_revision,
            "caused_by": t.caused_by,
        }.items()
        if v is not None
    }
    arrow = f"{t.from_state or '(none)'} → {t.to_state or '(deleted)'}"
    return pb.StateChangeEvent(
        event_type=pb.EVENT_TYPE_STATE_CHANGE,
        state_change=change,
        event_timestamp_ns=t.timestamp_ns,
        event_id=f"{t.resource}/{t.name}@{t.revision}",
        severity=_SEVERITY.get(t.to_state or "", pb.SEVERITY_INFO),
        description=f"{t.resource} {t.name}: {arrow}"
        + (f" ({t.rule}: {t.reason})" if t.rule else ""),
        metadata=metadata,
    )


def _type_name(number: int) -> str:
    return pb.ResourceType.Name(number) if number in pb.ResourceType.values() else str(number)


def _etcd_problem(exc: Exception) -> str:
    return (
        f"etcd unavailable: {exc}" if isinstance(exc, EtcdUnavailable) else f"etcd refused: {exc}"
    )
