"""The etcd key layout (docs/contract.md, Reads and Writes): which prefix a key belongs to and
what name it carries.

Purely computational. Every prefix is configurable, so the layout is a value built from
settings, not module constants.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

MAX_NAME_LENGTH = 253  # a DNS subdomain's limit: every Pullpiri resource name fits in it


class Kind(enum.Enum):
    """Which family a watched key belongs to."""

    CONTAINER = "container"
    PACKAGE_SPEC = "package_spec"
    MODEL_SPEC = "model_spec"
    SCENARIO_SPEC = "scenario_spec"
    MODEL_STATE = "model_state"
    PACKAGE_STATE = "package_state"
    SCENARIO_STATE = "scenario_state"
    NODE_LIST = "node_list"  # what nodes reported through the gRPC service (core/nodelists.py)


class Resource(enum.StrEnum):
    """The resource types whose state keys the daemon writes: models and packages (derived by
    the rules), scenarios (asserted through SendStateChange, deleted with their spec)."""

    MODEL = "model"
    PACKAGE = "package"
    SCENARIO = "scenario"


class WorkKey(NamedTuple):
    """A unit of work in the queue: a model or package *name*, never its value."""

    resource: Resource
    name: str

    def __str__(self) -> str:
        return f"{self.resource}/{self.name}"


def name_problem(name: str) -> str | None:
    """Why `name` cannot be part of a key, or None when it can.

    A name must be non-empty, at most 253 characters, contain no '/' (it would change the key's
    shape) and no whitespace or control characters (they make keys that tools mangle).
    """
    if not name:
        return "empty name"
    if len(name) > MAX_NAME_LENGTH:
        return f"name longer than {MAX_NAME_LENGTH} characters"
    if "/" in name:
        return "name contains '/'"
    # Every whitespace character but the space is unprintable (Unicode separators and
    # controls), so these two C-level scans find exactly the whitespace and control characters.
    if " " in name or not name.isprintable():
        return "name contains whitespace or control characters"
    return None


_PREFIX_FIELD = {
    Kind.CONTAINER: "containers",
    Kind.PACKAGE_SPEC: "packages",
    Kind.MODEL_SPEC: "models",
    Kind.SCENARIO_SPEC: "scenarios",
    Kind.MODEL_STATE: "model_states",
    Kind.PACKAGE_STATE: "package_states",
    Kind.SCENARIO_STATE: "scenario_states",
    Kind.NODE_LIST: "node_lists",
}
_STATE_KINDS = {
    Resource.MODEL: Kind.MODEL_STATE,
    Resource.PACKAGE: Kind.PACKAGE_STATE,
    Resource.SCENARIO: Kind.SCENARIO_STATE,
}
_STATE_FAMILIES = frozenset(_STATE_KINDS.values())  # keys shaped `{prefix}{name}/state`


@dataclass(frozen=True, slots=True)
class KeyLayout:
    """Prefixes of the keys the daemon reads and writes."""

    containers: str = "/pullpiri/metrics/containers/"
    packages: str = "Package/"
    models: str = "Model/"
    scenarios: str = "Scenario/"
    model_states: str = "/model/"
    package_states: str = "/package/"
    scenario_states: str = "/scenario/"
    own: str = "/statemanager/"

    @property
    def node_lists(self) -> str:
        """Where nodes' container lists are kept: under the daemon's own prefix."""
        return f"{self.own}nodes/"

    def watched(self) -> dict[Kind, str]:
        """Every prefix the daemon lists and watches, by the kind of key under it."""
        return {kind: getattr(self, field) for kind, field in _PREFIX_FIELD.items()}

    def watched_together(self) -> list[list[str]]:
        """Groups of state prefixes to watch as one range (the daemon's own writes to them then
        come back as one watch response): runs of state prefixes with no other watched prefix
        between them in key order."""
        order = sorted(self.watched().items(), key=lambda item: item[1])
        groups: list[list[str]] = []
        run: list[str] = []
        for kind, prefix in [*order, (None, "")]:
            if kind in _STATE_FAMILIES:
                run.append(prefix)
                continue
            if len(run) > 1:
                groups.append(run)
            run = []
        return groups

    def name_in(self, kind: Kind, key: str) -> str | None:
        """The resource name in a key listed under `kind`'s prefix; None when the key is not one
        of ours (a state prefix also holds keys like `/model/x/other` that are not states)."""
        prefix: str = getattr(self, _PREFIX_FIELD[kind])  # no dict built per event
        if not key.startswith(prefix):
            return None
        rest = key[len(prefix) :]
        if kind in _STATE_FAMILIES:
            if not rest.endswith("/state"):
                return None
            rest = rest[: -len("/state")]
            if "/" in rest:
                return None
        return rest

    def key_of(self, kind: Kind, name: str) -> str:
        """The key under `kind`'s prefix that carries `name` (the inverse of `name_in`)."""
        prefix: str = getattr(self, _PREFIX_FIELD[kind])
        if kind in _STATE_FAMILIES:
            return f"{prefix}{name}/state"
        return prefix + name

    def state_key(self, key: WorkKey) -> str:
        return self.key_of(_STATE_KINDS[key.resource], key.name)
