"""`statemanager triggers list|redeliver|drop`: the operator's view of reconcile triggers.

`list` prints the pending triggers and the dead letters (triggers given up on after refusals,
see reconcile.py). `redeliver` moves a dead letter back to pending: it puts the trigger back,
and the leading daemon, which watches the trigger prefix, sends it again (to every scenario
that targets the package then). `drop` deletes a dead letter. Each change is one transaction
guarded on the dead letter's revision (and, for a redelivery, on no trigger being pending for
the package), so a record that changed since it was read is never overwritten; the operator's
writes are not fenced on leadership, which only protects the daemons' own writes.

Exit codes, as for the other commands: 0 done; 1 a named package has no dead letter, or it
could not be moved (changed meanwhile, or a newer trigger is pending); 2 usage or config;
3 etcd unreachable.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Protocol, TextIO

from statemanager.config import Settings
from statemanager.etcd import Delete, EtcdClient, Fence, Guard, KeyValue, Put, TxnResult
from statemanager.keys import KeyLayout
from statemanager.triggers import (
    DeadLetter,
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
    async def snapshot(
        self, prefixes: Sequence[str], page_size: int = ...
    ) -> tuple[int, dict[str, list[KeyValue]]]: ...

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


async def main(settings: Settings, args: argparse.Namespace) -> int:
    """Run the `triggers` command; etcd errors propagate (the caller exits 3)."""
    if args.action != "list" and bool(args.packages) == bool(args.all):
        print(f"statemanager: triggers {args.action} takes PACKAGE... or --all", file=sys.stderr)
        return EXIT_USAGE
    client = EtcdClient.from_settings(settings.etcd)
    try:
        return await run(client, settings.prefixes.layout, args.action, args.packages, args.all)
    finally:
        await client.close()


async def run(
    client: TriggerAdmin,
    layout: KeyLayout,
    action: str,
    packages: Sequence[str],
    every: bool = False,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    prefixes = [trigger_prefix(layout), dead_letter_prefix(layout)]
    _, listing = await client.snapshot(prefixes)
    letters: dict[str, DeadLetter] = {}
    for key, value, revision in listing[prefixes[1]]:
        letter = decode_dead_letter(layout, key, value, revision)
        if letter is None:
            print(f"warning: {key.decode('utf-8', 'replace')}: not a dead letter", file=err)
        else:
            letters[letter.trigger.package] = letter
    if action == "list":
        return _list(layout, listing[prefixes[0]], letters, set(packages), out, err)
    targets = sorted(letters) if every else list(dict.fromkeys(packages))
    if not targets:
        print("no dead letters", file=out)
    failed = 0
    for package in targets:
        letter = letters.get(package)
        if letter is None:
            print(f"statemanager: no dead letter for package {package!r}", file=err)
            failed += 1
        elif not await _act(client, layout, action, letter, out, err):
            failed += 1
    return EXIT_NOT_DONE if failed else EXIT_OK


def _list(
    layout: KeyLayout,
    pending: Sequence[KeyValue],
    letters: dict[str, DeadLetter],
    only: set[str],
    out: TextIO,
    err: TextIO,
) -> int:
    shown = 0
    for key, value, revision in pending:
        trigger = decode(layout, key, value, revision)
        if trigger is None:
            print(f"warning: {key.decode('utf-8', 'replace')}: not a trigger", file=err)
        elif not only or trigger.package in only:
            shown += 1
            print(
                f"pending      {trigger.package}  revision {trigger.revision}"
                f"  transition {trigger.transition_id}",
                file=out,
            )
    for package in sorted(letters):
        if only and package not in only:
            continue
        shown += 1
        letter = letters[package]
        when = datetime.fromtimestamp(letter.dead_lettered_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        acknowledged = ", ".join(letter.acknowledged) or "none"
        print(
            f"dead-letter  {package}  revision {letter.trigger.revision}"
            f"  transition {letter.trigger.transition_id}  given up {when}"
            f" after {letter.refusals} refusals; last by scenario {letter.scenario}:"
            f" {letter.error}  (acknowledged: {acknowledged})",
            file=out,
        )
    if not shown:
        print("no pending triggers or dead letters", file=out)
    return EXIT_OK


async def _act(
    client: TriggerAdmin,
    layout: KeyLayout,
    action: str,
    letter: DeadLetter,
    out: TextIO,
    err: TextIO,
) -> bool:
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
        print(f"{package}: {done} at revision {result.revision}", file=out)
        return True
    if action == "redeliver" and result.current.get(trigger_key(layout, package)) is not None:
        print(
            f"statemanager: a newer trigger for package {package!r} is pending already; "
            "drop this dead letter instead",
            file=err,
        )
    else:
        print(f"statemanager: the dead letter of {package!r} changed meanwhile", file=err)
    return False
