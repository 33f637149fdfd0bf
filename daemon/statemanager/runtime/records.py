"""Reports the records under the daemon's own prefix that a newer daemon wrote.

A record in a format later than this daemon knows (core/records.py) is left as it is; it is
reported once per key and format, so a reader that meets it at every listing or look does
not repeat itself: a warning `record_unknown_format` with its key and format, and
`statemanager_records_unknown_format_total{record}`.
"""

from __future__ import annotations

import structlog

from statemanager.core.records import LaterFormat
from statemanager.runtime.metrics import Metrics

log = structlog.get_logger("statemanager.records")


class LaterFormats:
    """Reports each record of a later format once (see the module docstring)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._reported: set[tuple[bytes, int]] = set()  # (key, format)

    def report(self, key: bytes, later: LaterFormat) -> None:
        """Report the record at `key` unless it was already, in this format."""
        if (key, later.format) in self._reported:
            return
        self._reported.add((key, later.format))
        self._metrics.records_unknown_format.labels(later.record).inc()
        log.warning(
            "record_unknown_format",
            record=later.record,
            key=key.decode("utf-8", "replace"),
            format=later.format,
            detail="written by a newer statemanager; left as it is",
        )
