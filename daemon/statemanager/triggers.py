"""Durable reconcile triggers: what is recorded in etcd when a package enters Error.

Purely computational. A trigger lives at `{own}triggers/{package}/{scenario}`, written in the
same transaction as the package's `Error` state, so a crash between the write and the gRPC call
loses nothing. Its mod revision is the revision of that Error write: together with the package
and scenario it identifies one delivery, so a duplicate after a crash can be told apart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from statemanager.keys import KeyLayout, name_problem


@dataclass(frozen=True, slots=True)
class Trigger:
    package: str
    scenario: str
    transition_id: str
    revision: int  # of the Error write; 0 until committed

    def identity(self) -> str:
        return f"{self.package}/{self.scenario}@{self.revision}"


def trigger_prefix(layout: KeyLayout) -> str:
    return f"{layout.own}triggers/"


def trigger_key(layout: KeyLayout, package: str, scenario: str) -> bytes:
    return f"{trigger_prefix(layout)}{package}/{scenario}".encode()


def encode(trigger: Trigger) -> bytes:
    body = {"package": trigger.package, "scenario": trigger.scenario}
    return json.dumps({**body, "transition_id": trigger.transition_id}).encode()


def decode(layout: KeyLayout, key: bytes, value: bytes, mod_revision: int) -> Trigger | None:
    """The trigger stored at `key`, or None when the key or value is not one we wrote."""
    prefix = trigger_prefix(layout).encode()
    if not key.startswith(prefix):
        return None
    package, sep, scenario = key[len(prefix) :].decode("utf-8", "replace").partition("/")
    if not sep or name_problem(package) or name_problem(scenario):
        return None
    try:
        body = json.loads(value)
        transition_id = str(body["transition_id"])
    except (ValueError, KeyError, TypeError):
        return None
    return Trigger(package, scenario, transition_id, mod_revision)
