"""Durable reconcile triggers: what is recorded in etcd when a package enters Error.

Purely computational, and the only place that encodes or decodes a trigger record.

Format 2 (written now): one record per entry of a package into Error, at key
`{own}triggers/{package}`, with a JSON object as value:
`{"format": 2, "package": "<name>", "transition_id": "<id of the Error transition>"}`
(readers ignore fields they do not know; records written before formats were numbered have no
`format` field and are format 2 by their key). It is written in the same transaction as the
package's `Error` state, so a crash between the write and the gRPC calls loses nothing. Its mod
revision is the revision of that Error write: with the package name it identifies one entry
into Error, so a duplicate after a crash can be told apart, and a newer entry overwrites the
record (a removal guarded by the older revision then fails and leaves the newer one).

The record names no scenario: the scenarios to reconcile are the ones targeting the package
when the trigger is delivered, sorted by name, read from the index like every other input.
That keeps a record one operation of bounded size (a name is at most 253 characters), so
however many scenarios target a package, recording its trigger can neither push a transaction
over etcd's limits nor split a model's state write from its packages'.

Format 1 (written by the first releases, read still): one record per scenario targeting the
package when it entered Error, at `{own}triggers/{package}/{scenario}`, value
`{"package", "scenario", "transition_id"}`; it is delivered to its one scenario and removed
like a format-2 record.

Dead letters, format 1: a trigger ActionController kept refusing is moved (in one transaction,
fenced like every write) to `{own}deadletters/{package}`, a JSON object with the trigger's
fields, its revision, the refused scenario, ActionController's last answer (at most 1,000
characters), the number of refusals, the scenarios that had acknowledged and the unix time it
was given up: `{"format": 1, "package", "transition_id", "revision", "scenario", "error",
"refusals", "acknowledged", "dead_lettered_at"}` (no `format` field before formats were
numbered). It stays there until an operator redelivers it (puts the trigger back) or drops it
(`statemanager triggers`).

A record in a later format than these decodes to `LaterFormat` (core/records.py).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, TypeGuard

from statemanager.core.keys import KeyLayout, name_problem
from statemanager.core.records import DEAD_LETTER, TRIGGER, LaterFormat, format_of

TRIGGER_FORMAT = 2  # the trigger format this daemon writes (and the newest it reads)
DEAD_LETTER_FORMAT = 1


@dataclass(frozen=True, slots=True)
class Trigger:
    """One entry of `package` into Error, to be delivered to each scenario targeting it (or,
    from a format-1 record, to the one scenario it names)."""

    package: str
    transition_id: str
    revision: int  # of the Error write; 0 until committed
    scenario: str | None = None  # named by a format-1 record only

    def identity(self) -> str:
        if self.scenario is None:
            return f"{self.package}@{self.revision}"
        return f"{self.package}/{self.scenario}@{self.revision}"


def trigger_prefix(layout: KeyLayout) -> str:
    return f"{layout.own}triggers/"


def trigger_key(layout: KeyLayout, package: str) -> bytes:
    """Where the trigger of `package`'s entry into Error is written (format 2)."""
    return f"{trigger_prefix(layout)}{package}".encode()


def record_key(layout: KeyLayout, trigger: Trigger) -> bytes:
    """The key `trigger` was read from: its package's, or for a format-1 record its package's
    and scenario's."""
    if trigger.scenario is None:
        return trigger_key(layout, trigger.package)
    return f"{trigger_prefix(layout)}{trigger.package}/{trigger.scenario}".encode()


def encode(trigger: Trigger) -> bytes:
    """The format-2 record of `trigger` (a scenario it names is not part of it)."""
    body = {"format": TRIGGER_FORMAT, "package": trigger.package}
    return json.dumps({**body, "transition_id": trigger.transition_id}, sort_keys=True).encode()


def decode(
    layout: KeyLayout, key: bytes, value: bytes, mod_revision: int
) -> Trigger | LaterFormat | None:
    """The trigger stored at `key` (format 1 or 2), LaterFormat for a record of a newer
    daemon's, or None when the key or value is not one any version wrote."""
    record = _record(trigger_prefix(layout), key, value)
    if record is None:
        return None
    name, body = record
    package, per_scenario, scenario = name.partition("/")
    version = format_of(body, 1 if per_scenario else 2)
    if version is not None and version > TRIGGER_FORMAT:
        return LaterFormat(TRIGGER, version)
    transition_id = body.get("transition_id")
    if (
        version != (1 if per_scenario else 2)
        or name_problem(package)
        or (per_scenario and name_problem(scenario))
        or not isinstance(transition_id, str)
    ):
        return None
    return Trigger(package, transition_id, mod_revision, scenario or None)


def _record(prefix: str, key: bytes, value: bytes) -> tuple[str, dict[str, Any]] | None:
    """What follows `prefix` in a record's key (not checked: its shape depends on the format)
    and the record's JSON object, or None when the key or value is not one we wrote."""
    raw = prefix.encode()
    if not key.startswith(raw):
        return None
    try:
        name = key[len(raw) :].decode("utf-8")  # no version wrote a key that is not UTF-8
        body = json.loads(value)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    return (name, body) if isinstance(body, dict) else None


MAX_ERROR_CHARS = 1000  # of ActionController's answer kept in a dead letter: bounds its size


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A trigger given up on after refusals, kept for an operator to redeliver or drop."""

    trigger: Trigger  # `revision` is the one it had as a trigger (its Error write's)
    scenario: str  # whose refusal made the sender give up
    error: str  # ActionController's last answer
    refusals: int
    acknowledged: tuple[str, ...]  # scenarios that had answered status 0
    dead_lettered_at: float  # unix time
    mod_revision: int = 0  # of the dead-letter record itself; 0 until written


def dead_letter_prefix(layout: KeyLayout) -> str:
    return f"{layout.own}deadletters/"


def dead_letter_key(layout: KeyLayout, package: str) -> bytes:
    return f"{dead_letter_prefix(layout)}{package}".encode()


def encode_dead_letter(letter: DeadLetter) -> bytes:
    body = {
        "format": DEAD_LETTER_FORMAT,
        "package": letter.trigger.package,
        "transition_id": letter.trigger.transition_id,
        "revision": letter.trigger.revision,
        "scenario": letter.scenario,
        "error": letter.error[:MAX_ERROR_CHARS],
        "refusals": letter.refusals,
        "acknowledged": list(letter.acknowledged),
        "dead_lettered_at": letter.dead_lettered_at,
    }
    return json.dumps(body, sort_keys=True).encode()


def decode_dead_letter(
    layout: KeyLayout, key: bytes, value: bytes, mod_revision: int
) -> DeadLetter | LaterFormat | None:
    """The dead letter stored at `key`, LaterFormat for a record of a newer daemon's, or None
    when the key or value is not one any version wrote."""
    record = _record(dead_letter_prefix(layout), key, value)
    if record is None:
        return None
    package, body = record
    version = format_of(body, 1)
    if version is not None and version > DEAD_LETTER_FORMAT:
        return LaterFormat(DEAD_LETTER, version)
    transition_id, scenario, error = (body.get(f) for f in ("transition_id", "scenario", "error"))
    revision, refusals, at = (body.get(f) for f in ("revision", "refusals", "dead_lettered_at"))
    acknowledged = body.get("acknowledged")
    if not (
        version is not None
        and not name_problem(package)
        and isinstance(transition_id, str)
        and isinstance(scenario, str)
        and isinstance(error, str)
        and _finite_number(revision)
        and _finite_number(refusals)
        and _finite_number(at)
        and isinstance(acknowledged, list)
        and all(isinstance(a, str) for a in acknowledged)
    ):
        return None
    return DeadLetter(
        Trigger(package, transition_id, int(revision)),
        scenario,
        error,
        int(refusals),
        tuple(acknowledged),
        float(at),
        mod_revision,
    )


def _finite_number(value: object) -> TypeGuard[int | float]:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))
