"""The judgements the core's port types make themselves (core/ports.py)."""

from __future__ import annotations

import pytest

from statemanager.core.ports import Header


@pytest.mark.parametrize(
    ("answer", "went_back"),
    [
        (Header(10, 3), False),  # the same place
        (Header(11, 3), False),  # further on
        (Header(9, 4), True),  # a lower revision: a restore, even at a newer term
        (Header(12, 2), True),  # a lower raft term: a restored cluster that grew past us
        (Header(9, 2), True),
    ],
)
def test_an_answer_went_back_when_its_revision_or_term_is_below_what_was_seen(
    answer: Header, went_back: bool
) -> None:
    assert answer.went_back_from(Header(10, 3)) is went_back
