"""Parsing of the values the daemon reads: container info JSON and Package/Model/Scenario YAML.

Purely computational. Every problem raises `BadInput` with a short machine-readable `kind`
(a metric label with a fixed set of values) and a human sentence; the caller reports it and
treats the key as absent (SPEC §7).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import yaml

from statemanager.errors import BadInput
from statemanager.keys import name_problem
from statemanager.states import ContainerClass, ContainerStatus, classify, parse_status

MODEL_ANNOTATION = "io.pullpiri.annotations.model"

# libyaml's safe loader when PyYAML was built with it: the same safe subset as yaml.safe_load
# (no arbitrary tags), several times faster on the many small specs a fleet has.
_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

BAD_INPUT_KINDS = (
    "oversized",
    "invalid_encoding",
    "invalid_json",
    "invalid_yaml",
    "wrong_type",
    "wrong_kind",
    "bad_name",
    "name_mismatch",
)


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    """What the rules need from one container info value."""

    names: tuple[str, ...]
    status: ContainerStatus
    cls: ContainerClass
    model_annotation: str | None
    # The node that reported it, when it came through SendChangedContainerList (statemanager's
    # own field; Pullpiri's writers leave it out).
    node: str | None = None


def _utf8(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput("invalid_encoding", f"not UTF-8: {exc.reason}") from None


def check_size(raw: bytes, limit: int) -> None:
    if len(raw) > limit:
        raise BadInput("oversized", f"value of {len(raw)} bytes exceeds the {limit}-byte limit")


def _mapping(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadInput("wrong_type", f"{where} must be a mapping, got {type(value).__name__}")
    return value


def _string(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise BadInput("wrong_type", f"{where} must be a string, got {type(value).__name__}")
    return value


def _valid_name(value: object, where: str) -> str:
    name = _string(value, where)
    problem = name_problem(name)
    if problem:
        raise BadInput("bad_name", f"{where} {name[:80]!r}: {problem}")
    return name


def _flag(value: object, where: str) -> bool:
    """Runtimes write booleans as "true"/"false" strings (SPEC §2); real booleans are accepted."""
    if isinstance(value, bool):
        return value
    text = _string(value, where).strip().lower()
    if text in ("true", "false", ""):
        return text == "true"
    raise BadInput("wrong_type", f'{where} must be "true" or "false", got {text[:20]!r}')


def parse_container(raw: bytes) -> ContainerInfo:
    """Parse a container info JSON object (SPEC §2); extra fields are ignored."""
    try:
        doc = json.loads(_utf8(raw))  # bytes would let json guess UTF-16/32; SPEC says UTF-8
    except json.JSONDecodeError as exc:
        raise BadInput("invalid_json", f"invalid JSON: {exc.msg} at line {exc.lineno}") from None
    doc = _mapping(doc, "container info")
    state = _mapping(doc.get("state"), "state")
    status = parse_status(_string(state.get("Status", ""), "state.Status"))
    exit_code = state.get("ExitCode")
    if isinstance(exit_code, int) and not isinstance(exit_code, bool):
        exit_code = str(exit_code)  # Docker's own API gives an integer; same meaning
    elif exit_code is not None:
        exit_code = _string(exit_code, "state.ExitCode")
    oom = _flag(state.get("OOMKilled", "false"), "state.OOMKilled")
    raw_names = doc.get("names", [])
    if not isinstance(raw_names, list):
        raise BadInput("wrong_type", f"names must be a list, got {type(raw_names).__name__}")
    names = tuple(_string(n, "names[]") for n in raw_names)
    annotation = _mapping(doc.get("annotation", {}), "annotation")
    model = annotation.get(MODEL_ANNOTATION)
    if model is not None:
        model = _valid_name(model, f"annotation {MODEL_ANNOTATION}")
    node = doc.get("node")
    if node is not None:
        node = _string(node, "node")
    return ContainerInfo(names, status, classify(status, exit_code, oom), model, node)


def _spec_document(raw: bytes, kind: str, name: str) -> dict[str, Any]:
    """Load one YAML document of `kind` whose metadata.name, if given, is the key's name."""
    text = _utf8(raw)
    try:
        doc = yaml.load(text, Loader=_SafeLoader)  # a safe loader: see _SafeLoader
    except yaml.YAMLError as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BadInput("invalid_yaml", f"invalid YAML: {first_line}") from None
    doc = _mapping(doc, f"{kind} document")
    declared = doc.get("kind", kind)
    if declared != kind:
        raise BadInput("wrong_kind", f"kind is {str(declared)[:40]!r}, expected {kind!r}")
    metadata = _mapping(doc.get("metadata", {}), "metadata")
    declared_name = metadata.get("name", name)
    if declared_name != name:
        raise BadInput(
            "name_mismatch", f"metadata.name {str(declared_name)[:80]!r} differs from the key"
        )
    return _mapping(doc.get("spec"), "spec")


def _named_list(spec: dict[str, Any], field: str) -> tuple[str, ...]:
    """`spec.<field>[].name`, duplicates dropped, order kept."""
    items = spec.get(field, [])
    if items is None:
        return ()
    if not isinstance(items, list):
        raise BadInput("wrong_type", f"spec.{field} must be a list, got {type(items).__name__}")
    names: dict[str, None] = {}
    for item in items:
        entry = _mapping(item, f"spec.{field}[]")
        names[_valid_name(entry.get("name"), f"spec.{field}[].name")] = None
    return tuple(names)


def parse_package(raw: bytes, name: str) -> tuple[str, ...]:
    """The model names a Package lists."""
    return _named_list(_spec_document(raw, "Package", name), "models")


def parse_model(raw: bytes, name: str) -> tuple[str, ...]:
    """The container names a Model lists (NodeAgent names them `{model}_{container}`)."""
    return _named_list(_spec_document(raw, "Model", name), "containers")


def parse_scenario(raw: bytes, name: str) -> str:
    """The package a Scenario targets."""
    spec = _spec_document(raw, "Scenario", name)
    return _valid_name(spec.get("target"), "spec.target")
