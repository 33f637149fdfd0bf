"""Log lines: one timestamp, the logger name, journal priorities, level and format changeable
while running."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import pytest
import structlog

from statemanager.app import logs
from statemanager.core.timestamps import timestamp


@pytest.fixture
def stream(tmp_path: Path) -> Iterator[TextIO]:
    with (tmp_path / "stderr").open("w+") as f:
        yield f
    structlog.reset_defaults()  # the next test must not write to this closed file


def lines(stream: TextIO) -> list[str]:
    stream.flush()
    stream.seek(0)
    return stream.read().splitlines()


def journal_of(stream: TextIO) -> str:
    st = os.fstat(stream.fileno())
    return f"{st.st_dev}:{st.st_ino}"


def test_json_line_has_one_timestamp_level_and_logger(stream: TextIO) -> None:
    """A JSON line names its logger and carries exactly one timestamp, in nanoseconds."""
    logs.configure("json", "info", stream)
    structlog.get_logger("statemanager.test").info("hello", n=1)
    (line,) = lines(stream)
    record = json.loads(line)
    assert record["logger"] == "statemanager.test" and record["level"] == "info"
    assert [k for k in record if "time" in k] == ["timestamp"]
    assert len(record["timestamp"]) == len("2026-01-01T00:00:00.123456789Z")


def test_journal_stream_gets_priority_prefixes(
    stream: TextIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With stderr being the journal's stream, every line starts with its sd-daemon priority."""
    monkeypatch.setenv("JOURNAL_STREAM", journal_of(stream))
    logs.configure("json", "debug", stream)
    log = structlog.get_logger("statemanager.test")
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    got = lines(stream)
    assert [line[:3] for line in got] == ["<7>", "<6>", "<4>", "<3>"]
    assert json.loads(got[3][3:])["event"] == "e"


def test_no_prefix_when_stderr_is_not_the_journal(
    stream: TextIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    """JOURNAL_STREAM inherited by a process whose stderr goes elsewhere adds no prefix."""
    monkeypatch.setenv("JOURNAL_STREAM", "1:2")
    logs.configure("json", "info", stream)
    structlog.get_logger("statemanager.test").error("e")
    assert lines(stream)[0].startswith("{")


def test_level_and_format_change_for_loggers_already_in_use(stream: TextIO) -> None:
    """Reconfiguring (SIGHUP) takes effect on module loggers that have logged before."""
    logs.configure("json", "info", stream)
    log = structlog.get_logger("statemanager.test")
    log.debug("hidden")
    log.info("json")
    logs.configure("console", "debug", stream)
    log.debug("shown")
    got = lines(stream)
    assert len(got) == 2
    assert json.loads(got[0])["event"] == "json"
    assert "shown" in got[1] and not got[1].startswith("{")


def test_timestamps_carry_every_nanosecond() -> None:
    """Nanoseconds since the epoch become UTC seconds and nine digits of fraction."""
    assert timestamp(1_700_000_000_123_456_789) == "2023-11-14T22:13:20.123456789Z"
    assert timestamp(999_999_999) == "1970-01-01T00:00:00.999999999Z"
