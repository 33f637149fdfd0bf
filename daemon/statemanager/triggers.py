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
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from statemanager.keys import KeyLayout, name_problem


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
    prefix = trigger_prefix(layout).encode()
    if not key.startswith(prefix):
        return None
    package = key[len(prefix) :].decode("utf-8", "replace")
    if name_problem(package):
        return None
    try:
        body = json.loads(value)
        transition_id = body["transition_id"]
    except (ValueError, KeyError, TypeError, RecursionError):
        return None
    if not isinstance(transition_id, str):
        return None
    return Trigger(package, transition_id, mod_revision)
