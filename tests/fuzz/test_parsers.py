"""Property-based tests of the input boundary (README, "What happens to bad input").

For any bytes, every parser returns a value or raises BadInput (ConfigError for the config
file); a valid document parses to exactly what it says; the rules never raise for any index
content. Inputs: arbitrary bytes, JSON and YAML trees (deep, wide, huge/NaN/negative numbers,
unicode edge cases, duplicate keys, anchors and aliases, tags, a wrong type at every field),
and mutations of valid documents. Profiles (examples, seed): conftest.py.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import example, given
from hypothesis import strategies as st
from yaml.constructor import SafeConstructor
from yaml.nodes import Node

from statemanager.app.config import load
from statemanager.core.errors import BadInput, ConfigError
from statemanager.core.index import Index
from statemanager.core.ingest import UNASSIGNED, Ingest
from statemanager.core.inputs import (
    BAD_INPUT_KINDS,
    MODEL_ANNOTATION,
    ContainerInfo,
    _check_bounds,
    _SpecLoader,
    parse_container,
    parse_model,
    parse_package,
    parse_scenario,
)
from statemanager.core.keys import KeyLayout, Kind, name_problem
from statemanager.core.planner import plan
from statemanager.core.states import ModelState, PackageState, classify, parse_status

SPEC_PARSERS: dict[str, Callable[[bytes, str], object]] = {
    "Package": parse_package,
    "Model": parse_model,
    "Scenario": parse_scenario,
}
PARSERS: dict[str, Callable[[bytes], object]] = {
    "container": parse_container,
    **{kind: partial(parse, name="n") for kind, parse in SPEC_PARSERS.items()},
}


def total(parse: Callable[[bytes], object], raw: bytes) -> object:
    """`parse(raw)`: a value or BadInput of a documented kind; anything else fails the test."""
    try:
        return parse(raw)
    except BadInput as exc:
        rejection = exc
    assert rejection.kind in BAD_INPUT_KINDS, rejection.kind
    return rejection


# -- strategies -------------------------------------------------------------------------------

_LAYOUT = KeyLayout()

# Names that can form a key: printable, no whitespace, no '/'.
names = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Z")),
    min_size=1,
    max_size=24,
).filter(lambda n: name_problem(n) is None)
few_names = st.sampled_from(["a", "b", "c", "m1", "m2", "p1", "web", "a_web"])
# Text with the unicode edge cases: surrogates, NUL, controls, non-characters, RTL marks.
odd_text = st.text(st.characters(codec=None), max_size=40) | st.sampled_from(
    ["", "\x00", "\ud800", "\udfff", "\ufeff", "\u202e", "\uffff", "a/b", " ", "\n", "é" * 300]
)
numbers = (
    st.integers()
    | st.integers(min_value=2**63 - 2, max_value=2**64 + 2).map(lambda n: n * (-1) ** (n % 2))
    | st.floats()  # NaN and infinities included
)
json_scalars = st.none() | st.booleans() | numbers | odd_text
json_trees = st.recursive(
    json_scalars,
    lambda kids: st.lists(kids, max_size=6) | st.dictionaries(odd_text, kids, max_size=6),
    max_leaves=12,
)

# Trees JSON and YAML writers write faithfully: no lone surrogates, numbers in a double's range.
plain_trees = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**40), 10**40)
    | st.floats()
    | st.text(st.characters(codec="utf-8"), max_size=20),
    lambda kids: (
        st.lists(kids, max_size=5)
        | st.dictionaries(st.text(st.characters(codec="utf-8"), max_size=10), kids, max_size=5)
    ),
    max_leaves=20,
)


def _json_text(value: Any) -> str:
    """JSON text of `value`; NaN and Infinity written as Python's json writes them."""
    return json.dumps(value, ensure_ascii=False)


# One value of each JSON type and its edge cases: what a wrong type at a field looks like.
wrong_values = json_scalars | st.sampled_from([[], {}, ["a"], {"a": 1}, [[[]]], {"name": {}}])


def _maybe(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A field's valid value, or any JSON value in its place (a wrong type at that field)."""
    return st.one_of(valid, valid, wrong_values)


statuses = st.sampled_from(
    ["running", "exited", "dead", "paused", "created", "initialized", "Running", "EXITED", "x"]
)
exit_codes = st.integers(-(2**63), 2**64 - 1) | st.integers(-300, 300).map(str) | odd_text
states = st.fixed_dictionaries(
    {"Status": _maybe(statuses)},
    optional={
        "ExitCode": _maybe(exit_codes),
        "OOMKilled": _maybe(st.sampled_from(["true", "false", "", "TRUE", True, False])),
        "Pid": wrong_values,
    },
)
container_docs = st.fixed_dictionaries(
    {"state": _maybe(states)},
    optional={
        "id": wrong_values,
        "names": _maybe(st.lists(odd_text, max_size=4)),
        "annotation": _maybe(st.dictionaries(st.just(MODEL_ANNOTATION) | odd_text, _maybe(names))),
        "node": _maybe(names),
        "extra": json_trees,
    },
)


@st.composite
def json_texts(draw: st.DrawFn) -> bytes:
    """JSON-ish text: a tree, a container document, duplicate keys, deep nesting, long numbers."""
    shape = draw(st.integers(0, 4))
    if shape == 0:
        text = _json_text(draw(json_trees))
    elif shape == 1:
        text = _json_text(draw(container_docs))
    elif shape == 2:  # an object with duplicate keys: the parser's choice must still be total
        doc = draw(container_docs)
        pairs = [f"{_json_text(k)}: {_json_text(v)}" for k, v in doc.items()]
        text = "{" + ", ".join(pairs + draw(st.lists(st.sampled_from(pairs), max_size=3))) + "}"
    elif shape == 3:
        depth = draw(st.integers(1, 3000))
        opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}"), ('{"state":', "}")]))
        text = opener * depth + draw(st.sampled_from(["1", "[]", "{}", ""])) + closer * depth
    else:
        digits = "9" * draw(st.integers(1, 6000))
        text = (
            '{"state": {"Status": "exited", "ExitCode": -'
            + digits
            + draw(st.sampled_from(["", ".5", "e400", "e-400"]))
            + "}}"
        )
    return text.encode("utf-8", draw(st.sampled_from(["surrogatepass", "replace"])))


# YAML: plain words that mean something to YAML (types, merges, indicators) or to our schema.
_WORDS = [
    "kind", "Package", "Model", "Scenario", "metadata", "name", "spec", "models", "containers",
    "target", "n", "m1", "~", "null", "yes", "No", "on", "true", "0x1F", "0o17", "0b101", "1_000",
    "-0", "1:20:30", "190:20:30.15", ".nan", "-.inf", "1e400", "2001-12-14", "2001-13-45",
    "2001-12-14t21:59:43.10-05:00", "<<", "=", "-", "?", "'", '"', "#", "&", "*", "!", "|", ">",
    "@", "%", "`", ",", "[", "]", "{", "}",
]  # fmt: skip
_TAGS = [
    "!!int", "!!float", "!!bool", "!!null", "!!str", "!!binary", "!!timestamp", "!!set",
    "!!omap", "!!pairs", "!!seq", "!!map", "!!merge", "!!value", "!!python/object:os.system",
    "!!python/name:os.system", "!foo", "!<tag:yaml.org,2002:str>", "!",
]  # fmt: skip


@st.composite
def yaml_nodes(draw: st.DrawFn, depth: int = 0, state: dict[str, Any] | None = None) -> str:
    """One YAML node in flow style, with anchors, aliases (defined, undefined, recursive),
    tags and long numbers sprinkled in. `state` is shared by the nodes of one document: its
    anchors, and a budget of nodes that keeps a document small (so examples stay cheap)."""
    state = {"anchors": [], "budget": 40} if state is None else state
    anchors: list[str] = state["anchors"]
    state["budget"] -= 1
    prefix = ""
    if draw(st.integers(0, 9)) == 0:
        prefix += draw(st.sampled_from(_TAGS)) + " "
    if draw(st.integers(0, 5)) == 0:
        name = f"a{len(anchors)}" if draw(st.booleans()) else draw(st.sampled_from(["a0", "x"]))
        anchors.append(name)
        prefix += f"&{name} "
    nested = depth < 5 and state["budget"] > 0
    shape = draw(st.integers(0, 9 if nested else 5))
    if shape == 0 and anchors:
        return "*" + draw(st.sampled_from([*anchors, "undefined"]))
    if shape <= 2:
        return prefix + draw(st.sampled_from(_WORDS))
    if shape == 3:
        return prefix + _json_text(draw(odd_text))  # double-quoted: escapes, surrogates
    if shape == 4:
        return prefix + str(draw(numbers))
    if shape == 5:  # long decimal or base-60 numbers
        return prefix + draw(st.sampled_from(["7", "1:59", "0:"])) * draw(st.integers(1, 400))
    kids = st.lists(yaml_nodes(depth + 1, state), max_size=4)
    if shape <= 7:
        return prefix + "[" + ", ".join(draw(kids)) + "]"
    pairs = draw(
        st.lists(st.tuples(yaml_nodes(depth + 1, state), yaml_nodes(depth + 1, state)), max_size=4)
    )
    return prefix + "{" + ", ".join(f"{k}: {v}" for k, v in pairs) + "}"


@st.composite
def spec_docs(draw: st.DrawFn) -> dict[str, Any]:
    """A Package/Model/Scenario-shaped tree with a wrong type possible at every field; some
    subtrees shared, so the YAML writer emits anchors and aliases for them."""
    kind = draw(st.sampled_from([*SPEC_PARSERS, "x"]))
    entry = st.fixed_dictionaries({"name": _maybe(few_names)}, optional={"node": wrong_values})
    shared = draw(_maybe(entry))
    items = draw(st.lists(st.one_of(_maybe(entry), st.just(shared)), max_size=5))
    spec = {"models": _maybe(st.just(items)), "containers": _maybe(st.just(items))}
    spec["target"] = _maybe(few_names)
    chosen = draw(st.fixed_dictionaries({}, optional=spec))
    return draw(
        st.fixed_dictionaries(
            {"spec": _maybe(st.just(chosen))},
            optional={
                "kind": _maybe(st.just(kind)),
                "metadata": _maybe(st.fixed_dictionaries({}, optional={"name": _maybe(few_names)})),
                "extra": json_trees,
            },
        )
    )


@st.composite
def yaml_texts(draw: st.DrawFn) -> bytes:
    """YAML text: a spec tree in block or flow style, or a node soup in flow style."""
    if draw(st.booleans()):
        tree = draw(spec_docs())
        flow = draw(st.sampled_from([None, True, False]))
        try:
            text = yaml.safe_dump(tree, default_flow_style=flow, allow_unicode=draw(st.booleans()))
        except yaml.YAMLError:  # e.g. a surrogate the writer cannot encode
            text = repr(tree)
    else:
        text = draw(yaml_nodes())
    return text.encode("utf-8", "surrogatepass")


def _valid_docs() -> list[bytes]:
    container = {
        "id": "3f2a",
        "names": ["m1_web"],
        "state": {"Status": "exited", "ExitCode": "137", "OOMKilled": "false"},
        "annotation": {MODEL_ANNOTATION: "m1"},
    }
    return [
        json.dumps(container).encode(),
        b"kind: Package\nmetadata: {name: n}\nspec:\n  models:\n    - {name: m1, node: a}\n",
        b"kind: Model\nmetadata: {name: n}\nspec:\n  containers: [{name: web, image: x}]\n",
        b"kind: Scenario\nmetadata: {name: n}\nspec: {action: update, target: p1}\n",
        b"kind: Package\nbase: &m {name: m1}\nspec: {models: [*m, {name: m2}]}\n",
    ]


@st.composite
def mutations(draw: st.DrawFn) -> bytes:
    """A valid document with a few bytes inserted, deleted, replaced or repeated."""
    data = bytearray(draw(st.sampled_from(_valid_docs())))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        end = draw(st.integers(at, min(len(data), at + 16)))
        op = draw(st.integers(0, 3))
        if op == 0:
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == 1:
            del data[at:end]
        elif op == 2:
            data[at:end] = draw(st.binary(max_size=4))
        else:
            data[at:at] = data[at:end] * draw(st.integers(1, 50))
    return bytes(data)


any_input = st.binary(max_size=512) | json_texts() | yaml_texts() | mutations()


# -- only BadInput escapes --------------------------------------------------------------------


@pytest.mark.parametrize("parser", list(PARSERS))
@given(raw=any_input)
def test_only_bad_input_escapes(parser: str, raw: bytes) -> None:
    """Every parser, on any bytes, returns a value or raises BadInput of a documented kind."""
    total(PARSERS[parser], raw)


@given(name=odd_text | names, key=odd_text)
def test_key_names_are_total(name: str, key: str) -> None:
    """Name checks and the key layout never raise, whatever the text; a name found in a key
    is part of that key."""
    name_problem(name)
    for kind, prefix in _LAYOUT.watched().items():
        found = _LAYOUT.name_in(kind, prefix + key)
        assert found is None or found in key


class _PyYAMLConstructed(_SpecLoader):
    """The spec loader with PyYAML's own constructor in place of the one-pass construction."""

    def construct_document(self, node: Node) -> Any:
        _check_bounds(node)
        return SafeConstructor.construct_document(self, node)


def _outcome(raw: bytes, loader: type[_SpecLoader]) -> str:
    try:
        return repr(yaml.load(raw.decode("utf-8", "replace"), Loader=loader))
    except (yaml.YAMLError, BadInput) as exc:
        return f"{type(exc).__name__}: {exc}"


@given(raw=yaml_texts() | mutations())
@example(raw=b"a: &b {x: 1, y: [2]}\nc: {<<: *b, y: 3}\nd: {<<: [*b, {z: 4}]}\n")  # merges
@example(raw=b"{=: v, 1: one, [l]: x}")  # a value key, a number key, a collection key
@example(raw=b"s: !!set {a, b}\no: !!omap [a: 1]\np: !!pairs [a: 1, a: 2]\nm: !!map [x]\n")
@example(raw=b"a: &a !!binary aGk=\nb: [*a, !!timestamp 2001-12-14, !!float .nan, ~, yes]\n")
def test_one_pass_construction_builds_what_pyyaml_builds(raw: bytes) -> None:
    """Any YAML text loads to the same value (same order, same types), or fails with the same
    error, with the spec loader's one-pass construction as with PyYAML's constructor."""
    assert _outcome(raw, _SpecLoader) == _outcome(raw, _PyYAMLConstructed)


# -- valid documents parse to what they say ---------------------------------------------------


@given(
    doc_names=st.lists(names, max_size=4),
    status=statuses,
    code=st.none() | exit_codes,
    oom=st.booleans(),
    model=st.none() | names,
    node=st.none() | names,
    extra=plain_trees,
)
def test_container_round_trip(
    doc_names: list[str],
    status: str,
    code: int | str | None,
    oom: bool,
    model: str | None,
    node: str | None,
    extra: object,
) -> None:
    """A valid container document parses to its names, status, class, model and node."""
    state: dict[str, object] = {"Status": status, "OOMKilled": "true" if oom else "false"}
    if code is not None:
        state["ExitCode"] = code
    doc: dict[str, object] = {"names": doc_names, "state": state, "extra": extra}
    if model is not None:
        doc["annotation"] = {MODEL_ANNOTATION: model}
    if node is not None:
        doc["node"] = node
    raw = _valid_json(doc)
    if raw is None:
        return  # NaN or a lone surrogate: not JSON, covered by the totality property
    info = total(parse_container, raw)
    expected_code = None if code is None else str(code)
    word = parse_status(status)
    assert info == ContainerInfo(
        tuple(doc_names), word, classify(word, expected_code, oom), model, node
    )


def _valid_json(value: object) -> bytes | None:
    """`value` as JSON bytes; None when JSON cannot hold it (NaN, infinity, lone surrogate)."""
    try:
        return json.dumps(value, allow_nan=False, ensure_ascii=False).encode()
    except ValueError:  # UnicodeEncodeError included
        return None


@given(
    kind=st.sampled_from(list(SPEC_PARSERS)),
    doc_name=names,
    listed=st.lists(names, max_size=6),
    flow=st.sampled_from([None, True, False]),
    unicode=st.booleans(),
    extra=plain_trees,
)
def test_spec_round_trip(
    kind: str, doc_name: str, listed: list[str], flow: bool | None, unicode: bool, extra: object
) -> None:
    """A valid spec written by a YAML writer, in any style, parses to the names it lists
    (duplicates once, in order) or the package it targets."""
    field = {"Package": "models", "Model": "containers"}.get(kind)
    spec: dict[str, object]
    if field is None:
        spec = {"target": listed[0] if listed else doc_name, "action": "update"}
    else:
        spec = {field: [{"name": n, "node": "a"} for n in listed]}
    doc = {"kind": kind, "metadata": {"name": doc_name}, "spec": spec, "extra": extra}
    raw = yaml.safe_dump(doc, default_flow_style=flow, allow_unicode=unicode).encode()
    parsed = total(partial(SPEC_PARSERS[kind], name=doc_name), raw)
    assert parsed == (spec["target"] if field is None else tuple(dict.fromkeys(listed)))


# -- the rules never raise --------------------------------------------------------------------


@st.composite
def values_for(draw: st.DrawFn, kind: Kind) -> bytes | None:
    """A value a key of `kind` might hold: valid and linking the few shared names, or junk."""
    if draw(st.integers(0, 4)) == 0:
        return None  # a delete
    if draw(st.integers(0, 3)) == 0:
        return draw(st.binary(max_size=64) | mutations())
    pick = draw(st.lists(few_names, max_size=3))
    if kind is Kind.CONTAINER:
        doc: dict[str, object] = {
            "names": [f"{n}_web" for n in pick],
            "state": {"Status": draw(statuses), "ExitCode": draw(st.sampled_from(["0", "1"]))},
        }
        if draw(st.booleans()):
            doc["annotation"] = {MODEL_ANNOTATION: draw(few_names)}
        return json.dumps(doc).encode()
    if kind in (Kind.MODEL_STATE, Kind.PACKAGE_STATE):
        return draw(st.sampled_from(["Running", "Failed", "Error", "", "junk"])).encode()
    spec_kind = {Kind.PACKAGE_SPEC: "Package", Kind.MODEL_SPEC: "Model"}.get(kind, "Scenario")
    listed = [{"name": n} for n in pick] if pick else []
    target = pick[0] if pick else "p1"
    doc = {
        "kind": spec_kind,
        "spec": {"models": listed, "containers": [{"name": "web"}], "target": target},
    }
    return json.dumps(doc).encode()  # JSON is YAML too, and cheaper to write


@st.composite
def events(draw: st.DrawFn) -> tuple[Kind, bytes, bytes | None]:
    kind = draw(st.sampled_from(list(Kind)))
    name = draw(few_names | odd_text.map(lambda t: t[:8]))
    key = _LAYOUT.watched()[kind] + name
    if kind in (Kind.MODEL_STATE, Kind.PACKAGE_STATE):
        key += draw(st.sampled_from(["/state", "/state", "/other", ""]))
    return kind, key.encode("utf-8", "surrogatepass"), draw(values_for(kind))


@given(history=st.lists(events(), max_size=30))
def test_rules_never_raise_for_any_index_content(
    history: list[tuple[Kind, bytes, bytes | None]],
) -> None:
    """Whatever keys and values arrive, ingesting never raises (only documented reports), and
    planning every model and package never raises and plans only state names."""
    index = Index()
    ingest = Ingest(_LAYOUT, index, max_value_bytes=4096)
    for revision, (kind, key, value) in enumerate(history, start=1):
        reports = ingest.apply(kind, key, value, revision).reports
        assert {r.kind for r in reports} <= {*BAD_INPUT_KINDS, UNASSIGNED}
    keys = index.all_keys()
    allowed = {*ModelState, *PackageState, None}
    assert all(change.new in allowed for group in plan(index, keys).groups for change in group)


# -- config files -----------------------------------------------------------------------------

_OPTION_KEYS = {
    "etcd": ["endpoints", "timeout_seconds", "ca_file", "username", "password"],
    "ha": ["lease_ttl_seconds", "node_name"],
    "inputs": ["max_value_bytes"],
    "log": ["format", "level"],
    "metrics": ["address"],
    "prefixes": ["containers", "own"],
    "x": ["y"],
}
toml_scalars = (
    st.integers(-(2**70), 2**70).map(str)
    | st.sampled_from(["nan", "inf", "-inf", "1e999", "1979-05-27T07:32:00Z", "07:32:00", "true"])
    | st.floats(allow_nan=False, allow_infinity=False).map(repr)
    | odd_text.map(_json_text)
    | st.integers(1, 6000).map(lambda n: "1" * n)
)
toml_values = st.recursive(
    toml_scalars,
    lambda kids: (
        st.lists(kids, max_size=4).map(lambda v: "[" + ", ".join(v) + "]")
        | st.lists(st.tuples(st.sampled_from(["a", "b"]), kids), max_size=3).map(
            lambda kv: "{" + ", ".join(f"{k} = {v}" for k, v in kv) + "}"
        )
    ),
    max_leaves=10,
)


@st.composite
def toml_files(draw: st.DrawFn) -> bytes:
    """A TOML-shaped config: known and unknown sections and keys, any value; or junk bytes."""
    if draw(st.integers(0, 3)) == 0:
        return draw(st.binary(max_size=256) | mutations())
    lines: list[str] = []
    for section in draw(st.lists(st.sampled_from(list(_OPTION_KEYS)), max_size=3)):
        lines.append(f"[{section}]")
        for key in draw(st.lists(st.sampled_from(_OPTION_KEYS[section]), max_size=3)):
            lines.append(f"{key} = {draw(toml_values)}")
    if draw(st.booleans()):
        depth = draw(st.integers(1, 3000))
        lines.insert(0, "deep = " + "[" * depth + "]" * depth)
    return "\n".join(lines).encode("utf-8", "surrogatepass")


@given(data=toml_files())
def test_config_file_is_config_error_or_settings(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    """Any config file content loads or raises ConfigError: never another exception."""
    path = Path(tmp_path_factory.getbasetemp()) / "fuzz.toml"
    path.write_bytes(data)
    with contextlib.suppress(ConfigError):
        load(path, {}, {})
