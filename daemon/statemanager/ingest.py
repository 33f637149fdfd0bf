"""Turns raw etcd keys and values into index updates. Purely computational.

This is where a container event goes first: the key's prefix says what it is, the value is
parsed, and the index says which models and packages it makes dirty. A value that cannot be
used is returned as a `Report` (the caller logs and counts it) and treated as absent, once
per revision: the same bad value seen again at the same revision, as a relist does, is not
reported twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from statemanager.errors import BadInput
from statemanager.index import Index
from statemanager.inputs import (
    check_size,
    parse_container,
    parse_model,
    parse_package,
    parse_scenario,
)
from statemanager.keys import KeyLayout, Kind, Resource, WorkKey, name_problem

UNASSIGNED = "unassigned"
_Put = Callable[[str, Any], set[WorkKey]]


@dataclass(frozen=True, slots=True)
class Report:
    """Something about one key an operator should hear once per revision: a rejected value
    (`kind` one of inputs.BAD_INPUT_KINDS) or a container that belongs to no model
    (`kind` UNASSIGNED; it is counted by a gauge, not as bad input)."""

    key: str
    kind: str
    detail: str
    revision: int

    @property
    def rejected(self) -> bool:
        return self.kind != UNASSIGNED


@dataclass(slots=True)
class Resync:
    """What a relist changed: dirty keys, reports, and keys whose change the watch had missed
    (listed at a revision it claimed to have delivered: a bug signal, logged by the caller)."""

    dirty: set[WorkKey]
    reports: list[Report]
    drifted: list[str]


class Ingest:
    def __init__(self, layout: KeyLayout, index: Index, max_value_bytes: int) -> None:
        self._layout = layout
        self._index = index
        self._max_value_bytes = max_value_bytes
        # Every key currently applied, by prefix kind, with its mod revision: a relist diffs
        # against this to find keys deleted while the daemon was not watching.
        self._known: dict[Kind, dict[bytes, int]] = {k: {} for k in Kind}
        self._rejected: dict[bytes, int] = {}
        # Spec kinds: how to parse a value, and the index's put and delete for it.
        self._specs: dict[
            Kind, tuple[Callable[[bytes, str], Any], _Put, Callable[[str], set[WorkKey]]]
        ] = {
            Kind.PACKAGE_SPEC: (parse_package, index.put_package_spec, index.delete_package_spec),
            Kind.MODEL_SPEC: (parse_model, index.put_model_spec, index.delete_model_spec),
            Kind.SCENARIO_SPEC: (parse_scenario, index.put_scenario, index.delete_scenario),
        }

    def apply(
        self, kind: Kind, key: bytes, value: bytes | None, revision: int
    ) -> tuple[set[WorkKey], list[Report]]:
        """Apply one put (value) or delete (None) seen at `revision`."""
        known = self._known[kind]
        if value is None:
            known.pop(key, None)
            self._rejected.pop(key, None)
        else:
            known[key] = revision
        reports: list[Report] = []
        try:
            dirty = self._apply(kind, key, value, revision)
        except BadInput as exc:
            if self._rejected.get(key) != revision:
                text = key.decode("utf-8", "backslashreplace")
                reports.append(Report(text, exc.kind, exc.detail, revision))
            self._rejected[key] = revision
            try:  # treat the key as absent: forget whatever its previous value said
                dirty = self._apply(kind, key, None, revision)
            except BadInput:
                dirty = set()  # the key itself is unusable, so no value of it was ever applied
        # Reported when a container becomes unassigned (by its own event or a Model spec's),
        # not on every stats-only rewrite of it.
        detail = "no model annotation and no Model spec lists any of its names"
        for cid in self._index.take_became_unassigned():
            reports.append(Report(f"{self._layout.containers}{cid}", UNASSIGNED, detail, revision))
        return dirty, reports

    def resync_all(
        self,
        listing: Mapping[str, Iterable[tuple[bytes, bytes, int]]],
        revision: int,
        delivered: Mapping[str, int] | None = None,
    ) -> Resync:
        """`resync` every prefix of a listing (prefix → (key, value, mod revision) items).

        `delivered` maps a prefix to the newest revision the watch had fully applied for it;
        a listed change at or below that revision is one the watch should have delivered.
        """
        kinds = {prefix: kind for kind, prefix in self._layout.watched().items()}
        total = Resync(set(), [], [])
        for prefix, items in listing.items():
            part = self.resync(kinds[prefix], items, revision, (delivered or {}).get(prefix, 0))
            total.dirty |= part.dirty
            total.reports.extend(part.reports)
            total.drifted.extend(part.drifted)
        return total

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
        result = Resync(set(), [], [])
        seen: set[bytes] = set()
        known = self._known[kind]
        for key, value, mod_revision in items:
            seen.add(key)
            if known.get(key) == mod_revision:
                continue
            if mod_revision <= delivered:
                result.drifted.append(key.decode("utf-8", "backslashreplace"))
            more, reports = self.apply(kind, key, value, mod_revision)
            result.dirty |= more
            result.reports.extend(reports)
        for key in [k for k in known if k not in seen]:
            more, _ = self.apply(kind, key, None, revision)
            result.dirty |= more
        return result

    def _apply(self, kind: Kind, key: bytes, value: bytes | None, revision: int) -> set[WorkKey]:
        try:
            text = key.decode("utf-8")
        except UnicodeDecodeError:
            raise BadInput("invalid_encoding", "key is not UTF-8") from None
        name = self._layout.name_in(kind, text)
        if name is None:
            return set()  # a key under a state prefix that is not a state key: not ours
        if value is not None:
            check_size(value, self._max_value_bytes)
        index = self._index
        if kind is Kind.CONTAINER:
            # The container id never becomes part of a key we write, so any id is acceptable.
            if value is None:
                return index.delete_container(name)
            return index.put_container(name, parse_container(value))
        problem = name_problem(name)
        if problem:
            raise BadInput("bad_name", f"{problem}: {name[:80]!r}")
        if kind in (Kind.MODEL_STATE, Kind.PACKAGE_STATE):
            resource = Resource.MODEL if kind is Kind.MODEL_STATE else Resource.PACKAGE
            state = None if value is None else value.decode("utf-8", "replace")
            return index.observe_written(WorkKey(resource, name), state, revision)
        parse, put, delete = self._specs[kind]
        return delete(name) if value is None else put(name, parse(value, name))
