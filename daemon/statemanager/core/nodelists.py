"""Nodes' container lists as the rules see them: each node's current list, whole, or none.

Purely computational. The gRPC service stores a node's list (docs/contract.md, Node lists) as a
*generation*: chunk keys `{own}nodes/{node}/gen/{generation}/{i}` written first, in as many
transactions as they need, then made current by one guarded write of the node's pointer
`{own}nodes/{node}/list` that also deletes every other generation. The rules see a list only
once its pointer names it and every chunk it counts is known, so a list written half-way
(the writer crashed, etcd went away) is never seen: the node's previous list stays current.

A container id may be claimed by several sources: another node's list (a container moved and
the old node has not reported since) and a container key under the containers prefix. One
claim is visible at a time: a node list's over a container key, and among node lists the one
made current last (highest pointer revision). The others are kept aside and take over when the
visible claim goes. Container keys that an earlier version of the service wrote for a node
(they carry the reporting `node`) are superseded by that node's list as soon as it has one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import orjson

from statemanager.core.errors import BadInput
from statemanager.core.index import Index
from statemanager.core.inputs import ContainerInfo, parse_container
from statemanager.core.keys import WorkKey, name_problem
from statemanager.core.records import LATER_FORMAT, format_of

# What became of one node list sent to the service (a metric label).
LIST_RESULTS = ("stored", "invalid", "not_this_node", "conflict", "later_format", "unavailable")

FORMAT = 2  # format 1: one container key per container and an ids record (docs/contract.md)
POINTER = "list"
GENERATIONS = "gen"
LEGACY_RECORD = "containers"  # format 1's ids record: read by the service only, to clean up


class Pointer(NamedTuple):
    """A node's pointer: which generation is its current list, in how many chunks."""

    generation: str
    chunks: int
    containers: int


class NodeKey(NamedTuple):
    """One key under the node-lists prefix: a node's pointer (`chunk` -1) or one chunk."""

    node: str
    generation: str
    chunk: int


def parse_node_key(name: str) -> NodeKey | None:
    """The key's node and role from the part after the node-lists prefix; None for keys that
    are not a pointer or a chunk (format 1's ids record, anything else: not the rules' input)."""
    parts = name.split("/")
    if len(parts) == 2 and parts[1] == POINTER:
        return NodeKey(parts[0], "", -1)
    if len(parts) == 4 and parts[1] == GENERATIONS and parts[3].isdigit():
        return NodeKey(parts[0], parts[2], int(parts[3]))
    return None


def pointer_value(pointer: Pointer) -> bytes:
    """A pointer as stored: JSON with its format version."""
    return orjson.dumps({"format": FORMAT, **pointer._asdict()})


def parse_pointer(raw: bytes) -> Pointer:
    """A stored pointer; BadInput when it is not one this version can read."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadInput("invalid_json", f"node list pointer: {exc.msg}") from None
    version = format_of(doc, FORMAT) if isinstance(doc, dict) else None
    if version is not None and version > FORMAT:
        raise BadInput(LATER_FORMAT, str(version))  # a newer daemon's: left as it is
    if not isinstance(doc, dict) or version != FORMAT:
        raise BadInput("wrong_type", f"not a format-{FORMAT} node list pointer")
    generation = doc.get("generation")
    if not isinstance(generation, str) or name_problem(generation):
        raise BadInput("wrong_type", "node list pointer: generation is not a name")
    return Pointer(generation, _count(doc, "chunks"), _count(doc, "containers"))


def _count(doc: dict[str, object], field: str) -> int:
    value = doc.get(field)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise BadInput("wrong_type", f"node list pointer: {field} is not a count")
    return value


def chunk_line(cid: str, value: bytes) -> bytes:
    """One container of a chunk: its id, a tab, its container info JSON (one line: compact
    JSON escapes every control character, and an id has no whitespace)."""
    return cid.encode() + b"\t" + value


def pack_chunks(lines: Iterable[bytes], most_bytes: int) -> list[bytes]:
    """Lines joined into chunk values of at most `most_bytes` each (a longer line alone)."""
    chunks: list[bytes] = []
    current: list[bytes] = []
    size = 0
    for line in lines:
        if current and size + len(line) + 1 > most_bytes:
            chunks.append(b"\n".join(current))
            current, size = [], 0
        current.append(line)
        size += len(line) + 1
    if current:
        chunks.append(b"\n".join(current))
    return chunks


def parse_chunk(raw: bytes, node: str) -> list[tuple[str, ContainerInfo]]:
    """The containers in one chunk, each marked as `node`'s; BadInput if any line is bad."""
    containers = []
    for line in raw.split(b"\n"):
        cid, tab, value = line.partition(b"\t")
        name = cid.decode("utf-8", "replace")
        problem = name_problem(name) if tab else "no tab after the container id"
        if problem:
            raise BadInput("wrong_type", f"node list chunk line: {problem}")
        info = parse_container(value)
        containers.append((name, info if info.node == node else info._replace(node=node)))
    return containers


class _Current(NamedTuple):
    generation: str
    revision: int
    containers: dict[str, ContainerInfo]


class NodeLists:
    """The node-lists prefix applied to the index: a node's containers are those of its current
    list, whole; claims on one container id are resolved as the module says.

    Invariants: `_owner[c] == n` exactly when the index shows node n's list's claim on c; a
    container key's value is in `_shadowed` exactly when the key exists and is not what the
    index shows for its id; `_claimers[c]` (only for ids claimed by several lists) holds every
    node whose current list has c.
    """

    def __init__(self, index: Index) -> None:
        self._index = index
        self._chunks: dict[str, dict[str, dict[int, bytes]]] = {}  # node → generation → i → raw
        self._pointers: dict[str, tuple[Pointer, int]] = {}  # node → pointer, its revision
        self._current: dict[str, _Current] = {}
        self._owner: dict[str, str] = {}
        self._claimers: dict[str, set[str]] = {}
        self._shadowed: dict[str, ContainerInfo] = {}

    # -- the node-lists prefix ----------------------------------------------------------------

    def apply(self, name: str, value: bytes | None, revision: int) -> set[WorkKey]:
        """Apply a put (value) or delete (None) of the node-lists key named `name` (the part
        after the prefix); BadInput for a pointer that cannot be used (then the caller applies
        the key as deleted)."""
        key = parse_node_key(name)
        if key is None:
            return set()
        if key.chunk >= 0:
            return self._chunk(key, value)
        if value is None:
            self._pointers.pop(key.node, None)
            return self._drop(key.node)
        self._pointers[key.node] = (parse_pointer(value), revision)
        return self._make_current(key.node)

    def _chunk(self, key: NodeKey, value: bytes | None) -> set[WorkKey]:
        generations = self._chunks.setdefault(key.node, {})
        chunks = generations.setdefault(key.generation, {})
        if value is None:
            chunks.pop(key.chunk, None)
            if not chunks:
                del generations[key.generation]
            if not generations:
                del self._chunks[key.node]
            return set()
        chunks[key.chunk] = value
        pointer = self._pointers.get(key.node)
        current = self._current.get(key.node)
        # A chunk of the pointer's generation after the pointer (an outside write, or the
        # pointer seen first): the list is read again.
        if pointer is not None and pointer[0].generation == key.generation and current is not None:
            return self._make_current(key.node)
        return set()

    def _make_current(self, node: str) -> set[WorkKey]:
        pointer, revision = self._pointers[node]
        chunks = self._chunks.get(node, {}).get(pointer.generation, {})
        if sorted(chunks) != list(range(pointer.chunks)):
            raise BadInput(
                "incomplete_list",
                f"node {node}'s list {pointer.generation} has {len(chunks)} of its "
                f"{pointer.chunks} chunks",
            )
        containers: dict[str, ContainerInfo] = {}
        for i in range(pointer.chunks):
            for cid, info in parse_chunk(chunks[i], node):
                if cid in containers:
                    raise BadInput("wrong_type", f"node {node}'s list has {cid} twice")
                containers[cid] = info
        dirty = set() if node in self._current else self._supersede_keys(node)
        old = self._current.get(node)
        self._current[node] = _Current(pointer.generation, revision, containers)
        if old is not None:
            for cid in old.containers.keys() - containers.keys():
                dirty |= self._release(cid, node)
        for cid, info in containers.items():
            dirty |= self._claim(cid, node, info, revision)
        return dirty

    def _drop(self, node: str) -> set[WorkKey]:
        """The node has no list any more: its claims go, its superseded keys come back."""
        old = self._current.pop(node, None)
        if old is None:
            return set()
        dirty: set[WorkKey] = set()
        for cid in old.containers:
            dirty |= self._release(cid, node)
        for cid, info in list(self._shadowed.items()):
            if info.node == node and cid not in self._owner:
                del self._shadowed[cid]
                dirty |= self._index.put_container(cid, info)
        return dirty

    def _supersede_keys(self, node: str) -> set[WorkKey]:
        """Hide the container keys an earlier version stored for `node`, now it has a list."""
        dirty: set[WorkKey] = set()
        for cid in list(self._index.containers_on(node)):
            info = self._index.container(cid)
            if cid not in self._owner and info is not None:
                self._shadowed[cid] = info
                dirty |= self._index.delete_container(cid)
        return dirty

    def _claim(self, cid: str, node: str, info: ContainerInfo, revision: int) -> set[WorkKey]:
        owner = self._owner.get(cid)
        if owner is not None and owner != node:
            self._claimers.setdefault(cid, {owner}).add(node)
            if self._current[owner].revision > revision:
                return set()  # the other node reported it later
        elif owner is None:
            shown = self._index.container(cid)
            if shown is not None:  # a container key's claim: kept aside
                self._shadowed[cid] = shown
        self._owner[cid] = node
        return self._index.put_container(cid, info)

    def _release(self, cid: str, node: str) -> set[WorkKey]:
        claimers = self._claimers.get(cid)
        if claimers is not None:
            claimers.discard(node)
            if len(claimers) <= 1:
                del self._claimers[cid]
        if self._owner.get(cid) != node:
            return set()
        del self._owner[cid]
        others = [n for n in claimers or () if cid in self._current[n].containers]
        if others:
            best = max(others, key=lambda n: self._current[n].revision)
            self._owner[cid] = best
            return self._index.put_container(cid, self._current[best].containers[cid])
        key = self._shadowed.get(cid)
        if key is not None and key.node not in self._current:  # not a listed node's old key
            del self._shadowed[cid]
            return self._index.put_container(cid, key)
        return self._index.delete_container(cid)

    # -- container keys -----------------------------------------------------------------------

    def put_container_key(self, cid: str, info: ContainerInfo) -> set[WorkKey]:
        """A container key's value: shown, unless a node list claims the id or the key is one an
        earlier version stored for a node that now has a list."""
        if cid in self._owner or (info.node is not None and info.node in self._current):
            self._shadowed[cid] = info
            return set() if cid in self._owner else self._index.delete_container(cid)
        self._shadowed.pop(cid, None)
        return self._index.put_container(cid, info)

    def delete_container_key(self, cid: str) -> set[WorkKey]:
        """A container key deleted: whatever it showed goes, a node list's claim stays."""
        if self._shadowed.pop(cid, None) is not None or cid in self._owner:
            return set()
        return self._index.delete_container(cid)

    def nodes(self) -> dict[str, int]:
        """Each node with a current list, and how many containers it lists."""
        return {node: len(current.containers) for node, current in self._current.items()}
