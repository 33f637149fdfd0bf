"""The by-state gauges: each label reads the last counts given, whatever came before."""

from __future__ import annotations

from collections import Counter

from statemanager.core.states import ModelState
from statemanager.runtime.metrics import OTHER, Metrics

KNOWN = frozenset(s.value for s in ModelState)


def _gauge(metrics: Metrics) -> dict[str, float | None]:
    name = "statemanager_models"
    return {s: metrics.registry.get_sample_value(name, {"state": s}) for s in [*KNOWN, OTHER]}


def test_set_counts_follows_every_change_and_every_return() -> None:
    """Counts that move, move back, vanish and include unknown names: every label reads the
    latest counts (only changed labels are set, so a stale value would show here)."""
    metrics = Metrics()
    steps: list[Counter[str]] = [
        Counter({"Running": 3, "Failed": 1}),
        Counter({"Running": 2, "Failed": 2}),
        Counter({"Running": 3, "Failed": 1}),
        Counter({"Running": 0, "junk": 2, "": 1}),
        Counter(),
    ]
    for counts in steps:
        metrics.set_counts(metrics.models, counts, KNOWN)
        expected = dict.fromkeys([*KNOWN, OTHER], 0.0)
        for name, n in counts.items():
            expected[name if name in KNOWN else OTHER] += n
        assert _gauge(metrics) == expected
