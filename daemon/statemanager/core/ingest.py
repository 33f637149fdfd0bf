"""Turns raw etcd keys and values into index updates. Purely computational.

This is where a container event goes first: the key's prefix says what it is, the value is
parsed, and the index says which models and packages it makes dirty. A value that cannot be
used is returned as a `Report` (the caller logs and counts it) and treated as absent, once
per revision: the same bad value seen again at the same revision, as a relist does, is not
reported twice. A key whose ingestion raises anything else (a bug, not bad data) is
quarantined the same way, so one key costs that key and never the daemon.
"""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from statemanager.core.errors import BadInput
from statemanager.core.index import Index
from statemanager.core.inputs import (
    check_size,
    parse_container,
    parse_model,
    parse_package,
    parse_scenario,
)
from statemanager.core.keys import KeyLayout, Kind, Resource, WorkKey, name_problem
from statemanager.core.nodelists import NodeLists
from statemanager.core.previous import StateSeen

UNASSIGNED = "unassigned"
INTERNAL_ERROR = "internal_error"
_STATE_RESOURCES = {
    Kind.MODEL_STATE: Resource.MODEL,
    Kind.PACKAGE_STATE: Resource.PACKAGE,
    Kind.SCENARIO_STATE: Resource.SCENARIO,
}
_Put = Callable[[str, Any], set[WorkKey]]


@dataclass(frozen=True, slots=True)
class Report:
    """Something about one key an operator should hear once per revision: a rejected value
    (`kind` one of inputs.BAD_INPUT_KINDS), a key quarantined after an unexpected exception
    (`kind` INTERNAL_ERROR, `detail` the traceback) or a container that belongs to no model
    (`kind` UNASSIGNED; it is counted by a gauge, not as bad input)."""

    key: str
    kind: str
    detail: str
    revision: int

    @property
    def rejected(self) -> bool:
        """Whether the value was refused (anything but a container that belongs to no model)."""
        return self.kind != UNASSIGNED


@dataclass(slots=True)
class Applied:
    """Applied is what applying etcd's keys changed: the work keys made dirty, the reports,
    and each state key's value as applied, in order (the writer's evidence that a write of its
    own whose answer was lost landed: PreviousStates.echoed)."""

    dirty: set[WorkKey] = field(default_factory=set)
    reports: list[Report] = field(default_factory=list)
    states: list[StateSeen] = field(default_factory=list)


@dataclass(slots=True)
class Resync(Applied):
    """Resync is what a relist changed, and the keys whose change the watch had missed
    (listed at a revision it claimed to have delivered: a bug signal, logged by the caller)."""

    drifted: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Relist:
    """A listing being applied page by page (`Ingest.relist`)."""

    delivered: dict[str, int]
    seen: dict[Kind, set[str]] = field(default_factory=dict)  # names listed, per kind
    result: Resync = field(default_factory=Resync)


def _was_utf8(name: str) -> bool:
    """Whether a name read from a key with bad bytes escaped came from valid UTF-8."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class Ingest:
    """Ingest applies etcd's keys and values to the index: each watch event (`apply`), or a
    whole listing (`relist`, `page`, `finish`); what it changed is returned, never sent."""

    def __init__(self, layout: KeyLayout, index: Index, max_value_bytes: int) -> None:
        self._layout = layout
        self._index = index
        self.node_lists = NodeLists(index)
        self._max_value_bytes = max_value_bytes
        # Every key currently applied, by prefix kind, with its mod revision: a relist diffs
        # against this to find keys deleted while the daemon was not watching. Keyed by the
        # name in the key, the very string the index keys by, not by the key's bytes: a
        # second copy of every key would cost ~120 bytes per container.
        self._known: dict[Kind, dict[str, int]] = {k: {} for k in Kind}
        self._rejected: dict[bytes, int] = {}
        self._kinds = {prefix: kind for kind, prefix in layout.watched().items()}
        # Spec kinds: how to parse a value, and the index's put and delete for it.
        self._specs: dict[
            Kind, tuple[Callable[[bytes, str], Any], _Put, Callable[[str], set[WorkKey]]]
        ] = {
            Kind.PACKAGE_SPEC: (parse_package, index.put_package_spec, index.delete_package_spec),
            Kind.MODEL_SPEC: (parse_model, index.put_model_spec, index.delete_model_spec),
            Kind.SCENARIO_SPEC: (parse_scenario, index.put_scenario, index.delete_scenario),
        }

    def apply(self, kind: Kind, key: bytes, value: bytes | None, revision: int) -> Applied:
        """Apply applies one put (value) or delete (None) seen at `revision`, and reports the
        containers it left unassigned."""
        applied = Applied()
        name = self._name(kind, key)
        if name is not None:  # else a key under a state prefix that is not a state key: not ours
            applied.reports += self._apply_or_reject(kind, key, name, value, revision, applied)
        applied.reports += self._unassigned_reports(revision)
        return applied

    def _apply_or_reject(
        self, kind: Kind, key: bytes, name: str, value: bytes | None, revision: int, to: Applied
    ) -> list[Report]:
        """Track `key` as held (or gone) and apply its value into `to`; a value that is bad
        input, or whose ingestion raises, is applied as absent instead, and its report
        returned (once per revision)."""
        known = self._known[kind]
        if value is None:
            known.pop(name, None)
            self._rejected.pop(key, None)
        else:
            known[name] = revision
        try:
            to.dirty |= self._index_value(kind, name, value, revision, to.states)
            return []
        except BadInput as exc:
            rejection, detail = exc.kind, exc.detail
        except Exception:  # a bug, not bad data: it costs this key, never the daemon
            rejection, detail = INTERNAL_ERROR, traceback.format_exc()
        reports = self._reject(key, rejection, detail, revision)
        # Treat the key as absent: forget whatever its previous value said. BadInput here: the
        # key itself is unusable, so no value of it was ever applied; anything else: the same
        # bug again, already reported.
        with contextlib.suppress(Exception):
            to.dirty |= self._index_value(kind, name, None, revision, to.states)
        return reports

    def _reject(self, key: bytes, rejection: str, detail: str, revision: int) -> list[Report]:
        """A report of `key`'s rejection, unless it was already made for this revision."""
        reports: list[Report] = []
        if self._rejected.get(key) != revision:
            text = key.decode("utf-8", "backslashreplace")
            reports.append(Report(text, rejection, detail, revision))
        self._rejected[key] = revision
        return reports

    def _name(self, kind: Kind, key: bytes) -> str | None:
        """The resource name in `key` (None when the key is not one of ours). A key that is not
        UTF-8 gets a name too (its bad bytes escaped as lone surrogates, reversibly), so it is
        known and its deletion seen like any other key's; `_index_value` rejects it."""
        return self._layout.name_in(kind, key.decode("utf-8", "surrogateescape"))

    def _unassigned_reports(self, revision: int) -> list[Report]:
        """Containers that became unassigned (by their own event or a Model spec's) since the
        last look, not every stats-only rewrite of one that already was."""
        detail = "no model annotation and no Model spec lists any of its names"
        return [
            Report(f"{self._layout.containers}{cid}", UNASSIGNED, detail, revision)
            for cid in self._index.take_became_unassigned()
        ]

    def forget_revisions(self) -> None:
        """Forget every revision learnt (etcd's history was replaced): the next resync applies
        every listed key, and the index takes state keys as listed whatever revision it saw."""
        for known in self._known.values():
            for key in known:
                known[key] = 0  # no listed key has mod revision 0: each one is applied again
        self._rejected.clear()
        self._index.forget_revisions()

    def relist(self, delivered: Mapping[str, int] | None = None) -> Relist:
        """Begin applying a full listing taken at one revision, a page at a time (`page`, then
        `finish`): each page's keys are applied as it comes, so the listing never sits whole
        beside the index; keys absent from the whole listing are deleted at the end.

        `delivered` maps a prefix to the newest revision the watch had fully applied for it;
        a listed change at or below that revision is one the watch should have delivered.
        Until `finish`, the index is part old and part new: nothing should plan on it.
        """
        return Relist(dict(delivered or {}))

    def page(
        self, relist: Relist, prefix: str, items: Iterable[tuple[bytes, bytes, int]]
    ) -> list[StateSeen]:
        """Page applies one page of `prefix`'s (key, value, mod revision) items to `relist` and
        returns the state keys it applied: hand them on at once, since a listing that fails
        later leaves them applied, and the next one skips them (same mod revisions)."""
        kind = self._kinds[prefix]
        seen = relist.seen.setdefault(kind, set())
        known = self._known[kind]
        result = relist.result
        applied = Applied()
        delivered = relist.delivered.get(prefix, 0)
        for key, value, mod_revision in items:
            name = self._name(kind, key)
            if name is None:
                continue
            seen.add(name)
            if known.get(name) == mod_revision:
                continue
            if mod_revision <= delivered:
                result.drifted.append(key.decode("utf-8", "backslashreplace"))
            result.reports += self._apply_or_reject(kind, key, name, value, mod_revision, applied)
        result.dirty |= applied.dirty
        return applied.states

    def finish(self, relist: Relist, revision: int) -> Resync:
        """Finish deletes what the listing (taken at `revision`) did not hold and returns what
        the listing changed; its `states` are the state keys those deletions applied (each
        page returned its own).

        Containers left unassigned are judged once the whole listing is applied: one listed
        before the Model spec that names it is not unassigned, whatever order pages came in."""
        result = relist.result
        for kind, seen in relist.seen.items():
            for name in sorted(self._held(kind) - seen):
                key = self._layout.key_of(kind, name).encode("utf-8", "surrogateescape")
                # Only a key's name can be refused when it is deleted: reported with its value.
                self._apply_or_reject(kind, key, name, None, revision, result)
        result.reports.extend(self._unassigned_reports(revision))
        return result

    def resync_all(
        self,
        listing: Mapping[str, Iterable[tuple[bytes, bytes, int]]],
        revision: int,
        delivered: Mapping[str, int] | None = None,
    ) -> Resync:
        """A whole listing (prefix → items) applied at once: `relist`, a page per prefix,
        `finish`; its `states` are every state key applied, pages' and deletions'."""
        relist = self.relist(delivered)
        states = [s for prefix, items in listing.items() for s in self.page(relist, prefix, items)]
        result = self.finish(relist, revision)
        result.states[:0] = states
        return result

    def resync(
        self,
        kind: Kind,
        items: Iterable[tuple[bytes, bytes, int]],
        revision: int,
        delivered: int = 0,
    ) -> Resync:
        """Make the index match a full listing of `kind`'s prefix taken at `revision`.

        Keys absent from the listing are deleted; keys whose mod revision changed are applied.
        """
        prefix = self._layout.watched()[kind]
        return self.resync_all({prefix: items}, revision, {prefix: delivered})

    def _held(self, kind: Kind) -> set[str]:
        """The name of every key of `kind` the index holds a value of: those applied from etcd
        and, for state keys, those the daemon wrote. Its writes reach the index when etcd
        confirms them but reach `_known` only with their watch echo; a relist that diffed
        `_known` alone would never see the deletion of a written key whose echo was lost
        (compacted away)."""
        held = set(self._known[kind])
        resource = _STATE_RESOURCES.get(kind)
        if resource is not None:
            held.update(k.name for k in self._index.written_keys(resource))
        return held

    def _index_value(
        self,
        kind: Kind,
        name: str,
        value: bytes | None,
        revision: int,
        states: list[StateSeen],
    ) -> set[WorkKey]:
        """Parse `value` by `kind` and apply it to the index (None: delete); the work keys it
        makes dirty. A state key's value is also added to `states`. Raises BadInput."""
        if not name.isascii() and not _was_utf8(name):
            raise BadInput("invalid_encoding", "key is not UTF-8")
        if value is not None:
            check_size(value, self._max_value_bytes)
        index = self._index
        if kind is Kind.CONTAINER:
            # The container id never becomes part of a key we write, so any id is acceptable.
            if value is None:
                return self.node_lists.delete_container_key(name)
            return self.node_lists.put_container_key(name, parse_container(value))
        if kind is Kind.NODE_LIST:
            return self.node_lists.apply(name, value, revision)
        problem = name_problem(name)
        if problem:
            raise BadInput("bad_name", f"{problem}: {name[:80]!r}")
        resource = _STATE_RESOURCES.get(kind)
        if resource is not None:
            state = None if value is None else value.decode("utf-8", "replace")
            work_key = WorkKey(resource, name)
            states.append((work_key, state, revision))
            return index.observe_written(work_key, state, revision)
        parse, put, delete = self._specs[kind]
        return delete(name) if value is None else put(name, parse(value, name))
