"""The simulator's oracle: the state keys a store's inputs call for, derived from the contract's
rules alone (README, "States"), with its own tiny parsers and rules table. It deliberately
imports nothing from the daemon: a bug shared by both could not be seen otherwise.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

CONTAINERS = "/pullpiri/metrics/containers/"
PACKAGES = "Package/"
MODELS = "Model/"
SCENARIOS = "Scenario/"
MODEL_STATES = "/model/"
PACKAGE_STATES = "/package/"
NODE_LISTS = "/statemanager/nodes/"
MODEL_ANNOTATION = "io.pullpiri.annotations.model"


def _yaml(value: bytes, kind: str, name: str) -> dict[str, Any] | None:
    try:
        doc = yaml.load(value, Loader=yaml.CSafeLoader)
    except yaml.YAMLError:
        return None
    if not isinstance(doc, dict) or doc.get("kind") != kind:
        return None
    meta = doc.get("metadata")
    if not isinstance(meta, dict) or meta.get("name") != name:
        return None
    spec = doc.get("spec")
    return spec if isinstance(spec, dict) else None


@functools.lru_cache(maxsize=4096)  # a run parses the same few values again and again
def container_class(value: bytes) -> tuple[str, str] | None:
    """(model, class) of a container value; None when it is not usable (treated as absent)."""
    try:
        doc = json.loads(value)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    state, annotation = doc.get("state"), doc.get("annotation")
    if not isinstance(state, dict) or not isinstance(annotation, dict):
        return None
    model, status = annotation.get(MODEL_ANNOTATION), state.get("Status")
    if not isinstance(model, str) or not isinstance(status, str):
        return None
    status = status.lower()
    code = str(state.get("ExitCode", "")).strip()
    if status == "dead" or state.get("OOMKilled") == "true":
        return model, "dead"
    if status == "exited":
        return model, "exited" if code in ("", "0") else "dead"
    if status in ("paused", "created", "initialized"):
        return model, "not started"
    return model, "active"


def model_rule(classes: list[str]) -> str:
    if not classes:
        return "Pending"
    if "dead" in classes:
        return "Failed"
    if all(c == "exited" for c in classes):
        return "Succeeded"
    if all(c == "not started" for c in classes):
        return "Pending"
    return "Running"


def package_rule(states: list[str]) -> str:
    if not states:
        return "Initializing"
    if all(s == "Failed" for s in states):
        return "Error"
    if "Failed" in states:
        return "Degraded"
    if all(s == "Pending" for s in states):
        return "Paused"
    return "Running"


@functools.lru_cache(maxsize=4096)  # a run parses the same few values again and again
def package_models(key: str, value: bytes) -> list[str] | None:
    spec = _yaml(value, "Package", key[len(PACKAGES) :])
    if spec is None or not isinstance(spec.get("models"), list):
        return None
    names = [m.get("name") for m in spec["models"] if isinstance(m, dict)]
    return [n for n in names if isinstance(n, str)]


@functools.lru_cache(maxsize=4096)  # a run parses the same few values again and again
def scenario_target(key: str, value: bytes) -> str | None:
    spec = _yaml(value, "Scenario", key[len(SCENARIOS) :])
    target = spec.get("target") if spec is not None else None
    return target if isinstance(target, str) else None


def derive(store: Mapping[str, bytes]) -> dict[str, str]:
    """Every state key the rules call for (key → value); any other state key must be absent."""
    classes: dict[str, list[str]] = {}
    packages: dict[str, list[str]] = {}
    for key, value in store.items():
        if key.startswith(CONTAINERS):
            found = container_class(value)
            if found is not None:
                classes.setdefault(found[0], []).append(found[1])
        elif key.startswith(PACKAGES):
            models = package_models(key, value)
            if models is not None:
                packages[key[len(PACKAGES) :]] = models
    for value in node_list_containers(store):
        found = container_class(value)
        if found is not None:
            classes.setdefault(found[0], []).append(found[1])
    listed = {m for models in packages.values() for m in models}
    models = {m: model_rule(classes.get(m, [])) for m in listed | classes.keys()}
    states = {f"{MODEL_STATES}{m}/state": s for m, s in models.items()}
    for p, names in packages.items():
        states[f"{PACKAGE_STATES}{p}/state"] = package_rule([models[m] for m in names])
    return states


def node_list_containers(store: Mapping[str, bytes]) -> list[bytes]:
    """The container values of every node's current list: the generation its pointer names,
    only when every chunk it counts is there (a list is seen whole or not at all). The
    simulation's nodes report distinct container ids, so no claim is contested."""
    values = []
    for key, value in store.items():
        if not (key.startswith(NODE_LISTS) and key.endswith("/list")):
            continue
        pointer = json.loads(value)
        base = f"{key[: -len('list')]}gen/{pointer['generation']}/"
        chunks = [store.get(f"{base}{i:06d}") for i in range(pointer["chunks"])]
        if all(c is not None for c in chunks):
            for chunk in chunks:
                assert chunk is not None
                values += [line.split(b"\t", 1)[1] for line in chunk.split(b"\n")]
    return values


def scenarios(store: Mapping[str, bytes]) -> dict[str, set[str]]:
    """Package → the scenarios targeting it."""
    found: dict[str, set[str]] = {}
    for key, value in store.items():
        if key.startswith(SCENARIOS):
            target = scenario_target(key, value)
            if target is not None:
                found.setdefault(target, set()).add(key[len(SCENARIOS) :])
    return found


def state_keys(keys: Iterable[str]) -> set[str]:
    return {
        k
        for k in keys
        if (k.startswith(MODEL_STATES) or k.startswith(PACKAGE_STATES)) and k.endswith("/state")
    }
