"""Transitions and their durable history: the record of one committed state change, its key
under the daemon's own prefix, and its encoding (docs/contract.md, Transitions and Records).

Purely computational. A resource's history is the keys `{own}history/{type}/{name}/{generation}`,
the generation zero-padded so that key order is the order of the changes; each value is one
transition's record, written in the transaction that writes the state it records, so its mod
revision is the state write's revision (the record does not carry it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeGuard

import orjson

from statemanager.core.errors import BadInput
from statemanager.core.keys import KeyLayout, Resource, WorkKey, name_problem
from statemanager.core.ports import Delete, Put
from statemanager.core.records import HISTORY, LaterFormat, format_of

SOURCE = "statemanager"
FORMAT = 1
GENERATION_DIGITS = 12  # a million changes a day for over a million years


@dataclass(frozen=True, slots=True)
class Transition:
    """One state change as docs/contract.md, Transitions defines it."""

    transition_id: str
    resource: Resource
    name: str
    from_state: str | None
    to_state: str | None
    rule: str | None
    reason: str | None
    timestamp_ns: int
    cause_revision: int
    revision: int
    caused_by: str | None
    source: str = SOURCE
    node: str | None = None  # the daemon (its ha.node_name) that wrote the record
    # A key someone else changed, put back to the state the rules still give: recorded so the
    # history replays to every state the daemon writes, but no transition (docs/contract.md).
    correction: bool = False


def history_prefix(layout: KeyLayout, key: WorkKey | None = None) -> str:
    """Where every resource's history is kept, or with `key` that resource's own."""
    if key is None:
        return f"{layout.own}history/"
    return f"{layout.own}history/{key.resource}/{key.name}/"


def history_key(layout: KeyLayout, key: WorkKey, generation: int) -> str:
    """The key of `key`'s `generation`-th recorded change."""
    return f"{history_prefix(layout, key)}{generation:0{GENERATION_DIGITS}d}"


def parse_history_key(layout: KeyLayout, key: str) -> tuple[WorkKey, int]:
    """The resource and generation a history key names; BadInput when it is not one."""
    rest = key.removeprefix(history_prefix(layout))
    parts = rest.split("/")
    if rest == key or len(parts) != 3 or parts[0] not in Resource.__members__.values():
        raise BadInput("history_key", f"not a history key: {key!r}")
    resource, name, generation = parts
    problem = name_problem(name)
    if problem is not None or not generation.isdigit() or len(generation) != GENERATION_DIGITS:
        raise BadInput("history_key", f"not a history key: {key!r} ({problem or 'generation'})")
    return WorkKey(Resource(resource), name), int(generation)


def history_range(layout: KeyLayout, key: WorkKey) -> tuple[bytes, bytes]:
    """The key range [start, end) that holds `key`'s history (and nothing else's)."""
    prefix = history_prefix(layout, key).encode()
    return prefix, prefix[:-1] + b"0"  # '0' follows the prefix's closing '/'


def record_ops(
    layout: KeyLayout, key: WorkKey, generation: int, record: bytes, keep: int
) -> list[Put | Delete]:
    """The operations that record `key`'s `generation`-th change and keep only its last `keep`:
    the record's put and, once there are more than `keep`, one range delete of generations
    `generation - 2·keep` to `generation - keep`. The window is bounded so the delete's work is
    (etcd visits every key a range covers, deleted ones too until compaction); it reaches
    `keep` back, so a `keep` lowered to no less than half catches up at once, and the records a
    lower one leaves behind go by age (`history.max_age_seconds`)."""
    ops: list[Put | Delete] = [Put(history_key(layout, key, generation).encode(), record)]
    if generation > keep:
        start = history_key(layout, key, max(0, generation - 2 * keep)).encode()
        ops.append(Delete(start, history_key(layout, key, generation - keep + 1).encode()))
    return ops


def newest_generation(layout: KeyLayout, key: WorkKey, newest: bytes | None) -> int:
    """The generation of `key`'s newest record, given the greatest key of its history range
    (None: no history, 0); BadInput when that key is not one of its records."""
    if newest is None:
        return 0
    found, generation = parse_history_key(layout, newest.decode("utf-8", "replace"))
    if found != key:
        raise BadInput("history_key", f"not a history key of {key}: {newest!r}")
    return generation


def encode(t: Transition) -> bytes:
    """A transition's history record (its commit revision is the record's mod revision)."""
    return orjson.dumps(
        {
            "format": FORMAT,
            "transition_id": t.transition_id,
            "from": t.from_state,
            "to": t.to_state,
            "rule": t.rule,
            "reason": t.reason,
            "timestamp_ns": t.timestamp_ns,
            "cause_revision": t.cause_revision,
            "caused_by": t.caused_by,
            "source": t.source,
            "node": t.node,
            "correction": t.correction,
        }
    )


_TEXT_FIELDS = ("from", "to", "rule", "reason", "caused_by")


def decode(
    layout: KeyLayout, key: bytes, value: bytes, mod_revision: int
) -> Transition | LaterFormat:
    """The transition a history record holds; BadInput when the key or value is not one this
    daemon or an earlier one wrote (someone else's key under the history prefix)."""
    # No version wrote a key that is not UTF-8: its bad bytes become lone surrogates, which no
    # name may hold, so such a key is refused rather than read as another resource's record.
    work_key, _ = parse_history_key(layout, key.decode("utf-8", "surrogateescape"))
    try:
        body = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise BadInput("history_record", f"{key!r}: not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadInput("history_record", f"{key!r}: not a JSON object")
    version = format_of(body, FORMAT)
    if version is None or "format" not in body:
        raise BadInput("history_record", f"{key!r}: no valid format")
    if version > FORMAT:
        return LaterFormat(HISTORY, version)
    tid, ts, cause, source, node, correction = (
        body.get("transition_id"),
        body.get("timestamp_ns"),
        body.get("cause_revision"),
        body.get("source"),
        body.get("node"),
        body.get("correction", False),
    )
    texts = [body.get(f) for f in _TEXT_FIELDS]
    if (
        not isinstance(tid, str)
        or not isinstance(source, str)
        or not _is_int(ts)
        or not _is_int(cause)
        or any(v is not None and not isinstance(v, str) for v in [*texts, node])
        or not isinstance(correction, bool)
    ):
        raise BadInput("history_record", f"{key!r}: fields missing or of the wrong type")
    from_state, to_state, rule, reason, caused_by = texts
    return Transition(
        tid, work_key.resource, work_key.name, from_state, to_state, rule, reason, ts, cause,
        mod_revision, caused_by, source, node, correction,
    )  # fmt: skip


def _is_int(v: object) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)
