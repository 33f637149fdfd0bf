"""Container status parsing and classification (docs/contract.md, Container states)."""

from __future__ import annotations

import pytest

from statemanager.core.states import ContainerClass, ContainerStatus, classify, parse_status


@pytest.mark.parametrize(
    ("word", "status"),
    [
        pytest.param("created", ContainerStatus.CREATED, id="created"),
        pytest.param("initialized", ContainerStatus.INITIALIZED, id="initialized"),
        pytest.param("running", ContainerStatus.RUNNING, id="running"),
        pytest.param("paused", ContainerStatus.PAUSED, id="paused"),
        pytest.param("exited", ContainerStatus.EXITED, id="exited"),
        pytest.param("dead", ContainerStatus.DEAD, id="dead"),
        pytest.param("unknown", ContainerStatus.UNKNOWN, id="unknown"),
        pytest.param("Running", ContainerStatus.RUNNING, id="capitalised"),
        pytest.param("EXITED", ContainerStatus.EXITED, id="upper-case"),
        pytest.param(" paused\n", ContainerStatus.PAUSED, id="surrounding-whitespace"),
        pytest.param("restarting", ContainerStatus.UNKNOWN, id="other-runtime-word"),
        pytest.param("", ContainerStatus.UNKNOWN, id="empty"),
        pytest.param("\x00garbage", ContainerStatus.UNKNOWN, id="garbage"),
    ],
)
def test_parse_status(word: str, status: ContainerStatus) -> None:
    """Status words are matched case-insensitively; any other word is `unknown`, not an error."""
    assert parse_status(word) is status


S = ContainerStatus
C = ContainerClass


@pytest.mark.parametrize(
    ("status", "exit_code", "oom", "cls"),
    [
        pytest.param(S.DEAD, None, False, C.DEAD, id="dead-status"),
        pytest.param(S.DEAD, "0", False, C.DEAD, id="dead-status-exit-0"),
        pytest.param(S.EXITED, "137", False, C.DEAD, id="exited-nonzero"),
        pytest.param(S.EXITED, "1", False, C.DEAD, id="exited-1"),
        pytest.param(S.EXITED, "-1", False, C.DEAD, id="exited-negative"),
        pytest.param(S.EXITED, "abc", False, C.DEAD, id="exited-non-integer-code"),
        pytest.param(S.EXITED, "0", False, C.EXITED, id="exited-0"),
        pytest.param(S.EXITED, " 0 ", False, C.EXITED, id="exited-0-padded"),
        pytest.param(S.EXITED, "00", False, C.EXITED, id="exited-00"),
        pytest.param(S.EXITED, None, False, C.EXITED, id="exited-no-code"),
        pytest.param(S.EXITED, "", False, C.EXITED, id="exited-empty-code"),
        pytest.param(S.EXITED, "0", True, C.DEAD, id="exited-0-oom"),
        pytest.param(S.RUNNING, None, True, C.DEAD, id="running-oom"),
        pytest.param(S.RUNNING, "137", False, C.ACTIVE, id="running-ignores-exit-code"),
        pytest.param(S.RUNNING, None, False, C.ACTIVE, id="running"),
        pytest.param(S.UNKNOWN, None, False, C.ACTIVE, id="unknown-is-active"),
        pytest.param(S.PAUSED, None, False, C.NOT_STARTED, id="paused"),
        pytest.param(S.CREATED, None, False, C.NOT_STARTED, id="created"),
        pytest.param(S.INITIALIZED, None, False, C.NOT_STARTED, id="initialized"),
        pytest.param(S.PAUSED, None, True, C.DEAD, id="paused-oom"),
    ],
)
def test_classify(
    status: ContainerStatus, exit_code: str | None, oom: bool, cls: ContainerClass
) -> None:
    """Dead: status dead, exited non-zero, or OOM-killed; exited 0 or no code is exited."""
    assert classify(status, exit_code, oom) is cls


def test_unknown_word_classifies_as_active() -> None:
    """A garbage status word ends up in the class that makes a model Running (rule M5)."""
    assert classify(parse_status("zombie-ish"), None, False) is ContainerClass.ACTIVE
