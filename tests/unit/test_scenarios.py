"""The scenario lifecycle table and state words (docs/contract.md, Scenario states)."""

from __future__ import annotations

import itertools

import pytest

from statemanager.core.scenarios import (
    INITIALISATION,
    ScenarioState,
    Step,
    decide,
    is_initialisation,
    parse_state,
)

S = ScenarioState
ALLOWED = {
    (S.IDLE, S.WAITING): "scenario_activation",
    (S.WAITING, S.SATISFIED): "condition_met",
    (S.SATISFIED, S.ALLOWED): "policy_verification_success",
    (S.SATISFIED, S.DENIED): "policy_verification_failure",
    (S.ALLOWED, S.COMPLETED): "scenario_completion",
}


@pytest.mark.parametrize(
    ("word", "state"),
    [
        pytest.param("idle", S.IDLE, id="lower-case"),
        pytest.param("Waiting", S.WAITING, id="capitalised"),
        pytest.param("SATISFIED", S.SATISFIED, id="upper-case"),
        pytest.param("  allowed\n", S.ALLOWED, id="surrounding-whitespace"),
        pytest.param("SCENARIO_STATE_DENIED", S.DENIED, id="pullpiri-enum-spelling"),
        pytest.param("scenario-state-completed", S.COMPLETED, id="dashes"),
        pytest.param("running", None, id="a-package-word"),
        pytest.param("unspecified", None, id="unspecified"),
        pytest.param("SCENARIO_STATE_UNSPECIFIED", None, id="enum-unspecified"),
        pytest.param("", None, id="empty"),
        pytest.param("wait ing", None, id="inner-space"),
    ],
)
def test_parse_state(word: str, state: ScenarioState | None) -> None:
    """Words are read as Pullpiri reads them (trim, upper-case, '-' as '_'), its enum spelling
    included; anything else names no state."""
    assert parse_state(word) is state


def test_stored_spelling_is_the_capitalised_word() -> None:
    assert [s.value for s in S] == [
        "Idle",
        "Waiting",
        "Satisfied",
        "Allowed",
        "Denied",
        "Completed",
    ]


@pytest.mark.parametrize(
    ("from_state", "to_state"),
    [pytest.param(a, b, id=f"{a}-{b}") for a, b in itertools.product(S, S) if a is not b],
)
def test_every_pair_of_states_against_the_table(from_state: S, to_state: S) -> None:
    """Exactly the five lifecycle changes are accepted, judged from the stored state whatever
    the request says its current state is."""
    got = decide(from_state.value, "idle", to_state.value.lower())
    event = ALLOWED.get((from_state, to_state))
    if event is None:
        assert isinstance(got, str)
        assert f"the scenario is {from_state.value} (stored)" in got
    else:
        assert got == Step(from_state, to_state, event)


@pytest.mark.parametrize(
    ("current", "target", "expected"),
    [
        pytest.param("idle", "waiting", Step(S.IDLE, S.WAITING, "scenario_activation"), id="ok"),
        pytest.param("Satisfied", "denied", Step(S.SATISFIED, S.DENIED, "policy_verification_failure"), id="ok-capitalised"),
        pytest.param("waiting", "idle", "the scenario is Waiting (as the request says; none stored)", id="backwards"),
        pytest.param("completed", "idle", "from Completed: none (final)", id="from-final"),
        pytest.param("bogus", "waiting", "current_state 'bogus' is not a scenario state", id="bad-current"),
    ],
)  # fmt: skip
def test_never_stored_is_judged_from_the_request(
    current: str, target: str, expected: Step | str
) -> None:
    got = decide(None, current, target)
    if isinstance(expected, Step):
        assert got == expected
    else:
        assert isinstance(got, str)
        assert expected in got


@pytest.mark.parametrize(
    "stored",
    [None, "Idle", "Waiting", "SCENARIO_STATE_COMPLETED", "Denied", "not a state"],
)
def test_the_apiservers_initialisation_restarts_the_lifecycle(stored: str | None) -> None:
    """Empty current state and target idle: accepted whatever is stored (an apply restarts the
    scenario), and a no-op when it is idle already."""
    got = decide(stored, "", "idle")
    assert isinstance(got, Step)
    assert got.to_state is S.IDLE
    assert got.event == INITIALISATION
    assert got.from_state is (parse_state(stored) if stored else None)
    assert got.unchanged == (stored == "Idle")


def test_is_initialisation() -> None:
    assert is_initialisation("", "idle")
    assert is_initialisation("  ", "IDLE")
    assert not is_initialisation("", "waiting")
    assert not is_initialisation("idle", "idle")


@pytest.mark.parametrize(
    ("stored", "target", "says"),
    [
        pytest.param("Waiting", "idle", "the scenario is Waiting (stored)", id="names-stored"),
        pytest.param("SCENARIO_STATE_WAITING", "idle", "the scenario is Waiting (stored)", id="enum-stored"),
        pytest.param("garbage", "waiting", "the stored state 'garbage' is not a scenario state", id="bad-stored"),
        pytest.param("Idle", "running", "target_state 'running' is not a scenario state", id="bad-target"),
        pytest.param(None, "", "target_state '' is not a scenario state", id="empty-target"),
    ],
)  # fmt: skip
def test_refusals_say_what_they_were_judged_from(
    stored: str | None, target: str, says: str
) -> None:
    got = decide(stored, "idle", target)
    assert isinstance(got, str)
    assert says in got


@pytest.mark.parametrize(
    ("stored", "target", "why"),
    [
        ("satisfied", "idle", "the scenario is Satisfied (stored); Satisfied → Idle is not in "
         "the lifecycle (from Satisfied: Allowed, Denied)"),
        ("denied", "idle", "the scenario is Denied (stored); Denied → Idle is not in the "
         "lifecycle (from Denied: none (final))"),
    ],
)  # fmt: skip
def test_a_refusal_lists_the_states_the_scenario_may_go_to(
    stored: str, target: str, why: str
) -> None:
    """The sentence names every next state the lifecycle allows, or says there is none."""
    assert decide(stored, "x", target) == why
