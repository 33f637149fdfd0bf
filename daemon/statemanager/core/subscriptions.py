"""What a subscriber to the stream of committed transitions is handed and how it is cut off
(runtime/feed.py fills it; the gRPC service streams it).

Purely computational.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

from statemanager.core.history import Transition
from statemanager.core.keys import Resource

Wanted = Callable[[Transition], bool]

FELL_BEHIND = "fell_behind"  # the subscriber's buffer overflowed
FEED_LOST = "feed_lost"  # the daemon's watch could not go on where it was (etcd compacted)


@dataclass(frozen=True, slots=True)
class Committed:
    """The transitions one etcd revision committed that a subscriber wants: all of them, so
    "everything after revision N" is an exact resume point."""

    revision: int
    transitions: tuple[Transition, ...]


class CutOff(Exception):
    """A subscription ended by the daemon, not the subscriber; every wanted transition up to
    `resume_after` was handed out, so a new one resuming after it misses nothing."""

    def __init__(self, reason: str, resume_after: int, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason  # FELL_BEHIND or FEED_LOST
        self.resume_after = resume_after
        self.detail = detail


def selector(resources: Collection[Resource], names: Collection[str]) -> Wanted:
    """The transitions of `resources` (all types when empty) named one of `names` (any name
    when empty)."""
    types, wanted_names = frozenset(resources), frozenset(names)

    def wanted(t: Transition) -> bool:
        return (not types or t.resource in types) and (not wanted_names or t.name in wanted_names)

    return wanted
