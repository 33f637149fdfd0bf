"""The documents Pullpiri keeps in etcd, as the tests write them: one builder per kind, shared
by the in-process tests (`support.runtime`) and the tests against a real etcd
(`tests/integration`)."""

from __future__ import annotations

import json
from collections.abc import Mapping

MODEL_ANNOTATION = "io.pullpiri.annotations.model"


def container(cid: str, state: Mapping[str, str], model: str | None, **fields: object) -> str:
    """A container's info as NodeAgent writes it (JSON); `fields` adds top-level keys (stats)."""
    doc: dict[str, object] = {"id": cid, "names": [f"{model or 'x'}_{cid}"], "state": dict(state)}
    if model is not None:
        doc["annotation"] = {MODEL_ANNOTATION: model}
    doc.update(fields)
    return json.dumps(doc)


def package(name: str, models: list[str]) -> str:
    items = "".join(f"\n    - {{name: {m}, node: node-a}}" for m in models)
    return f"kind: Package\nmetadata: {{name: {name}}}\nspec:\n  models:{items or ' []'}\n"


def model(name: str, containers: list[str]) -> str:
    items = "".join(f"\n    - {{name: {c}, image: img}}" for c in containers)
    return f"kind: Model\nmetadata: {{name: {name}}}\nspec:\n  containers:{items}\n"


def scenario(name: str, target: str) -> str:
    return (
        f"kind: Scenario\nmetadata: {{name: {name}}}\nspec: {{action: update, target: {target}}}\n"
    )
