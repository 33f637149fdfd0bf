"""Durable reconcile triggers: what is recorded in etcd when a package enters Error.

Purely computational, and the only place that encodes or decodes a trigger record.

Format: one record per entry of a package into Error, at key `{own}triggers/{package}`, with a
JSON object as value: `{"package": "<name>", "transition_id": "<id of the Error transition>"}`
(readers ignore fields they do not know). It is written in the same transaction as the
package's `Error` state, so a crash between the write and the gRPC calls loses nothing. Its mod
revision is the revision of that Error write: with the package name it identifies one entry
into Error, so a duplicate after a crash can be told apart, and a newer entry overwrites the
record (a removal guarded by the older revision then fails and leaves the newer one).

The record names no scenario: the scenarios to reconcile are the ones targeting the package
when the trigger is delivered, sorted by name, read from the index like every other input.
That keeps a record one operation of bounded size (a name is at most 253 characters), so
however many scenarios target a package, recording its trigger can neither push a transaction
over etcd's limits nor split a model's state write from its packages'.

Dead letters: a trigger ActionController kept refusing is moved (in one transaction, fenced
like every write) to `{own}deadletters/{package}`, a JSON object with the trigger's fields, its
revision, the refused scenario, ActionController's last answer (at most 1,000 characters), the
number of refusals, the scenarios that had acknowledged and the unix time it was given up:
`{"package", "transition_id", "revision", "scenario", "error", "refusals", "acknowledged",
"dead_lettered_at"}`. It stays there until an operator redelivers it (puts the trigger back)
or drops it (`statemanager triggers`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, TypeGuard

from statemanager.core.keys import KeyLayout, name_problem


@dataclass(frozen=True, slots=True)
class Trigger:
    """One entry of `package` into Error, to be delivered to each scenario targeting it."""

    package: str
    transition_id: str
    revision: int  # of the Error write; 0 until committed

    def identity(self) -> str:
        return f"{self.package}@{self.revision}"


def trigger_prefix(layout: KeyLayout) -> str:
    return f"{layout.own}triggers/"


def trigger_key(layout: KeyLayout, package: str) -> bytes:
    return f"{trigger_prefix(layout)}{package}".encode()


def encode(trigger: Trigger) -> bytes:
    return json.dumps(
        {"package": trigger.package, "transition_id": trigger.transition_id}, sort_keys=True
    ).encode()


def decode(layout: KeyLayout, key: bytes, value: bytes, mod_revision: int) -> Trigger | None:
    """The trigger stored at `key`, or None when the key or value is not one we wrote."""
    record = _record(trigger_prefix(layout), key, value)
    if record is None:
        return None
    package, body = record
    transition_id = body.get("transition_id")
    if not isinstance(transition_id, str):
        return None
    return Trigger(package, transition_id, mod_revision)


def _record(prefix: str, key: bytes, value: bytes) -> tuple[str, dict[str, Any]] | None:
    """The package a record under `prefix` is keyed by and its JSON object, or None when the
    key or value is not one we wrote."""
    raw = prefix.encode()
    if not key.startswith(raw):
        return None
    package = key[len(raw) :].decode("utf-8", "replace")
    if name_problem(package):
        return None
    try:
        body = json.loads(value)
    except (ValueError, RecursionError):
        return None
    return (package, body) if isinstance(body, dict) else None


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
) -> DeadLetter | None:
    """The dead letter stored at `key`, or None when the key or value is not one we wrote."""
    record = _record(dead_letter_prefix(layout), key, value)
    if record is None:
        return None
    package, body = record
    transition_id, scenario, error = (body.get(f) for f in ("transition_id", "scenario", "error"))
    revision, refusals, at = (body.get(f) for f in ("revision", "refusals", "dead_lettered_at"))
    acknowledged = body.get("acknowledged")
    if not (
        isinstance(transition_id, str)
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
