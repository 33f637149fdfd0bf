"""A fast reader for the plain YAML that specs are written in; libyaml reads everything else.

Package/Model/Scenario specs as the platform stores them (and as the benchmark writes them)
are block mappings and sequences of plain scalars, with short flow collections on one line:

    kind: Model
    metadata: {name: web}
    spec:
      containers:
      - {name: app, image: registry.local/app:1.0}

Reading one with libyaml costs ~35 µs for a Model and ~85 µs for a Package of four models
before a Python value exists (libyaml builds a Python node per scalar, then the constructor
walks them); at a million containers that was the largest part of a cold start.
`load(text)` reads that subset in one pass over the lines and returns exactly the value the
safe loader (`core/inputs.py::_SpecLoader`) would build, or None for anything it does not
handle with certainty: any character outside printable ASCII, quotes, comments, anchors,
aliases, tags, block scalars, directives or document markers, a scalar spanning lines, a flow
collection spanning lines or holding another collection, a trailing comma, a scalar that
YAML 1.1 would read as anything but a string, null, a boolean or a small decimal integer, a
key that is not a string, indentation it does not recognise. None is never an error: the
caller reads the text with libyaml, which gives the value or the precise error.

What "exactly" means is pinned by a differential test against libyaml on generated and mutated
documents (`tests/fuzz/test_plainyaml.py`).

The document's size is bounded by `MAX_CHARS` and its nesting by `MAX_DEPTH`, both far below
the safe loader's node and depth bounds, so a text this reader accepts is one the bounds
accept too (a character begins at most one node, and a `key:` with no value adds its null:
at most two nodes a character).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import yaml

# Far below MAX_YAML_NODES / 2 and MAX_YAML_DEPTH in core/inputs.py (see the docstring).
MAX_CHARS = 8_000
MAX_DEPTH = 40

# Anything outside printable ASCII and newline (tabs, CR, NEL and the Unicode line breaks,
# BOM, any non-ASCII letter), and every character that can start something this reader does
# not handle: quotes, comment, anchor, alias, tag, block scalar, directive, reserved.
_NOT_HANDLED = "\"'#&*!|>%@`\\"
_DECLINED = re.compile(
    "[^\n"
    + re.escape("".join(c for c in map(chr, range(0x20, 0x7F)) if c not in _NOT_HANDLED))
    + "]"
)
# The first character of a plain scalar this reader takes: none of YAML's indicators (a
# scalar such as `-1` or `:x` is legal, but libyaml reads it; this reader does not).
_INDICATORS = frozenset("-?:,[]{}")
_FLOW = frozenset(",[]{}")
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,17}")
_TAG = "tag:yaml.org,2002:"
# The safe loader's own table of which plain scalars are not strings (first character →
# [(tag, pattern)]), so this reader can never disagree with it on a scalar's type.
_RESOLVERS: dict[str | None, list[tuple[str, re.Pattern[str]]]] = (
    yaml.CSafeLoader.yaml_implicit_resolvers
)
_BOOLS = yaml.constructor.SafeConstructor.bool_values


class _Declined(Exception):
    """The text is outside the subset: libyaml reads it."""


def _within(depth: int) -> None:
    """Decline a collection nested deeper than MAX_DEPTH (checked by each collection, since
    a mapping's sequence and a sequence entry's mapping are entered without a block)."""
    if depth > MAX_DEPTH:
        raise _Declined


def load(text: str) -> Any | None:
    """The value of a document in the subset (see the module docstring), or None."""
    if len(text) > MAX_CHARS or _DECLINED.search(text):
        return None
    indents: list[int] = []
    contents: list[str] = []
    for line in text.split("\n"):
        content = line.strip(" ")
        if content:
            indent = len(line) - len(line.lstrip(" "))
            if indent == 0 and content.startswith(("---", "...")):
                return None  # a document marker
            indents.append(indent)
            contents.append(content)
    if not contents:
        return None
    indents.append(-1)  # the end: shallower than any line
    contents.append("")
    reader = _Reader(indents, contents)
    try:
        value = reader.block(indents[0], 0)
    except _Declined:
        return None
    return value if reader.at == len(contents) - 1 else None


def _is_sequence_entry(content: str) -> bool:
    return content[:2] == "- " or content == "-"


class _Reader:
    """One document's lines (indentation, content without the spaces around it; a last line
    at indentation -1 marks the end) and the position of the next line to read."""

    def __init__(self, indents: list[int], contents: list[str]) -> None:
        self.indents = indents
        self.contents = contents
        self.at = 0

    def block(self, indent: int, depth: int) -> Any:
        """The block collection whose first line is the next one, at `indent`."""
        if _is_sequence_entry(self.contents[self.at]):
            return self.sequence(indent, depth)
        return self.mapping(indent, None, depth)

    def _nested(self, indent: int, depth: int) -> Any:
        """The value of an entry (`key:` or `-`) that has none on its own line: a block on
        the next lines, indented deeper (a mapping's sequence may also sit at its key's
        indentation, which the caller checks), or null."""
        deeper = self.indents[self.at]
        return self.block(deeper, depth + 1) if deeper > indent else None

    def sequence(self, indent: int, depth: int) -> list[Any]:
        _within(depth)
        items: list[Any] = []
        indents, contents = self.indents, self.contents
        while indents[self.at] == indent and _is_sequence_entry(contents[self.at]):
            rest = contents[self.at][1:]
            entry = rest.lstrip(" ")
            if not entry:
                self.at += 1
                items.append(self._nested(indent, depth))
            elif entry[0] in "{[":
                self.at += 1
                items.append(_flow(entry))
            elif ": " in entry or entry[-1] == ":":
                # A mapping begun on the entry's line: its keys align with this first one.
                column = indent + 1 + len(rest) - len(entry)
                items.append(self.mapping(column, entry, depth + 1))
            else:
                self.at += 1
                items.append(_plain(entry))
            if indents[self.at] > indent:
                # Indented deeper after an entry: a scalar going on over lines, or an
                # indentation error, both libyaml's to read.
                raise _Declined
        return items

    def mapping(self, indent: int, first: str | None, depth: int) -> dict[Any, Any]:
        """A block mapping at `indent`; `first` is its first entry when it began on a
        sequence entry's line (the line is then the next one, at another indentation)."""
        _within(depth)
        mapping: dict[Any, Any] = {}
        indents, contents = self.indents, self.contents
        while first is not None or indents[self.at] == indent:
            key, value = _entry(first if first is not None else contents[self.at])
            first = None
            self.at += 1
            if value:
                mapping[key] = _flow(value) if value[0] in "{[" else _plain(value)
            elif indents[self.at] == indent and _is_sequence_entry(contents[self.at]):
                mapping[key] = self.sequence(indent, depth + 1)
            else:
                mapping[key] = self._nested(indent, depth)
            if indents[self.at] > indent:
                raise _Declined  # as in a sequence
        return mapping


def _entry(content: str) -> tuple[str, str]:
    """A block mapping entry's key and the text of its value ("" when on the next lines)."""
    split = content.find(": ")
    if split < 0:
        if not content.endswith(":"):
            raise _Declined  # a scalar alone: the continuation of something, or an error
        key, value = content[:-1], ""
    else:
        key, value = content[:split], content[split + 2 :].lstrip(" ")
    if not key or key[-1] == " " or ":" in key or not _FLOW.isdisjoint(key):
        raise _Declined
    return _key(key), value


# Keys and values repeat across specs (field names, node names, images): each distinct one is
# resolved once while it stays among the most recent (a declined one raises, and is not kept).
@lru_cache(maxsize=4096)
def _key(text: str) -> str:
    """A mapping key: a plain scalar that YAML reads as a string."""
    if text[0] in _INDICATORS or not isinstance(_scalar(text), str):
        raise _Declined
    return text


@lru_cache(maxsize=4096)
def _plain(text: str) -> Any:
    """A plain scalar that is a value: the rest of a line, or a flow collection's entry
    (`b:c` is one; `b: c` and `b:` are not)."""
    if not text or text[0] in _INDICATORS or ": " in text or text.endswith(":"):
        raise _Declined
    return _scalar(text)


def _scalar(text: str) -> Any:
    """The value of a non-empty plain scalar, as the safe loader resolves and builds it."""
    for tag, pattern in _RESOLVERS.get(text[0], ()):
        if pattern.match(text):
            if tag == _TAG + "null":
                return None
            if tag == _TAG + "bool":
                return _BOOLS[text.lower()]
            if tag == _TAG + "int" and _DECIMAL.fullmatch(text):
                return int(text)
            raise _Declined  # another number, a date, a merge key: libyaml's
    return text


def _flow(text: str) -> dict[str, Any] | list[Any]:
    """A flow collection of plain scalars that is the whole rest of a line (a collection in
    it, or one going on over the next line, is libyaml's)."""
    closing = "}" if text[0] == "{" else "]"
    if text[-1] != closing or not _FLOW.isdisjoint(text[1:-1].replace(",", "")):
        raise _Declined
    inner = text[1:-1]
    if not inner.strip(" "):
        return {} if closing == "}" else []
    # An empty entry (`[a,,b]`, `{a: b,}`) or value is declined by the checks below.
    if closing == "]":
        return [_plain(item.strip(" ")) for item in inner.split(",")]
    mapping: dict[str, Any] = {}
    for entry in inner.split(","):
        key, colon, value = entry.partition(": ")
        key = key.lstrip(" ")
        if not colon or not key or key[-1] == " " or ":" in key:
            raise _Declined  # a key alone, `a:b` as a key, an empty entry
        mapping[_key(key)] = _plain(value.strip(" "))
    return mapping
