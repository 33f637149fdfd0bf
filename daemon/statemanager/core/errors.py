"""The daemon's error hierarchy (docs/design.md, Errors). Each family is handled in exactly
one place:

- `BadInput`: a value in etcd that cannot be used; reported once per revision and treated as
  absent (controller).
- `EtcdUnavailable`: etcd cannot be reached or did not answer in time; retried with backoff
  (writer, watcher, election). Its `EtcdBusy` kind, etcd up but refusing writes for now
  (space quota alarm, too many requests), is retried the same way and reported as the reason
  the daemon is not ready.
- `Compacted`: a watch asked for history etcd no longer has; the watcher relists.
- `EtcdError`: etcd refused a request for a reason retrying it unchanged will not fix. Its
  `TooLarge` kind (too many operations, request or response too large) is split by whoever
  made the request (controller, snapshot paging), or skipped and reported; any other refusal
  (permission, bad request) is logged and retried later with backoff. None ends the daemon.
- `ConfigError`: invalid settings; the CLI prints one line and exits 2.
"""

from __future__ import annotations


class StateManagerError(Exception):
    """Base of every error the daemon raises on purpose."""


class BadInput(StateManagerError):
    """A value that cannot be parsed or used. `kind` is one of inputs.BAD_INPUT_KINDS."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


class EtcdUnavailable(StateManagerError):
    """Transient: etcd is down, unreachable, or did not answer before the deadline."""


class AnswerFromAnotherHistory(EtcdUnavailable):
    """etcd answered a write from a history other than the one the index follows (restored
    or wiped: a revision `now` not above `before`, one it gave or the write was planned from):
    defer, plan nothing more until a relist of the history etcd has now."""

    def __init__(self, message: str, before: int, now: int) -> None:
        super().__init__(message)
        self.before = before
        self.now = now


class EtcdBusy(EtcdUnavailable):
    """etcd answered but cannot take this work now (`reason`: "nospace" for its space quota
    alarm, "too_many_requests" when its apply queue lags); the message has etcd's words."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Compacted(StateManagerError):
    """The requested start revision has been compacted away."""

    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"revision compacted; oldest available is {compact_revision}")
        self.compact_revision = compact_revision


class EtcdError(StateManagerError):
    """Permanent: etcd refused the request (bad request, permission, too large)."""


class TooLarge(EtcdError):
    """This request can never succeed as sent (`reason`: "too_many_ops", "request_too_large"
    or "response_too_large"): make it smaller, or skip it and report."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class ConfigError(StateManagerError):
    """Invalid configuration; the message names the bad key."""
