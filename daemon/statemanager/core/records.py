"""Format versions of the records the daemon keeps under `prefixes.own` (docs/contract.md,
Records).

Purely computational. Every record carries its format: a JSON object's `"format"` field, or,
for the records written before formats were numbered, the version its key layout and fields
imply (each reader names that default). A reader reads every format up to the one this daemon
writes; a record in a later one (written by a newer daemon: a downgrade, or a fleet in the
middle of a rolling upgrade) decodes to `LaterFormat`, which its reader leaves as it is:
never delivered, overwritten or deleted, only reported (once per record) and counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

# The `record` label of statemanager_records_unknown_format_total, one per kind of record.
LEADER_KEY, TRIGGER, DEAD_LETTER = "leader_key", "trigger", "dead_letter"
NODE_LIST, HISTORY = "node_list", "history"
RECORDS = (LEADER_KEY, TRIGGER, DEAD_LETTER, NODE_LIST, HISTORY)
# The BadInput kind of a watched record (a node list's pointer) in a later format: its detail is
# the format; the controller reports it as such, not as bad input.
LATER_FORMAT = "later_format"


@dataclass(frozen=True, slots=True)
class LaterFormat:
    """A record in a format newer than this daemon knows: to be left untouched."""

    record: str  # one of RECORDS
    format: int


class LaterFormatReporter(Protocol):
    """Told of each record a newer daemon wrote, every time a reader meets it (it reports each
    once: runtime/records.py)."""

    def report(self, key: bytes, later: LaterFormat) -> None: ...


def format_of(body: dict[str, Any], unnumbered: int) -> int | None:
    """The format a record's JSON object declares, `unnumbered` when it declares none (it was
    written before formats were numbered), or None when its `"format"` is not a positive
    integer (not a record any version wrote)."""
    version = body.get("format", unnumbered)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        return None
    return version
