"""etcd's refusals are classified by what they mean: never as sent, or not now."""

from __future__ import annotations

import grpc
import pytest

from statemanager.errors import EtcdBusy, EtcdError, EtcdUnavailable, TooLarge
from statemanager.etcd import _translate

CODE = grpc.StatusCode


def _error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


@pytest.mark.parametrize(
    ("code", "details", "what", "reason"),
    [
        (CODE.RESOURCE_EXHAUSTED, "etcdserver: mvcc: database space exceeded", "txn", "nospace"),
        (CODE.RESOURCE_EXHAUSTED, "etcdserver: too many requests", "txn", "too_many_requests"),
        (CODE.UNAVAILABLE, "etcdserver: too many requests", "range", "too_many_requests"),
    ],
)
def test_not_now_refusals_are_busy(
    code: grpc.StatusCode, details: str, what: str, reason: str
) -> None:
    """A full database or too many requests: transient (retried), with its reason and etcd's words."""
    error = _translate(_error(code, details), what)
    assert isinstance(error, EtcdBusy)
    assert isinstance(error, EtcdUnavailable)
    assert error.reason == reason
    assert details in str(error)


@pytest.mark.parametrize(
    ("code", "details", "what", "reason"),
    [
        (
            CODE.INVALID_ARGUMENT,
            "etcdserver: too many operations in txn request",
            "txn",
            "too_many_ops",
        ),
        (CODE.INVALID_ARGUMENT, "etcdserver: request is too large", "txn", "request_too_large"),
        (
            CODE.RESOURCE_EXHAUSTED,
            "Received message larger than max (70000000 vs. 67108864)",
            "range",
            "response_too_large",
        ),
        (
            CODE.RESOURCE_EXHAUSTED,
            "grpc: received message larger than max (2100000 vs. 2097152)",
            "txn",
            "request_too_large",
        ),
    ],
)
def test_never_refusals_are_too_large(
    code: grpc.StatusCode, details: str, what: str, reason: str
) -> None:
    """Too many operations, a request or response too large: TooLarge, never transient."""
    error = _translate(_error(code, details), what)
    assert isinstance(error, TooLarge)
    assert not isinstance(error, EtcdUnavailable)
    assert error.reason == reason


def test_other_refusals_stay_plain_errors() -> None:
    """A permission refusal is an EtcdError that is neither busy nor too large."""
    error = _translate(_error(CODE.PERMISSION_DENIED, "etcdserver: permission denied"), "txn")
    assert type(error) is EtcdError
