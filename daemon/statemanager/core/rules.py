"""The model and package rules of docs/contract.md, Rules, first matching row wins. Purely
computational.

Each rule returns a `Verdict`: the state, the row that decided it and a sentence saying why, so
`statemanager status` can show an operator the reason next to every state.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from statemanager.core.states import ContainerClass, ModelState, PackageState


@dataclass(frozen=True, slots=True)
class Verdict:
    state: str
    rule: str
    reason: str


def _of(n: int, total: int, what: str) -> str:
    return f"{n} of {total} {what}"


def model_verdict(counts: Mapping[ContainerClass, int]) -> Verdict:
    """Rows M1–M5 over the number of containers in each class."""
    return _model_verdict(
        sum(counts.values()),
        counts.get(ContainerClass.DEAD, 0),
        counts.get(ContainerClass.EXITED, 0),
        counts.get(ContainerClass.NOT_STARTED, 0),
        counts.get(ContainerClass.ACTIVE, 0),
    )


# A verdict depends only on a few numbers (containers per class; models per state), which
# repeat across a fleet: cached, an evaluation on the write path is a lookup, not a new sentence.
_CACHED = 4096


@functools.lru_cache(maxsize=_CACHED)
def _model_verdict(total: int, dead: int, exited: int, not_started: int, active: int) -> Verdict:
    if total == 0:
        return Verdict(ModelState.PENDING, "M1", "no containers")
    if dead:
        return Verdict(ModelState.FAILED, "M2", _of(dead, total, "containers dead"))
    if exited == total:
        return Verdict(ModelState.SUCCEEDED, "M3", f"all {total} containers exited")
    if not_started == total:
        return Verdict(ModelState.PENDING, "M4", f"all {total} containers not started")
    return Verdict(ModelState.RUNNING, "M5", _of(active, total, "containers running or unknown"))


def package_verdict(model_states: Iterable[str]) -> Verdict:
    """Rows P1–P6 over the states of the package's models."""
    return _package_verdict(frozenset(Counter(model_states).items()))


@functools.lru_cache(maxsize=_CACHED)
def _package_verdict(state_counts: frozenset[tuple[str, int]]) -> Verdict:
    counts = dict(state_counts)
    total = sum(counts.values())
    failed = counts.get(ModelState.FAILED, 0)
    if total == 0:
        return Verdict(PackageState.INITIALIZING, "P1", "no models")
    if failed == total:
        return Verdict(PackageState.ERROR, "P2", f"all {total} models Failed")
    if failed:
        return Verdict(PackageState.DEGRADED, "P3", _of(failed, total, "models Failed"))
    if counts.get(ModelState.PENDING) == total:
        return Verdict(PackageState.PAUSED, "P4", f"all {total} models Pending")
    if counts.get(ModelState.SUCCEEDED) == total:
        return Verdict(PackageState.RUNNING, "P5", f"all {total} models Succeeded")
    if counts.get(ModelState.RUNNING) == total:
        return Verdict(PackageState.RUNNING, "P6", f"all {total} models Running")
    mix = ", ".join(f"{n} {state}" for state, n in sorted(counts.items(), key=_most_first))
    return Verdict(PackageState.RUNNING, "P6", f"{mix} of {total} models")


def _most_first(item: tuple[str, int]) -> tuple[int, str]:
    return -item[1], item[0]
