"""The etcd key layout: names in keys, state keys, and which names can form a key."""

from __future__ import annotations

import pytest

from statemanager.core.keys import MAX_NAME_LENGTH, KeyLayout, Kind, Resource, WorkKey, name_problem

LAYOUT = KeyLayout()


@pytest.mark.parametrize(
    ("kind", "key", "name"),
    [
        pytest.param(Kind.CONTAINER, "/pullpiri/metrics/containers/3f2a", "3f2a", id="container"),
        pytest.param(Kind.PACKAGE_SPEC, "Package/payment", "payment", id="package-spec"),
        pytest.param(Kind.MODEL_SPEC, "Model/pay.backend", "pay.backend", id="model-spec"),
        pytest.param(Kind.SCENARIO_SPEC, "Scenario/recover", "recover", id="scenario-spec"),
        pytest.param(Kind.MODEL_STATE, "/model/pay.backend/state", "pay.backend", id="model-state"),
        pytest.param(Kind.PACKAGE_STATE, "/package/payment/state", "payment", id="package-state"),
        pytest.param(Kind.MODEL_STATE, "/model/m/other", None, id="state-prefix-not-state"),
        pytest.param(Kind.MODEL_STATE, "/model/a/b/state", None, id="state-name-with-slash"),
        pytest.param(Kind.MODEL_STATE, "/package/p/state", None, id="other-prefix"),
        pytest.param(Kind.PACKAGE_SPEC, "Model/m", None, id="spec-other-prefix"),
    ],
)
def test_name_in(kind: Kind, key: str, name: str | None) -> None:
    """The name is the key minus its prefix (and `/state`); foreign keys give None."""
    assert LAYOUT.name_in(kind, key) == name


def test_name_in_follows_configured_prefixes() -> None:
    """A layout built from settings reads its own prefixes, not the defaults."""
    layout = KeyLayout(model_states="/x/models/")
    assert layout.name_in(Kind.MODEL_STATE, "/x/models/m/state") == "m"
    assert layout.name_in(Kind.MODEL_STATE, "/model/m/state") is None


def test_state_key() -> None:
    """State keys are `{prefix}{name}/state` for models and packages (docs/contract.md, Writes)."""
    assert LAYOUT.state_key(WorkKey(Resource.MODEL, "pay.backend")) == "/model/pay.backend/state"
    assert LAYOUT.state_key(WorkKey(Resource.PACKAGE, "pay")) == "/package/pay/state"


def test_state_key_round_trips_through_name_in() -> None:
    """Reading back a written state key yields the name it was written for."""
    key = WorkKey(Resource.PACKAGE, "payment_service")
    assert LAYOUT.name_in(Kind.PACKAGE_STATE, LAYOUT.state_key(key)) == "payment_service"


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("", id="empty"),
        pytest.param("a/b", id="slash"),
        pytest.param("a b", id="space"),
        pytest.param("a\tb", id="tab"),
        pytest.param("a\x00b", id="nul"),
        pytest.param("a\x7fb", id="del"),
        pytest.param("x" * (MAX_NAME_LENGTH + 1), id="too-long"),
    ],
)
def test_name_problem_rejects(name: str) -> None:
    """Names that would change a key's shape or be mangled by tools are rejected with a reason."""
    assert name_problem(name)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("payment_service.backend_model", id="dotted"),
        pytest.param("x" * MAX_NAME_LENGTH, id="max-length"),
        pytest.param("a-b_c.d", id="punctuation"),
    ],
)
def test_name_problem_accepts(name: str) -> None:
    """Ordinary Pullpiri resource names, up to 253 characters, can form a key."""
    assert name_problem(name) is None


def test_adjacent_state_prefixes_are_watched_together() -> None:
    """The default model and package state prefixes sit side by side in key order: one range
    (the containers' prefix lies between them and the scenario states'); a prefix between
    two keeps them apart."""
    assert KeyLayout().watched_together() == [["/model/", "/package/"]]
    apart = KeyLayout(containers="/n/containers/")
    assert apart.watched_together() == [["/package/", "/scenario/"]]
