"""Raw etcd keys and values into index updates: bad input, deletion by relist, unassigned."""

from __future__ import annotations

import json
from typing import Any

import pytest

from statemanager.core.index import Index
from statemanager.core.ingest import INTERNAL_ERROR, UNASSIGNED, Ingest, Report
from statemanager.core.keys import KeyLayout, Kind, Resource, WorkKey

LAYOUT = KeyLayout()
CONTAINERS = LAYOUT.containers
C1 = f"{CONTAINERS}c1".encode()
C2 = f"{CONTAINERS}c2".encode()
BAD = b"{not json"


def apply1(ingest: Ingest, *args: Any) -> tuple[set[WorkKey], Report | None]:
    """`Ingest.apply` for one event that makes at most one report: (dirty, that report)."""
    applied = ingest.apply(*args)
    assert len(applied.reports) <= 1, applied.reports
    return applied.dirty, (applied.reports[0] if applied.reports else None)


def model(name: str) -> WorkKey:
    return WorkKey(Resource.MODEL, name)


def package(name: str) -> WorkKey:
    return WorkKey(Resource.PACKAGE, name)


def container(
    status: str = "running", model_name: str | None = "m", names: list[str] | None = None
) -> bytes:
    doc: dict[str, object] = {"names": names or [], "state": {"Status": status}}
    if model_name is not None:
        doc["annotation"] = {"io.pullpiri.annotations.model": model_name}
    return json.dumps(doc).encode()


@pytest.fixture
def index() -> Index:
    return Index()


@pytest.fixture
def ingest(index: Index) -> Ingest:
    return Ingest(LAYOUT, index, max_value_bytes=1024)


def test_good_container_put(ingest: Ingest, index: Index) -> None:
    """A valid container value is applied to the index and dirties its model, no report."""
    dirty, report = apply1(ingest, Kind.CONTAINER, C1, container(), 5)
    assert (dirty, report) == ({model("m")}, None)
    assert [cid for cid, _ in index.containers_of("m")] == ["c1"]


def test_bad_input_reported_with_kind_key_and_revision(ingest: Ingest) -> None:
    """An unparsable value yields one Report naming the key, the kind and the revision."""
    _, report = apply1(ingest, Kind.CONTAINER, C1, BAD, 7)
    assert report is not None
    assert (report.key, report.kind, report.revision) == (C1.decode(), "invalid_json", 7)
    assert report.rejected


def test_bad_input_reported_once_per_revision(ingest: Ingest) -> None:
    """The same bad value at the same revision is reported once, even when applied again."""
    first = apply1(ingest, Kind.CONTAINER, C1, BAD, 7)[1]
    again = apply1(ingest, Kind.CONTAINER, C1, BAD, 7)[1]
    assert first is not None
    assert again is None


def test_bad_input_not_reported_again_by_resync(ingest: Ingest) -> None:
    """A relist that finds the same bad value at the same mod revision reports nothing."""
    assert apply1(ingest, Kind.CONTAINER, C1, BAD, 7)[1] is not None
    result = ingest.resync(Kind.CONTAINER, [(C1, BAD, 7)], 20)
    assert result.reports == []


def test_bad_input_reported_again_at_new_revision(ingest: Ingest) -> None:
    """A bad value rewritten at a later revision is a new problem and is reported."""
    apply1(ingest, Kind.CONTAINER, C1, BAD, 7)
    _, report = apply1(ingest, Kind.CONTAINER, C1, b"[]", 8)
    assert report is not None
    assert (report.kind, report.revision) == ("wrong_type", 8)


def test_bad_first_seen_in_resync_is_reported(ingest: Ingest) -> None:
    """A bad value first met in a listing is reported by that resync."""
    result = ingest.resync(Kind.CONTAINER, [(C1, BAD, 3), (C2, container(), 4)], 10)
    assert [(r.key, r.kind) for r in result.reports] == [(C1.decode(), "invalid_json")]


def test_bad_value_treated_as_absent(ingest: Ingest, index: Index) -> None:
    """A good container replaced by a bad value leaves its model, which becomes dirty."""
    apply1(ingest, Kind.CONTAINER, C1, container(status="dead"), 5)
    dirty, report = apply1(ingest, Kind.CONTAINER, C1, BAD, 6)
    assert report is not None
    assert dirty == {model("m")}
    assert list(index.containers_of("m")) == []
    assert index.model_verdict("m") is None


def test_oversized_value_rejected_and_absent(ingest: Ingest, index: Index) -> None:
    """A value over max_value_bytes is rejected as oversized and its old value forgotten."""
    apply1(ingest, Kind.CONTAINER, C1, container(), 5)
    padded = container()[:-1] + b', "pad": "' + b"x" * 2000 + b'"}'
    dirty, report = apply1(ingest, Kind.CONTAINER, C1, padded, 6)
    assert report is not None
    assert report.kind == "oversized"
    assert dirty == {model("m")}
    assert list(index.containers_of("m")) == []


def test_oversized_state_value_rejected_and_absent(ingest: Ingest, index: Index) -> None:
    """A state key rewritten with a value over max_value_bytes is rejected and applied as
    deleted: the index forgets its old value, the key is dirty (to be written again) and its
    deletion is among the applied states."""
    key = b"/model/m/state"
    ingest.apply(Kind.MODEL_STATE, key, b"Running", 5)
    applied = ingest.apply(Kind.MODEL_STATE, key, b"x" * 2000, 6)
    assert [(r.kind, r.revision) for r in applied.reports] == [("oversized", 6)]
    assert (applied.dirty, applied.states) == ({model("m")}, [(model("m"), None, 6)])
    assert index.written(model("m")).value is None


def test_bad_package_spec_treated_as_absent(ingest: Ingest, index: Index) -> None:
    """A Package spec replaced by an invalid document drops the package (its state is deleted)."""
    key = b"Package/p"
    apply1(ingest, Kind.PACKAGE_SPEC, key, b"spec: {models: [{name: m}]}", 3)
    dirty, report = apply1(ingest, Kind.PACKAGE_SPEC, key, b"spec: {models: [", 4)
    assert report is not None
    assert report.kind == "invalid_yaml"
    assert package("p") in dirty
    assert index.package_verdict("p") is None


def test_spec_key_with_bad_name(ingest: Ingest, index: Index) -> None:
    """A spec key whose name cannot form a state key is rejected as bad_name, nothing applied."""
    dirty, report = apply1(ingest, Kind.MODEL_SPEC, b"Model/a b", b"spec: {containers: []}", 3)
    assert dirty == set()
    assert report is not None
    assert report.kind == "bad_name"


def test_resync_deletes_keys_missing_from_listing(ingest: Ingest, index: Index) -> None:
    """Keys applied before but absent from a fresh listing are deleted (missed deletions)."""
    apply1(ingest, Kind.CONTAINER, C1, container(model_name="a"), 5)
    apply1(ingest, Kind.CONTAINER, C2, container(model_name="b"), 6)
    result = ingest.resync(Kind.CONTAINER, [(C2, container(model_name="b"), 6)], 30)
    assert (result.dirty, result.reports) == ({model("a")}, [])
    assert list(index.containers_of("a")) == []
    assert [cid for cid, _ in index.containers_of("b")] == ["c2"]


def test_resync_skips_unchanged_and_applies_changed(ingest: Ingest, index: Index) -> None:
    """A listing re-applies only keys whose mod revision changed."""
    apply1(ingest, Kind.CONTAINER, C1, container(model_name="a"), 5)
    apply1(ingest, Kind.CONTAINER, C2, container(model_name="b"), 6)
    listing = [
        (C1, container(model_name="a"), 5),
        (C2, container(status="dead", model_name="b"), 9),
    ]
    assert ingest.resync(Kind.CONTAINER, listing, 30).dirty == {model("b")}
    verdict = index.model_verdict("b")
    assert verdict is not None
    assert verdict.state == "Failed"


def test_a_rejected_item_keeps_what_the_page_made_dirty(ingest: Ingest) -> None:
    """A bad value listed after good ones costs only its own key: the models the page's
    earlier keys made dirty stay dirty."""
    listing = [(C1, container(model_name="a"), 5), (C2, BAD, 6)]
    result = ingest.resync(Kind.CONTAINER, listing, 9)
    assert [r.kind for r in result.reports] == ["invalid_json"]
    assert result.dirty == {model("a")}


def test_resync_all_dispatches_by_prefix(ingest: Ingest, index: Index) -> None:
    """resync_all routes each prefix's items to its kind and deletes missing keys in each."""
    apply1(ingest, Kind.PACKAGE_SPEC, b"Package/old", b"spec: {models: []}", 2)
    listing = {
        LAYOUT.containers: [(C1, container(), 5)],
        LAYOUT.packages: [(b"Package/p", b"spec: {models: [{name: m}]}", 6)],
        LAYOUT.model_states: [(b"/model/m/state", b"Running", 7)],
    }
    result = ingest.resync_all(listing, 10)
    assert (result.reports, result.drifted) == ([], [])
    assert {package("old"), package("p"), model("m")} <= result.dirty
    assert index.package_verdict("old") is None
    assert index.models_of("p") == ("m",)
    assert index.written(model("m")).value == "Running"


def test_resync_flags_changes_the_watch_should_have_delivered(ingest: Ingest) -> None:
    """A listed change at or below the delivered revision is drift; a newer one is not."""
    apply1(ingest, Kind.CONTAINER, C1, container(model_name="a"), 5)
    listing = [(C1, container(status="dead", model_name="a"), 8), (C2, container(), 12)]
    result = ingest.resync(Kind.CONTAINER, listing, 20, delivered=10)
    assert result.drifted == [C1.decode()]
    assert result.dirty == {model("a"), model("m")}


def test_resync_without_delivered_reports_no_drift(ingest: Ingest) -> None:
    """At start (nothing delivered yet) every listed key is new, none is drift."""
    result = ingest.resync(Kind.CONTAINER, [(C1, container(), 8)], 20)
    assert result.drifted == []


def test_resync_all_passes_delivered_per_prefix(ingest: Ingest) -> None:
    """resync_all judges drift against each prefix's own delivered revision."""
    listing = {
        LAYOUT.containers: [(C1, container(), 5)],
        LAYOUT.packages: [(b"Package/p", b"spec: {models: []}", 5)],
    }
    result = ingest.resync_all(listing, 10, delivered={LAYOUT.packages: 6})
    assert result.drifted == ["Package/p"]


def test_state_key_observed(ingest: Ingest, index: Index) -> None:
    """A put under a state prefix is recorded as the written state; a foreign key is ignored."""
    assert apply1(ingest, Kind.PACKAGE_STATE, b"/package/p/state", b"Error", 4) == (
        {package("p")},
        None,
    )
    assert index.written(package("p")).value == "Error"
    assert apply1(ingest, Kind.PACKAGE_STATE, b"/package/p/notes", b"x", 5) == (set(), None)


def test_unassigned_reported_when_it_becomes_unassigned(ingest: Ingest) -> None:
    """An unassigned container is reported on becoming unassigned, not on each rewrite."""
    lonely = container(model_name=None, names=["nobody"])
    _, first = apply1(ingest, Kind.CONTAINER, C1, lonely, 5)
    assert first is not None
    assert (first.kind, first.rejected, first.key) == (UNASSIGNED, False, C1.decode())
    assert apply1(ingest, Kind.CONTAINER, C1, lonely, 6)[1] is None
    assert (
        apply1(ingest, Kind.CONTAINER, C1, container(status="paused", model_name=None), 7)[1]
        is None
    )


def test_unassigned_reported_again_after_being_assigned(ingest: Ingest) -> None:
    """A container that gains a model and then loses it is reported again."""
    lonely = container(model_name=None)
    assert apply1(ingest, Kind.CONTAINER, C1, lonely, 5)[1] is not None
    assert apply1(ingest, Kind.CONTAINER, C1, container(model_name="m"), 6)[1] is None
    report = apply1(ingest, Kind.CONTAINER, C1, lonely, 7)[1]
    assert report is not None
    assert report.kind == UNASSIGNED


def test_assigned_container_not_reported(ingest: Ingest) -> None:
    """A container matched by a Model spec name is assigned and not reported."""
    apply1(ingest, Kind.MODEL_SPEC, b"Model/m", b"spec: {containers: [{name: web}]}", 2)
    dirty, report = apply1(
        ingest, Kind.CONTAINER, C1, container(model_name=None, names=["m_web"]), 5
    )
    assert (dirty, report) == ({model("m")}, None)


def test_delete_of_bad_key_is_quiet(ingest: Ingest, index: Index) -> None:
    """Deleting a key whose value was rejected reports nothing and leaves the index empty."""
    apply1(ingest, Kind.CONTAINER, C1, BAD, 7)
    assert apply1(ingest, Kind.CONTAINER, C1, None, 8) == (set(), None)
    assert index.sizes() == (0, 0, 0)


def test_containers_unassigned_by_a_model_spec_change_are_reported() -> None:
    """A Model spec that stops listing a name reports each container it leaves without a model."""
    ingest = Ingest(KeyLayout(), Index(), 1 << 20)
    spec = b"spec: {containers: [{name: web}, {name: db}]}"
    apply1(ingest, Kind.MODEL_SPEC, b"Model/m", spec, 2)
    for key, name in ((C1, "m_web"), (C2, "m_db")):
        apply1(ingest, Kind.CONTAINER, key, container(model_name=None, names=[name]), 3)
    applied = ingest.apply(Kind.MODEL_SPEC, b"Model/m", b"spec: {containers: []}", 4)
    assert applied.dirty == {WorkKey(Resource.MODEL, "m")}
    assert sorted(r.key for r in applied.reports) == sorted([C1.decode(), C2.decode()])
    assert all(r.kind == UNASSIGNED and r.revision == 4 for r in applied.reports)


def test_state_keys_applied_are_returned_in_order(ingest: Ingest) -> None:
    """Each state key's value ingest applies, from a watch event or a listing (its deletions
    included), is returned with the revision etcd showed it at (a deletion a listing found:
    the listing's) for the writer to check its unanswered writes against; other keys' are
    not."""
    applied = ingest.apply(Kind.MODEL_STATE, b"/model/m/state", b"Running", 5)
    assert applied.states == [(model("m"), "Running", 5)]
    assert ingest.apply(Kind.CONTAINER, C1, container(), 6).states == []
    listing = {LAYOUT.model_states: [], LAYOUT.package_states: [(b"/package/p/state", b"Error", 7)]}
    states = ingest.resync_all(listing, 9).states
    assert states == [(package("p"), "Error", 7), (model("m"), None, 9)]


def test_a_page_returns_its_state_keys_when_applied(ingest: Ingest) -> None:
    """A listing's page returns the state keys it applied at once, not at `finish`: a listing
    that fails after it leaves them applied, and the next one skips them."""
    items = [(b"/package/p/state", b"Error", 7)]
    assert ingest.page(ingest.relist(), LAYOUT.package_states, items) == [
        (package("p"), "Error", 7)
    ]
    assert ingest.page(ingest.relist(), LAYOUT.package_states, items) == []


def test_relist_deletes_a_written_state_key_whose_echo_was_lost(
    ingest: Ingest, index: Index
) -> None:
    """A state key the daemon wrote (known to the index, its watch echo never applied) and
    someone else deleted is found deleted by a relist, and its key is dirty to be put back."""
    index.observe_written(model("m"), "Running", 12)  # what the writer records on commit
    result = ingest.resync_all({LAYOUT.model_states: []}, 20)
    assert model("m") in result.dirty
    assert index.written(model("m")).value is None


def test_a_key_the_watch_deleted_is_not_deleted_again_by_a_relist(ingest: Ingest) -> None:
    """A relist that does not list a key the watch already saw deleted deletes nothing: no
    dirty key and no state deletion handed to the writer (which would take it as the echo
    of a write of its own)."""
    ingest.apply(Kind.MODEL_STATE, b"/model/m/state", b"Running", 5)
    ingest.apply(Kind.MODEL_STATE, b"/model/m/state", None, 6)
    result = ingest.resync_all({LAYOUT.model_states: []}, 10)
    assert (result.dirty, result.states, result.reports) == (set(), [], [])


def test_container_listed_before_its_model_spec_is_not_unassigned(
    ingest: Ingest, index: Index
) -> None:
    """A listing whose containers come before the Model spec naming them reports none of them
    unassigned: the whole listing is applied before containers are judged."""
    listing = {
        LAYOUT.containers: [(C1, container(model_name=None, names=["m_web"]), 5)],
        LAYOUT.models: [(b"Model/m", b"spec: {containers: [{name: web}]}", 3)],
    }
    result = ingest.resync_all(listing, 10)
    assert result.reports == []
    assert [cid for cid, _ in index.containers_of("m")] == ["c1"]


def test_relist_after_forgetting_revisions_takes_every_listed_value(
    ingest: Ingest, index: Index
) -> None:
    """After etcd's history is replaced, listed values win even where their mod revisions equal
    or trail the ones known from the old history."""
    apply1(ingest, Kind.CONTAINER, C1, container(status="running"), 7)
    apply1(ingest, Kind.MODEL_STATE, b"/model/m/state", b"Running", 50)
    ingest.forget_revisions()
    listing = {
        LAYOUT.containers: [(C1, container(status="dead"), 7)],
        LAYOUT.model_states: [(b"/model/m/state", b"Failed", 3)],
    }
    result = ingest.resync_all(listing, 9)
    assert model("m") in result.dirty
    verdict = index.model_verdict("m")
    assert verdict is not None
    assert verdict.state == "Failed"
    assert index.written(model("m")).value == "Failed"


class _BuggyIndex(Index):
    """An index with a planted bug: storing a container named "poison" raises."""

    def put_container(self, cid: str, info: Any) -> set[WorkKey]:
        if "poison" in info.names:
            raise ZeroDivisionError("planted bug")
        return super().put_container(cid, info)


def test_unexpected_exception_quarantines_only_that_key() -> None:
    """A bug while ingesting one key (any exception, not BadInput) becomes an internal_error
    report with the traceback, once per revision; the key counts as absent, others go on, and
    the key is retried at its next revision."""
    index = _BuggyIndex()
    ingest = Ingest(LAYOUT, index, 1024)
    ingest.apply(Kind.CONTAINER, C1, container("dead"), 1)
    _, report = apply1(ingest, Kind.CONTAINER, C1, container(names=["poison"]), 2)
    assert report is not None and report.kind == INTERNAL_ERROR and report.rejected
    assert "ZeroDivisionError: planted bug" in report.detail and "Traceback" in report.detail
    assert list(index.containers_of("m")) == []  # the dead container it replaced is gone
    assert apply1(ingest, Kind.CONTAINER, C1, container(names=["poison"]), 2)[1] is None
    assert apply1(ingest, Kind.CONTAINER, C2, container("running"), 3) == ({model("m")}, None)
    assert apply1(ingest, Kind.CONTAINER, C1, container("dead"), 4) == ({model("m")}, None)
    assert sorted(cid for cid, _ in index.containers_of("m")) == ["c1", "c2"]


def test_key_not_utf8_is_rejected_once_and_its_deletion_by_relist_seen(
    ingest: Ingest, index: Index
) -> None:
    """A container key with bytes that are not UTF-8 is reported (invalid_encoding) and
    applies nothing; a relist at the same revision reports nothing new; when a relist no longer
    lists it, it is forgotten, so the same key coming back at that revision is reported again."""
    bad = CONTAINERS.encode() + b"\xff\xfe"
    dirty, report = apply1(ingest, Kind.CONTAINER, bad, container(), 7)
    assert report is not None
    assert (dirty, report.kind, report.key) == (
        set(),
        "invalid_encoding",
        f"{CONTAINERS}\\xff\\xfe",
    )
    assert list(index.containers_of("m")) == []
    relisted = ingest.resync(Kind.CONTAINER, [(bad, container(), 7), (C1, container(), 8)], 9)
    assert [r.kind for r in relisted.reports] == []
    assert ingest.resync(Kind.CONTAINER, [(C1, container(), 8)], 10).reports == []
    assert apply1(ingest, Kind.CONTAINER, bad, container(), 7)[1] is not None


def test_reports_say_exactly_what_and_when(ingest: Ingest) -> None:
    """An unassigned container, a key that is not UTF-8, a bad name and a name mismatch are
    each reported with their kind, detail and the revision they were seen at."""
    _, report = apply1(ingest, Kind.CONTAINER, C1, container(model_name=None), 5)
    assert report == Report(
        "/pullpiri/metrics/containers/c1", UNASSIGNED,
        "no model annotation and no Model spec lists any of its names", 5,
    )  # fmt: skip
    _, report = apply1(ingest, Kind.PACKAGE_SPEC, b"Package/p\xff", b"spec: {}", 6)
    assert report == Report("Package/p\\xff", "invalid_encoding", "key is not UTF-8", 6)
    long_bad = "a b" + "c" * 100
    _, report = apply1(ingest, Kind.PACKAGE_SPEC, f"Package/{long_bad}".encode(), b"x: 1", 7)
    assert report is not None and report.kind == "bad_name"
    assert report.detail.endswith(f": {long_bad[:80]!r}")
    _, report = apply1(ingest, Kind.PACKAGE_SPEC, b"Package/p", b"metadata: {name: q}", 8)
    assert report is not None and report.kind == "name_mismatch"


def test_names_in_any_utf8_are_applied(ingest: Ingest, index: Index) -> None:
    """A key that is UTF-8 but not ASCII is applied like any other."""
    dirty, report = apply1(ingest, Kind.CONTAINER, f"{CONTAINERS}café".encode(), container(), 5)
    assert (dirty, report) == ({model("m")}, None)
    assert [cid for cid, _ in index.containers_of("m")] == ["café"]


def test_state_keys_are_reported_as_etcd_holds_them(ingest: Ingest, index: Index) -> None:
    """Every state key's value (bad bytes replaced) and deletion is among the applied states."""
    put = ingest.apply(Kind.MODEL_STATE, b"/model/m/state", b"Run\xffning", 5)
    deleted = ingest.apply(Kind.MODEL_STATE, b"/model/m/state", None, 6)
    assert [*put.states, *deleted.states] == [
        (model("m"), "Run\ufffdning", 5),
        (model("m"), None, 6),
    ]
    assert index.written(model("m")).value is None


def test_a_relist_judges_drift_by_what_the_watch_applied(ingest: Ingest) -> None:
    """A listed key the watch applied at its mod revision is no drift; one changed at or
    below the delivered revision that the watch did not apply is, its key shown with bad
    bytes escaped; with no delivered revision nothing is."""
    ingest.apply(Kind.CONTAINER, C1, container(), 5)
    listing = [(C1, container(), 5), (C2, container(), 7), (CONTAINERS.encode() + b"c\xff",
               container(), 3)]  # fmt: skip
    result = ingest.resync(Kind.CONTAINER, listing, 9, delivered=7)
    assert result.drifted == [C2.decode(), "/pullpiri/metrics/containers/c\\xff"]
    fresh = Ingest(LAYOUT, Index(), 1024)
    assert fresh.resync(Kind.CONTAINER, [(C1, container(), 1)], 9).drifted == []
    assert fresh.resync_all({CONTAINERS: [(C2, container(), 1)]}, 9).drifted == []


def test_a_relist_reads_on_past_keys_that_are_not_ours(ingest: Ingest, index: Index) -> None:
    """A key under a state prefix that is not a state key is skipped, not the end of the
    page."""
    listing = [(b"/model/m/other", b"x", 2), (b"/model/m/state", b"Running", 3)]
    ingest.resync(Kind.MODEL_STATE, listing, 9)
    assert index.written(model("m")).value == "Running"


def test_a_resync_reports_at_its_revision(ingest: Ingest) -> None:
    """Containers left unassigned by a resync are reported at the listing's revision."""
    result = ingest.resync(Kind.CONTAINER, [(C1, container(model_name=None), 4)], 9)
    assert [(r.kind, r.revision) for r in result.reports] == [(UNASSIGNED, 9)]
    deleted = ingest.resync(Kind.CONTAINER, [], 12)  # the deletion is applied at 12
    assert deleted.dirty == set() and deleted.reports == []


def test_after_history_is_replaced_every_listed_key_is_applied_again(
    ingest: Ingest, index: Index
) -> None:
    """After forget_revisions a listed key is applied even at the mod revision the old
    history had for it (revision 1 included)."""
    ingest.apply(Kind.MODEL_STATE, b"/model/m/state", b"Running", 1)
    ingest.forget_revisions()
    ingest.resync(Kind.MODEL_STATE, [(b"/model/m/state", b"Failed", 1)], 1)
    assert index.written(model("m")).value == "Failed"
