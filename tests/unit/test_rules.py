"""The model and package rule tables of docs/contract.md, Rules, row by row, first match wins."""

from __future__ import annotations

import pytest

from statemanager.core import rules
from statemanager.core.rules import model_verdict, package_verdict
from statemanager.core.states import ContainerClass, ModelState, PackageState

DEAD = ContainerClass.DEAD
EXITED = ContainerClass.EXITED
NOT_STARTED = ContainerClass.NOT_STARTED
ACTIVE = ContainerClass.ACTIVE

PENDING = ModelState.PENDING
RUNNING = ModelState.RUNNING
SUCCEEDED = ModelState.SUCCEEDED
FAILED = ModelState.FAILED


@pytest.fixture(autouse=True)
def _fresh_verdicts() -> None:
    """Each test's verdicts computed here, not taken from the cache an earlier test filled."""
    rules._model_verdict.cache_clear()
    rules._package_verdict.cache_clear()


MODEL_ROWS = [
    pytest.param({}, PENDING, "M1", id="M1-no-containers"),
    pytest.param({DEAD: 1}, FAILED, "M2", id="M2-one-dead"),
    pytest.param({DEAD: 1, ACTIVE: 3}, FAILED, "M2", id="M2-dead-among-running"),
    pytest.param({EXITED: 2}, SUCCEEDED, "M3", id="M3-all-exited"),
    pytest.param({NOT_STARTED: 3}, PENDING, "M4", id="M4-all-not-started"),
    pytest.param({ACTIVE: 2}, RUNNING, "M5", id="M5-all-running"),
    pytest.param({ACTIVE: 1, EXITED: 1}, RUNNING, "M5", id="M5-running-and-exited"),
    pytest.param({EXITED: 1, NOT_STARTED: 1}, RUNNING, "M5", id="M5-exited-and-paused"),
    # The seed note's example: containers {running, running, paused} -> Running.
    pytest.param({ACTIVE: 2, NOT_STARTED: 1}, RUNNING, "M5", id="seed-running-running-paused"),
    # First match wins: a dead container beats "all exited" and "all not started".
    pytest.param({DEAD: 1, EXITED: 2}, FAILED, "M2", id="precedence-dead-over-exited"),
    pytest.param({DEAD: 1, NOT_STARTED: 2}, FAILED, "M2", id="precedence-dead-over-not-started"),
    # The index keeps zero entries in its counters after containers leave a class.
    pytest.param({DEAD: 0, EXITED: 2}, SUCCEEDED, "M3", id="zero-counts-ignored-exited"),
    pytest.param({DEAD: 0, ACTIVE: 0}, PENDING, "M1", id="zero-counts-ignored-empty"),
]


@pytest.mark.parametrize(("counts", "state", "rule"), MODEL_ROWS)
def test_model_verdict_rows(counts: dict[ContainerClass, int], state: str, rule: str) -> None:
    """Each row M1–M5 gives its model state and names itself as the deciding rule."""
    verdict = model_verdict(counts)
    assert (verdict.state, verdict.rule) == (state, rule)


PACKAGE_ROWS = [
    pytest.param([], PackageState.INITIALIZING, "P1", id="P1-no-models"),
    pytest.param([FAILED], PackageState.ERROR, "P2", id="P2-single-failed"),
    pytest.param([FAILED, FAILED, FAILED], PackageState.ERROR, "P2", id="seed-all-three-failed"),
    pytest.param([RUNNING, RUNNING, FAILED], PackageState.DEGRADED, "P3", id="seed-one-failed"),
    pytest.param([FAILED, PENDING], PackageState.DEGRADED, "P3", id="P3-failed-and-pending"),
    pytest.param([FAILED, SUCCEEDED], PackageState.DEGRADED, "P3", id="P3-failed-and-succeeded"),
    pytest.param([PENDING, PENDING], PackageState.PAUSED, "P4", id="P4-all-pending"),
    pytest.param([SUCCEEDED, SUCCEEDED], PackageState.RUNNING, "P5", id="P5-all-succeeded"),
    pytest.param([RUNNING], PackageState.RUNNING, "P6", id="P6-running"),
    pytest.param([PENDING, SUCCEEDED], PackageState.RUNNING, "P6", id="P6-pending-and-succeeded"),
    pytest.param([RUNNING, PENDING], PackageState.RUNNING, "P6", id="P6-running-and-pending"),
]


@pytest.mark.parametrize(("states", "state", "rule"), PACKAGE_ROWS)
def test_package_verdict_rows(states: list[str], state: str, rule: str) -> None:
    """Each row P1–P6 gives its package state and names itself as the deciding rule."""
    verdict = package_verdict(states)
    assert (verdict.state, verdict.rule) == (state, rule)


def test_package_verdict_accepts_any_iterable() -> None:
    """Model states may come from a generator (the index passes one), not only a list."""
    verdict = package_verdict(s for s in (FAILED, FAILED))
    assert (verdict.state, verdict.rule) == (PackageState.ERROR, "P2")


def test_verdict_states_are_the_written_strings() -> None:
    """A verdict's state compares equal to the exact text written to etcd (docs/contract.md, Writes)."""
    assert model_verdict({DEAD: 1}).state == "Failed"
    assert package_verdict([RUNNING, FAILED]).state == "Degraded"
    assert package_verdict([]).state == "Initializing"


def test_verdict_reason_counts_the_deciding_class() -> None:
    """The reason sentence an operator sees says how many containers decided the row."""
    assert model_verdict({DEAD: 2, ACTIVE: 3}).reason == "2 of 5 containers dead"
    assert package_verdict([FAILED, RUNNING, RUNNING]).reason == "1 of 3 models Failed"


@pytest.mark.parametrize(
    ("counts", "reason"),
    [
        pytest.param({ACTIVE: 1, EXITED: 1}, "1 of 2 containers running or unknown", id="one"),
        pytest.param(
            {EXITED: 1, NOT_STARTED: 2}, "0 of 3 containers running or unknown", id="none"
        ),
        pytest.param({EXITED: 2}, "all 2 containers exited", id="M3"),
        pytest.param({NOT_STARTED: 1}, "all 1 containers not started", id="M4"),
    ],
)
def test_model_reason_counts_containers_running(
    counts: dict[ContainerClass, int], reason: str
) -> None:
    """M5's reason counts the running (or unknown) containers, zero included; M3 and M4 say
    "all" of the total."""
    assert model_verdict(counts).reason == reason


@pytest.mark.parametrize(
    ("states", "reason"),
    [
        pytest.param([RUNNING], "all 1 models Running", id="only-running"),
        pytest.param([RUNNING, RUNNING], "all 2 models Running", id="all-running"),
        pytest.param([PENDING, RUNNING, RUNNING], "2 Running, 1 Pending of 3 models", id="mixed"),
        pytest.param([SUCCEEDED, PENDING], "1 Pending, 1 Succeeded of 2 models", id="tie-by-name"),
        pytest.param(
            [SUCCEEDED, RUNNING, PENDING, SUCCEEDED],
            "2 Succeeded, 1 Pending, 1 Running of 4 models",
            id="most-then-by-name",
        ),
    ],
)
def test_p6_reason_says_what_is_true(states: list[str], reason: str) -> None:
    """P6's reason counts the model states it saw: no "mixed states" when all are Running."""
    assert package_verdict(states).reason == reason
