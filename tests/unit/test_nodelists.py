"""Nodes' container lists as the rules see them (core/nodelists.py): a list is current whole or
not at all, and one claim on a container id is visible at a time."""

from __future__ import annotations

import json

import pytest

from statemanager.core.errors import BadInput
from statemanager.core.index import Index
from statemanager.core.ingest import Ingest
from statemanager.core.keys import KeyLayout, Kind, Resource, WorkKey
from statemanager.core.nodelists import (
    Pointer,
    chunk_line,
    pack_chunks,
    parse_chunk,
    parse_node_key,
    parse_pointer,
    pointer_value,
)

LAYOUT = KeyLayout()
MODEL = "payment.web"


def info(status: str, node: str | None = None, model: str = MODEL) -> bytes:
    doc: dict[str, object] = {
        "names": [f"{model}_x"],
        "state": {"Status": status},
        "annotation": {"io.pullpiri.annotations.model": model},
    }
    if node is not None:
        doc["node"] = node
    return json.dumps(doc).encode()


class Store:
    """An ingest and its index, fed keys as the watch would."""

    def __init__(self) -> None:
        self.index = Index()
        self.ingest = Ingest(LAYOUT, self.index, 262_144)
        self.revision = 0
        self.reports: list[str] = []

    def put(self, kind: Kind, name: str, value: bytes | None) -> set[WorkKey]:
        self.revision += 1
        key = LAYOUT.key_of(kind, name).encode()
        applied = self.ingest.apply(kind, key, value, self.revision)
        self.reports += [r.kind for r in applied.reports if r.rejected]
        return applied.dirty

    def report(self, node: str, generation: str, containers: dict[str, str]) -> None:
        """A node's list as the service writes it: one chunk per container, then the pointer."""
        for i, (cid, status) in enumerate(containers.items()):
            line = chunk_line(cid, info(status, node))
            self.put(Kind.NODE_LIST, f"{node}/gen/{generation}/{i:06d}", line)
        pointer = pointer_value(Pointer(generation, len(containers), len(containers)))
        self.put(Kind.NODE_LIST, f"{node}/list", pointer)

    def status(self, cid: str) -> str | None:
        found = self.index.container(cid)
        return None if found is None else found.status.value

    def node(self, cid: str) -> str | None:
        found = self.index.container(cid)
        return None if found is None else found.node


def test_chunks_are_not_seen_until_the_pointer_names_them() -> None:
    """Chunks of a generation change nothing; the pointer makes the whole list current."""
    store = Store()
    assert store.put(Kind.NODE_LIST, "a/gen/g1/000000", chunk_line("c1", info("dead"))) == set()
    assert store.status("c1") is None
    dirty = store.put(Kind.NODE_LIST, "a/list", pointer_value(Pointer("g1", 1, 1)))
    assert dirty == {WorkKey(Resource.MODEL, MODEL)}
    assert store.status("c1") == "dead" and store.node("c1") == "a"


def test_a_new_generation_replaces_the_list_whole() -> None:
    """Containers of the old list not in the new one go; the rest take their new values."""
    store = Store()
    store.report("a", "g1", {"c1": "running", "c2": "running"})
    store.report("a", "g2", {"c2": "dead", "c3": "running"})
    assert (store.status("c1"), store.status("c2"), store.status("c3")) == (None, "dead", "running")


def test_an_incomplete_list_is_reported_and_the_node_has_none() -> None:
    """A pointer counting chunks that are not there is bad input: reported, treated as absent."""
    store = Store()
    store.report("a", "g1", {"c1": "running"})
    store.put(Kind.NODE_LIST, "a/list", pointer_value(Pointer("g2", 3, 3)))
    assert store.reports == ["incomplete_list"]
    assert store.status("c1") is None


def test_a_moved_container_shows_the_latest_report_and_falls_back() -> None:
    """Two nodes' lists claim one id: the later report shows; when it drops the id, the
    other node's claim shows again; when that goes too, so does the container."""
    store = Store()
    store.report("a", "g1", {"c1": "dead"})
    store.report("b", "g1", {"c1": "running"})
    assert store.node("c1") == "b"
    store.report("a", "g2", {"c1": "exited"})  # a reports again, later: a's claim shows
    assert (store.node("c1"), store.status("c1")) == ("a", "exited")
    store.report("a", "g3", {})
    assert (store.node("c1"), store.status("c1")) == ("b", "running")
    store.put(Kind.NODE_LIST, "b/list", None)
    assert store.status("c1") is None


def test_a_container_key_hidden_behind_a_list_comes_back() -> None:
    """A container key for an id a node lists is kept aside, and shown when the list drops it;
    deleting the key meanwhile leaves the list's claim alone."""
    store = Store()
    store.put(Kind.CONTAINER, "c1", info("paused"))
    store.report("a", "g1", {"c1": "dead"})
    assert store.status("c1") == "dead"
    store.put(Kind.CONTAINER, "c1", info("exited"))  # still hidden
    assert store.status("c1") == "dead"
    store.report("a", "g2", {})
    assert store.status("c1") == "exited"
    store.report("a", "g3", {"c1": "dead"})
    store.put(Kind.CONTAINER, "c1", None)
    assert store.status("c1") == "dead"


def test_keys_an_earlier_version_stored_for_a_node_are_superseded_by_its_list() -> None:
    """Container keys naming a node hide once that node has a list, and return if it goes."""
    store = Store()
    store.put(Kind.CONTAINER, "old", info("dead", node="a"))
    store.put(Kind.CONTAINER, "mine", info("dead"))
    store.report("a", "g1", {"c1": "running"})
    assert store.status("old") is None and store.status("mine") == "dead"
    store.put(Kind.CONTAINER, "old2", info("dead", node="a"))
    assert store.status("old2") is None
    store.put(Kind.NODE_LIST, "a/list", None)
    assert store.status("old") == "dead" and store.status("c1") is None


def test_a_relist_sees_the_current_list_only() -> None:
    """A listing holding an abandoned generation beside the current one shows the current."""
    store = Store()
    listing = [
        (b"/statemanager/nodes/a/gen/g1/000000", chunk_line("c1", info("running", "a")), 3),
        (b"/statemanager/nodes/a/gen/g2/000000", chunk_line("c1", info("dead", "a")), 4),
        (b"/statemanager/nodes/a/list", pointer_value(Pointer("g1", 1, 1)), 5),
    ]
    store.ingest.resync(Kind.NODE_LIST, listing, 5)
    assert store.status("c1") == "running"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a/list", ("a", "", -1)),
        ("a/gen/g1/000003", ("a", "g1", 3)),
        ("a/containers", None),
        ("a/gen/g1/x", None),
        ("a", None),
    ],
)
def test_node_keys(name: str, expected: tuple[str, str, int] | None) -> None:
    """Pointers and chunks are told apart; format 1's record and anything else are not input."""
    assert parse_node_key(name) == expected


@pytest.mark.parametrize(
    "raw",
    [b"nope", b"[]", b'{"format": 1}', b'{"format": 2, "generation": "a b", "chunks": 1}'],
)
def test_bad_pointers_are_bad_input(raw: bytes) -> None:
    """A pointer this version cannot read is rejected, never guessed."""
    with pytest.raises(BadInput):
        parse_pointer(raw)


def test_chunks_round_trip_and_stay_under_their_size() -> None:
    """Packed lines come back as written, each chunk within the size unless one line is over."""
    lines = [chunk_line(f"c{i}", info("running")) for i in range(50)]
    chunks = pack_chunks(lines, 1_000)
    assert all(len(c) <= 1_000 for c in chunks)
    parsed = [cid for c in chunks for cid, _ in parse_chunk(c, "a")]
    assert parsed == [f"c{i}" for i in range(50)]
    assert len(pack_chunks([b"x" * 2_000], 1_000)) == 1


def test_a_chunk_line_without_an_id_is_bad_input() -> None:
    """Lines must carry an id before a tab."""
    with pytest.raises(BadInput):
        parse_chunk(info("running"), "a")
