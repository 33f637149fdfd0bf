"""What `evaluate` and `status` print. Purely computational: they get a listing, not a client."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from statemanager.core.index import Index
from statemanager.core.ingest import Ingest, Report
from statemanager.core.keys import KeyLayout, Resource, WorkKey
from statemanager.core.planner import Change, plan
from statemanager.core.rules import Verdict


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
    changes = [c for group in plan(snapshot.index, keys).groups for c in group]
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


def package_rows(index: Index, package: str, models: Sequence[str] | None = None) -> Iterator[Row]:
    """The package, then each of its models (or only `models`) with their containers. Lazy,
    like model_rows."""
    yield _state_row(index, WorkKey(Resource.PACKAGE, package), 0)
    for model in index.models_of(package) if models is None else models:
        yield from model_rows(index, model)


def packages(index: Index) -> list[str]:
    """Every package that has, or should have, a state key, sorted."""
    return sorted(index.names(Resource.PACKAGE))


def loose_models(index: Index) -> list[str]:
    """Models that no package lists (so no package's rows show them), sorted."""
    return sorted(m for m in index.names(Resource.MODEL) if not index.packages_of(m))


def format_row(row: Row, held_for: str | None = None) -> str:
    """A row as `status` prints it; `held_for`: how long etcd has held the state ("3m")."""
    held = f" for {held_for}" if held_for else ""
    line = f"{'  ' * row.depth}{row.kind} {row.name}: {row.state}{held} ({row.why})"
    return line + (f"  [etcd says {row.etcd_says}]" if row.etcd_says else "")


def held_for(seconds: float) -> str:
    """A duration as `status` shows a state's age: its two largest units ("3m", "2h5m")."""
    whole = max(0, int(seconds))
    parts = [(whole // 86400, "d"), (whole % 86400 // 3600, "h"), (whole % 3600 // 60, "m"),
             (whole % 60, "s")]  # fmt: skip
    first = next((i for i, (n, _) in enumerate(parts) if n), len(parts) - 1)
    return "".join(f"{n}{unit}" for n, unit in parts[first : first + 2] if n) or "0s"


@dataclass(frozen=True, slots=True)
class View:
    """What `status` shows: each package with the models shown under it, the models shown in
    no package, the names asked for that match nothing, and the reports (unfiltered only)."""

    packages: list[tuple[str, tuple[str, ...]]]
    loose: list[str]
    unknown: list[str]
    reports: list[Report]

    def models(self) -> list[str]:
        return sorted({m for _, under in self.packages for m in under} | set(self.loose))


def select(snapshot: Snapshot, names: Sequence[str] = ()) -> View:
    """Everything when `names` is empty; else each named package with all its models, and each
    named model under every package that lists it (or among the models in no package)."""
    index = snapshot.index
    wanted = set(names)
    shown: list[tuple[str, tuple[str, ...]]] = []
    for package in packages(index):
        listed = index.models_of(package)
        under = (
            listed if not wanted or package in wanted else tuple(m for m in listed if m in wanted)
        )
        if not wanted or package in wanted or under:
            shown.append((package, under))
    loose = [m for m in loose_models(index) if not wanted or m in wanted]
    known = {k.name for k in index.all_keys()}
    return View(shown, loose, sorted(wanted - known), [] if wanted else snapshot.reports)


def render_status(
    snapshot: Snapshot, view: View, ages: Mapping[WorkKey, str] | None = None
) -> list[str]:
    """packages → models → containers, each with its state and the rule that decided it, and
    with `ages` how long etcd has held a model's or package's state (from its history)."""
    index = snapshot.index
    lines = [f"etcd revision {snapshot.revision}"]

    def line(row: Row) -> str:
        key = WorkKey(Resource(row.kind), row.name) if row.kind != "container" else None
        return format_row(row, (ages or {}).get(key) if key else None)

    for package, under in view.packages:
        lines.extend(map(line, package_rows(index, package, under)))
    if view.loose:
        lines.append("models in no package:")
        for model in view.loose:
            lines.extend(map(line, model_rows(index, model)))
    for report in view.reports:
        lines.append(
            f"{'rejected' if report.rejected else 'unassigned'} {report.key}: {report.detail}"
        )
    return lines


# Machine-readable output (`--output json`). The schemas are documented in docs/cli.md: a
# change that removes or renames a field, or changes a field's meaning, bumps the version;
# adding a field does not.
STATUS_SCHEMA = "statemanager.status/v1"
EVALUATE_SCHEMA = "statemanager.evaluate/v1"


def _verdict_fields(verdict: Verdict | None) -> dict[str, str | None]:
    if verdict is None:
        return {"state": None, "rule": None, "reason": None}
    return {"state": verdict.state, "rule": verdict.rule, "reason": verdict.reason}


def _state_fields(index: Index, key: WorkKey, changed: Mapping[WorkKey, str]) -> dict[str, object]:
    return {
        "name": key.name,
        **_verdict_fields(index.verdict(key)),
        "written": index.written(key).value,
        "changed_at": changed.get(key),
    }


def _problems(reports: Sequence[Report]) -> list[dict[str, object]]:
    return [
        {"key": r.key, "kind": r.kind, "detail": r.detail, "rejected": r.rejected} for r in reports
    ]


def status_document(
    snapshot: Snapshot,
    view: View,
    leader: str | None,
    changed: Mapping[WorkKey, str] | None = None,
) -> dict[str, object]:
    """`status --output json` (schema statemanager.status/v1); `changed`: per key, when etcd's
    state was written, from its history record (a timestamp)."""
    index = snapshot.index
    changed = changed or {}
    packages = [
        _state_fields(index, WorkKey(Resource.PACKAGE, p), changed) | {"models": list(under)}
        for p, under in view.packages
    ]
    models = [
        _state_fields(index, WorkKey(Resource.MODEL, m), changed)
        | {
            "packages": sorted(index.packages_of(m)),
            "containers": [
                {"id": cid, "status": str(info.status), "class": info.cls.value}
                for cid, info in index.containers_of(m)
            ],
        }
        for m in view.models()
    ]
    return {
        "schema": STATUS_SCHEMA,
        "revision": snapshot.revision,
        "leader": leader,
        "packages": packages,
        "models": models,
        "not_found": view.unknown,
        "problems": _problems(view.reports),
    }


def evaluate_document(snapshot: Snapshot, changes: Sequence[Change]) -> dict[str, object]:
    """`evaluate --output json` (schema statemanager.evaluate/v1)."""
    return {
        "schema": EVALUATE_SCHEMA,
        "revision": snapshot.revision,
        "agree": not changes,
        "changes": [
            {
                "resource": str(c.key.resource),
                "name": c.key.name,
                "written": c.old.value,
                "derived": c.new,
                "rule": c.verdict.rule if c.verdict else None,
                "reason": c.verdict.reason if c.verdict else None,
            }
            for c in changes
        ],
        "problems": _problems(snapshot.reports),
    }
