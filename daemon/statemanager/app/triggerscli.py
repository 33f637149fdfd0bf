"""`statemanager triggers list|redeliver|drop`: the operator's view of reconcile triggers.

`list` prints the pending triggers and the dead letters (triggers given up on after refusals,
see reconcile.py). `redeliver` moves a dead letter back to pending: it puts the trigger back,
and the leading daemon, which watches the trigger prefix, sends it again (to every scenario
that targets the package then). `drop` deletes a dead letter. Each change is one transaction
guarded on the dead letter's revision (and, for a redelivery, on no trigger being pending for
the package), so a record that changed since it was read is never overwritten; the operator's
writes are not fenced on leadership, which only protects the daemons' own writes.
`list --output json` prints one `statemanager.triggers/v1` document (docs/cli.md).

Every format of trigger and dead letter this version knows is listed (core/triggers.py); a
record in a later format, written by a newer statemanager, is listed as a problem naming its
format, and `redeliver` and `drop` leave it as it is (there is no dead letter of this format to
act on).

Exit codes, as for the other commands: 0 done; 1 a named package has no dead letter, or it
could not be moved (changed meanwhile, or a newer trigger is pending); 2 usage or config;
3 etcd unreachable.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from statemanager.adapters.etcd import EtcdClient
from statemanager.app.config import Settings
from statemanager.core.keys import KeyLayout
from statemanager.core.ports import Delete, Fence, Guard, Put, Snapshot, TxnResult
from statemanager.core.records import LaterFormat
from statemanager.core.triggers import (
    DeadLetter,
    Trigger,
    dead_letter_key,
    dead_letter_prefix,
    decode,
    decode_dead_letter,
    encode,
    trigger_key,
    trigger_prefix,
)

ACTIONS = ("list", "redeliver", "drop")
# The codes every command uses (cli.py).
EXIT_OK, EXIT_NOT_DONE, EXIT_USAGE = 0, 1, 2


class TriggerAdmin(Protocol):
    async def snapshot(self, prefixes: Sequence[str], page_size: int = ...) -> Snapshot: ...

    async def txn(
        self, guards: Sequence[Guard], ops: Sequence[Put | Delete], fence: Fence | None = None
    ) -> TxnResult: ...


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        choices=ACTIONS,
        help="list: pending triggers and dead letters; redeliver: move dead letters back to "
        "pending; drop: delete dead letters",
    )
    parser.add_argument(
        "packages", nargs="*", metavar="PACKAGE", help="the packages whose triggers to act on"
    )
    parser.add_argument("--all", action="store_true", help="redeliver or drop every dead letter")
    parser.add_argument(
        "--output",
        choices=("text", "json"),
        default="text",
        help="list only; json: one document in the versioned schema of docs/cli.md",
    )


async def main(settings: Settings, args: argparse.Namespace) -> int:
    """Run the `triggers` command; etcd errors propagate (the caller exits 3)."""
    problem = None
    if args.action != "list" and bool(args.packages) == bool(args.all):
        problem = f"triggers {args.action} takes PACKAGE... or --all"
    elif args.action != "list" and args.output != "text":
        problem = "--output is for triggers list"
    if problem is not None:
        print(f"statemanager: {problem}", file=sys.stderr)
        return EXIT_USAGE
    client = EtcdClient.from_settings(settings.etcd)
    try:
        layout = settings.prefixes.layout
        found = await _read(client, layout)
        if args.action == "list":
            return _list(found, set(args.packages), args.output == "json")
        return await _change(client, layout, args.action, found, args.packages, args.all)
    finally:
        await client.close()


@dataclass(frozen=True, slots=True)
class Found:
    """The trigger and dead-letter prefixes as read at one revision."""

    revision: int
    pending: list[Trigger]
    letters: dict[str, DeadLetter]  # by package
    problems: list[tuple[str, str]]  # (key, what is wrong) for records we did not write


async def _read(client: TriggerAdmin, layout: KeyLayout) -> Found:
    prefixes = [trigger_prefix(layout), dead_letter_prefix(layout)]
    revision, listing = await client.snapshot(prefixes)
    found = Found(revision, [], {}, [])
    for key, value, mod_revision in listing[prefixes[0]]:
        trigger = decode(layout, key, value, mod_revision)
        if isinstance(trigger, Trigger):
            found.pending.append(trigger)
        else:
            found.problems.append(_problem(key, trigger, "not a trigger"))
    for key, value, mod_revision in listing[prefixes[1]]:
        letter = decode_dead_letter(layout, key, value, mod_revision)
        if isinstance(letter, DeadLetter):
            found.letters[letter.trigger.package] = letter
        else:
            found.problems.append(_problem(key, letter, "not a dead letter"))
    return found


def _problem(key: bytes, later: LaterFormat | None, otherwise: str) -> tuple[str, str]:
    """The listing's line for a record it cannot show: one in a later format, or none we wrote."""
    if later is None:
        return key.decode("utf-8", "replace"), otherwise
    detail = f"format {later.format}, newer than this statemanager reads; left as it is"
    return key.decode("utf-8", "replace"), detail


async def _change(
    client: TriggerAdmin,
    layout: KeyLayout,
    action: str,
    found: Found,
    packages: Sequence[str],
    every: bool,
) -> int:
    targets = sorted(found.letters) if every else list(dict.fromkeys(packages))
    if not targets:
        print("no dead letters")
    failed = 0
    for package in targets:
        letter = found.letters.get(package)
        if letter is None:
            print(f"statemanager: no dead letter for package {package!r}", file=sys.stderr)
            failed += 1
        elif not await _act(client, layout, action, letter):
            failed += 1
    return EXIT_NOT_DONE if failed else EXIT_OK


def _list(found: Found, only: set[str], as_json: bool) -> int:
    pending = [t for t in found.pending if not only or t.package in only]
    letters = [found.letters[p] for p in sorted(found.letters) if not only or p in only]
    if as_json:
        print(json.dumps(_document(found, pending, letters), indent=2))
        return EXIT_OK
    for key, what in found.problems:
        print(f"warning: {key}: {what}", file=sys.stderr)
    for trigger in pending:
        only_for = "" if trigger.scenario is None else f"  for scenario {trigger.scenario}"
        print(
            f"pending      {trigger.package}  revision {trigger.revision}"
            f"  transition {trigger.transition_id}{only_for}"
        )
    for letter in letters:
        acknowledged = ", ".join(letter.acknowledged) or "none"
        print(
            f"dead-letter  {letter.trigger.package}  revision {letter.trigger.revision}"
            f"  transition {letter.trigger.transition_id}"
            f"  given up {_utc(letter.dead_lettered_at)} after {letter.refusals} refusals;"
            f" last by scenario {letter.scenario}: {letter.error}"
            f"  (acknowledged: {acknowledged})"
        )
    if not pending and not letters:
        print("no pending triggers or dead letters")
    return EXIT_OK


def _document(
    found: Found, pending: Sequence[Trigger], letters: Sequence[DeadLetter]
) -> dict[str, object]:
    """The `statemanager.triggers/v1` document (docs/cli.md)."""
    return {
        "schema": "statemanager.triggers/v1",
        "revision": found.revision,
        "pending": [
            {
                "package": t.package,
                "revision": t.revision,
                "transition_id": t.transition_id,
                "scenario": t.scenario,
            }
            for t in pending
        ],
        "dead_letters": [
            {
                "package": d.trigger.package,
                "revision": d.trigger.revision,
                "transition_id": d.trigger.transition_id,
                "scenario": d.scenario,
                "error": d.error,
                "refusals": d.refusals,
                "acknowledged": list(d.acknowledged),
                "dead_lettered_at": _utc(d.dead_lettered_at),
                "record_revision": d.mod_revision,
            }
            for d in letters
        ],
        "problems": [{"key": key, "detail": what} for key, what in found.problems],
    }


def _utc(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _act(client: TriggerAdmin, layout: KeyLayout, action: str, letter: DeadLetter) -> bool:
    package = letter.trigger.package
    dead = dead_letter_key(layout, package)
    guards = [Guard(dead, letter.mod_revision)]
    ops: list[Put | Delete] = [Delete(dead)]
    if action == "redeliver":
        pending = trigger_key(layout, package)
        guards.append(Guard(pending, 0))
        ops.append(Put(pending, encode(letter.trigger)))
    result = await client.txn(guards, ops)
    if result.succeeded:
        done = "redelivered (pending again)" if action == "redeliver" else "dropped"
        print(f"{package}: {done} at revision {result.revision}")
        return True
    if action == "redeliver" and result.current.get(trigger_key(layout, package)) is not None:
        print(
            f"statemanager: a newer trigger for package {package!r} is pending already; "
            "drop this dead letter instead",
            file=sys.stderr,
        )
    else:
        print(f"statemanager: the dead letter of {package!r} changed meanwhile", file=sys.stderr)
    return False
