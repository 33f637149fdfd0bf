"""Turns dirty work keys into the state writes that make etcd agree with the rules.

Purely computational. A write group is a connected set of changes: a model whose state
changes pulls in every package that lists it, and each such package pulls in its other models
so their written states are brought up to date in the same transaction. After a group commits,
every package state in etcd equals the rules applied to the model states written with it
(SPEC §5), whatever order dirty keys were processed in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from statemanager.index import Index, Written
from statemanager.keys import Resource, WorkKey
from statemanager.rules import Verdict
from statemanager.states import PackageState


@dataclass(frozen=True, slots=True)
class Change:
    """One state key going from `old` to `new` (None: the key is deleted)."""

    key: WorkKey
    old: Written
    new: str | None
    verdict: Verdict | None
    cause: WorkKey | None  # for a cascaded package: the model change that pulled it in
    # For a package entering Error: the scenarios to reconcile (SPEC §6), sorted by name.
    scenarios: tuple[str, ...] = ()

    @property
    def ops(self) -> int:
        """Transaction operations this change needs: its state key and its triggers."""
        return 1 + len(self.scenarios)


def plan(index: Index, dirty: Iterable[WorkKey]) -> list[list[Change]]:
    """Write groups for `dirty`; each group lists model changes before package changes."""
    visited: set[WorkKey] = set()
    groups: list[list[Change]] = []
    for start in dirty:
        if start in visited:
            continue
        visited.add(start)
        models: list[Change] = []
        packages: list[Change] = []
        frontier: list[tuple[WorkKey, WorkKey | None]] = [(start, None)]
        while frontier:
            key, cause = frontier.pop()
            verdict = index.verdict(key)
            new = verdict.state if verdict is not None else None
            written = index.written(key)
            changed = new != written.value
            if key.resource is Resource.MODEL:
                if not changed:
                    continue
                models.append(Change(key, written, new, verdict, None))
                next_keys = [WorkKey(Resource.PACKAGE, p) for p in index.packages_of(key.name)]
            else:
                if changed:
                    entering_error = new == PackageState.ERROR and written.value != new
                    scenarios = tuple(index.scenarios_of(key.name)) if entering_error else ()
                    packages.append(Change(key, written, new, verdict, cause, scenarios))
                next_keys = [WorkKey(Resource.MODEL, m) for m in index.models_of(key.name)]
            for nxt in next_keys:
                if nxt not in visited:
                    visited.add(nxt)
                    frontier.append((nxt, key if key.resource is Resource.MODEL else None))
        if models or packages:
            groups.append(models + [_with_cause(index, c, models) for c in packages])
    return groups


def _with_cause(index: Index, change: Change, models: list[Change]) -> Change:
    """Name a changed model of the package as its cause when the walk reached the package
    first (it was dirty itself), so the answer never depends on the order keys were queued."""
    if change.cause is not None:
        return change
    listed = set(index.models_of(change.key.name))
    cause = next((m.key for m in models if m.key.name in listed), None)
    return replace(change, cause=cause) if cause is not None else change


def pack(groups: Iterable[list[Change]], max_ops: int) -> list[list[Change]]:
    """Pack whole groups into transactions of at most `max_ops` operations (etcd's
    --max-txn-ops), counting each change's triggers.

    A group larger than the limit is split, models first, so a reader may briefly see new model
    states before the package state they lead to; never the other way round.
    """
    batches: list[list[Change]] = []
    current: list[Change] = []
    used = 0
    for group in groups:
        if used + sum(c.ops for c in group) > max_ops and current:
            batches.append(current)
            current, used = [], 0
        for change in group:
            if used + change.ops > max_ops and current:
                batches.append(current)
                current, used = [], 0
            current.append(change)
            used += change.ops
    if current:
        batches.append(current)
    return batches
