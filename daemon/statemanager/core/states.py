"""State vocabularies and container classification (docs/contract.md, Container states).
Purely computational."""

from __future__ import annotations

import enum


class ContainerStatus(enum.StrEnum):
    """`state.Status` of a container, lower-cased; any other word is UNKNOWN."""

    CREATED = "created"
    INITIALIZED = "initialized"
    RUNNING = "running"
    PAUSED = "paused"
    EXITED = "exited"
    DEAD = "dead"
    UNKNOWN = "unknown"


class ContainerClass(enum.Enum):
    """What the model rules need to know about one container; four buckets keep evaluation O(1)."""

    DEAD = "dead"
    EXITED = "exited"
    NOT_STARTED = "not started"  # paused, created or initialized
    ACTIVE = "active"  # running or unknown: anything that makes a model Running

    # By identity, as equality is: Enum's own __hash__ is Python code, and every container
    # event and every model evaluation looks classes up in a Counter.
    __hash__ = object.__hash__


class ModelState(enum.StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class PackageState(enum.StrEnum):
    INITIALIZING = "Initializing"
    RUNNING = "Running"
    DEGRADED = "Degraded"
    ERROR = "Error"
    PAUSED = "Paused"


_KNOWN_STATUS = {s.value: s for s in ContainerStatus}
_NOT_STARTED = {ContainerStatus.PAUSED, ContainerStatus.CREATED, ContainerStatus.INITIALIZED}


def parse_status(word: str) -> ContainerStatus:
    """Map a runtime's status word to the vocabulary; unknown words are UNKNOWN, not errors."""
    return _KNOWN_STATUS.get(word.strip().lower(), ContainerStatus.UNKNOWN)


def classify(status: ContainerStatus, exit_code: str | None, oom_killed: bool) -> ContainerClass:
    """Dead when `dead`, exited non-zero, or OOM-killed; exited 0 (or no code) is exited
    (docs/contract.md, Container states).

    An exit code that is not an integer counts as non-zero: a container that exited and cannot
    say it succeeded has failed, which is the answer an operator would want paged.
    """
    if oom_killed or status is ContainerStatus.DEAD:
        return ContainerClass.DEAD
    if status is ContainerStatus.EXITED:
        code = (exit_code or "").strip()
        if code in ("", "0"):
            return ContainerClass.EXITED
        try:
            return ContainerClass.EXITED if int(code) == 0 else ContainerClass.DEAD
        except ValueError:
            return ContainerClass.DEAD
    if status in _NOT_STARTED:
        return ContainerClass.NOT_STARTED
    return ContainerClass.ACTIVE
