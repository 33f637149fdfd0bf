"""Dead-letter records: what the sender writes, the CLI reads back; anything else is refused."""

from __future__ import annotations

import json

import pytest

from statemanager.core.keys import KeyLayout
from statemanager.core.triggers import (
    MAX_ERROR_CHARS,
    DeadLetter,
    Trigger,
    dead_letter_key,
    decode_dead_letter,
    encode_dead_letter,
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
