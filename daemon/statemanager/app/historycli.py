"""`statemanager history NAME`: a resource's retained transition history, read from etcd.

Every model, package and scenario state change the daemons wrote is kept as a record beside
the state (docs/contract.md, History); this lists NAME's, oldest first, as text or as one
`statemanager.history/v1` document (docs/cli.md). Without `--type` every type's records of
NAME are listed (a package and a model may share a name). All are read at one revision.

Exit codes, as for the other commands: 0 listed (perhaps none since `--since`); 1 NAME has no
history; 2 usage or config (`--since` not a duration); 3 etcd unreachable.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time

from statemanager.adapters.etcd import EtcdClient
from statemanager.app.config import Settings
from statemanager.core.errors import BadInput
from statemanager.core.history import (
    Transition,
    decode,
    history_prefix,
    history_range,
    parse_history_key,
)
from statemanager.core.index import Index
from statemanager.core.keys import KeyLayout, Resource, WorkKey
from statemanager.core.records import LaterFormat
from statemanager.core.timestamps import timestamp

SCHEMA = "statemanager.history/v1"
TYPES = tuple(r.value for r in Resource)
EXIT_OK, EXIT_NONE, EXIT_USAGE = 0, 1, 2
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")


def add_arguments(sub: argparse.ArgumentParser) -> None:
    """The command's own arguments (the settings flags are cli.py's)."""
    sub.add_argument("name", metavar="NAME", help="the model, package or scenario")
    sub.add_argument("--type", choices=TYPES, help="only this type's history (default: every)")
    sub.add_argument(
        "--since", help="only changes within this long before now: 90s, 15m, 2h, 1d, 1h30m"
    )
    sub.add_argument(
        "--output",
        choices=("text", "json"),
        default="text",
        help="json: one statemanager.history/v1 document (docs/cli.md)",
    )


def duration(text: str) -> float:
    """Seconds of a duration such as `2h` or `1h30m`; ValueError when it is none."""
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        raise ValueError(f"--since {text!r} is not a duration such as 90s, 15m, 2h, 1d or 1h30m")
    return sum(float(n) * _UNITS[u] for n, u in parts)


async def main(settings: Settings, args: argparse.Namespace) -> int:
    """List NAME's records; the exit status."""
    try:
        since = duration(args.since) if args.since else None
    except ValueError as exc:
        print(f"statemanager: {exc}", file=sys.stderr)
        return EXIT_USAGE
    layout = settings.prefixes.layout
    types = [Resource(args.type)] if args.type else list(Resource)
    prefixes = [history_prefix(layout, WorkKey(r, args.name)) for r in types]
    client = EtcdClient.from_settings(settings.etcd)
    try:
        revision, listing = await client.snapshot(prefixes)
    finally:
        await client.close()
    records: list[tuple[int, Transition]] = []
    for kv in (kv for prefix in prefixes for kv in listing[prefix]):
        key = kv.key.decode("utf-8", "replace")
        try:
            found = decode(layout, kv.key, kv.value, kv.mod_revision)
        except BadInput as exc:
            print(f"warning: {key}: {exc.kind}: {exc.detail}", file=sys.stderr)
            continue
        if isinstance(found, LaterFormat):
            print(f"warning: {key}: written in format {found.format}, newer than this reads",
                  file=sys.stderr)  # fmt: skip
            continue
        records.append((parse_history_key(layout, key)[1], found))
    if not records:
        print(f"statemanager: no history of {args.name!r} in etcd", file=sys.stderr)
        return EXIT_NONE
    records.sort(key=lambda r: r[1].revision)
    if since is not None:
        oldest = time.time_ns() - int(since * 1e9)
        records = [r for r in records if r[1].timestamp_ns >= oldest]
    if args.output == "json":
        print(json.dumps(document(args.name, revision, records), indent=2))
    else:
        print("\n".join(render(args.name, revision, records)))
    return EXIT_OK


def document(name: str, revision: int, records: list[tuple[int, Transition]]) -> dict[str, object]:
    """`history --output json` (schema statemanager.history/v1)."""
    return {
        "schema": SCHEMA,
        "revision": revision,
        "name": name,
        "records": [
            {
                "type": t.resource.value,
                "name": t.name,
                "generation": generation,
                "transition_id": t.transition_id,
                "from": t.from_state,
                "to": t.to_state,
                "rule": t.rule,
                "reason": t.reason,
                "timestamp": timestamp(t.timestamp_ns),
                "timestamp_ns": t.timestamp_ns,
                "revision": t.revision,
                "cause_revision": t.cause_revision,
                "caused_by": t.caused_by,
                "source": t.source,
                "node": t.node,
                "correction": t.correction,
            }
            for generation, t in records
        ],
    }


def render(name: str, revision: int, records: list[tuple[int, Transition]]) -> list[str]:
    """One line per record, oldest first, under a line naming what is listed."""
    kinds = sorted({t.resource.value for _, t in records})
    lines = [f"{'/'.join(kinds) or 'history'} {name}: {len(records)} changes (etcd revision "
             f"{revision})"]  # fmt: skip
    for generation, t in records:
        why = ": ".join(x for x in (t.rule, t.reason) if x) or "spec gone"
        line = (
            f"{timestamp(t.timestamp_ns)}  #{generation}  {t.from_state or '(none)'} → "
            f"{t.to_state or '(deleted)'}  {why}  revision {t.revision}"
        )
        line += f"  by {t.node}" if t.node else ""
        line += f"  caused by {t.caused_by}" if t.caused_by else ""
        line += "  (correction: put back after someone else's write)" if t.correction else ""
        lines.append(line)
    return lines


async def changed_at(
    client: EtcdClient, layout: KeyLayout, index: Index, keys: list[WorkKey]
) -> dict[WorkKey, int]:
    """Per key, when (ns) the state etcd holds was written, by its newest history record; a
    key whose newest record wrote something else (someone else changed it since) or that has
    none (written before history, or by someone else) has no entry."""
    changed: dict[WorkKey, int] = {}
    found = await client.newest([history_range(layout, key) for key in keys])
    for key, kvs in zip(keys, found, strict=True):
        kv = kvs[0] if kvs else None
        try:
            record = decode(layout, kv.key, kv.value, kv.mod_revision) if kv else None
        except BadInput:
            continue  # someone else's key: `history` reports it
        if isinstance(record, Transition) and record.to_state == index.written(key).value:
            changed[key] = record.timestamp_ns
    return changed
