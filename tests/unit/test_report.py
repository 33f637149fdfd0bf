"""What `status` and `evaluate` print (core/report.py), text and JSON, from one listing with
every kind of line: an agreeing model, a differing one, a package with no key yet, a state
key that should not exist, a model in no package, a rejected and an unassigned container."""

from __future__ import annotations

import json

import pytest

from statemanager.core import report
from statemanager.core.keys import KeyLayout, Resource, WorkKey

from support import documents

LAYOUT = KeyLayout()
DEGRADED = "Degraded (P3, 1 of 2 models Failed)"
ACTIVE = "1 of 1 containers running or unknown"


def _container(cid: str, state: dict[str, str], model: str | None) -> tuple[bytes, bytes, int]:
    return (LAYOUT.containers + cid).encode(), documents.container(cid, state, model).encode(), 3


def _snapshot(model_states: list[tuple[bytes, bytes, int]]) -> report.Snapshot:
    listing = {
        LAYOUT.containers: [
            _container("c1", {"Status": "running"}, "web"),
            _container("c2", {"Status": "exited", "ExitCode": "1"}, "db"),
            _container("c3", {"Status": "running"}, "solo"),
            ((LAYOUT.containers + "bad").encode(), b"{not json", 4),
            _container("c4", {"Status": "running"}, None),
        ],
        LAYOUT.packages: [(b"Package/shop", documents.package("shop", ["web", "db"]).encode(), 2)],
        LAYOUT.model_states: model_states,
        LAYOUT.package_states: [],
    }
    return report.build(LAYOUT, 9, listing, 1 << 20)


@pytest.fixture
def snapshot() -> report.Snapshot:
    return _snapshot(
        [
            (b"/model/web/state", b"Running", 5),
            (b"/model/db/state", b"Running", 5),
            (b"/model/gone/state", b"Running", 5),
        ]
    )


BAD = {
    "key": "/pullpiri/metrics/containers/bad",
    "kind": "invalid_json",
    "detail": "invalid JSON: unexpected character, expected a string key at line 1",
    "rejected": True,
}
UNASSIGNED = {
    "key": "/pullpiri/metrics/containers/c4",
    "kind": "unassigned",
    "detail": "no model annotation and no Model spec lists any of its names",
    "rejected": False,
}


def test_differences_lists_packages_first_then_models_by_name(snapshot: report.Snapshot) -> None:
    """Each state key whose written value differs, packages before models, each sorted by
    name; the line says what is written, what is derived and the rule (or that no key
    should exist)."""
    assert report.render_differences(report.differences(snapshot)) == [
        "package shop: written (none), derived Degraded (P3, 1 of 2 models Failed)",
        "model db: written Running, derived Failed (M2, 1 of 1 containers dead)",
        "model gone: written Running, derived (delete) (should have no state key)",
        f"model solo: written (none), derived Running (M5, {ACTIVE})",
    ]


def test_status_shows_the_tree_and_what_etcd_says_where_it_differs(
    snapshot: report.Snapshot,
) -> None:
    """packages → models → containers indented by depth, models in no package after them,
    then one line per rejected or unassigned key; `[etcd says …]` only where etcd differs."""
    assert report.render_status(snapshot, report.select(snapshot)) == [
        "etcd revision 9",
        f"package shop: {DEGRADED}  [etcd says nothing]",
        f"  model web: Running (M5, {ACTIVE})",
        "    container c1: running (active)",
        "  model db: Failed (M2, 1 of 1 containers dead)  [etcd says Running]",
        "    container c2: exited (dead)",
        "models in no package:",
        "  model gone: (no state) (should have no state key)  [etcd says Running]",
        f"  model solo: Running (M5, {ACTIVE})  [etcd says nothing]",
        "    container c3: running (active)",
        f"rejected {BAD['key']}: {BAD['detail']}",
        f"unassigned {UNASSIGNED['key']}: {UNASSIGNED['detail']}",
    ]


def test_status_of_named_models_and_packages(snapshot: report.Snapshot) -> None:
    """A named model shows under each package listing it (or among the loose models), a named
    package with all its models; unknown names are listed, and the reports are left out."""
    view = report.select(snapshot, ["db", "nope", "solo"])
    assert view == report.View([("shop", ("db",))], ["solo"], ["nope"], [])
    assert view.models() == ["db", "solo"]
    assert report.render_status(snapshot, view) == [
        "etcd revision 9",
        f"package shop: {DEGRADED}  [etcd says nothing]",
        "  model db: Failed (M2, 1 of 1 containers dead)  [etcd says Running]",
        "    container c2: exited (dead)",
        "models in no package:",
        f"  model solo: Running (M5, {ACTIVE})  [etcd says nothing]",
        "    container c3: running (active)",
    ]
    whole = report.select(snapshot, ["shop"])
    assert whole == report.View([("shop", ("web", "db"))], [], [], [])
    assert report.select(snapshot, ["web"]).packages == [("shop", ("web",))]


def test_rows_of_a_package_without_a_model_filter(snapshot: report.Snapshot) -> None:
    """package_rows without `models` shows every model the package lists; model_rows puts a
    model at the depth asked and its containers one deeper."""
    rows = list(report.package_rows(snapshot.index, "shop"))
    assert [(r.depth, r.kind, r.name) for r in rows] == [
        (0, "package", "shop"),
        (1, "model", "web"),
        (2, "container", "c1"),
        (1, "model", "db"),
        (2, "container", "c2"),
    ]
    solo = list(report.model_rows(snapshot.index, "solo", depth=3))
    assert solo == [
        report.Row(3, "model", "solo", "Running", f"M5, {ACTIVE}", "nothing"),
        report.Row(4, "container", "c3", "running", "active"),
    ]
    assert report.format_row(solo[1]) == "        container c3: running (active)"
    assert report.packages(snapshot.index) == ["shop"]
    assert report.loose_models(snapshot.index) == ["gone", "solo"]


def test_status_document(snapshot: report.Snapshot) -> None:
    """`status --output json`: every field of schema statemanager.status/v1."""
    document = report.status_document(snapshot, report.select(snapshot), "node-a")
    running = {"state": "Running", "rule": "M5", "reason": ACTIVE}
    assert json.loads(json.dumps(document)) == {
        "schema": "statemanager.status/v1",
        "revision": 9,
        "leader": "node-a",
        "packages": [
            {
                "name": "shop",
                "state": "Degraded",
                "rule": "P3",
                "reason": "1 of 2 models Failed",
                "written": None,
                "changed_at": None,
                "models": ["web", "db"],
            },
        ],
        "models": [
            {
                "name": "db",
                "state": "Failed",
                "rule": "M2",
                "reason": "1 of 1 containers dead",
                "written": "Running",
                "changed_at": None,
                "packages": ["shop"],
                "containers": [{"id": "c2", "status": "exited", "class": "dead"}],
            },
            {
                "name": "gone",
                "state": None,
                "rule": None,
                "reason": None,
                "written": "Running",
                "changed_at": None,
                "packages": [],
                "containers": [],
            },
            {
                "name": "solo",
                **running,
                "written": None,
                "changed_at": None,
                "packages": [],
                "containers": [{"id": "c3", "status": "running", "class": "active"}],
            },
            {
                "name": "web",
                **running,
                "written": "Running",
                "changed_at": None,
                "packages": ["shop"],
                "containers": [{"id": "c1", "status": "running", "class": "active"}],
            },
        ],
        "not_found": [],
        "problems": [BAD, UNASSIGNED],
    }
    named = report.status_document(snapshot, report.select(snapshot, ["nope"]), None)
    assert (named["leader"], named["not_found"], named["problems"]) == (None, ["nope"], [])


def test_evaluate_document(snapshot: report.Snapshot) -> None:
    """`evaluate --output json`: every field of schema statemanager.evaluate/v1."""
    document = report.evaluate_document(snapshot, report.differences(snapshot))
    assert json.loads(json.dumps(document)) == {
        "schema": "statemanager.evaluate/v1",
        "revision": 9,
        "agree": False,
        "changes": [
            {
                "resource": "package",
                "name": "shop",
                "written": None,
                "derived": "Degraded",
                "rule": "P3",
                "reason": "1 of 2 models Failed",
            },
            {
                "resource": "model",
                "name": "db",
                "written": "Running",
                "derived": "Failed",
                "rule": "M2",
                "reason": "1 of 1 containers dead",
            },
            {
                "resource": "model",
                "name": "gone",
                "written": "Running",
                "derived": None,
                "rule": None,
                "reason": None,
            },
            {
                "resource": "model",
                "name": "solo",
                "written": None,
                "derived": "Running",
                "rule": "M5",
                "reason": ACTIVE,
            },
        ],
        "problems": [BAD, UNASSIGNED],
    }


def test_states_that_agree_have_no_differences() -> None:
    """With every state key written as derived, evaluate agrees and status flags nothing."""
    agreeing = _snapshot(
        [
            (b"/model/web/state", b"Running", 5),
            (b"/model/db/state", b"Failed", 5),
            (b"/model/solo/state", b"Running", 5),
        ]
    )
    agreeing.index.observe_written(WorkKey(Resource.PACKAGE, "shop"), "Degraded", 6)
    assert report.differences(agreeing) == []
    assert report.evaluate_document(agreeing, [])["agree"] is True
    assert not any(
        "etcd says" in line for line in report.render_status(agreeing, report.select(agreeing))
    )


def test_a_package_without_models_is_shown_only_unfiltered_or_named() -> None:
    """A package listing no models shows in the whole status and when named, not when only
    other names are asked for; a package's written state is shown as etcd holds it."""
    listing = {
        LAYOUT.containers: [_container("c1", {"Status": "running"}, "web")],
        LAYOUT.packages: [(b"Package/idle", documents.package("idle", []).encode(), 2),
                          (b"Package/shop", documents.package("shop", ["web"]).encode(), 2)],
        LAYOUT.package_states: [(b"/package/idle/state", b"Initializing", 4)],
    }  # fmt: skip
    snapshot = report.build(LAYOUT, 9, listing, 1 << 20)
    assert [p for p, _ in report.select(snapshot).packages] == ["idle", "shop"]
    assert [p for p, _ in report.select(snapshot, ["idle"]).packages] == ["idle"]
    assert [p for p, _ in report.select(snapshot, ["web"]).packages] == ["shop"]
    document = report.status_document(snapshot, report.select(snapshot, ["idle"]), None)
    assert document["packages"] == [
        {"name": "idle", "state": "Initializing", "rule": "P1", "reason": "no models",
         "written": "Initializing", "changed_at": None, "models": []},
    ]  # fmt: skip


def test_a_package_state_key_without_a_spec_is_shown_to_be_deleted() -> None:
    """A package state key whose package has no spec is listed among the packages, shown
    with no derived state and what etcd holds (evaluate deletes it)."""
    listing = {
        LAYOUT.packages: [(b"Package/shop", documents.package("shop", []).encode(), 2)],
        LAYOUT.package_states: [(b"/package/old/state", b"Running", 4)],
    }
    snapshot = report.build(LAYOUT, 9, listing, 1 << 20)
    assert report.packages(snapshot.index) == ["old", "shop"]
    assert report.render_status(snapshot, report.select(snapshot, ["old"])) == [
        "etcd revision 9",
        "package old: (no state) (should have no state key)  [etcd says Running]",
    ]


def test_reports_carry_the_listings_revision(snapshot: report.Snapshot) -> None:
    """A rejected key's report names its own mod revision; a container left unassigned, the
    revision of the listing the snapshot was built from."""
    assert [(r.kind, r.revision) for r in snapshot.reports] == [
        ("invalid_json", 4),
        ("unassigned", 9),
    ]


def test_status_shows_how_long_etcd_has_held_each_state(snapshot: report.Snapshot) -> None:
    """With `ages`, a package's or model's line says how long etcd has held its state (the
    age of its own type and name: a package's age is not its namesake model's); a key
    without an age and a container say nothing of it. The JSON document gives `changed_at`."""
    ages = {
        WorkKey(Resource.PACKAGE, "shop"): "3m",
        WorkKey(Resource.MODEL, "db"): "2h5m",
        WorkKey(Resource.PACKAGE, "web"): "9d",
    }
    assert report.render_status(snapshot, report.select(snapshot, ["shop"]), ages) == [
        "etcd revision 9",
        "package shop: Degraded for 3m (P3, 1 of 2 models Failed)  [etcd says nothing]",
        f"  model web: Running (M5, {ACTIVE})",
        "    container c1: running (active)",
        "  model db: Failed for 2h5m (M2, 1 of 1 containers dead)  [etcd says Running]",
        "    container c2: exited (dead)",
    ]
    changed = {
        WorkKey(Resource.MODEL, "db"): "2026-12-07T03:00:00Z",
        WorkKey(Resource.PACKAGE, "web"): "x",
    }
    document = report.status_document(snapshot, report.select(snapshot, ["shop"]), None, changed)
    models = json.loads(json.dumps(document))["models"]
    assert [(m["name"], m["changed_at"]) for m in models] == [
        ("db", "2026-12-07T03:00:00Z"),
        ("web", None),
    ]


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (-5, "0s"), (0, "0s"), (0.9, "0s"), (1, "1s"), (59, "59s"), (60, "1m"), (61, "1m1s"),
        (3599, "59m59s"), (3600, "1h"), (3661, "1h1m"), (7500, "2h5m"), (86399, "23h59m"),
        (86400, "1d"), (90061, "1d1h"), (86400 + 59, "1d"), (10 * 86400 + 3 * 3600, "10d3h"),
    ],
)  # fmt: skip
def test_a_state_age_shows_its_two_largest_units(seconds: float, shown: str) -> None:
    """`status` says how long a state has been held in at most two units, the largest first;
    a unit of zero between them is left out."""
    assert report.held_for(seconds) == shown
