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
    keys = index.all_keys()
    packages = {k.name for k in keys if k.resource is Resource.PACKAGE}
    models = {k.name for k in keys if k.resource is Resource.MODEL}
    wanted = set(names)
    shown: list[tuple[str, tuple[str, ...]]] = []
    placed: set[str] = set()
    for package in sorted(packages):
        listed = index.models_of(package)
        under = (
            listed if not wanted or package in wanted else tuple(m for m in listed if m in wanted)
        )
        if not wanted or package in wanted or under:
            shown.append((package, under))
            placed.update(listed)
    loose = sorted(m for m in models - placed if not wanted or m in wanted)
    unknown = sorted(wanted - packages - models)
    return View(shown, loose, unknown, [] if wanted else snapshot.reports)


def render_status(snapshot: Snapshot, view: View) -> list[str]:
    """packages → models → containers, each with its state and the rule that decided it."""
    index = snapshot.index
    lines = [f"etcd revision {snapshot.revision}"]

    def model_lines(model: str, indent: str) -> None:
        lines.append(_state_line(index, WorkKey(Resource.MODEL, model), indent))
        for cid, info in index.containers_of(model):
            lines.append(f"{indent}  container {cid}: {info.status} ({info.cls.value})")

    for package, under in view.packages:
        lines.append(_state_line(index, WorkKey(Resource.PACKAGE, package), ""))
        for model in under:
            model_lines(model, "  ")
    if view.loose:
        lines.append("models in no package:")
        for model in view.loose:
            model_lines(model, "  ")
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


def _state_fields(index: Index, key: WorkKey) -> dict[str, object]:
    return {
        "name": key.name,
        **_verdict_fields(index.verdict(key)),
        "written": index.written(key).value,
    }


def _problems(reports: Sequence[Report]) -> list[dict[str, object]]:
    return [
        {"key": r.key, "kind": r.kind, "detail": r.detail, "rejected": r.rejected} for r in reports
    ]


def status_document(snapshot: Snapshot, view: View, leader: str | None) -> dict[str, object]:
    """`status --output json` (schema statemanager.status/v1)."""
    index = snapshot.index
    packages = [
        _state_fields(index, WorkKey(Resource.PACKAGE, p)) | {"models": list(under)}
        for p, under in view.packages
    ]
    models = [
        _state_fields(index, WorkKey(Resource.MODEL, m))
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
