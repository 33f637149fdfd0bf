"""The one timestamp format of every log line, pure so the runtime (a transition's own moment)
and the log configuration (app/logs.py) format alike. The caller reads the clock."""

from __future__ import annotations

from datetime import UTC, datetime


def timestamp(ns: int) -> str:
    """ISO 8601 UTC with nanoseconds, from nanoseconds since the epoch."""
    seconds, rest = divmod(ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{rest:09d}Z"
