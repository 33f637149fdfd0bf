"""The ActionController delivery policy names every gRPC code once."""

from __future__ import annotations

import grpc

from statemanager.adapters.actioncontroller import REFUSAL_CODES, RETRIED_CODES


def test_every_error_code_is_either_retried_or_a_refusal() -> None:
    """Each gRPC code but OK is in exactly one of the two sets: no code falls through."""
    errors = set(grpc.StatusCode) - {grpc.StatusCode.OK}
    assert errors == RETRIED_CODES | REFUSAL_CODES
    assert not RETRIED_CODES & REFUSAL_CODES


def test_pullpiri_refusal_is_a_refusal_and_an_outage_is_not() -> None:
    """INTERNAL (Pullpiri's "Invalid current status") counts as a refusal; UNAVAILABLE and
    DEADLINE_EXCEEDED are retried without limit."""
    assert grpc.StatusCode.INTERNAL in REFUSAL_CODES
    assert {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED} <= RETRIED_CODES
