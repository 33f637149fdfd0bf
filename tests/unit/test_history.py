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
    parse_history_key,
)
from statemanager.core.keys import KeyLayout, Resource, WorkKey
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
