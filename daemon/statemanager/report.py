"""What `evaluate` and `status` print. Purely computational: they get a listing, not a client."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from statemanager.index import Index
from statemanager.ingest import Ingest, Report
from statemanager.keys import KeyLayout, Resource, WorkKey
from statemanager.planner import Change, plan
from statemanager.rules import Verdict


@dataclass(frozen=True, slots=True)
class Snapshot:
    index: Index
    revision: int
    reports: list[Report]


def build(
    layout: KeyLayout,
    revision: int,
    listing: Mapping[str, Iterable[tuple[bytes, bytes, int]]],
    max_value_bytes: int,
) -> Snapshot:
    index = Index()
    result = Ingest(layout, index, max_value_bytes).resync_all(listing, revision)
    return Snapshot(index, revision, result.reports)


def differences(snapshot: Snapshot) -> list[Change]:
    """Every state key whose written value differs from the derived one, sorted."""
    keys = sorted(snapshot.index.all_keys())
    changes = [c for group in plan(snapshot.index, keys) for c in group]
    return sorted(changes, key=lambda c: (c.key.resource != Resource.PACKAGE, c.key.name))


def _why(verdict: Verdict | None) -> str:
    return f"{verdict.rule}, {verdict.reason}" if verdict else "should have no state key"


def render_differences(changes: Sequence[Change]) -> list[str]:
    lines = []
    for c in changes:
        lines.append(
            f"{c.key.resource} {c.key.name}: written {c.old.value or '(none)'}, "
            f"derived {c.new or '(delete)'} ({_why(c.verdict)})"
        )
    return lines


def _state_line(index: Index, key: WorkKey, indent: str) -> str:
    verdict = index.verdict(key)
    written = index.written(key).value
    state = verdict.state if verdict else "(no state)"
    line = f"{indent}{key.resource} {key.name}: {state} ({_why(verdict)})"
    if written != (verdict.state if verdict else None):
        line += f"  [etcd says {written or 'nothing'}]"
    return line


def render_status(snapshot: Snapshot) -> list[str]:
    """packages → models → containers, each with its state and the rule that decided it."""
    index = snapshot.index
    keys = index.all_keys()
    packages = sorted(k.name for k in keys if k.resource is Resource.PACKAGE)
    lines = [f"etcd revision {snapshot.revision}"]
    shown: set[str] = set()

    def model_lines(model: str, indent: str) -> None:
        shown.add(model)
        lines.append(_state_line(index, WorkKey(Resource.MODEL, model), indent))
        for cid, info in index.containers_of(model):
            lines.append(f"{indent}  container {cid}: {info.status} ({info.cls.value})")

    for package in packages:
        lines.append(_state_line(index, WorkKey(Resource.PACKAGE, package), ""))
        for model in index.models_of(package):
            model_lines(model, "  ")
    loose = sorted(k.name for k in keys if k.resource is Resource.MODEL and k.name not in shown)
    if loose:
        lines.append("models in no package:")
        for model in loose:
            model_lines(model, "  ")
    for report in snapshot.reports:
        lines.append(
            f"{'rejected' if report.rejected else 'unassigned'} {report.key}: {report.detail}"
        )
    return lines
