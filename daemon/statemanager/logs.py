"""structlog set-up: JSON lines under systemd or when not on a terminal, console on a terminal."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import structlog


def configure(fmt: str, level: str) -> None:
    """`fmt` is auto, json or console; auto picks console only on an interactive terminal
    that is not systemd's journal."""
    under_systemd = "JOURNAL_STREAM" in os.environ or "INVOCATION_ID" in os.environ
    console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty() and not under_systemd)
    # The console renderer formats exceptions itself; JSON needs them turned into a string.
    tail: list[Any] = (
        [structlog.dev.ConsoleRenderer()]
        if console
        else [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            *tail,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
