"""The fast spec reader (core/plainyaml.py) on chosen texts: what it reads itself, with the
exact value, and where its bounds are. Its agreement with libyaml on generated texts is the
differential test in tests/fuzz/test_plainyaml.py; here, that it does not decline what it
is there to read (a decline is never wrong, only slow: libyaml then reads the spec)."""

from __future__ import annotations

import pytest
import yaml

from statemanager.core import plainyaml


@pytest.fixture(autouse=True)
def _fresh_scalars() -> None:
    """Each test's scalars read here, not taken from the caches an earlier test filled."""
    plainyaml._key.cache_clear()
    plainyaml._plain.cache_clear()


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("a: null\nb: ~\nc: true\nd: no\ne: 12\nf: 0", {"a": None, "b": None, "c": True,
                                                       "d": False, "e": 12, "f": 0}),
        ("- Xa\n-   Xb\n- X", ["Xa", "Xb", "X"]),
        ("a: {Xk: Xv,  k2:  v2 }\nb: [Xa,  bX ]", {"a": {"Xk": "Xv", "k2": "v2"},
                                                   "b": ["Xa", "bX"]}),
        ("a: {}\nb: []\nc: [x,y]", {"a": {}, "b": [], "c": ["x", "y"]}),
        ("k:\n- x\n- {a: b}\n- [c]\n- Xd: e\n  f: g", {"k": ["x", {"a": "b"}, ["c"],
                                                            {"Xd": "e", "f": "g"}]}),
        ("k X:   v\nX: Y", {"k X": "v", "X": "Y"}),
        ("a: b:c\nd: e,f", {"a": "b:c", "d": "e,f"}),
        ("a: {k: b:c}", {"a": {"k": "b:c"}}),
        ("a: Xb\nX: Xv\nk: [Xa]", {"a": "Xb", "X": "Xv", "k": ["Xa"]}),
        ("-\n  a: b\n- c", [{"a": "b"}, "c"]),
        ("-\n- x", [None, "x"]),
        ("a:\n  - x\n  -\n    - y", {"a": ["x", ["y"]]}),
        ("k: [X]\nj: {X: XX}", {"k": ["X"], "j": {"X": "XX"}}),
    ],
)  # fmt: skip
def test_what_the_reader_reads_itself(text: str, value: object) -> None:
    """Plain specs' forms are read here, to the value libyaml gives."""
    assert plainyaml.load(text) == value == yaml.safe_load(text)


@pytest.mark.parametrize(
    "text",
    ["---\na: b", "a: b\n...", "a: b\n---", "... a: b", "a:\n  - x\n- y", "k: {a}", "a: 012", "a: 1.5", "a : b", "a:b: c", "a: {k : v}", "a: {a:b: c}", "a: [x, ]", "[]",
     "a: {b: [c]}", "a: {X k: v}, ", "a: {k: v,}", "a: [x]]", "a: {k: v]", "a: {: v}",
     "a: {k: v, : w}", "  a: 1\nb: 2"],
)  # fmt: skip
def test_what_the_reader_declines(text: str) -> None:
    """Forms outside the subset go to libyaml."""
    assert plainyaml.load(text) is None


def _nested_mappings(levels: int) -> str:
    return "".join("  " * i + f"k{i}:\n" for i in range(levels)) + "  " * levels + "v: 1"


def _mappings_in_sequences(levels: int) -> str:
    """A mapping whose value is a sequence of one mapping whose value is …: each sequence sits
    at its key's indentation (entered without a nested block)."""
    lines = ["k0:"] + [" " * 2 * (i - 1) + f"- k{i}:" for i in range(1, levels)]
    return "\n".join([*lines, " " * 2 * (levels - 1) + "- v"])


def _depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


@pytest.mark.parametrize(
    ("nested", "most"), [(_nested_mappings, plainyaml.MAX_DEPTH), (_mappings_in_sequences, 20)]
)
def test_nesting_is_bounded_on_every_path(nested: object, most: int) -> None:
    """However collections nest, the reader declines past MAX_DEPTH levels (it once counted
    only nested blocks, and read a sequence-in-mapping chain 170 levels deep, past the safe
    loader's own bound of 100, which rejects such a spec)."""
    assert callable(nested)
    read = [n for n in range(2, 120) if plainyaml.load(nested(n)) is not None]
    assert read == list(range(2, most + 1))
    deepest = _depth(plainyaml.load(nested(read[-1])))
    assert plainyaml.MAX_DEPTH <= deepest <= plainyaml.MAX_DEPTH + 2
    assert plainyaml.load(nested(read[-1] + 1)) is None


def test_size_is_bounded() -> None:
    """A text longer than MAX_CHARS goes to libyaml, one of exactly MAX_CHARS is read."""
    text = "a: " + "b" * (plainyaml.MAX_CHARS - 3)
    assert plainyaml.load(text) == {"a": "b" * (plainyaml.MAX_CHARS - 3)}
    assert plainyaml.load(text + "b") is None
