"""A bug while planning some keys costs those keys only: the planning quarantine policy."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest
from structlog.testing import capture_logs

from statemanager.core.keys import Resource, WorkKey
from statemanager.core.planner import Plan, plan
from statemanager.runtime import controller as controller_module
from statemanager.runtime.controller import Controller
from statemanager.runtime.metrics import Metrics

from support.memetcd import MemEtcd
from support.runtime import daemon_settings, wire

GOOD = WorkKey(Resource.MODEL, "good")
BAD = WorkKey(Resource.MODEL, "bad")
OTHER = WorkKey(Resource.PACKAGE, "other")


def _controller() -> tuple[Controller, Metrics]:
    """A controller as the daemon wires it (planning never touches etcd); in a running loop."""
    metrics = Metrics()
    parts = wire(MemEtcd(), daemon_settings(), metrics=metrics)
    return parts.controller, metrics


def _quarantined(metrics: Metrics) -> float:
    return (
        metrics.registry.get_sample_value("statemanager_quarantined_total", {"stage": "plan"})
        or 0.0
    )


async def test_the_key_that_raises_is_set_aside_and_the_rest_planned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Planning that raises on one key plans every other key together and reports that key
    once per cause revision, with the traceback."""

    def buggy(index: Any, keys: Iterable[WorkKey], previous: Any = None) -> Plan:
        keys = list(keys)
        if BAD in keys:
            raise KeyError("planted")
        return Plan([[key] for key in keys], {})  # a "group" per key: shows who was planned

    monkeypatch.setattr(controller_module, "plan", buggy)
    controller, metrics = _controller()
    with capture_logs() as logs:
        assert controller._plan([GOOD, BAD, OTHER])[0] == [[GOOD], [OTHER]]
        assert controller._plan([BAD])[0] == []  # same cause revision: not reported again
    [event] = [e for e in logs if e["event"] == "key_quarantined"]
    assert event["key"] == "model/bad" and event["stage"] == "plan"
    assert "KeyError: 'planted'" in event["error"]
    assert _quarantined(metrics) == 1


async def test_a_batch_that_fails_only_as_a_whole_is_set_aside(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When no single key makes planning raise but the batch does, every key of it is set
    aside (rather than retried forever or ending the worker)."""

    def buggy(index: Any, keys: Iterable[WorkKey], previous: Any = None) -> Plan:
        keys = list(keys)
        if len(keys) > 1:
            raise RuntimeError("planted")
        return plan(index, keys, previous)

    monkeypatch.setattr(controller_module, "plan", buggy)
    controller, metrics = _controller()
    assert controller._plan([GOOD, OTHER])[0] == []
    assert _quarantined(metrics) == 2
