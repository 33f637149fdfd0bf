"""Stores a node's whole container list so that readers see the old list or the new one, never
a mix (docs/contract.md, Node lists; docs/decisions/node-list-generations.md).

A list is written as a new generation of chunk keys, in as many transactions as etcd's limits
need, each guarded on the node's pointer being unchanged; one guarded transaction then points
the node at the new generation and deletes every other one (two range deletes, however many
chunks they hold). A small list is all of that in one transaction. Nothing here needs
leadership: storing a report derives no state. A writer that stops half-way leaves chunks
nobody points at; the node's next list deletes them.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog

from statemanager.adapters.etcd import prefix_end
from statemanager.core.errors import BadInput, EtcdError
from statemanager.core.inputs import parse_container
from statemanager.core.keys import KeyLayout
from statemanager.core.nodelists import (
    GENERATIONS,
    LEGACY_RECORD,
    POINTER,
    Pointer,
    pack_chunks,
    parse_pointer,
    pointer_value,
)
from statemanager.core.ports import TXN_LIMITS, Delete, Guard, KeyValue, Put, TxnClient
from statemanager.core.records import LATER_FORMAT

log = structlog.get_logger("statemanager.nodereports")

# What became of a node's list, as the service answers it (statemanager_container_lists_total).
ATTEMPTS = 3  # a list written again when a concurrent report of the same node beat it
# The most bytes of container lines in one chunk: several chunks fit one transaction, and a
# chunk is a value the daemon accepts (`inputs.max_value_bytes`, at least this large).
CHUNK_BYTES = 128 * 1024
# Format 1's deletions are guarded one by one: at most this many keys a transaction.
LEGACY_BATCH = 60


class ReportStore(TxnClient, Protocol):
    async def get(self, key: bytes) -> KeyValue | None: ...


class Conflict(Exception):
    """Another report of the same node was made current under every attempt: nothing stored."""


class NewerList(Exception):
    """The node's current list was stored by a newer statemanager (a later format): this one
    leaves it as it is and stores nothing."""


@dataclass(frozen=True, slots=True)
class Stored:
    """A list made current: its generation, chunks, the commit revision, and how many containers
    the node's previous list had (None: it had none in this format)."""

    generation: str
    chunks: int
    revision: int
    previous: int | None


class NodeReports:
    """Writes nodes' lists (`store`) under `layout.node_lists`; any daemon may."""

    def __init__(self, store: ReportStore, layout: KeyLayout, chunk_bytes: int) -> None:
        self._store = store
        self._layout = layout
        self._chunk_bytes = chunk_bytes

    async def store(self, node: str, lines: Sequence[bytes]) -> Stored:
        """Make `lines` (one container each: `nodelists.chunk_line`) node's current list,
        whole; Conflict when a concurrent report of the node won every attempt, NewerList when
        a newer statemanager stored its current one; etcd's errors as they come (then the
        previous list is still current)."""
        chunks = pack_chunks(lines, self._chunk_bytes)
        for _ in range(ATTEMPTS):
            stored = await self._attempt(node, chunks, len(lines))
            if stored is not None:
                await self._drop_legacy(node)
                return stored
        raise Conflict(
            f"node {node}'s list was replaced under each of {ATTEMPTS} attempts (lists of one "
            "node sent concurrently?); this one was not stored"
        )

    async def _attempt(self, node: str, chunks: list[bytes], count: int) -> Stored | None:
        """One try: chunks, then the pointer; None when the pointer moved meanwhile."""
        base = f"{self._layout.node_lists}{node}/"
        pointer_key = f"{base}{POINTER}".encode()
        current = await self._store.get(pointer_key)
        previous = _previous_count(current)
        guard = Guard(pointer_key, current.mod_revision if current else 0)
        generation = secrets.token_hex(8)
        generations = f"{base}{GENERATIONS}/".encode()
        ours = generations + generation.encode() + b"/"
        puts = [Put(ours + b"%06d" % i, chunk) for i, chunk in enumerate(chunks)]
        flip: list[Put | Delete] = [
            Put(pointer_key, pointer_value(Pointer(generation, len(chunks), count))),
            Delete(generations, ours),  # every other generation: those sorting before ours
            Delete(prefix_end(ours), prefix_end(generations)),  # and after
        ]
        batches = list(TXN_LIMITS.chunks([*puts, *flip], pointer_key))
        if len(batches) > 1:  # the chunks first, then the flip alone
            batches = [*TXN_LIMITS.chunks(puts, pointer_key), flip]
        try:
            for ops in batches:
                result = await self._store.txn([guard], ops)
                if not result.succeeded:
                    await self._abandon(ours)
                    return None
        except EtcdError:
            await self._abandon(ours)
            raise
        return Stored(generation, len(chunks), result.revision, previous)

    async def _abandon(self, generation: bytes) -> None:
        """Delete the chunks of a generation that was not made current (best effort: a
        later list of the node deletes whatever is left)."""
        try:
            await self._store.txn([], [Delete(generation, prefix_end(generation))])
        except EtcdError as exc:
            log.info("node_list_cleanup_deferred", generation=generation.decode(), error=str(exc))

    async def _drop_legacy(self, node: str) -> None:
        """Delete the container keys format 1 stored for `node` (each only while it still names
        the node), then its ids record. Best effort: what is left is tried at its next list."""
        record_key = f"{self._layout.node_lists}{node}/{LEGACY_RECORD}".encode()
        try:
            record = await self._store.get(record_key)
            if record is None:
                return
            guards = []
            for cid in record.value.decode("utf-8", "replace").split():
                kv = await self._store.get(f"{self._layout.containers}{cid}".encode())
                if kv is not None and _names_node(kv.value, node):
                    guards.append(Guard(kv.key, kv.mod_revision))
            for start in range(0, len(guards), LEGACY_BATCH):
                batch = guards[start : start + LEGACY_BATCH]
                await self._store.txn(batch, [Delete(g.key) for g in batch])
            await self._store.txn([Guard(record_key, record.mod_revision)], [Delete(record_key)])
        except EtcdError as exc:
            log.info("node_list_cleanup_deferred", node=node, error=str(exc))


def _previous_count(pointer: KeyValue | None) -> int | None:
    """How many containers the node's current list (`pointer`) has: None when it has none
    this daemon can read (it is replaced all the same); NewerList when it is in a format
    later than this daemon's (it is left as it is)."""
    if pointer is None:
        return None
    try:
        return parse_pointer(pointer.value).containers
    except BadInput as exc:
        if exc.kind == LATER_FORMAT:
            raise NewerList(
                f"{pointer.key.decode('utf-8', 'replace')} was stored by a newer statemanager "
                f"(format {exc.detail}); this daemon does not replace it: send the list to one "
                "of the newer version"
            ) from None
        return None


def _names_node(value: bytes, node: str) -> bool:
    try:
        return parse_container(value).node == node
    except BadInput:  # not a value this service wrote
        return False
