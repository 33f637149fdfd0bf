"""What `evaluate` and `status` print. Purely computational: they get a listing, not a client."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
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


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the status tree: a package, a model or a container."""

    depth: int  # 0 package, 1 model (in a package or not), 2 container
    kind: str  # "package", "model" or "container"
    name: str
    state: str  # the derived state ("(no state)": should have no key), or a container's status
    why: str  # the rule and its reason, or a container's class
    etcd_says: str | None = None  # etcd's value, only where it differs from the derived state


def _state_row(index: Index, key: WorkKey, depth: int) -> Row:
    verdict = index.verdict(key)
    derived = verdict.state if verdict else None
    written = index.written(key).value
    differs = None if written == derived else written or "nothing"
    return Row(depth, str(key.resource), key.name, derived or "(no state)", _why(verdict), differs)


def model_rows(index: Index, model: str, depth: int = 1) -> Iterator[Row]:
    """The model, then its containers. Lazy, so a caller can stop after a budget of rows."""
    yield _state_row(index, WorkKey(Resource.MODEL, model), depth)
    for cid, info in index.containers_of(model):
        yield Row(depth + 1, "container", cid, info.status, info.cls.value)


def package_rows(index: Index, package: str) -> Iterator[Row]:
    """The package, then each of its models with their containers. Lazy, like model_rows."""
    yield _state_row(index, WorkKey(Resource.PACKAGE, package), 0)
    for model in index.models_of(package):
        yield from model_rows(index, model)


def packages(index: Index) -> list[str]:
    """Every package that has, or should have, a state key, sorted."""
    return sorted(index.names(Resource.PACKAGE))


def loose_models(index: Index) -> list[str]:
    """Models that no package lists (so no package's rows show them), sorted."""
    return sorted(m for m in index.names(Resource.MODEL) if not index.packages_of(m))


def format_row(row: Row) -> str:
    line = f"{'  ' * row.depth}{row.kind} {row.name}: {row.state} ({row.why})"
    return line + (f"  [etcd says {row.etcd_says}]" if row.etcd_says else "")


def render_status(snapshot: Snapshot) -> list[str]:
    """packages → models → containers, each with its state and the rule that decided it."""
    index = snapshot.index
    lines = [f"etcd revision {snapshot.revision}"]
    for package in packages(index):
        lines.extend(map(format_row, package_rows(index, package)))
    loose = loose_models(index)
    if loose:
        lines.append("models in no package:")
        for model in loose:
            lines.extend(map(format_row, model_rows(index, model)))
    for report in snapshot.reports:
        lines.append(
            f"{'rejected' if report.rejected else 'unassigned'} {report.key}: {report.detail}"
        )
    return lines
