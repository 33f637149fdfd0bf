"""Turns dirty work keys into the state writes that make etcd agree with the rules.

Purely computational: no I/O, and it changes nothing it is given. A write group is a connected
set of changes: a model whose state changes pulls in every package that lists it, and each such
package pulls in its other models so their written states are brought up to date in the same
transaction. After a group commits, every package state in etcd equals the rules applied to the
model states written with it (docs/contract.md, Writes), whatever order dirty keys were
processed in. A scenario's state key is written by the gRPC service, not here: the planner only
deletes it once its Scenario spec is gone, a group of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Protocol

from statemanager.core.index import Index, Written
from statemanager.core.keys import Resource, WorkKey
from statemanager.core.rules import Verdict
from statemanager.core.states import PackageState


@dataclass(frozen=True, slots=True)
class Change:
    """One state key going from `old` to `new` (None: the key is deleted)."""

    key: WorkKey
    old: Written
    new: str | None
    verdict: Verdict | None
    cause: WorkKey | None  # for a cascaded package: the model change that pulled it in
    # A package whose derived state becomes Error: it records a reconcile trigger, whatever
    # scenarios the index knows now (they are resolved when the trigger is delivered).
    entering_error: bool = False
    # The rules give what this daemon last wrote here; someone else changed the key since.
    correction: bool = False


class PreviousView(Protocol):
    """What the planner reads of the previous derived states (core/previous.py)."""

    def previous(self, key: WorkKey) -> str | None:
        """The state this daemon last derived for `key`; None when none is known."""
        ...


class _NoPrevious:
    """No previous derived state known: each key's is taken to be the value in etcd."""

    def previous(self, key: WorkKey) -> str | None:
        return None


_NO_PREVIOUS = _NoPrevious()


@dataclass(frozen=True, slots=True)
class Plan:
    """Plan is the write groups that make etcd agree with the rules for some dirty keys, and
    the keys it found agreeing already."""

    groups: list[list[Change]]
    # Per key found holding what the rules give (None: absent, as they say): its previous
    # derived state from now on (PreviousStates.agreed), whoever wrote it: the rules may have
    # moved to what someone else wrote (a later change away from it is a transition again), or
    # our own write committed though its answer was lost.
    agreed: dict[WorkKey, str | None]


def plan(index: Index, dirty: Iterable[WorkKey], previous: PreviousView = _NO_PREVIOUS) -> Plan:
    """Plan the writes for `dirty`; each group lists model changes before package changes.

    `previous` gives each key's previous derived state: a key whose rules still give it but
    which holds something else was changed by someone else, and putting it back is a
    correction, not a transition. Without one the previous derived state is the value in etcd.
    """
    dirty = list(dirty)
    visited: set[WorkKey] = set()
    agreed: dict[WorkKey, str | None] = {}
    groups = [[c] for c in _orphaned_scenario_states(index, dirty)]
    for start in dirty:
        if start in visited or start.resource is Resource.SCENARIO:
            continue
        visited.add(start)
        group = _group(index, start, previous, visited, agreed)
        if group:
            groups.append(group)
    return Plan(groups, agreed)


def _group(
    index: Index,
    start: WorkKey,
    previous: PreviousView,
    visited: set[WorkKey],
    agreed: dict[WorkKey, str | None],
) -> list[Change]:
    """The changes of the write group `start` reaches, keys in `visited` left out (and added);
    each key found agreeing goes to `agreed`."""
    models: list[Change] = []
    packages: list[Change] = []
    frontier: list[tuple[WorkKey, WorkKey | None]] = [(start, None)]
    while frontier:
        key, cause = frontier.pop()
        change, cascades = _evaluate(index, key, cause, previous, agreed)
        if change is not None:
            (models if key.resource is Resource.MODEL else packages).append(change)
        if not cascades:
            continue
        if key.resource is Resource.MODEL:
            next_keys = [WorkKey(Resource.PACKAGE, p) for p in index.packages_of(key.name)]
        else:
            next_keys = [WorkKey(Resource.MODEL, m) for m in index.models_of(key.name)]
        for nxt in next_keys:
            if nxt not in visited:
                visited.add(nxt)
                frontier.append((nxt, key if key.resource is Resource.MODEL else None))
    return models + [_with_cause(index, c, models) for c in packages]


def _evaluate(
    index: Index,
    key: WorkKey,
    cause: WorkKey | None,
    previous: PreviousView,
    agreed: dict[WorkKey, str | None],
) -> tuple[Change | None, bool]:
    """`key`'s change (None: etcd agrees with the rules, noted in `agreed`), and whether the
    walk goes on to the keys it derives from or into."""
    verdict = index.verdict(key)
    new = verdict.state if verdict is not None else None
    written = index.written(key)
    before = previous.previous(key)
    if new == written.value:
        agreed[key] = new
        # Unmoved. A model whose derived state moved pulls in its packages even when etcd
        # holds the new state already (someone else wrote it there).
        return None, key.resource is Resource.PACKAGE or before not in (None, new)
    correction = before == new
    if key.resource is Resource.MODEL:
        return Change(key, written, new, verdict, None, correction=correction), True
    entering = new == PackageState.ERROR != (written.value if before is None else before)
    return Change(key, written, new, verdict, cause, entering, correction), True


def _orphaned_scenario_states(index: Index, dirty: Iterable[WorkKey]) -> list[Change]:
    """The deletion of each dirty scenario state key whose spec is gone (docs/contract.md,
    Scenario states). Its value is asserted through the gRPC service, never derived: nothing
    else about it is the planner's business, and it is never put back."""
    changes = []
    for key in dict.fromkeys(k for k in dirty if k.resource is Resource.SCENARIO):
        written = index.written(key)
        if written.value is not None and not index.has_scenario(key.name):
            changes.append(Change(key, written, None, None, None))
    return changes


def _with_cause(index: Index, change: Change, models: list[Change]) -> Change:
    """Name a changed model of the package as its cause when the walk reached the package
    first (it was dirty itself), so the answer never depends on the order keys were queued."""
    if change.cause is not None:
        return change
    listed = set(index.models_of(change.key.name))
    cause = next((m.key for m in models if m.key.name in listed), None)
    return replace(change, cause=cause) if cause is not None else change


def pack(
    groups: Iterable[list[Change]],
    max_ops: int,
    max_bytes: int,
    cost: Callable[[Change], tuple[int, int]],
) -> list[list[Change]]:
    """Pack whole groups into transactions of at most `max_ops` operations and `max_bytes`
    bytes, `cost` giving each change's (operations, bytes), its trigger record included.

    A group larger than the limits is split, models first, so a reader may briefly see new
    model states before the package state they lead to; never the other way round.
    """
    batches: list[list[Change]] = []
    current: list[Change] = []
    ops = size = 0
    for group in groups:
        costs = [cost(c) for c in group]
        group_ops, group_size = sum(c[0] for c in costs), sum(c[1] for c in costs)
        if current and (ops + group_ops > max_ops or size + group_size > max_bytes):
            batches.append(current)
            current, ops, size = [], 0, 0
        for change, (change_ops, change_size) in zip(group, costs, strict=True):
            if current and (ops + change_ops > max_ops or size + change_size > max_bytes):
                batches.append(current)
                current, ops, size = [], 0, 0
            current.append(change)
            ops += change_ops
            size += change_size
    if current:
        batches.append(current)
    return batches
