"""Nodes' container lists as the rules see them (core/nodelists.py): a list is current whole or
not at all, and one claim on a container id is visible at a time."""

from __future__ import annotations

import itertools
import json
import random

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


def test_a_listed_nodes_old_key_stays_hidden_when_another_list_lets_the_id_go() -> None:
    """An earlier version's key for node c, for an id node a's list claimed: when a's list
    goes, the key stays hidden while c has a list (it once showed, as the released claim's
    fallback, though c's own list does not have the id)."""
    store = Store()
    store.report("c", "g1", {})
    store.report("a", "g1", {"c2": "exited"})
    store.put(Kind.CONTAINER, "c2", info("dead", node="c"))
    assert (store.status("c2"), store.node("c2")) == ("exited", "a")
    store.put(Kind.NODE_LIST, "a/list", None)
    assert store.status("c2") is None
    store.put(Kind.NODE_LIST, "c/list", None)  # c has no list now: its old key shows
    assert (store.status("c2"), store.node("c2")) == ("dead", "c")


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


GOOD = {"format": 2, "generation": "g1", "chunks": 1, "containers": 3}


@pytest.mark.parametrize(
    ("raw", "kind", "detail"),
    [
        (b"nope", "invalid_json", "node list pointer: invalid literal, expected 'null'"),
        (b"[]", "wrong_type", "not a format-2 node list pointer"),
        (b'{"format": 1}', "wrong_type", "not a format-2 node list pointer"),
        (b'{"format": 3}', "later_format", "3"),
        (b'{"format": "2"}', "wrong_type", "not a format-2 node list pointer"),
        (json.dumps({**GOOD, "generation": "a b"}).encode(), "wrong_type",
         "node list pointer: generation is not a name"),
        (json.dumps({**GOOD, "generation": 7}).encode(), "wrong_type",
         "node list pointer: generation is not a name"),
        (json.dumps({**GOOD, "chunks": -1}).encode(), "wrong_type",
         "node list pointer: chunks is not a count"),
        (json.dumps({**GOOD, "chunks": True}).encode(), "wrong_type",
         "node list pointer: chunks is not a count"),
        (json.dumps({**GOOD, "containers": "3"}).encode(), "wrong_type",
         "node list pointer: containers is not a count"),
    ],
)  # fmt: skip
def test_bad_pointers_are_bad_input(raw: bytes, kind: str, detail: str) -> None:
    """A pointer this version cannot read is rejected, never guessed, with what is wrong."""
    with pytest.raises(BadInput) as caught:
        parse_pointer(raw)
    assert (caught.value.kind, caught.value.detail) == (kind, detail)


def test_a_pointer_round_trips_with_its_format() -> None:
    """A stored pointer is JSON with its format version; zero counts are counts."""
    pointer = Pointer("g1", 0, 0)
    assert json.loads(pointer_value(pointer)) == {
        "format": 2, "generation": "g1", "chunks": 0, "containers": 0,
    }  # fmt: skip
    assert parse_pointer(pointer_value(pointer)) == pointer
    assert parse_pointer(json.dumps(GOOD).encode()) == Pointer("g1", 1, 3)
    unnumbered = {k: v for k, v in GOOD.items() if k != "format"}  # read as this format
    assert parse_pointer(json.dumps(unnumbered).encode()) == Pointer("g1", 1, 3)


def test_chunks_round_trip_and_stay_under_their_size() -> None:
    """Packed lines come back as written, each chunk within the size unless one line is over,
    and as full as the size allows: a chunk and the next chunk's first line would not fit."""
    lines = [chunk_line(f"c{i}", info("running")) for i in range(50)]
    chunks = pack_chunks(lines, 1_000)
    assert all(len(c) <= 1_000 for c in chunks)
    # Each line is counted with its newline, the last one's included.
    assert all(len(a) + len(b.split(b"\n")[0]) + 2 > 1_000 for a, b in itertools.pairwise(chunks))
    assert pack_chunks([b"ab", b"cd", b"ef"], 6) == [b"ab\ncd", b"ef"]
    assert pack_chunks([b"ab", b"cd", b"ef"], 5) == [b"ab", b"cd", b"ef"]
    assert pack_chunks([], 10) == []
    parsed = [cid for c in chunks for cid, _ in parse_chunk(c, "a")]
    assert parsed == [f"c{i}" for i in range(50)]
    assert len(pack_chunks([b"x" * 2_000], 1_000)) == 1


@pytest.mark.parametrize(
    ("line", "detail"),
    [
        (info("running"), "node list chunk line: no tab after the container id"),
        (
            b"a b\t" + info("running"),
            "node list chunk line: name contains whitespace or control characters",
        ),
    ],
)
def test_a_chunk_line_without_an_id_is_bad_input(line: bytes, detail: str) -> None:
    """Lines must carry a valid id before a tab."""
    with pytest.raises(BadInput) as caught:
        parse_chunk(line, "a")
    assert (caught.value.kind, caught.value.detail) == ("wrong_type", detail)


def test_a_chunk_marks_each_container_as_its_nodes() -> None:
    """The node a chunk belongs to is each container's node, whatever its value says; a tab
    inside the value stays in the value."""
    parsed = parse_chunk(chunk_line("c1", info("dead", node="b")) + b"\n" +
                         chunk_line("c2", info("running")), "a")  # fmt: skip
    assert [(cid, i.node, i.status.value) for cid, i in parsed] == [
        ("c1", "a", "dead"), ("c2", "a", "running"),
    ]  # fmt: skip


CIDS = [f"c{i}" for i in range(6)]
NODES = ["a", "b", "c"]
STATUSES = ["running", "dead", "exited", "paused"]


class Lists:
    """What the index should show, from the lists and keys as they stand: a container listed
    by a node's current list shows the claim of the list made current last; else its container
    key, unless the key names a node that now has a list; else nothing."""

    def __init__(self) -> None:
        self.current: dict[str, tuple[int, str, dict[str, str]]] = {}  # revision, gen, cid→status
        self.keys: dict[str, tuple[str, str | None]] = {}  # cid → status, node

    def shown(self, cid: str) -> tuple[str, str | None] | None:
        claims = [(rev, node, ids[cid]) for node, (rev, _, ids) in self.current.items()
                  if cid in ids]  # fmt: skip
        if claims:
            _, node, status = max(claims)
            return status, node
        key = self.keys.get(cid)
        if key is not None and key[1] not in self.current:
            return key
        return None


def _report(
    store: Store, lists: Lists, node: str, ids: dict[str, str], rng: random.Random
) -> set[WorkKey]:
    """A node's list as the service stores it: chunks packed small, the pointer, then the old
    generation's chunks deleted; sometimes a chunk short (the pointer is then bad input)."""
    generation = f"g{store.revision}"
    lines = [chunk_line(cid, info(status, node)) for cid, status in ids.items()]
    chunks = pack_chunks(lines, rng.choice([1, 300, 10_000]))
    short = bool(chunks) and rng.random() < 0.1
    dirty: set[WorkKey] = set()
    for i, chunk in enumerate(chunks[: len(chunks) - short]):
        dirty |= store.put(Kind.NODE_LIST, f"{node}/gen/{generation}/{i:06d}", chunk)
    pointer = pointer_value(Pointer(generation, len(chunks), len(ids)))
    dirty |= store.put(Kind.NODE_LIST, f"{node}/list", pointer)
    old = lists.current.pop(node, None)
    if not short:
        lists.current[node] = (store.revision, generation, dict(ids))
    if old is not None:
        for i in range(len(old[2])):  # at most one chunk per container
            dirty |= store.put(Kind.NODE_LIST, f"{node}/gen/{old[1]}/{i:06d}", None)
    return dirty


@pytest.mark.parametrize("seed", range(6))
def test_lists_and_keys_against_a_model(seed: int) -> None:
    """Random reports (some with a chunk missing), dropped lists and container keys: after
    each, every container shows the claim the module's rules say (Lists.shown), and the model
    is dirty whenever a container of it came, went or changed class."""
    rng = random.Random(seed)
    store, lists = Store(), Lists()
    for step in range(250):
        roll = rng.random()
        before = {cid: store.index.container(cid) for cid in CIDS}
        dirty: set[WorkKey] = set()
        if roll < 0.4:
            node = rng.choice(NODES)
            ids = {c: rng.choice(STATUSES) for c in rng.sample(CIDS, rng.randrange(4))}
            dirty = _report(store, lists, node, ids, rng)
        elif roll < 0.5:
            node = rng.choice(NODES)
            dirty = store.put(Kind.NODE_LIST, f"{node}/list", None)
            lists.current.pop(node, None)
        elif roll < 0.85:
            cid, node = rng.choice(CIDS), rng.choice([None, None, *NODES])
            status = rng.choice(STATUSES)
            dirty = store.put(Kind.CONTAINER, cid, info(status, node))
            lists.keys[cid] = (status, node)
        else:
            cid = rng.choice(CIDS)
            dirty = store.put(Kind.CONTAINER, cid, None)
            lists.keys.pop(cid, None)
        for cid in CIDS:
            found = store.index.container(cid)
            shown = None if found is None else (found.status.value, found.node)
            assert shown == lists.shown(cid), (seed, step, cid)
        seen = {cid: store.index.container(cid) for cid in CIDS}
        if any((i and i.cls) != (before[c] and before[c].cls) for c, i in seen.items()):  # type: ignore[union-attr]
            assert WorkKey(Resource.MODEL, MODEL) in dirty, (seed, step)


def test_a_chunk_rewritten_after_its_pointer_is_read_again() -> None:
    """A chunk of the current generation written after the pointer (an outside write) makes
    the list read again; a chunk of another generation changes nothing."""
    store = Store()
    store.report("a", "g1", {"c1": "running"})
    store.put(Kind.NODE_LIST, "a/gen/g1/000000", chunk_line("c1", info("dead", "a")))
    assert store.status("c1") == "dead"
    store.put(Kind.NODE_LIST, "a/gen/g9/000000", chunk_line("c1", info("exited", "a")))
    assert store.status("c1") == "dead"


def test_the_next_list_is_taken_after_the_current_one_lost_a_chunk() -> None:
    """A current list whose chunk someone deleted stays as it was read; the node's next list
    is written and made current as usual: its chunks are not the current list read again
    (which, incomplete now, would refuse them and leave the next pointer incomplete)."""
    store = Store()
    store.report("a", "g1", {"c1": "running"})
    store.put(Kind.NODE_LIST, "a/gen/g1/000000", None)
    assert store.status("c1") == "running"
    store.report("a", "g2", {"c1": "dead", "c2": "running"})
    assert store.reports == []
    assert (store.status("c1"), store.status("c2")) == ("dead", "running")


def test_deleted_chunks_are_forgotten_one_by_one() -> None:
    """A deleted chunk no longer counts towards its generation; the others still do; deleting
    a chunk or a pointer never seen is nothing."""
    store = Store()
    assert store.put(Kind.NODE_LIST, "z/gen/g1/000000", None) == set()
    assert store.put(Kind.NODE_LIST, "z/list", None) == set()
    for i in range(2):
        store.put(Kind.NODE_LIST, f"a/gen/g1/{i:06d}", chunk_line(f"c{i}", info("running", "a")))
    store.put(Kind.NODE_LIST, "a/gen/g1/000001", None)
    store.put(Kind.NODE_LIST, "a/list", pointer_value(Pointer("g1", 2, 2)))
    assert store.reports == ["incomplete_list"]
    store.put(Kind.NODE_LIST, "a/gen/g1/000001", chunk_line("c1", info("running", "a")))
    store.put(Kind.NODE_LIST, "a/list", pointer_value(Pointer("g1", 2, 2)))
    assert (store.status("c0"), store.status("c1")) == ("running", "running")


def test_chunk_lines_split_at_the_first_tab_and_keep_odd_ids() -> None:
    """The id ends at the first tab (JSON may hold tabs as whitespace); an id that is not
    UTF-8 is read with its bad bytes replaced, not refused."""
    [(cid, found)] = parse_chunk(b'c1\t{"state":\t{"Status": "dead"}}', "a")
    assert (cid, found.status.value) == ("c1", "dead")
    [(odd, _)] = parse_chunk(b"c\xff\t" + info("running"), "a")
    assert odd == "c\ufffd"
    assert pack_chunks([b"ab", b"cd", b"ef", b"gh"], 6) == [b"ab\ncd", b"ef\ngh"]


def test_a_list_that_cannot_be_current_says_why() -> None:
    """A list missing chunks, or naming one id twice, is bad input with the node and what is
    wrong."""
    store = Store()
    with pytest.raises(BadInput) as caught:
        store.ingest.node_lists.apply("a/list", pointer_value(Pointer("g2", 3, 3)), 1)
    assert (caught.value.kind, caught.value.detail) == (
        "incomplete_list", "node a's list g2 has 0 of its 3 chunks",
    )  # fmt: skip
    twice = chunk_line("c1", info("dead")) + b"\n" + chunk_line("c1", info("running"))
    store.ingest.node_lists.apply("a/gen/g1/000000", twice, 2)
    with pytest.raises(BadInput) as caught:
        store.ingest.node_lists.apply("a/list", pointer_value(Pointer("g1", 1, 2)), 3)
    assert (caught.value.kind, caught.value.detail) == ("wrong_type", "node a's list has c1 twice")


def test_superseding_and_restoring_keys_dirty_every_model_touched() -> None:
    """A node's first list hides its old keys and its dropped list restores them: each model
    they and its claims touch is dirty, not only the last one."""
    store = Store()
    store.put(Kind.CONTAINER, "k1", info("running", node="a", model="m1"))
    store.put(Kind.CONTAINER, "k2", info("running", node="a", model="m2"))
    for i, (cid, model_name) in enumerate([("c3", "m3"), ("c4", "m4")]):
        store.put(
            Kind.NODE_LIST, f"a/gen/g1/{i:06d}", chunk_line(cid, info("dead", "a", model_name))
        )
    dirty = store.put(Kind.NODE_LIST, "a/list", pointer_value(Pointer("g1", 2, 2)))
    assert dirty == {WorkKey(Resource.MODEL, m) for m in ("m1", "m2", "m3", "m4")}
    dirty = store.put(Kind.NODE_LIST, "a/list", None)
    assert dirty == {WorkKey(Resource.MODEL, m) for m in ("m1", "m2", "m3", "m4")}
