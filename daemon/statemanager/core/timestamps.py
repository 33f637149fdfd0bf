"""The one timestamp format of every log line, pure so the runtime (a transition's own moment)
and the log configuration (app/logs.py) format alike. The caller reads the clock."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache


def timestamp(ns: int) -> str:
    """ISO 8601 UTC with nanoseconds, from nanoseconds since the epoch."""
    seconds, rest = divmod(ns, 1_000_000_000)
    return f"{_second(seconds)}.{rest:09d}Z"


# Lines come thousands a second at a start: each second is formatted once (strftime is most of
# a timestamp's cost).
@lru_cache(maxsize=4)
def _second(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
