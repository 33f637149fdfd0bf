"""etcd's failed answers, classified: which error family the caller sees and how the session
(`etcdsession.py`) recovers first. Pure: a status code and etcd's words in, a `Failure` out;
no state is read or changed here (the session acts on the verdict).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import grpc

from statemanager.core.errors import Compacted, EtcdBusy, EtcdError, EtcdUnavailable, TooLarge
from statemanager.core.ports import REFUSED_NOT_NOW

# Codes that mean "etcd could not answer now"; anything else is a refusal that retrying will
# not fix (bad request, permission) and is raised as EtcdError. Refusals that depend on the
# request's size or on etcd's load are told apart by etcd's words (`REFUSALS`).
_PERMANENT = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)

# The endpoint did not answer (down, unreachable, partitioned from its leader, too slow).
_UNREACHABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})

# etcd's refusals by reason (`core/ports.py` says what each reason means), matched on its error
# text (etcd answers RESOURCE_EXHAUSTED for a full database, for too many requests and, through
# gRPC, for an over-large response).
REFUSALS: dict[str, str] = {
    "database space exceeded": "nospace",
    "too many requests": "too_many_requests",
    "too many operations in txn request": "too_many_ops",
    "request is too large": "request_too_large",
    # gRPC's own limit, ours on a response or etcd's on a request (--max-request-bytes plus
    # gRPC overhead): which one is known from the operation (a range reads, the rest send).
    "received message larger than max": "response_too_large",
}


class Recovery(enum.Enum):
    """What the session does about a failure before (or instead of) raising it."""

    FAIL_OVER = "fail over"  # move to the next endpoint, then retry there
    REAUTHENTICATE = "reauthenticate"  # forget the token, then retry with a new one
    SURFACE = "surface"  # raise to the caller at once


@dataclass(frozen=True, slots=True)
class Failure:
    """A classified failure: `error` is what the caller sees when it is raised."""

    error: Exception
    recovery: Recovery


def classify(
    code: grpc.StatusCode, detail: str, what: str, *, authenticating: bool = False
) -> Failure:
    """The error family and the recovery for a failed request or stream `what` ("range",
    "txn", "watch", ...). `authenticating`: the session sends a token, so UNAUTHENTICATED
    means that token expired (simple tokens live --auth-token-ttl, and only on the member
    that issued them) rather than a refusal.

    Checked in this order: a compacted revision; etcd's refusals by its words (an answer, so
    the endpoint is reachable: never a failover); an expired token; an unreachable endpoint;
    permanent refusals; anything else is transient and surfaces as EtcdUnavailable.
    """
    detail = detail or code.name
    if code is grpc.StatusCode.OUT_OF_RANGE and "compacted" in detail:
        return Failure(Compacted(0), Recovery.SURFACE)
    lowered = detail.lower()
    reason = next((v for words, v in REFUSALS.items() if words in lowered), None)
    if reason is not None:
        if reason == "response_too_large" and what != "range":
            reason = "request_too_large"
        message = f"etcd refused {what}: {code.name}: {detail}"
        error = (
            EtcdBusy(reason, message) if reason in REFUSED_NOT_NOW else TooLarge(reason, message)
        )
        return Failure(error, Recovery.SURFACE)
    if code is grpc.StatusCode.UNAUTHENTICATED and authenticating:
        return Failure(EtcdUnavailable(f"etcd {what}: auth token expired"), Recovery.REAUTHENTICATE)
    if code in _UNREACHABLE:
        return Failure(
            EtcdUnavailable(f"etcd {what} failed: {code.name}: {detail}"), Recovery.FAIL_OVER
        )
    if code in _PERMANENT:
        return Failure(EtcdError(f"etcd refused {what}: {code.name}: {detail}"), Recovery.SURFACE)
    return Failure(EtcdUnavailable(f"etcd {what} failed: {code.name}: {detail}"), Recovery.SURFACE)
