"""History records: keys in change order, records round-trip, anything else is bad input."""

from __future__ import annotations

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
    for foreign in (history_prefix(LAYOUT, PAY) + "zzz", history_prefix(LAYOUT, PAY) + "1/x"):
        with pytest.raises(BadInput):
            newest_generation(LAYOUT, PAY, foreign.encode())
