"""The plain-spec reader against libyaml (core/plainyaml.py): on every text it either declines
(None) or gives exactly the value the safe loader builds, types included; and it does not
decline the documents it exists for.

Texts: documents rendered from generated trees in the styles specs are written in (block
mappings and sequences at any indentation step, a sequence at its key's indentation, a mapping
begun on a sequence entry's line, flat flow collections, blank lines, extra spaces), with
scalars that YAML reads as strings, numbers, booleans, nulls, dates, merge keys, or as
indicators; then the same texts with random edits; then random strings of YAML's structural
characters. Profiles (examples, seed): conftest.py.
"""

from __future__ import annotations

from typing import Any, TypeGuard

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from statemanager.core import plainyaml
from statemanager.core.inputs import _SpecLoader
from statemanager.devtools.benchload import Fleet


def libyaml(text: str) -> object:
    """The safe loader's value, or the exception class it raised."""
    try:
        return yaml.load(text, Loader=_SpecLoader)
    except Exception as exc:  # any refusal (YAMLError, BadInput): the reader must decline
        return type(exc)


def same(a: object, b: object) -> bool:
    """Equal with the same types all the way down (True == 1 and 1 == 1.0 in Python)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def agrees(text: str) -> object:
    """Assert the reader declines `text` or agrees with libyaml; its value."""
    fast = plainyaml.load(text)
    if fast is not None:
        slow = libyaml(text)
        assert same(fast, slow), (text, fast, slow)
    return fast


# Scalars that read as strings in any position the renderer puts them (a key with a colon in
# it is left to libyaml).
KEYS = ["a", "web", "node-a", "bench-p00001.m000002", "a b", "Model"]
WORDS = [*KEYS, "registry.local/app:1.0"]
# Everything else: numbers of every YAML 1.1 form, booleans, nulls, dates, merge and value
# keys, indicators at the start or inside, colons, commas, brackets.
TRICKY = [
    *("0", "7", "01", "-1", "+1", "1_000", "0x1f", "0o7", "1:30", "1.5", ".inf", "1e3"),
    *("123456789012345678901", "true", "False", "yes", "NO", "on", "Off", "y", "n"),
    *("null", "Null", "~", "2001-01-01", "2001-01-01 10:00:00", "<<", "=", "-", "-a"),
    *(":a", "?a", "a:", "a: b", "a:b", "x,y", "[a", "a]", "{a", "a}", "---", "...", "a  b"),
]
plain = (st.sampled_from(KEYS), st.sampled_from(WORDS))
anything = (st.sampled_from(WORDS + TRICKY),) * 2


def trees(keys: st.SearchStrategy[str], leaves: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    """Mappings and sequences (never empty) of scalars (the empty string: no value)."""
    return st.recursive(
        leaves | st.just(""),
        lambda inner: (
            st.dictionaries(keys, inner, min_size=1, max_size=4)
            | st.lists(inner, min_size=1, max_size=4)
        ),
        max_leaves=24,
    ).filter(lambda tree: isinstance(tree, dict | list))


def flat(value: object) -> TypeGuard[dict[str, str] | list[str]]:
    """A collection of non-empty scalars only: one a flow collection can hold."""
    return isinstance(value, dict | list) and all(
        isinstance(v, str) and v for v in (value.values() if isinstance(value, dict) else value)
    )


def flow(value: dict[str, str] | list[str], space: str) -> str:
    if isinstance(value, dict):
        return "{" + f",{space}".join(f"{k}: {v}" for k, v in value.items()) + "}"
    return "[" + f",{space}".join(value) + "]"


@st.composite
def documents(
    draw: st.DrawFn, scalars: tuple[st.SearchStrategy[str], st.SearchStrategy[str]]
) -> str:
    """A tree rendered as block YAML, each choice of style drawn."""
    step = draw(st.integers(1, 4))
    gap = st.sampled_from([" ", " ", "  "])

    def value_lines(head: str, value: object, indent: int, in_mapping: bool) -> list[str]:
        if isinstance(value, str):
            return [f"{head}{draw(gap)}{value}" if value else head]
        if flat(value) and draw(st.booleans()):
            return [f"{head}{draw(gap)}{flow(value, draw(st.sampled_from(['', ' '])))}"]
        if isinstance(value, list) and in_mapping and draw(st.booleans()):
            return [head, *block(value, indent)]  # a sequence at its key's indentation
        return [head, *block(value, indent + step)]

    def block(value: object, indent: int) -> list[str]:
        pad = " " * indent
        lines: list[str] = []
        if isinstance(value, dict):
            for key, item in value.items():
                lines += value_lines(f"{pad}{key}:", item, indent, True)
        else:
            assert isinstance(value, list)
            for item in value:
                if isinstance(item, dict) and draw(st.booleans()):
                    # A mapping begun on the entry's line, its keys aligned with the first.
                    dash = draw(st.sampled_from(["- ", "-  "]))
                    inner = block(item, indent + len(dash))
                    lines += [pad + dash + inner[0].lstrip(" "), *inner[1:]]
                else:
                    lines += value_lines(f"{pad}-", item, indent, False)
        if draw(st.integers(0, 9)) == 0:
            lines.insert(draw(st.integers(0, len(lines))), " " * draw(st.integers(0, 3)))
        return lines

    tree = draw(trees(*scalars))
    return "\n".join(block(tree, draw(st.integers(0, 2)))) + draw(st.sampled_from(["", "\n"]))


@given(documents(plain))
def test_a_plain_document_is_read_as_libyaml_reads_it(text: str) -> None:
    assert agrees(text) is not None, text


@given(documents(anything))
def test_any_scalar_is_read_as_libyaml_reads_it_or_declined(text: str) -> None:
    agrees(text)


EDITS = list(" -:,[]{}#'\"\n&*!|>?~0aé\t")


@given(documents(anything), st.data())
def test_an_edited_document_is_read_as_libyaml_reads_it_or_declined(
    text: str, data: st.DataObject
) -> None:
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(text)))
        if data.draw(st.booleans()):
            text = text[:at] + data.draw(st.sampled_from(EDITS)) + text[at:]
        else:
            text = text[:at] + text[at + 1 :]
    agrees(text)


@given(st.text(st.sampled_from(list("ab0 -:,[]{}\n~")), max_size=40))
def test_any_short_text_is_read_as_libyaml_reads_it_or_declined(text: str) -> None:
    agrees(text)


SPECS = [
    # As the platform's API server stores them (serde_yaml: block style, a sequence at its
    # key's indentation, numbers and booleans plain).
    "apiVersion: v1\nkind: Model\nmetadata:\n  name: helloworld\n  annotations:\n"
    "    io.piccolo.annotations.package-type: helloworld-core\n"
    "spec:\n  hostNetwork: true\n  containers:\n  - name: helloworld\n"
    "    image: quay.io/podman/hello:latest\n  terminationGracePeriodSeconds: 0\n",
    "kind: Package\nmetadata: {name: payment_service}\nspec:\n  models:\n"
    "    - {name: payment_service.backend_model, node: node-a}\n"
    "    - {name: payment_service.auth_model, node: node-b}\n",
    "kind: Scenario\nmetadata: {name: payment_recovery}\nspec: {action: update, target: p}\n",
    *(put.value.decode() for put in Fleet(20, 4, 2).specs()),
]


@pytest.mark.parametrize("text", SPECS)
def test_specs_as_written_are_read_without_libyaml(text: str) -> None:
    assert agrees(text) is not None


@pytest.mark.parametrize(
    "text",
    [
        "a: [b, {c: d}]",  # a collection in a flow collection
        "a: {b: c,}",  # a trailing comma
        "a: [b,\n  c]",  # a flow collection over lines
        "a: b\n  c",  # a scalar over lines
        "a: 'b'",  # quotes
        "a: b # c",  # a comment
        "a: &x b\nc: *x",  # an anchor and an alias
        "a: 1.5",  # a float
        "1: a",  # a key that is not a string
        "a: é",  # not ASCII
        "a:\tb",  # a tab
        "---\na: b",  # a document marker
        "a:\n  b: c\n d: e",  # indentation libyaml refuses
        "a: b: c",  # a value libyaml refuses
        "- - a",  # a sequence begun on an entry's line
        "plain",  # a document that is a scalar
        "",
        "a: " + "b" * plainyaml.MAX_CHARS,  # too long
    ],
)
def test_what_the_reader_leaves_to_libyaml(text: str) -> None:
    assert plainyaml.load(text) is None


def test_scalars_are_typed_by_the_loaders_own_table() -> None:
    """The reader resolves a scalar's type with the very table the safe loader uses, which has
    no resolver for every first character (PyYAML would try those on every scalar)."""
    assert _SpecLoader.yaml_implicit_resolvers is plainyaml._RESOLVERS
    assert None not in plainyaml._RESOLVERS
