"""What a subscriber wants of the stream of transitions, and how a cut-off says where to resume."""

from __future__ import annotations

import pytest

from statemanager.core.history import Transition
from statemanager.core.keys import Resource
from statemanager.core.subscriptions import FELL_BEHIND, CutOff, selector


def transition(resource: Resource, name: str) -> Transition:
    return Transition("t", resource, name, "Running", "Error", "r", "why", 1, 2, 3, None)


ALL = [transition(r, n) for r in Resource for n in ("pay", "web")]


@pytest.mark.parametrize(
    ("resources", "names", "wanted"),
    [
        ((), (), {(r, n) for r in Resource for n in ("pay", "web")}),
        ((Resource.PACKAGE,), (), {(Resource.PACKAGE, "pay"), (Resource.PACKAGE, "web")}),
        ((), ("web",), {(r, "web") for r in Resource}),
        ((Resource.MODEL, Resource.SCENARIO), ("pay",), {(Resource.MODEL, "pay"), (Resource.SCENARIO, "pay")}),
        ((Resource.MODEL,), ("nope",), set()),
    ],
)  # fmt: skip
def test_a_selector_wants_its_types_and_names_and_all_when_empty(
    resources: tuple[Resource, ...], names: tuple[str, ...], wanted: set[tuple[Resource, str]]
) -> None:
    chosen = selector(resources, names)
    assert {(t.resource, t.name) for t in ALL if chosen(t)} == wanted


def test_a_cut_off_carries_why_and_where_to_resume() -> None:
    cut = CutOff(FELL_BEHIND, 41, "fell 1,024 revisions behind; resume after revision 41")
    assert (cut.reason, cut.resume_after, cut.detail, str(cut)) == (
        FELL_BEHIND, 41, "fell 1,024 revisions behind; resume after revision 41",
        "fell 1,024 revisions behind; resume after revision 41",
    )  # fmt: skip
