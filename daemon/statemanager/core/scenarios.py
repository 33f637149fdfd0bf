"""The scenario lifecycle (docs/contract.md, Scenario states): which change of a scenario's
state a `SendStateChange` may make, judged against the state stored for it. Purely
computational.

Scenario states are not derived: the platform's components assert them (FilterGateway,
PolicyManager's decisions through it, ActionController), and the platform's own StateManager
accepts exactly these changes (its `state_machine.rs`, `initialize_scenario_transitions`):

    idle → waiting → satisfied → allowed → completed
                              ↘ denied

Callers send lower-case words ("waiting"); a word is read as Pullpiri reads it (trimmed,
upper-cased, '-' as '_'), and the enum spelling Pullpiri's StateManager stores
(`SCENARIO_STATE_WAITING`) is read too, so keys it wrote keep their meaning. This daemon
stores the capitalised word (`Waiting`), like model and package states.

One change is outside the table: the ApiServer's initialisation. When a Scenario is applied,
Pullpiri's ApiServer sends an empty current state and target `idle` (its `artifact/mod.rs`,
`notify_scenario_state`) before it hands the scenario to FilterGateway, whose first change is
idle → waiting. It is accepted whatever is stored: an apply (re)starts the scenario's
lifecycle. Refusing it when a state is stored would refuse every later change of a re-applied
scenario (FilterGateway sends idle → waiting again), and the callers never retry; only a
withdraw (which deletes the state with the spec) would unblock it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

_ENUM_PREFIX = "SCENARIO_STATE_"  # the spelling of Pullpiri's ScenarioState enum values
INITIALISATION = "scenario_initialisation"  # the event name of the ApiServer's initialisation


class ScenarioState(enum.StrEnum):
    """A scenario state, as this daemon stores it at `/scenario/{name}/state`."""

    IDLE = "Idle"
    WAITING = "Waiting"
    SATISFIED = "Satisfied"
    ALLOWED = "Allowed"
    DENIED = "Denied"
    COMPLETED = "Completed"


# Every allowed change, by from-state, with the event Pullpiri's state machine names it by.
LIFECYCLE: Mapping[ScenarioState, Mapping[ScenarioState, str]] = {
    ScenarioState.IDLE: {ScenarioState.WAITING: "scenario_activation"},
    ScenarioState.WAITING: {ScenarioState.SATISFIED: "condition_met"},
    ScenarioState.SATISFIED: {
        ScenarioState.ALLOWED: "policy_verification_success",
        ScenarioState.DENIED: "policy_verification_failure",
    },
    ScenarioState.ALLOWED: {ScenarioState.COMPLETED: "scenario_completion"},
}
_WORDS = ", ".join(s.value.lower() for s in ScenarioState)  # quoted by refusals


def normalise(word: str) -> str:
    """A state word as Pullpiri compares it: trimmed, upper-cased, '-' read as '_'."""
    return word.strip().upper().replace("-", "_")


def parse_state(word: str) -> ScenarioState | None:
    """The state a word names (`waiting`, `Waiting`, `SCENARIO_STATE_WAITING`, ...), or None
    when it names none."""
    name = normalise(word).removeprefix(_ENUM_PREFIX)
    return ScenarioState.__members__.get(name)


def is_initialisation(current: str, target: str) -> bool:
    """Whether a request is the ApiServer's initialisation: no current state, target idle."""
    return not current.strip() and parse_state(target) is ScenarioState.IDLE


@dataclass(frozen=True, slots=True)
class Step:
    """An accepted change: `from_state` None for a scenario with no state yet. `from_state`
    equal to `to_state` only for an initialisation of a scenario already idle (nothing to
    write)."""

    from_state: ScenarioState | None
    to_state: ScenarioState
    event: str

    @property
    def unchanged(self) -> bool:
        return self.from_state is self.to_state


def decide(stored: str | None, current: str, target: str) -> Step | str:
    """The change a request makes, or why it is no lifecycle change (a sentence naming the
    state it was judged from).

    `stored` is the value at the scenario's state key (None: absent); the request's `current`
    stands in only for a scenario with no stored state, as in Pullpiri's StateManager.
    """
    to_state = parse_state(target)
    if to_state is None:
        return f"target_state {target!r} is not a scenario state ({_WORDS})"
    stored_state = parse_state(stored) if stored is not None else None
    if is_initialisation(current, target):
        return Step(stored_state, ScenarioState.IDLE, INITIALISATION)
    if stored is not None and stored_state is None:
        return f"the stored state {stored!r} is not a scenario state ({_WORDS})"
    from_state = stored_state or parse_state(current)
    if from_state is None:
        return f"current_state {current!r} is not a scenario state ({_WORDS})"
    event = LIFECYCLE.get(from_state, {}).get(to_state)
    if event is None:
        whose = "stored" if stored_state is not None else "as the request says; none stored"
        nexts = ", ".join(s.value for s in LIFECYCLE.get(from_state, {})) or "none (final)"
        return (
            f"the scenario is {from_state.value} ({whose}); {from_state.value} → "
            f"{to_state.value} is not in the lifecycle (from {from_state.value}: {nexts})"
        )
    return Step(from_state, to_state, event)
