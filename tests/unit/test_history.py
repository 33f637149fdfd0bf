"""History records: keys in change order, records round-trip, anything else is bad input."""

from __future__ import annotations

import orjson
import pytest

from statemanager.core.errors import BadInput
from statemanager.core.history import (
    Transition,
    decode,
    encode,
    history_key,
    history_prefix,
    history_range,
    newest_generation,
    parse_history_key,
    record_ops,
)
from statemanager.core.keys import KeyLayout, Resource, WorkKey
from statemanager.core.ports import Delete, Put
from statemanager.core.records import HISTORY, LaterFormat

LAYOUT = KeyLayout()
PAY = WorkKey(Resource.PACKAGE, "pay")


def test_keys_sort_in_generation_order_and_parse_back() -> None:
    keys = [history_key(LAYOUT, PAY, g) for g in (1, 9, 10, 100, 12345)]
    assert keys == sorted(keys)
    assert all(k.startswith(history_prefix(LAYOUT, PAY)) for k in keys)
    assert history_prefix(LAYOUT, PAY).startswith(history_prefix(LAYOUT))
    assert [parse_history_key(LAYOUT, k) for k in keys] == [
        (PAY, g) for g in (1, 9, 10, 100, 12345)
    ]


@pytest.mark.parametrize(
    "key",
    [
        "/statemanager/history/package/pay",
        "/statemanager/history/widget/pay/000000000001",
        "/statemanager/history/package/pay/1",
        "/statemanager/history/package/pay/00000000000x",
        "/statemanager/history/package//000000000001",
        "/statemanager/other/package/pay/000000000001",
    ],
)
def test_other_keys_are_bad_input(key: str) -> None:
    with pytest.raises(BadInput):
        parse_history_key(LAYOUT, key)


def test_a_record_round_trips_with_its_revision_from_the_key() -> None:
    t = Transition(
        "abc-1",
        Resource.PACKAGE,
        "pay",
        "Running",
        "Error",
        "r4",
        "a model is dead",
        1_700_000_000_123_456_789,
        41,
        42,
        "abc-0",
    )
    key = history_key(LAYOUT, PAY, 7).encode()
    assert decode(LAYOUT, key, encode(t), 42) == t
    deleted = Transition(
        "abc-2", Resource.PACKAGE, "pay", "Error", None, None, None, 5, 43, 44, None
    )
    assert decode(LAYOUT, key, encode(deleted), 44) == deleted
    put_back = Transition(
        "abc-3", Resource.PACKAGE, "pay", "Running", "Error", "P2", "x", 6, 45, 46, None,
        node="node-a", correction=True,
    )  # fmt: skip
    assert decode(LAYOUT, key, encode(put_back), 46) == put_back


@pytest.mark.parametrize(
    "value",
    [
        b"not json",
        b"[1]",
        b"{}",
        b'{"format": 1}',
        b'{"format": 1, "transition_id": 3}',
        b'{"format": true, "transition_id": "x", "timestamp_ns": 1, "cause_revision": 1, "source": "s"}',
    ],
)
def test_foreign_values_are_bad_input(value: bytes) -> None:
    with pytest.raises(BadInput):
        decode(LAYOUT, history_key(LAYOUT, PAY, 1).encode(), value, 3)


def test_a_later_format_is_left_as_it_is() -> None:
    later = decode(LAYOUT, history_key(LAYOUT, PAY, 1).encode(), b'{"format": 2}', 3)
    assert later == LaterFormat(HISTORY, 2)


def test_a_resource_range_holds_its_records_and_no_other_resources() -> None:
    """A resource's range holds each of its keys and none of a resource whose name extends its
    own (`pay` and `pay2`, `pay.a`)."""
    start, end = history_range(LAYOUT, PAY)
    assert all(start <= history_key(LAYOUT, PAY, g).encode() < end for g in (1, 10**11))
    for other in ("pay2", "pay.a", "pa"):
        key = history_key(LAYOUT, WorkKey(Resource.PACKAGE, other), 1).encode()
        assert not start <= key < end


@pytest.mark.parametrize(
    ("generation", "keep", "deleted"),
    [(1, 100, None), (100, 100, None), (101, 100, (0, 2)), (250, 100, (50, 151)), (7, 3, (1, 5))],
)
def test_a_record_retires_a_bounded_window(
    generation: int, keep: int, deleted: tuple[int, int] | None
) -> None:
    """The record's put, and once past `keep` the range delete of generations g-2·keep to
    g-keep (the range's end excluded)."""
    ops = record_ops(LAYOUT, PAY, generation, b"r", keep)
    assert ops[0] == Put(history_key(LAYOUT, PAY, generation).encode(), b"r")
    if deleted is None:
        assert len(ops) == 1
        return
    first, end = deleted
    assert ops[1:] == [
        Delete(history_key(LAYOUT, PAY, first).encode(), history_key(LAYOUT, PAY, end).encode())
    ]


def test_the_newest_generation_is_read_from_the_greatest_key() -> None:
    """No key: 0; a record's key: its generation; anything else under the range: bad input."""
    assert newest_generation(LAYOUT, PAY, None) == 0
    assert newest_generation(LAYOUT, PAY, history_key(LAYOUT, PAY, 12).encode()) == 12
    prefix = history_prefix(LAYOUT, PAY).encode()
    for foreign in (prefix + b"zzz", prefix + b"1/x", prefix + b"00000000000\xff"):
        with pytest.raises(BadInput):
            newest_generation(LAYOUT, PAY, foreign)


@pytest.mark.parametrize(
    ("key", "detail"),
    [
        ("/statemanager/history/package/pay", "not a history key: '/statemanager/history/package/pay'"),
        ("/statemanager/history/widget/pay/000000000001", "not a history key: "),
        ("/statemanager/history/package/pay/000000000001/x", "not a history key: "),
        ("/statemanager/other/package/pay/000000000001", "not a history key: "),
        ("/statemanager/history/package/pay/1", "pay/1' (generation)"),
        ("/statemanager/history/package/pay/-00000000001", "(generation)"),
        ("/statemanager/history/package/p ay/000000000001", "(name contains whitespace"),
        ("/statemanager/history/package//000000000001", "(empty name)"),
    ],
)  # fmt: skip
def test_a_foreign_key_is_named_with_why(key: str, detail: str) -> None:
    """Each refusal is kind `history_key` and names the key and, past its shape, what is wrong."""
    with pytest.raises(BadInput) as caught:
        parse_history_key(LAYOUT, key)
    assert caught.value.kind == "history_key"
    assert detail in caught.value.detail


def test_every_type_and_generation_parses() -> None:
    """Each resource type's keys parse to that type; the generation is read in full."""
    for resource in Resource:
        key = WorkKey(resource, "a.b-c_d")
        assert parse_history_key(LAYOUT, history_key(LAYOUT, key, 987654321012)) == (
            key,
            987654321012,
        )


GOOD = {
    "format": 1, "transition_id": "t", "from": "Running", "to": "Error", "rule": "P2",
    "reason": "r", "timestamp_ns": 5, "cause_revision": 4, "caused_by": None, "source": "s",
    "node": "n", "correction": False,
}  # fmt: skip


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        ({"transition_id": 3}, "fields missing or of the wrong type"),
        ({"transition_id": None}, "fields missing or of the wrong type"),
        ({"source": None}, "fields missing or of the wrong type"),
        ({"timestamp_ns": "5"}, "fields missing or of the wrong type"),
        ({"timestamp_ns": True}, "fields missing or of the wrong type"),
        ({"cause_revision": 4.0}, "fields missing or of the wrong type"),
        ({"from": 1}, "fields missing or of the wrong type"),
        ({"to": ["Error"]}, "fields missing or of the wrong type"),
        ({"rule": 2}, "fields missing or of the wrong type"),
        ({"reason": {}}, "fields missing or of the wrong type"),
        ({"caused_by": 7}, "fields missing or of the wrong type"),
        ({"node": 1}, "fields missing or of the wrong type"),
        ({"correction": "yes"}, "fields missing or of the wrong type"),
        ({"format": 0}, "no valid format"),
        ({"format": "1"}, "no valid format"),
    ],
)  # fmt: skip
def test_each_field_of_the_wrong_type_is_bad_input(change: dict[str, object], detail: str) -> None:
    """A record is read only when every field has its type: each one wrong is refused as kind
    `history_record`, naming the key."""
    key = history_key(LAYOUT, PAY, 1).encode()
    value = orjson.dumps({**GOOD, **change})
    with pytest.raises(BadInput) as caught:
        decode(LAYOUT, key, value, 3)
    assert caught.value.kind == "history_record"
    assert detail in caught.value.detail
    assert repr(key) in caught.value.detail


@pytest.mark.parametrize(
    ("value", "detail"),
    [(b"not json", "not JSON"), (b"[1]", "not a JSON object"), (b'{"to": "x"}', "no valid format")],
)
def test_a_value_that_is_no_record_says_so(value: bytes, detail: str) -> None:
    with pytest.raises(BadInput) as caught:
        decode(LAYOUT, history_key(LAYOUT, PAY, 1).encode(), value, 3)
    assert (caught.value.kind, detail in caught.value.detail) == ("history_record", True)


def test_a_record_without_the_later_fields_reads_their_defaults() -> None:
    """`node` and `correction` may be absent (no node named, not a correction)."""
    body = {k: v for k, v in GOOD.items() if k not in ("node", "correction")}
    t = decode(LAYOUT, history_key(LAYOUT, PAY, 1).encode(), orjson.dumps(body), 3)
    assert isinstance(t, Transition)
    assert (t.node, t.correction, t.revision, t.timestamp_ns, t.cause_revision) == (
        None, False, 3, 5, 4,
    )  # fmt: skip
    assert (t.from_state, t.to_state, t.rule, t.reason, t.source) == (
        "Running", "Error", "P2", "r", "s",
    )  # fmt: skip


def test_the_newest_key_of_another_resource_is_named() -> None:
    other = history_key(LAYOUT, WorkKey(Resource.MODEL, "pay"), 3).encode()
    with pytest.raises(BadInput) as caught:
        newest_generation(LAYOUT, PAY, other)
    assert caught.value.kind == "history_key"
    assert caught.value.detail == f"not a history key of package/pay: {other!r}"


@pytest.mark.parametrize("name", [b"\xff", b"pay\xc3", b"\xed\xa0\x80"])
def test_a_key_that_is_not_utf8_is_no_record(name: bytes) -> None:
    """No version writes a key that is not UTF-8: one under the history prefix is someone
    else's, refused as kind `history_key`, not read as the record of a resource named with
    its bad bytes replaced (a name another resource may have)."""
    key = history_prefix(LAYOUT).encode() + b"package/" + name + b"/000000000001"
    with pytest.raises(BadInput) as caught:
        decode(LAYOUT, key, orjson.dumps(GOOD), 3)
    assert caught.value.kind == "history_key"
