"""Trigger and dead-letter records: what the sender writes, the CLI reads back, in every
format so far; a later format is told apart; anything else is refused."""

from __future__ import annotations

import json

import pytest

from statemanager.core.keys import KeyLayout
from statemanager.core.records import LaterFormat
from statemanager.core.triggers import (
    MAX_ERROR_CHARS,
    DeadLetter,
    Trigger,
    dead_letter_key,
    decode,
    decode_dead_letter,
    encode,
    encode_dead_letter,
    record_key,
    trigger_key,
)

LAYOUT = KeyLayout()
LETTER = DeadLetter(Trigger("pay", "ab12-3", 41), "s", "INTERNAL: no", 10, ("a", "b"), 1.5e9)


def test_dead_letter_round_trips() -> None:
    """A dead letter decodes to what was encoded, with the record's own mod revision."""
    key = dead_letter_key(LAYOUT, "pay")
    assert key == b"/statemanager/deadletters/pay"
    decoded = decode_dead_letter(LAYOUT, key, encode_dead_letter(LETTER), 77)
    assert decoded == DeadLetter(
        LETTER.trigger, "s", "INTERNAL: no", 10, ("a", "b"), 1.5e9, mod_revision=77
    )


def test_long_error_is_cut() -> None:
    """ActionController's answer is kept to MAX_ERROR_CHARS characters."""
    letter = DeadLetter(LETTER.trigger, "s", "x" * 10_000, 1, (), 0.0)
    body = json.loads(encode_dead_letter(letter))
    assert len(body["error"]) == MAX_ERROR_CHARS


def _with(**changes: object) -> bytes:
    body = json.loads(encode_dead_letter(LETTER))
    body.update(changes)
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (b"/statemanager/deadletters/pay", b"not json"),
        (b"/statemanager/deadletters/pay", b"[]"),
        (b"/statemanager/deadletters/pay", b'{"package": "pay"}'),
        (b"/statemanager/deadletters/pay", _with(refusals="10")),
        (b"/statemanager/deadletters/pay", _with(refusals=True)),
        (b"/statemanager/deadletters/pay", b'{"revision": NaN}'),
        (b"/statemanager/deadletters/pay", _with(dead_lettered_at=float("inf"))),
        (b"/statemanager/deadletters/pay", _with(acknowledged=["a", 1])),
        (b"/statemanager/deadletters/pay", _with(scenario=None)),
        (b"/statemanager/deadletters/pay", b"[" * 100_000 + b"]" * 100_000),
        (b"/statemanager/deadletters/a b", encode_dead_letter(LETTER)),
        (b"/statemanager/triggers/pay", encode_dead_letter(LETTER)),
    ],
)
def test_foreign_records_are_refused(key: bytes, value: bytes) -> None:
    """A value or key the daemon did not write decodes to None, never raises."""
    assert decode_dead_letter(LAYOUT, key, value, 1) is None


def test_every_trigger_format_decodes() -> None:
    """Format 2 as written now (`"format": 2`) and as written before formats were numbered
    (no field); format 1, one record per scenario, as the first releases wrote it."""
    key = trigger_key(LAYOUT, "pay")
    assert json.loads(encode(Trigger("pay", "t1", 0))) == {
        "format": 2,
        "package": "pay",
        "transition_id": "t1",
    }
    assert decode(LAYOUT, key, encode(Trigger("pay", "t1", 0)), 9) == Trigger("pay", "t1", 9)
    unnumbered = b'{"package": "pay", "transition_id": "t1"}'
    assert decode(LAYOUT, key, unnumbered, 9) == Trigger("pay", "t1", 9)
    old = b'{"package": "up", "scenario": "up_recovery", "transition_id": "t0"}'
    legacy = decode(LAYOUT, b"/statemanager/triggers/up/up_recovery", old, 5)
    assert legacy == Trigger("up", "t0", 5, "up_recovery")
    assert isinstance(legacy, Trigger)
    assert record_key(LAYOUT, legacy) == b"/statemanager/triggers/up/up_recovery"
    assert legacy.identity() == "up/up_recovery@5"


@pytest.mark.parametrize(
    ("key", "value", "version"),
    [
        (b"/statemanager/triggers/pay", b'{"format": 3}', 3),
        (b"/statemanager/triggers/pay/s/extra", b'{"format": 7, "x": 1}', 7),
        (b"/statemanager/triggers/a b", b'{"format": 3}', 3),
    ],
)
def test_later_trigger_formats_are_told_apart(key: bytes, value: bytes, version: int) -> None:
    """A newer daemon's record, whatever its key, is LaterFormat (to be left alone)."""
    assert decode(LAYOUT, key, value, 1) == LaterFormat("trigger", version)


def test_later_dead_letter_format_is_told_apart() -> None:
    value = _with(format=2)
    assert decode_dead_letter(LAYOUT, dead_letter_key(LAYOUT, "pay"), value, 1) == LaterFormat(
        "dead_letter", 2
    )
    unnumbered = json.loads(encode_dead_letter(LETTER))
    del unnumbered["format"]
    decoded = decode_dead_letter(
        LAYOUT, dead_letter_key(LAYOUT, "pay"), json.dumps(unnumbered).encode(), 3
    )
    assert isinstance(decoded, DeadLetter) and decoded.trigger == LETTER.trigger


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (b"/statemanager/triggers/pay", b'{"format": 1, "transition_id": "t"}'),
        (b"/statemanager/triggers/pay/s", b'{"format": 2, "transition_id": "t"}'),
        (b"/statemanager/triggers/pay/s", b'{"transition_id": 5}'),
        (b"/statemanager/triggers/pay/a b", b'{"transition_id": "t"}'),
        (b"/statemanager/triggers/pay/s/t", b'{"transition_id": "t"}'),
        (b"/statemanager/triggers/pay", b'{"format": true, "transition_id": "t"}'),
        (b"/statemanager/triggers/pay", b'{"format": 0, "transition_id": "t"}'),
        (b"/statemanager/triggers/pay", b'{"format": "2", "transition_id": "t"}'),
        (b"/statemanager/triggers/", b'{"transition_id": "t"}'),
    ],
)
def test_foreign_triggers_are_refused(key: bytes, value: bytes) -> None:
    """A key or value no version wrote decodes to None, never raises."""
    assert decode(LAYOUT, key, value, 1) is None


def test_records_are_stored_exactly_as_documented() -> None:
    """The stored bytes of a trigger and a dead letter: the module docstring's fields, keys
    sorted (one record, one byte string, whichever daemon wrote it)."""
    assert encode(Trigger("pay", "ab12-3", 41, "ignored")) == (
        b'{"format": 2, "package": "pay", "transition_id": "ab12-3"}'
    )
    assert json.loads(encode_dead_letter(LETTER)) == {
        "format": 1, "package": "pay", "transition_id": "ab12-3", "revision": 41, "scenario": "s",
        "error": "INTERNAL: no", "refusals": 10, "acknowledged": ["a", "b"],
        "dead_lettered_at": 1.5e9,
    }  # fmt: skip
    keys = list(json.loads(encode_dead_letter(LETTER)))
    assert keys == sorted(keys)
    assert encode_dead_letter(LETTER).startswith(b'{"acknowledged": ["a", "b"], ')


def test_a_trigger_is_removed_from_the_key_it_was_read_from() -> None:
    """record_key gives a format-2 trigger's package key and a format-1 trigger's per-scenario
    key, each the key it decodes from."""
    for key, value in [
        (b"/statemanager/triggers/pay", encode(Trigger("pay", "t", 0))),
        (b"/statemanager/triggers/pay/s1", b'{"package": "pay", "transition_id": "t"}'),
    ]:
        trigger = decode(LAYOUT, key, value, 9)
        assert isinstance(trigger, Trigger)
        assert record_key(LAYOUT, trigger) == key


def test_a_key_that_is_not_utf8_is_no_record() -> None:
    """A key under the triggers or dead letters prefix whose name is not UTF-8 was written by
    no version: it decodes to nothing (it once decoded with the bad bytes replaced, a trigger
    whose record_key was another key, so its removal could never remove it)."""
    trigger = b'{"format": 2, "package": "p", "transition_id": "t"}'
    assert decode(LAYOUT, b"/statemanager/triggers/p\xff", trigger, 3) is None
    letter = encode_dead_letter(LETTER)
    assert decode_dead_letter(LAYOUT, b"/statemanager/deadletters/p\xff", letter, 3) is None
