"""Parsing of container info JSON and Package/Model/Scenario YAML, and the BadInput kinds."""

from __future__ import annotations

import functools
import json
from typing import Any

import pytest
import yaml

from statemanager.core import inputs
from statemanager.core.errors import BadInput
from statemanager.core.inputs import (
    BAD_INPUT_KINDS,
    MAX_YAML_DEPTH,
    MAX_YAML_NODES,
    MAX_YAML_SCALAR_CHARS,
    MODEL_ANNOTATION,
    check_size,
    parse_container,
    parse_model,
    parse_package,
    parse_scenario,
)
from statemanager.core.states import ContainerClass, ContainerStatus

SPEC_CONTAINER = {
    "id": "3f2a",
    "names": ["payment_service.backend_model_web_server"],
    "state": {"Status": "exited", "ExitCode": "137", "OOMKilled": "false"},
    "annotation": {
        "io.pullpiri.annotations.model": "payment_service.backend_model",
        "io.pullpiri.annotations.package": "payment_service",
    },
}

PACKAGE_YAML = b"""\
kind: Package
metadata: {name: payment_service}
spec:
  models:
    - {name: payment_service.backend_model, node: node-a}
    - {name: payment_service.auth_model, node: node-b}
"""

MODEL_YAML = b"""\
kind: Model
metadata: {name: payment_service.backend_model}
spec:
  containers: [{name: web_server, image: nginx}, {name: database, image: postgres}]
"""

SCENARIO_YAML = b"""\
kind: Scenario
metadata: {name: payment_recovery}
spec: {action: update, target: payment_service}
"""


def _json(doc: object) -> bytes:
    return json.dumps(doc).encode()


def _container_with(**changes: object) -> bytes:
    doc = json.loads(json.dumps(SPEC_CONTAINER))
    doc.update(changes)
    return _json(doc)


def _state(**state: object) -> bytes:
    return _json({"names": ["c"], "state": state})


def _kind_of(call: object) -> str:
    assert callable(call)
    with pytest.raises(BadInput) as info:
        call()
    assert info.value.kind in BAD_INPUT_KINDS
    return info.value.kind


# -- container info ---------------------------------------------------------------------------


def test_parse_container_spec_example() -> None:
    """The platform's example container info parses to its names, status, dead class (exit 137) and model."""
    info = parse_container(_json(SPEC_CONTAINER))
    assert info.names == ("payment_service.backend_model_web_server",)
    assert info.status is ContainerStatus.EXITED
    assert info.cls is ContainerClass.DEAD
    assert info.model_annotation == "payment_service.backend_model"


def test_parse_container_ignores_extra_fields() -> None:
    """Unknown top-level and state fields do not affect parsing (docs/contract.md, Reads)."""
    doc = json.loads(json.dumps(SPEC_CONTAINER))
    doc["image"] = {"nested": [1, 2]}
    doc["state"]["Pid"] = 4242
    doc["state"]["StartedAt"] = "2024-01-01T00:00:00Z"
    assert parse_container(_json(doc)) == parse_container(_json(SPEC_CONTAINER))


def test_parse_container_integer_exit_code() -> None:
    """An integer ExitCode (Docker's own API) means the same as its string form."""
    assert parse_container(_state(Status="exited", ExitCode=137)).cls is ContainerClass.DEAD
    assert parse_container(_state(Status="exited", ExitCode=0)).cls is ContainerClass.EXITED


def test_parse_container_oom_killed_running_is_dead() -> None:
    """OOMKilled "true" makes even a running container dead."""
    assert parse_container(_state(Status="running", OOMKilled="true")).cls is ContainerClass.DEAD


def test_parse_container_status_case_insensitive() -> None:
    """`Running` is the running status."""
    info = parse_container(_state(Status="Running"))
    assert (info.status, info.cls) == (ContainerStatus.RUNNING, ContainerClass.ACTIVE)


def test_parse_container_unknown_status_is_not_an_error() -> None:
    """An unknown status word is parsed as `unknown` in the active class, not rejected."""
    info = parse_container(_state(Status="restarting"))
    assert (info.status, info.cls) == (ContainerStatus.UNKNOWN, ContainerClass.ACTIVE)


def test_parse_container_shares_repeated_names() -> None:
    """Containers naming the same model, container name and node hold one string object for
    each (the index keeps every container's info: a copy per container would add up)."""
    raw = json.dumps(
        {
            "names": ["m1_app"],
            "state": {"Status": "running"},
            "annotation": {"io.pullpiri.annotations.model": "m1"},
            "node": "node-a",
        }
    ).encode()
    a, b = parse_container(raw), parse_container(bytes(raw))
    assert a.model_annotation == "m1" and a.model_annotation is b.model_annotation
    assert a.names[0] is b.names[0]
    assert a.node is b.node


def test_parse_container_without_annotation() -> None:
    """A container with no model annotation has none (name matching decides later)."""
    info = parse_container(_container_with(annotation={"other": "x"}))
    assert info.model_annotation is None
    assert parse_container(_json({"state": {"Status": "running"}})).model_annotation is None


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        pytest.param(b"{not json", "invalid_json", id="invalid-json"),
        pytest.param(b"", "invalid_json", id="empty"),
        pytest.param(b"[1, 2]", "wrong_type", id="array"),
        pytest.param(b'"running"', "wrong_type", id="string"),
        pytest.param(b"null", "wrong_type", id="null"),
        pytest.param(_json({"names": []}), "wrong_type", id="state-missing"),
        pytest.param(_json({"state": "running"}), "wrong_type", id="state-not-object"),
        pytest.param(_state(Status=3), "wrong_type", id="status-not-string"),
        pytest.param(_state(Status="exited", ExitCode=[1]), "wrong_type", id="exit-code-list"),
        pytest.param(_state(Status="exited", ExitCode=True), "wrong_type", id="exit-code-bool"),
        pytest.param(_state(Status="running", OOMKilled="maybe"), "wrong_type", id="oom-word"),
        pytest.param(_container_with(names="a_b"), "wrong_type", id="names-not-list"),
        pytest.param(_container_with(names=[1]), "wrong_type", id="name-not-string"),
        pytest.param(_container_with(annotation=["x"]), "wrong_type", id="annotation-list"),
        pytest.param(
            _container_with(annotation={MODEL_ANNOTATION: 7}), "wrong_type", id="model-not-str"
        ),
        pytest.param(
            _container_with(annotation={MODEL_ANNOTATION: "a/b"}), "bad_name", id="model-slash"
        ),
        pytest.param(
            _container_with(annotation={MODEL_ANNOTATION: ""}), "bad_name", id="model-empty"
        ),
        pytest.param(
            _container_with(annotation={MODEL_ANNOTATION: "a b"}), "bad_name", id="model-space"
        ),
        pytest.param(
            b'{"names": ["\xff"], "state": {"Status": "running"}}',
            "invalid_encoding",
            id="non-utf8",
        ),
    ],
)
def test_parse_container_rejects(raw: bytes, kind: str) -> None:
    """Unusable container info raises BadInput with a fixed machine-readable kind."""
    assert _kind_of(lambda: parse_container(raw)) == kind


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="nested-100000"),
        pytest.param(b'{"a":' * 2000 + b"1" + b"}" * 2000, id="objects-nested-2000"),
        pytest.param(
            b'{"state": {"Status": "exited", "ExitCode": ' + b"7" * 5000 + b"}}", id="5000-digits"
        ),
        pytest.param(b'{"state": {"Status": "running"}, "x": NaN}', id="nan"),
        pytest.param(b'{"state": {"Status": "running"}, "x": 1e999}', id="infinite"),
        pytest.param(
            b'{"names": ["\\ud800"], "state": {"Status": "running"}}', id="lone-surrogate"
        ),
    ],
)
def test_parse_container_bounds(raw: bytes) -> None:
    """Nesting past 1,024 levels, numbers past 64 bits that are not finite floats, NaN and lone
    surrogates are invalid JSON, not RecursionError or ValueError (these stopped the daemon)."""
    assert _kind_of(lambda: parse_container(raw)) in ("invalid_json", "wrong_type")


def test_parse_container_huge_exit_code_is_not_an_integer() -> None:
    """An ExitCode beyond 64 bits is read as a float: rejected as the wrong type."""
    raw = b'{"state": {"Status": "exited", "ExitCode": ' + b"7" * 30 + b"}}"
    assert _kind_of(lambda: parse_container(raw)) == "wrong_type"


# -- specs ------------------------------------------------------------------------------------


def test_parse_package_spec_example() -> None:
    """A Package lists its models' names in order (docs/contract.md, Reads)."""
    assert parse_package(PACKAGE_YAML, "payment_service") == (
        "payment_service.backend_model",
        "payment_service.auth_model",
    )


def test_parse_model_spec_example() -> None:
    """A Model lists its containers' names in order (docs/contract.md, Reads)."""
    assert parse_model(MODEL_YAML, "payment_service.backend_model") == ("web_server", "database")


def test_parse_scenario_spec_example() -> None:
    """A Scenario gives the package it targets (docs/contract.md, Reads)."""
    assert parse_scenario(SCENARIO_YAML, "payment_recovery") == "payment_service"


def test_parse_package_dedupes_models_keeping_order() -> None:
    """A model listed twice counts once, at its first position."""
    raw = b"kind: Package\nspec:\n  models: [{name: b}, {name: a}, {name: b}]\n"
    assert parse_package(raw, "p") == ("b", "a")


def test_parse_package_without_kind_and_metadata() -> None:
    """`kind` and `metadata.name` may be left out; the key says what the document is."""
    assert parse_package(b"spec: {models: [{name: m}]}\n", "p") == ("m",)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"kind: Package\nspec: {}\n", id="no-models-field"),
        pytest.param(b"kind: Package\nspec: {models: []}\n", id="empty-list"),
        pytest.param(b"kind: Package\nspec: {models: null}\n", id="null-models"),
    ],
)
def test_parse_package_with_no_models(raw: bytes) -> None:
    """A Package without models lists none (rule P1 applies), rather than being rejected."""
    assert parse_package(raw, "p") == ()


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        pytest.param(b"kind: Package\nspec: {models: [\n", "invalid_yaml", id="invalid-yaml"),
        pytest.param(b"kind: Package\n\tspec: x\n", "invalid_yaml", id="tab-indent"),
        pytest.param(
            b"!!python/object/apply:os.system ['true']\n", "invalid_yaml", id="python-tag"
        ),
        pytest.param(
            b"kind: Package\nspec: !!python/object:collections.OrderedDict {}\n",
            "invalid_yaml",
            id="python-tag-nested",
        ),
        pytest.param(b"a\n---\nb\n", "invalid_yaml", id="two-documents"),
        pytest.param(b"", "wrong_type", id="empty-document"),
        pytest.param(b"- a\n- b\n", "wrong_type", id="top-level-list"),
        pytest.param(b"kind: Model\nspec: {models: []}\n", "wrong_kind", id="wrong-kind"),
        pytest.param(b"kind: package\nspec: {models: []}\n", "wrong_kind", id="kind-lower-case"),
        pytest.param(
            b"kind: Package\nmetadata: {name: other}\nspec: {models: []}\n",
            "name_mismatch",
            id="name-mismatch",
        ),
        pytest.param(b"kind: Package\nmetadata: x\nspec: {}\n", "wrong_type", id="metadata-str"),
        pytest.param(b"kind: Package\n", "wrong_type", id="spec-missing"),
        pytest.param(b"kind: Package\nspec: {models: m}\n", "wrong_type", id="models-not-list"),
        pytest.param(
            b"kind: Package\nspec: {models: {name: m}}\n", "wrong_type", id="models-mapping"
        ),
        pytest.param(b"kind: Package\nspec: {models: [m]}\n", "wrong_type", id="model-entry-str"),
        pytest.param(b"kind: Package\nspec: {models: [{node: n}]}\n", "wrong_type", id="no-name"),
        pytest.param(b"kind: Package\nspec: {models: [{name: 5}]}\n", "wrong_type", id="int-name"),
        pytest.param(b"kind: Package\nspec: {models: [{name: a/b}]}\n", "bad_name", id="slash"),
        pytest.param(b"kind: Package\nspec: {models: [{name: ''}]}\n", "bad_name", id="empty"),
    ],
)
def test_parse_package_rejects(raw: bytes, kind: str) -> None:
    """Unusable Package documents raise BadInput with a fixed kind; Python tags are refused."""
    assert _kind_of(lambda: parse_package(raw, "p")) == kind


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        pytest.param(b"kind: Package\nspec: {containers: []}\n", "wrong_kind", id="wrong-kind"),
        pytest.param(
            b"kind: Model\nmetadata: {name: n}\nspec: {containers: []}\n",
            "name_mismatch",
            id="name-mismatch",
        ),
        pytest.param(b"kind: Model\nspec: {containers: c}\n", "wrong_type", id="not-list"),
        pytest.param(
            b"kind: Model\nspec: {containers: [{name: 'a b'}]}\n", "bad_name", id="bad-name"
        ),
    ],
)
def test_parse_model_rejects(raw: bytes, kind: str) -> None:
    """Unusable Model documents raise BadInput with a fixed kind."""
    assert _kind_of(lambda: parse_model(raw, "m")) == kind


def test_parse_model_dedupes_containers() -> None:
    """A container listed twice in a Model counts once."""
    raw = b"kind: Model\nspec: {containers: [{name: a}, {name: a}, {name: b}]}\n"
    assert parse_model(raw, "m") == ("a", "b")


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        pytest.param(b"kind: Scenario\nspec: {action: update}\n", "wrong_type", id="no-target"),
        pytest.param(b"kind: Scenario\nspec: {target: [p]}\n", "wrong_type", id="target-list"),
        pytest.param(b"kind: Scenario\nspec: {target: a/b}\n", "bad_name", id="target-slash"),
        pytest.param(b"kind: Model\nspec: {target: p}\n", "wrong_kind", id="wrong-kind"),
        pytest.param(
            b"kind: Scenario\nmetadata: {name: x}\nspec: {target: p}\n",
            "name_mismatch",
            id="name-mismatch",
        ),
    ],
)
def test_parse_scenario_rejects(raw: bytes, kind: str) -> None:
    """Unusable Scenario documents raise BadInput with a fixed kind."""
    assert _kind_of(lambda: parse_scenario(raw, "s")) == kind


def _alias_bomb(levels: int) -> bytes:
    """Each level lists the previous one nine times: 9**levels nodes from a few hundred bytes."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return ("\n".join(lines) + f"\nkind: *a{levels - 1}\n").encode()


@pytest.mark.parametrize("levels", [2, 9, 10, 30])
def test_alias_bomb_is_rejected_without_expanding(levels: int) -> None:
    """A YAML alias bomb (442 bytes for nine levels) is invalid YAML, found by counting while
    composing; before, the wrong-kind message formatted the expanded value (GBs, minutes)."""
    kind = _kind_of(lambda: parse_package(_alias_bomb(levels), "p"))
    assert kind == ("wrong_kind" if 9**levels < MAX_YAML_NODES else "invalid_yaml")


def test_a_long_text_past_the_node_bound_is_refused_before_it_is_composed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Composing builds an object per node, every node: a long text over the bound is refused
    by counting parse events first (20 ms for 256 KiB, not the 650 ms composing took). A
    short spec skips the count and is composed as before."""
    composed: list[str] = []
    compose = inputs._SpecLoader.get_single_node

    def counted(loader: Any) -> Any:
        composed.append("composed")
        return compose(loader)

    monkeypatch.setattr(inputs._SpecLoader, "get_single_node", counted)
    items = b",".join([b"1"] * (MAX_YAML_NODES + 10))
    with pytest.raises(BadInput, match="more than"):
        parse_package(b"kind: Package\nspec: {models: [" + items + b"]}\n", "p")
    assert composed == []
    assert parse_package(b"kind: Package\nspec: {models: [{name: m}]}\n", "p") == ("m",)
    assert composed == ["composed"]


def test_wrong_kind_message_names_a_structure_by_type() -> None:
    """A `kind` that is not a string is named by its type in the message, never printed."""
    with pytest.raises(BadInput) as info:
        parse_package(b"kind: &k [a, b]\nx: *k\n", "p")
    assert info.value.detail == "kind is a list, expected 'Package'"


def test_anchors_and_aliases_are_accepted_within_the_bounds() -> None:
    """Anchors are valid YAML: a spec reusing a node through an alias parses as written out."""
    raw = b"kind: Package\nbase: &m {name: m1, node: a}\nspec:\n  models: [*m, {name: m2}]\n"
    assert parse_package(raw, "p") == ("m1", "m2")


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"kind: Package\nspec: &s {models: [*s]}\n", id="sequence-contains-alias"),
        pytest.param(b"&d {kind: Package, spec: *d}\n", id="mapping-contains-alias"),
        pytest.param(b"&d {<<: *d}\n", id="merge-of-itself"),
    ],
)
def test_recursive_alias_is_rejected(raw: bytes) -> None:
    """An alias inside the node it names would expand forever: invalid YAML."""
    assert _kind_of(lambda: parse_package(raw, "p")) == "invalid_yaml"


def test_depth_bound() -> None:
    """YAML nested past MAX_YAML_DEPTH levels is invalid; at the bound it parses."""

    def nested(depth: int) -> bytes:
        return b"kind: Package\nspec: {models: []}\nx: " + b"[" * (depth - 1) + b"]" * (depth - 1)

    assert parse_package(nested(MAX_YAML_DEPTH), "p") == ()
    assert _kind_of(lambda: parse_package(nested(MAX_YAML_DEPTH + 1), "p")) == "invalid_yaml"


def test_node_bound() -> None:
    """A spec of more than MAX_YAML_NODES nodes is invalid YAML, aliases or not."""
    head = b"kind: Package\nspec: {models: []}\nx: ["  # 9 nodes besides the items
    fits = head + b",".join([b"a"] * (MAX_YAML_NODES - 9)) + b"]"
    assert parse_package(fits, "p") == ()
    too_many = head + b",".join([b"a"] * (MAX_YAML_NODES - 8)) + b"]"
    assert _kind_of(lambda: parse_package(too_many, "p")) == "invalid_yaml"


@pytest.mark.parametrize(
    "scalar",
    [
        pytest.param("1" + ":59" * 50_000, id="base-60-int"),
        pytest.param("1" + ":59" * 50_000 + ".5", id="base-60-float"),
        pytest.param("7" * 5000, id="5000-digits"),
        pytest.param("!!int x", id="tagged-int"),
        pytest.param("!!float x", id="tagged-float"),
        pytest.param("!!bool x", id="tagged-bool"),
        pytest.param("!!timestamp x", id="tagged-timestamp"),
        pytest.param("2001-13-45", id="impossible-date"),
        pytest.param("!!int 0b", id="empty-binary-int"),
        pytest.param("!!int", id="empty-int"),
        pytest.param("!!float ''", id="empty-float"),
        pytest.param("!!bool", id="empty-bool"),
    ],
)
def test_typed_scalars_are_bounded_and_total(scalar: str) -> None:
    """Numbers, booleans and dates PyYAML cannot convert (ValueError, KeyError, AttributeError
    before) or would convert in quadratic time (long base-60 numbers) are invalid YAML."""
    raw = f"kind: Package\nspec: {{models: []}}\nx: {scalar}\n".encode()
    assert _kind_of(lambda: parse_package(raw, "p")) == "invalid_yaml"


def test_typed_scalar_at_the_length_bound_parses() -> None:
    """A number of MAX_YAML_SCALAR_CHARS characters is still a number."""
    raw = f"kind: Package\nspec: {{models: []}}\nx: {'7' * MAX_YAML_SCALAR_CHARS}\n".encode()
    assert parse_package(raw, "p") == ()


def test_number_keys_are_read_as_strings() -> None:
    """Thousands of integer keys crafted to share one hash parse in linear time: number keys
    are strings (a spec never keys a field this daemon reads by a number)."""
    colliding = "".join(f"{i * (2**61 - 1) + 7}: 0\n" for i in range(1, 5000))
    raw = f"kind: Package\nspec: {{models: [{{name: m, 5: x}}]}}\n{colliding}".encode()
    assert parse_package(raw, "p") == ("m",)


def test_parse_spec_non_utf8_is_invalid_encoding() -> None:
    """Non-UTF-8 spec bytes are reported with the same kind as non-UTF-8 container info."""
    raw = b'kind: Model\nspec: {containers: [{name: "\xff"}]}\n'
    assert _kind_of(lambda: parse_model(raw, "m")) == "invalid_encoding"


# -- size -------------------------------------------------------------------------------------


def test_check_size_accepts_up_to_the_limit() -> None:
    """A value exactly at the limit is accepted."""
    check_size(b"x" * 10, 10)


def test_check_size_rejects_oversized() -> None:
    """A value one byte over the limit is rejected as `oversized`, naming both sizes."""
    with pytest.raises(BadInput) as info:
        check_size(b"x" * 11, 10)
    assert info.value.kind == "oversized"
    assert "11" in info.value.detail
    assert "10" in info.value.detail


_WS = "name contains whitespace or control characters"
_LONG = "x" * 100
_LIMIT = inputs.MAX_YAML_SCALAR_CHARS


@pytest.mark.parametrize(
    ("parse", "raw", "kind", "detail"),
    [
        ("package", b"spec: {models: [{name: a b}]}", "bad_name", f"spec.models[].name 'a b': {_WS}"),
        ("package", f"spec: {{models: [{{name: {_LONG} y}}]}}".encode(), "bad_name",
         f"spec.models[].name {_LONG[:80]!r}: {_WS}"),
        ("package", b"spec: {models: {name: a}}", "wrong_type", "spec.models must be a list, got dict"),
        ("package", b"spec: {models: [a]}", "wrong_type", "spec.models[] must be a mapping, got str"),
        ("package", b"spec: {models: [{name: 5}]}", "wrong_type",
         "spec.models[].name must be a string, got int"),
        ("package", b"kind: Model\nspec: {}", "wrong_kind", "kind is 'Model', expected 'Package'"),
        ("package", b"kind: [1]\nspec: {}", "wrong_kind", "kind is a list, expected 'Package'"),
        ("package", f"metadata: {{name: {_LONG}}}\nspec: {{}}".encode(), "name_mismatch",
         f"metadata.name {_LONG[:80]!r} differs from the key"),
        ("package", b"metadata: {name: 7}\nspec: {}", "name_mismatch",
         "metadata.name a int differs from the key"),
        ("package", b"- a", "wrong_type", "Package document must be a mapping, got list"),
        ("package", b"x: !!int abc\nspec: {}", "invalid_yaml", "invalid int value"),
        ("package", b"x: !!timestamp 2001-13-45\nspec: {}", "invalid_yaml", "invalid timestamp value"),
        ("package", f"x: !!int {'1' * (_LIMIT + 1)}\nspec: {{}}".encode(), "invalid_yaml",
         f"int value longer than {_LIMIT} characters"),
        ("scenario", b"spec: {target: a b}", "bad_name", f"spec.target 'a b': {_WS}"),
        ("scenario", b"spec: {}", "wrong_type", "spec.target must be a string, got NoneType"),
        ("container", b'{"state": {"Status": "running"}, "names": "x"}', "wrong_type",
         "names must be a list, got str"),
        ("container", b'{"state": {"Status": "running"}, "names": [1]}', "wrong_type",
         "names[] must be a string, got int"),
        ("container", b'{"state": {"Status": "running", "OOMKilled": "maybe"}}', "wrong_type",
         "state.OOMKilled must be \"true\" or \"false\", got 'maybe'"),
        ("container", b'{"state": {"Status": "running", "ExitCode": 1.5}}', "wrong_type",
         "state.ExitCode must be a string, got float"),
        ("container", b'{"state": {"Status": "running"}, "node": 4}', "wrong_type",
         "node must be a string, got int"),
        ("container", b"[]", "wrong_type", "container info must be a mapping, got list"),
        ("container", b"{}", "wrong_type", "state must be a mapping, got NoneType"),
        ("container", b'{"state": {"Status": 3}}', "wrong_type",
         "state.Status must be a string, got int"),
        ("container", b'{"state": {}, "annotation": []}', "wrong_type",
         "annotation must be a mapping, got list"),
        ("container", b'{"state": {"OOMKilled": 5}}', "wrong_type",
         "state.OOMKilled must be a string, got int"),
        ("container", b'{"state": {"OOMKilled": "' + b"y" * 30 + b'"}}', "wrong_type",
         f'state.OOMKilled must be "true" or "false", got {"y" * 20!r}'),
        ("container", b'{"state": {}, "annotation": {"io.pullpiri.annotations.model": 5}}',
         "wrong_type", "annotation io.pullpiri.annotations.model must be a string, got int"),
        ("package", b'spec: {models: [{name: ""}]}', "bad_name",
         "spec.models[].name '': empty name"),
        ("package", b"spec: {models: [{name: a/b}]}", "bad_name",
         "spec.models[].name 'a/b': name contains '/'"),
        ("package", b"a: [", "invalid_yaml", "invalid YAML: while parsing a flow node"),
        ("package", b"metadata: []\nspec: {}", "wrong_type", "metadata must be a mapping, got list"),
        ("package", b"spec: 3", "wrong_type", "spec must be a mapping, got int"),
        ("package", b"5", "wrong_type", "Package document must be a mapping, got int"),
        ("package", b"a: \xff", "invalid_encoding", "not UTF-8: invalid start byte"),
    ],
)  # fmt: skip
def test_bad_input_says_exactly_what_is_wrong(
    parse: str, raw: bytes, kind: str, detail: str
) -> None:
    """Each rejection names its kind and, in words an operator can act on, the field, what it
    should be and what it is (a string's start only, else its type)."""
    if parse == "container":
        call = functools.partial(inputs.parse_container, raw)
    else:
        call = functools.partial(getattr(inputs, f"parse_{parse}"), raw, "p")
    with pytest.raises(BadInput) as caught:
        call()
    assert (caught.value.kind, caught.value.detail) == (kind, detail)


@pytest.mark.parametrize(
    ("raw", "models"),
    [
        (f"x: !!int {'1' * _LIMIT}\nspec: {{models: [{{name: a}}]}}".encode(), ("a",)),
        (b"spec: {models: [{name: a}, {name: a}, {name: b}]}", ("a", "b")),
        (b"spec: {models: }", ()),
        (b"spec: {}", ()),
    ],
)
def test_package_model_lists(raw: bytes, models: tuple[str, ...]) -> None:
    """A package's models in order, duplicates dropped; none when the list is null or absent;
    a typed scalar of exactly the length limit is read."""
    assert inputs.parse_package(raw, "p") == models


def _aliased(extra: int) -> str:
    """An anchored list of 100 scalars (101 nodes) named 196 times, and `extra` scalars:
    19,901 nodes with every alias expanded, plus `extra`."""
    return "a: &x [" + "b, " * 99 + "b]\nc: [" + "*x, " * 196 + "d, " * extra + "]"


def _nodes(text: str) -> int:
    walk = inputs._Bounds()
    walk.walk(yaml.compose(text, Loader=inputs._SpecLoader), 0)
    return walk.count


def test_nodes_are_counted_with_every_alias_expanded() -> None:
    """An alias counts as the size of the node it names: a scalar 1, a collection itself and
    all it holds."""
    assert _nodes("a: b") == 3
    assert _nodes("a: &x b\nc: *x") == 5
    assert _nodes("a: &x [b, c]\nd: *x\ne: *x") == 13
    assert _nodes(_aliased(99)) == 20_000


def test_the_node_and_depth_bounds_are_exact() -> None:
    """MAX_YAML_NODES nodes and MAX_YAML_DEPTH levels are read; one more is rejected, saying
    which bound it broke; an alias inside the node it names is rejected."""
    assert inputs._libyaml(_aliased(99))["c"][-1] == "d"
    with pytest.raises(BadInput) as caught:
        inputs._libyaml(_aliased(100))
    assert caught.value.detail == "more than 20000 nodes, an alias counted as its target"
    deepest = "[" * inputs.MAX_YAML_DEPTH + "]" * inputs.MAX_YAML_DEPTH
    assert isinstance(inputs._libyaml(deepest), list)
    with pytest.raises(BadInput) as caught:
        inputs._libyaml("[" + deepest + "]")
    assert caught.value.detail == f"nested deeper than {inputs.MAX_YAML_DEPTH} levels"
    shallow = "[" * (inputs.MAX_YAML_DEPTH - 2) + "{a: b}" + "]" * (inputs.MAX_YAML_DEPTH - 2)
    assert isinstance(inputs._libyaml(shallow), list)  # its key and value at the last level
    aliases_last = "a: &x [" + "b, " * 99 + "b]\nc: [" + "d, " * 99 + "*x, " * 196 + "]"
    assert len(inputs._libyaml(aliases_last)["c"]) == 295  # an alias makes it 20,000 exactly
    with pytest.raises(BadInput) as caught:
        inputs._libyaml("a: &x [*x]")
    assert caught.value.detail == "an alias refers to a node that contains it"


def test_the_depth_bound_counts_an_alias_where_it_stands() -> None:
    """Every node of the text is a level where it stands, an alias as a scalar is and a key as
    its value is; what an alias names is counted at its anchor's depth, not again below the
    alias, so a deep collection reused deep parses."""
    for leaf in ("d", "*x"):
        at_the_bound = f"a: &x b\nc: {'[' * 98}{leaf}{']' * 98}"
        assert isinstance(inputs._libyaml(at_the_bound), dict)
        with pytest.raises(BadInput) as caught:
            inputs._libyaml(f"a: &x b\nc: {'[' * 99}{leaf}{']' * 99}")
        assert caught.value.detail == f"nested deeper than {inputs.MAX_YAML_DEPTH} levels"
    with pytest.raises(BadInput) as caught:  # the key's inner list is one level too deep
        inputs._libyaml("[" * 98 + "{[[a]]: b}" + "]" * 98)
    assert caught.value.detail == f"nested deeper than {inputs.MAX_YAML_DEPTH} levels"
    deep = "[" * 60 + "]" * 60
    reused = inputs._libyaml(f"a: &x {deep}\nb: {'[' * 59}*x{']' * 59}")
    assert set(reused) == {"a", "b"}


def test_a_number_key_reached_through_an_alias_is_read_as_a_string() -> None:
    """An alias as a mapping key reads a number as its text like any key (else anchored numbers
    crafted to share one hash would make the mapping quadratic again), and so does its anchor
    wherever it stands: one node is one value."""
    text = "v: &n 1\n*n : x\nw: &f 2.5\n? *f\n: y\nk: [&z 3, *z]"
    assert inputs._libyaml(text) == {"v": "1", "1": "x", "w": "2.5", "2.5": "y", "k": [3, 3]}


def test_number_keys_are_strings_and_number_values_numbers() -> None:
    """A mapping key that YAML reads as a number is kept as its text; numbers elsewhere, and
    keys of other types, are what YAML reads."""
    assert inputs._libyaml("{1: a, 2.5: b, true: c, k: [1, 2.5], v: 3}") == {
        "1": "a", "2.5": "b", True: "c", "k": [1, 2.5], "v": 3,
    }  # fmt: skip


def _fast(text: str) -> object:
    """The value the one-pass builder (inputs._plain_value) gives, without PyYAML's
    constructor to fall back on."""
    loader = inputs._SpecLoader(text)
    try:
        return inputs._plain_value(loader, loader.get_single_node())
    finally:
        loader.dispose()


def test_plain_documents_are_built_in_one_pass() -> None:
    """The builder gives PyYAML's value itself, an alias the very object its anchor names;
    what needs PyYAML's full constructor it leaves to it."""
    text = 'a: &x [1, b, {c: d}]\nb: *x\nk: {e: null, f: true, g: 2001-12-14}\n"q": "x"'
    value = _fast(text + "\nm: &y {k: v}\nn: *y")
    assert value == yaml.safe_load(text + "\nm: &y {k: v}\nn: *y")
    assert isinstance(value, dict) and value["a"] is value["b"] and value["m"] is value["n"]
    for text in ["!!set {a}", "? [a]\n: b", "<<: {a: 1}", "!!omap [a: 1]"]:
        with pytest.raises(inputs._NotPlain):
            _fast(text)


def test_plain_specs_take_the_fast_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    """What keeps reading specs cheap at a cold start: a plain spec is read without libyaml
    (core/plainyaml.py), and a document libyaml reads is built in one pass, without PyYAML's
    constructor, while it holds only plain mappings, sequences and scalars."""
    read: list[str] = []
    libyaml = inputs._libyaml
    construct = yaml.constructor.BaseConstructor.construct_document

    def counted_libyaml(text: str) -> Any:
        read.append("libyaml")
        return libyaml(text)

    def counted_construct(loader: Any, node: Any) -> Any:
        read.append("constructor")
        return construct(loader, node)

    monkeypatch.setattr(inputs, "_libyaml", counted_libyaml)
    monkeypatch.setattr(yaml.constructor.BaseConstructor, "construct_document", counted_construct)
    models = ("payment_service.backend_model", "payment_service.auth_model")
    assert parse_package(PACKAGE_YAML, "payment_service") == models
    assert read == []
    quoted = PACKAGE_YAML.replace(b"node-a", b'"node-a"')  # quotes are libyaml's to read
    assert parse_package(quoted, "payment_service") == models
    assert read == ["libyaml"]
    assert parse_package(PACKAGE_YAML + b"extra: !!set {a}\n", "payment_service") == models
    assert read == ["libyaml", "libyaml", "constructor"]


def test_a_container_without_status_or_flags_is_unknown_and_not_oom_killed() -> None:
    """No `Status` reads as an unknown status; an empty `OOMKilled` as false."""
    info = inputs.parse_container(b'{"state": {"OOMKilled": ""}}')
    assert (info.status, info.cls) == (ContainerStatus.UNKNOWN, ContainerClass.ACTIVE)
