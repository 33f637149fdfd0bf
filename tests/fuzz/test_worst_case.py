"""Worst-case parse time of a 256 KiB value (the default `inputs.max_value_bytes`), measured.

A measurement, not a timed assertion: it prints one line per hostile shape with the CPU time
of the slowest of three parses, then the worst of all. Run it with
`.venv/bin/pytest tests/fuzz/test_worst_case.py -s`. The shapes are the costliest ones known
for each parser: the most nodes per byte, the longest scalars, nesting at and past the
bounds, an alias bomb, keys crafted to share one hash.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

from statemanager.core.errors import BadInput
from statemanager.core.inputs import (
    MAX_YAML_DEPTH,
    MAX_YAML_NODES,
    parse_container,
    parse_package,
)

SIZE = 256 * 1024


def _fill(head: str, item: str | Callable[[int], str], sep: str, tail: str) -> bytes:
    """`head item sep item … tail`, as many items as fit in SIZE bytes (`item(i)` for the
    i-th when it is a function)."""
    parts, used = [], len(head) + len(tail)
    while True:
        text = item(len(parts)) if callable(item) else item
        used += len(text) + (len(sep) if parts else 0)
        if used > SIZE:
            return (head + sep.join(parts) + tail).encode()
        parts.append(text)


def _alias_bomb() -> bytes:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 30):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return ("\n".join(lines) + "\nkind: *a29\n").encode()


def _deep(depth: int) -> bytes:
    """A container with nesting of `depth` levels beside it, padded to SIZE with a string."""
    head, core = '{"state": {"Status": "x"}, "n": ', "[" * depth + "]" * depth
    return (head + core + ', "pad": "' + "x" * (SIZE - len(head) - len(core) - 12) + '"}').encode()


def _most_nodes() -> bytes:
    """A spec of exactly MAX_YAML_NODES nodes whose scalars share out the SIZE bytes."""
    head, items = "kind: Package\nspec: {models: []}\nx: [", MAX_YAML_NODES - 9
    width = (SIZE - len(head) - 1) // items - 1
    return (head + ",".join(["a" * width] * items) + "]").encode()


CONTAINER_SHAPES: dict[str, bytes] = {
    "deep 1,023 levels": _deep(1023),
    "deep past the bound": b"[" * (SIZE // 2) + b"]" * (SIZE // 2),
    "array of 1s": _fill('{"state": {"Status": "running"}, "x": [', "1", ",", "]}"),
    "array of {}": _fill('{"state": {"Status": "running"}, "x": [', "{}", ",", "]}"),
    "many names": _fill('{"state": {"Status": "running"}, "names": [', '"a"', ",", "]}"),
    "escaped string": _fill('{"state": {"Status": "running"}, "x": "', "\\u00e9", "", '"}'),
    "long float": _fill('{"state": {"Status": "running"}, "x": 1.', "1", "", "}"),
    "many keys": _fill('{"state": {"Status": "running"}, ', lambda i: f'"k{i}": 0', ", ", "}"),
}
SPEC_SHAPES: dict[str, bytes] = {
    "20,000 nodes, long scalars": _most_nodes(),
    "flow list past the node bound": _fill(
        "kind: Package\nspec: {models: []}\nx: [", "a", ",", "]"
    ),
    "block list past the node bound": _fill(
        "kind: Package\nspec: {models: []}\nx:\n", "- a", "\n", ""
    ),
    "many mapping keys": _fill(
        "kind: Package\nspec: {models: []}\n", lambda i: f"k{i}: 0", "\n", ""
    ),
    "int keys sharing a hash": _fill(
        "kind: Package\nspec: {models: []}\n", lambda i: f"{(i + 1) * (2**61 - 1) + 7}: 0", "\n", ""
    ),
    "alias bomb": _alias_bomb(),
    "nesting at the bound": (
        "kind: Package\nspec: {models: []}\nx: "
        + "[" * (MAX_YAML_DEPTH - 1)
        + "]" * (MAX_YAML_DEPTH - 1)
        + "\n#"
        + "x" * (SIZE - 300)
    ).encode(),
    "one long plain scalar": _fill("kind: Package\nspec: {models: []}\nx: ", "1", "", ""),
    "base-60 number": _fill("kind: Package\nspec: {models: []}\nx: 1", ":59", "", ""),
    "escaped quoted scalar": _fill('kind: Package\nspec: {models: []}\nx: "', "\\u00e9", "", '"'),
    "a comment": _fill("kind: Package\nspec: {models: []}\n#", "x", "", ""),
}


def _worst_of_three(parse: Callable[[bytes], object], raw: bytes) -> tuple[float, str]:
    """The slowest CPU time of three parses, and what the parse gave."""
    times, outcome = [], ""
    for _ in range(3):
        started = time.process_time()
        try:
            parse(raw)
            outcome = "parsed"
        except BadInput as exc:
            outcome = exc.kind
        times.append(time.process_time() - started)
    return max(times), outcome


def test_worst_case_parse_time_of_a_256_kib_value() -> None:
    """Prints the CPU time of each hostile 256 KiB shape and the worst; each one parses or is
    BadInput (only the printout's figures are the measurement)."""
    parsers = {
        "container": (parse_container, CONTAINER_SHAPES),
        "spec": (partial(parse_package, name="p"), SPEC_SHAPES),
    }
    print()
    worst: dict[str, float] = {}
    for parser, (parse, shapes) in parsers.items():
        for shape, raw in shapes.items():
            assert len(raw) <= SIZE, (shape, len(raw))
            seconds, outcome = _worst_of_three(parse, raw)
            worst[parser] = max(worst.get(parser, 0.0), seconds)
            print(f"{parser:9} {shape:32} {len(raw):7} B  {outcome:14} {seconds * 1000:8.1f} ms")
    for parser, seconds in worst.items():
        print(f"worst {parser}: {seconds * 1000:.1f} ms CPU for a value of at most {SIZE} bytes")
