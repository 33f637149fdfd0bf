"""Parsing of the values the daemon reads: container info JSON and Package/Model/Scenario YAML.

Purely computational and total: for any bytes, a parser returns a value or raises `BadInput`
with a short machine-readable `kind` (a metric label with a fixed set of values) and a human
sentence; the caller reports it and treats the key as absent (README, "What happens to bad
input"). The work is bounded too, whatever the bytes: JSON nesting depth, YAML nesting depth
and node count with every alias expanded, and the length of YAML numbers.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, NamedTuple

import orjson
import yaml
from yaml.constructor import SafeConstructor
from yaml.events import NodeEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from statemanager.core import plainyaml
from statemanager.core.errors import BadInput
from statemanager.core.keys import name_problem
from statemanager.core.states import ContainerClass, ContainerStatus, classify, parse_status

MODEL_ANNOTATION = "io.pullpiri.annotations.model"
_MODEL_FIELD = f"annotation {MODEL_ANNOTATION}"

# A spec document, with every alias expanded, may hold this many nodes: real Package/Model/
# Scenario specs hold tens to a few thousand. It bounds a parse's time and memory whatever the
# bytes (a 400-byte alias bomb expands to billions of nodes).
MAX_YAML_NODES = 20_000
# Real specs nest a dozen levels; the bound keeps the composer's recursion far from Python's
# limit (libyaml alone allows 1,000 levels).
MAX_YAML_DEPTH = 100
# Numbers, booleans and dates in a spec are at most this long. PyYAML converts base-60 numbers
# (`1:59:59:…`) with big-integer arithmetic whose cost grows with the square of their length.
MAX_YAML_SCALAR_CHARS = 100

BAD_INPUT_KINDS = (
    "oversized",
    "invalid_encoding",
    "invalid_json",
    "invalid_yaml",
    "wrong_type",
    "wrong_kind",
    "bad_name",
    "name_mismatch",
    "incomplete_list",
    "history_key",  # a key under the history prefix no daemon wrote (core/history.py)
    "history_record",  # a history record that is not one a daemon wrote
)

_TAG = "tag:yaml.org,2002:"
_NUMBER_TAGS = (_TAG + "int", _TAG + "float")
_STR, _SEQ, _MAP = _TAG + "str", _TAG + "seq", _TAG + "map"
_SCALAR_TAGS = frozenset(_TAG + t for t in ("null", "bool", "int", "float", "binary", "timestamp"))


def _invalid_yaml(detail: str) -> BadInput:
    return BadInput("invalid_yaml", detail)


class _SpecLoader(yaml.CSafeLoader):
    """libyaml's safe loader (no arbitrary tags; its C scanner, parser and composer), whose
    composed document is checked against the bounds before any Python object is built.

    The check is what makes aliases safe: a document's size is counted *with every alias
    expanded* (an alias counts as the size of the node it names), so an alias bomb is rejected
    long before anything expands it — construction shares aliased objects, but any later walk
    of the value (formatting it, comparing it) would not. A document is never rejected for
    using anchors as such.

    libyaml is required (PyYAML's wheels bundle it): without it this class cannot be defined
    and the import fails loudly, rather than parsing with the much slower pure-Python scanner.
    """

    def construct_document(self, node: Node) -> Any:
        _check_bounds(node)
        try:
            return _plain_value(self, node)
        except (_NotPlain, yaml.YAMLError, BadInput):
            # PyYAML's constructor decides, with its own errors in its own order.
            self.constructed_objects = {}
            self.recursive_objects = {}
            return super().construct_document(node)


class _NotPlain(Exception):
    """The document needs PyYAML's full constructor: a set, an ordered map, a merge key, a tag
    on a node of another kind or of no known type, a collection as a mapping key."""


def _plain_value(loader: _SpecLoader, root: Node) -> Any:
    """The value of a bounded document of plain mappings, sequences and scalars, built as
    PyYAML's constructor builds it (an alias is the very object its anchor names; a number,
    boolean, null, date or binary comes from the loader's own constructor) but in one
    recursive pass instead of a pass of generators per collection: about half the
    constructor's cost on real specs.
    Raises _NotPlain (or the scalar constructor's error) where PyYAML would do more."""
    return _build(loader, root, {})


def _build(loader: _SpecLoader, node: Node, built: dict[int, Any]) -> Any:
    """`_plain_value` of `node`; `built` maps id(collection node) to its value, for aliases.
    A module function, not a closure: a recursive closure is a reference cycle, and each one
    would keep its document alive until the cycle collector came by."""
    if isinstance(node, ScalarNode):
        if node.tag == _STR:
            return node.value
        if node.tag in _SCALAR_TAGS:  # each a hashable value, built at once
            return loader.construct_object(node)
        raise _NotPlain
    done = built.get(id(node))
    if done is not None:
        return done
    if isinstance(node, SequenceNode) and node.tag == _SEQ:
        items: list[Any] = []
        built[id(node)] = items
        for item in node.value:
            items.append(_build(loader, item, built))
        return items
    if isinstance(node, MappingNode) and node.tag == _MAP:
        mapping: dict[Any, Any] = {}
        built[id(node)] = mapping
        for key, value in node.value:
            if not isinstance(key, ScalarNode):  # unhashable, for PyYAML to reject
                raise _NotPlain
            mapping[_build(loader, key, built)] = _build(loader, value, built)
        return mapping
    raise _NotPlain


def _check_bounds(root: Node) -> None:
    """Raise unless `root`, with every alias expanded, holds at most MAX_YAML_NODES nodes and
    its text nests at most MAX_YAML_DEPTH levels; read numbers as strings in mapping keys.

    libyaml's composer makes every alias the very node object its anchor names, so the
    composed document is a graph. The walk goes in document order and enters each node once,
    at its first occurrence (the anchored one, which the text puts before any alias to it);
    a later occurrence is an alias and counts as the size recorded then. The running count is
    therefore what composing the text one event at a time would have counted, the depth is the
    text's, and the walk's work is linear in the text, whatever the expanded size.
    """
    _Bounds().walk(root, 0)


class _Bounds:
    """The running state of one `_check_bounds` walk (an object, not a recursive closure,
    which would be a reference cycle holding the document until the cycle collector ran)."""

    def __init__(self) -> None:
        self.sizes: dict[int, int] = {}  # id(node) -> expanded size; -1 while it is walked
        self.count = 0

    def walk(self, node: Node, depth: int) -> None:
        # Every node of the text counts as a level where it stands, an alias too.
        if depth == MAX_YAML_DEPTH:
            raise _invalid_yaml(f"nested deeper than {MAX_YAML_DEPTH} levels")
        size = self.sizes.get(id(node))
        if size is not None:  # an alias
            if size < 0:
                raise _invalid_yaml("an alias refers to a node that contains it")
            self.count += size
            if self.count > MAX_YAML_NODES:
                raise _too_many()
            return
        before = self.count
        self.count += 1
        if self.count > MAX_YAML_NODES:
            raise _too_many()
        if isinstance(node, ScalarNode):
            self.sizes[id(node)] = 1
            return
        self.sizes[id(node)] = -1
        if isinstance(node, MappingNode):
            for key, value in node.value:
                # A mapping key: numbers are read as strings, as JSON has them. The hash of an
                # int or float is predictable, so thousands of keys crafted to collide would
                # make building the dict quadratic; no field this daemon reads has a number as
                # its key. An alias as a key too (its anchor's node is then a string wherever
                # it stands: one node is one value), or anchored numbers would make such keys.
                if isinstance(key, ScalarNode) and key.tag in _NUMBER_TAGS:
                    key.tag = _STR
                self.walk(key, depth + 1)
                self.walk(value, depth + 1)
        else:
            for item in node.value:
                self.walk(item, depth + 1)
        self.sizes[id(node)] = self.count - before


def _count_nodes(text: str) -> None:
    """Refuse a text of more than MAX_YAML_NODES nodes before libyaml composes it. Composing
    builds a Python object for every node, all of them before `_check_bounds` can look, so a
    256 KiB flow list of numbers took ~650 ms to refuse (1 MiB: ~3 s); counting libyaml's parse
    events stops at the bound. A text no longer than the bound holds at most about as many
    nodes as characters (`{a,b,…}` is two nodes per two characters), so shorter texts (every
    real spec) skip this. An alias counts once here: its expanded size is `_check_bounds`'s."""
    nodes = 0
    for event in yaml.parse(text, Loader=yaml.CSafeLoader):
        if isinstance(event, NodeEvent):
            nodes += 1
            if nodes > MAX_YAML_NODES:
                raise _too_many()


def _too_many() -> BadInput:
    return _invalid_yaml(f"more than {MAX_YAML_NODES} nodes, an alias counted as its target")


def _typed_scalar(construct: Callable[[SafeConstructor, Node], object]) -> Any:
    """PyYAML's constructor for a typed scalar, bounded in length and total: on values such as
    `!!int x`, `!!int ''`, `!!bool x`, `!!timestamp x` or `2001-13-45` PyYAML raises ValueError,
    IndexError, KeyError, AttributeError (each conversion reads one scalar's text, nothing
    else, so any of these means only that the text is not a value of that type)."""

    def run(loader: SafeConstructor, node: Node) -> object:
        what = node.tag.removeprefix(_TAG)
        if isinstance(node.value, str) and len(node.value) > MAX_YAML_SCALAR_CHARS:
            raise _invalid_yaml(f"{what} value longer than {MAX_YAML_SCALAR_CHARS} characters")
        try:
            return construct(loader, node)
        except (ValueError, LookupError, AttributeError, ArithmeticError):
            raise _invalid_yaml(f"invalid {what} value") from None

    return run


for _scalar in ("int", "float", "bool", "timestamp"):
    _SpecLoader.add_constructor(
        _TAG + _scalar, _typed_scalar(SafeConstructor.yaml_constructors[_TAG + _scalar])
    )


class ContainerInfo(NamedTuple):
    """What the rules need from one container info value. A named tuple, not a frozen
    dataclass: as immutable, and built in a third of the time (one is built per container
    event, a million of them at a cold start)."""

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
    """Runtimes write booleans as "true"/"false" strings (docs/contract.md, Reads); real
    booleans are accepted."""
    if isinstance(value, bool):
        return value
    text = _string(value, where).strip().lower()
    if text in ("true", "false", ""):
        return text == "true"
    raise BadInput("wrong_type", f'{where} must be "true" or "false", got {text[:20]!r}')


def parse_container(raw: bytes) -> ContainerInfo:
    """Parse a container info JSON object (docs/contract.md, Reads); extra fields are ignored."""
    # orjson rejects what the stdlib's json lets through or dies on: nesting over 1,024 levels
    # (json recurses into RecursionError), NaN and Infinity, lone surrogates; an integer beyond
    # 64 bits becomes a float, never a 5,000-digit int (which json turns into ValueError).
    try:
        doc = orjson.loads(raw)  # orjson checks the encoding as it reads
    except orjson.JSONDecodeError as exc:
        _utf8(raw)  # bad encoding is told apart from bad JSON
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
    # Interned: the index keeps every container's info, and a fleet repeats each model name
    # (and each container and node name, across nodes) in many containers; one copy of each.
    try:
        names = tuple(map(sys.intern, raw_names))
    except TypeError:  # not a string: say which
        for n in raw_names:
            _string(n, "names[]")
        raise
    annotation = _mapping(doc.get("annotation", {}), "annotation")
    model = annotation.get(MODEL_ANNOTATION)
    if model is not None:
        model = sys.intern(_valid_name(model, _MODEL_FIELD))
    node = doc.get("node")
    if node is not None:
        node = sys.intern(_string(node, "node"))
    return ContainerInfo(names, status, classify(status, exit_code, oom), model, node)


def _shown(value: object) -> str:
    """A value for an error message: a string's start, else only its type. Never the value
    itself: formatting a YAML value walks it with every alias expanded."""
    return repr(value[:80]) if isinstance(value, str) else f"a {type(value).__name__}"


def _libyaml(text: str) -> Any:
    try:
        if len(text) > MAX_YAML_NODES:
            _count_nodes(text)
        return yaml.load(text, Loader=_SpecLoader)  # a safe loader with bounds: see _SpecLoader
    except yaml.YAMLError as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BadInput("invalid_yaml", f"invalid YAML: {first_line}") from None


def _spec_document(raw: bytes, kind: str, name: str) -> dict[str, Any]:
    """Load one YAML document of `kind` whose metadata.name, if given, is the key's name."""
    text = _utf8(raw)
    # Plain specs, the usual kind, are read without libyaml; the reader gives libyaml's value
    # or declines (core/plainyaml.py).
    doc = plainyaml.load(text)
    if doc is None:
        doc = _libyaml(text)
    doc = _mapping(doc, f"{kind} document")
    declared = doc.get("kind", kind)
    if declared != kind:
        raise BadInput("wrong_kind", f"kind is {_shown(declared)}, expected {kind!r}")
    metadata = _mapping(doc.get("metadata", {}), "metadata")
    declared_name = metadata.get("name", name)
    if declared_name != name:
        raise BadInput(
            "name_mismatch", f"metadata.name {_shown(declared_name)} differs from the key"
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
