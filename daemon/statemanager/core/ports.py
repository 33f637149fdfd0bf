"""The values and Protocols the runtime shares with the etcd adapter: the core's ports.

The runtime speaks to etcd only in these words (a key's value and revision, one change, a watch
response's batch, a guarded transaction and its result, etcd's transaction limits); the adapter
(`adapters/etcd.py`) turns them into requests and answers into them. Plain frozen values, no
I/O: the simulator's in-memory etcd speaks them too.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

# etcd's refusals by reason (a metric label). A request refused "never" cannot succeed as sent:
# its sender splits or skips it. "Not now": etcd takes no writes at the moment (a full database,
# too many requests), so its sender backs off and tries again.
REFUSED_NOT_NOW = ("nospace", "too_many_requests")
REFUSED_NEVER = ("too_many_ops", "request_too_large", "response_too_large")
REFUSAL_REASONS = REFUSED_NOT_NOW + REFUSED_NEVER


@dataclass(frozen=True, slots=True)
class TxnLimits:
    """What etcd accepts in one transaction; whoever packs transactions must stay within it.

    `max_ops` is etcd's --max-txn-ops (default 128): it caps the compares and each branch's
    operations separately. `max_bytes` is --max-request-bytes (default 1.5 MiB) on the encoded
    request. Byte costs are upper bounds: a key or value plus `OP_OVERHEAD_BYTES` per operation,
    and `HEADROOM_BYTES` kept for the request's framing and etcd's own header.
    """

    max_ops: int = 128
    max_bytes: int = 1536 * 1024

    # Tags, lengths and a revision of one operation: 11-13 bytes measured for keys up to 300
    # bytes (tests/unit/test_txn_limits.py checks the bound on encoded requests).
    OP_OVERHEAD_BYTES = 24
    HEADROOM_BYTES = 1024

    @property
    def byte_budget(self) -> int:
        return self.max_bytes - self.HEADROOM_BYTES

    def guarded_write_bytes(self, key: bytes, value: bytes | None) -> int:
        """A guarded put or delete: the compare, the operation and the failure branch's read."""
        return 3 * (len(key) + self.OP_OVERHEAD_BYTES) + len(value or b"")

    def put_bytes(self, key: bytes, value: bytes) -> int:
        """An unguarded put."""
        return len(key) + len(value) + self.OP_OVERHEAD_BYTES

    def chunks(
        self, ops: Sequence[Put | Delete], guard_key: bytes | None
    ) -> Iterator[list[Put | Delete]]:
        """Unguarded `ops` in order, cut into transactions within the limits, each also carrying
        one compare on `guard_key` (a guard or a fence) when it is given."""
        fence_ops, fence_bytes = (
            (1, self.guarded_write_bytes(guard_key, None)) if guard_key else (0, 0)
        )
        chunk: list[Put | Delete] = []
        size = 0
        for op in ops:
            cost = self.put_bytes(op.key, op.value if isinstance(op, Put) else b"")
            if chunk and (
                len(chunk) + 1 + fence_ops > self.max_ops
                or size + cost + fence_bytes > self.byte_budget
            ):
                yield chunk
                chunk, size = [], 0
            chunk.append(op)
            size += cost
        if chunk:
            yield chunk


TXN_LIMITS = TxnLimits()


class Candidate(NamedTuple):
    """A key of an election (`statemanager.runtime.election`): who campaigns, and its
    place in line."""

    key: bytes
    value: bytes
    create_revision: int


class KeyValue(NamedTuple):
    """A listed key; a plain tuple so the pure core can take it without importing this module."""

    key: bytes
    value: bytes
    mod_revision: int


@dataclass(frozen=True, slots=True)
class Event:
    """One key change; `value` is None for a deletion. `revision` is the change's revision."""

    key: bytes
    value: bytes | None
    revision: int


@dataclass(frozen=True, slots=True)
class WatchBatch:
    """The events one watch response carried for one prefix.

    etcd never splits one revision's events for a watcher across responses (we do not ask for
    fragments), so after a batch is handled every revision up to `revision` is fully delivered
    for that prefix. A batch without events (prefix None) is a watch's "created" answer or a
    progress notification: a liveness signal, never a resume point, because etcd before
    3.4.26/3.5.8 could send one ahead of undelivered events. Its `revision` is 0, except for an
    answer to the stream-wide progress request, which carries etcd's revision: etcd sends it
    only once every watch on the stream has delivered all events up to that revision, so it
    marks a point where the prefixes agree (a barrier; early, as said, on older etcd).

    `header` is where etcd stood when it sent the response (every response has one, a watch's
    "created" answer included): a revision below one already delivered, or a raft term below
    one already seen, says etcd's history was replaced (a wiped member, a restore from an
    older snapshot).
    """

    prefix: str | None  # None for a progress notification
    events: tuple[Event, ...]
    revision: int
    header: Header
    # Events of keys under none of the watched prefixes that a watch of several prefixes'
    # common range carried (`EtcdWatches.watch`'s `together`): dropped, and counted here.
    foreign: int = 0


class Header(NamedTuple):
    """Where etcd stood when it answered: its store revision and its raft term. Both only grow
    while the cluster keeps its data; a wipe or a restore starts them again from low values."""

    revision: int
    raft_term: int

    def went_back_from(self, seen: Header) -> bool:
        """Whether this answer cannot be of the history `seen` was: its revision or its raft
        term is below `seen`'s (from a linearizable read, not a lagging member's view)."""
        return self.revision < seen.revision or self.raft_term < seen.raft_term


@dataclass(frozen=True, slots=True)
class Put:
    key: bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class Delete:
    """Delete `key`, or with `range_end` every key in [key, range_end) (etcd's DeleteRange)."""

    key: bytes
    range_end: bytes | None = None


@dataclass(frozen=True, slots=True)
class Guard:
    """The transaction applies only while `key`'s mod revision is `mod_revision` (0: absent)
    and, when `value` is given, its value is `value` (a second compare).

    Within one etcd history a mod revision names one write, so the value adds nothing; after
    a restore or a wipe, the new history can hold another write at that same revision, which
    only the value tells apart (docs/contract.md, Writes)."""

    key: bytes
    mod_revision: int
    value: bytes | None = None


@dataclass(frozen=True, slots=True)
class Fence:
    """The transaction applies only while `key` exists with this create revision: the leader
    key of an election, so a deposed leader's write fails atomically (etcd concurrency's rule)."""

    key: bytes
    create_revision: int


@dataclass(frozen=True, slots=True)
class TxnResult:
    """`succeeded` with the commit revision; otherwise `current` holds every guarded key as
    etcd has it now (value None when absent), read in the same transaction, and `fenced` says
    whether the fence (if any) no longer held."""

    succeeded: bool
    revision: int
    current: Mapping[bytes, KeyValue | None]
    fenced: bool = False


class TxnClient(Protocol):
    """One guarded transaction: what the state writer and the gRPC service write through."""

    async def txn(
        self, guards: Sequence[Guard], ops: Sequence[Put | Delete], fence: Fence | None = None
    ) -> TxnResult: ...


class Newest(Protocol):
    """The greatest keys of several ranges in one round trip: how the newest records of
    resources' histories are found (core/history.py)."""

    async def newest(
        self, ranges: Sequence[tuple[bytes, bytes]], limit: int = 1, keys_only: bool = False
    ) -> list[list[KeyValue]]:
        """Per range [start, end), its `limit` greatest keys (0: all), greatest first, every
        range read at one revision; `keys_only`: values left empty."""
        ...


class Snapshot(NamedTuple):
    """Every listed prefix's keys, all read at `revision`."""

    revision: int
    listing: dict[str, list[KeyValue]]


class Page(NamedTuple):
    """One page of a listing: some of `prefix`'s keys, read at `revision` like every other
    page of the same listing. Every prefix yields at least one page (empty when it has no key)."""

    prefix: str
    revision: int
    items: list[KeyValue]


class Candidates(NamedTuple):
    """An election's candidates by ascending create revision, read at `revision`."""

    revision: int
    found: list[Candidate]


@dataclass(frozen=True, slots=True)
class ReconcileOutcome:
    """`acknowledged` when ActionController answered status 0; `refused` when it answered no
    (a refusal code or a non-zero status). `result` is a metric label: ok, rejected (non-zero
    status), unavailable (a retried code) or error (a refusal code)."""

    acknowledged: bool
    refused: bool
    result: str
    detail: str
