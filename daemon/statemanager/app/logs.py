"""structlog set-up: JSON lines under systemd or when not on a terminal, console on a terminal.

Every line carries one `timestamp` (UTC, nanoseconds), `level` and `logger` (the component's
logger name, e.g. `statemanager.watcher`: kept when modules moved into layers, as operators
filter on it). When stderr is the journal's stream, each line starts with the sd-daemon(3)
priority prefix (`<3>` error … `<7>` debug), so journald files it at the line's level and
`journalctl -p err` finds errors. Level and format can be changed while running (`configure`
again, as SIGHUP does): loggers already handed out follow, because the level filter and the
renderer read the current settings on every line.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, TextIO

import structlog

from statemanager.core.timestamps import timestamp

# sd-daemon(3) priorities (syslog's) for structlog's level names.
_PRIORITY = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2, "exception": 3}


_LEVEL_NUMBERS = logging.getLevelNamesMapping()
_JSON = structlog.processors.JSONRenderer()
_CONSOLE = structlog.dev.ConsoleRenderer()


@dataclass
class _Current:
    """The settings every line is rendered with; `configure` replaces them in place."""

    threshold: int = logging.INFO
    console: bool = False
    prefix: bool = False  # the journal's `<N>` priority prefix


_current = _Current()


def under_systemd(env: Mapping[str, str] = os.environ) -> bool:
    return "JOURNAL_STREAM" in env or "INVOCATION_ID" in env


def stderr_is_journal(stream: TextIO, env: Mapping[str, str] = os.environ) -> bool:
    """True when `stream` is the journal's own socket: systemd sets JOURNAL_STREAM to its
    `device:inode`, and a stream redirected elsewhere (a file, a pipe) no longer matches."""
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError):
        return False
    return env.get("JOURNAL_STREAM", "") == f"{st.st_dev}:{st.st_ino}"


def configure(fmt: str, level: str, stream: TextIO | None = None) -> None:
    """`fmt` is auto, json or console; auto picks console only on an interactive terminal
    that is not systemd's journal. Safe to call again at any time."""
    out = sys.stderr if stream is None else stream
    console = fmt == "console" or (fmt == "auto" and out.isatty() and not under_systemd())
    _current.console = console
    _current.threshold = _LEVEL_NUMBERS[level.upper()]
    _current.prefix = stderr_is_journal(out)
    structlog.configure(
        processors=[
            _filter_level,
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _add_logger_name,
            _stamp,
            _render,
        ],
        logger_factory=_NamedLoggerFactory(out),
        cache_logger_on_first_use=True,
    )


def _filter_level(_logger: Any, method: str, event: MutableMapping[str, Any]) -> Any:
    if _LEVEL_NUMBERS.get(method.upper(), logging.ERROR) < _current.threshold:
        raise structlog.DropEvent
    return event


def _add_logger_name(logger: Any, _method: str, event: MutableMapping[str, Any]) -> Any:
    event.setdefault("logger", getattr(logger, "name", None) or "statemanager")
    return event


def _stamp(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> Any:
    """Add `timestamp` unless the caller gave the moment itself (a transition's own time)."""
    event.setdefault("timestamp", timestamp(time.time_ns()))
    return event


def _render(logger: Any, method: str, event: MutableMapping[str, Any]) -> Any:
    line: Any
    if _current.console:
        line = _CONSOLE(logger, method, event)
    else:  # the console renderer formats exceptions itself; JSON needs them as a string
        line = _JSON(logger, method, structlog.processors.format_exc_info(logger, method, event))
    if _current.prefix:
        return f"<{_PRIORITY.get(method, 6)}>{line}"
    return line


class _NamedLogger(structlog.PrintLogger):
    """A PrintLogger that remembers the name it was created for (`logger` on every line)."""

    def __init__(self, file: TextIO, name: str) -> None:
        super().__init__(file)
        self.name = name


class _NamedLoggerFactory:
    def __init__(self, file: TextIO) -> None:
        self._file = file

    def __call__(self, *args: Any) -> _NamedLogger:
        return _NamedLogger(self._file, str(args[0]) if args else "statemanager")
