"""Planning state writes from dirty keys, and packing write groups into transactions."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from statemanager.core.index import Index, Written
from statemanager.core.inputs import ContainerInfo
from statemanager.core.keys import Resource, WorkKey
from statemanager.core.planner import Change, pack, plan
from statemanager.core.previous import PreviousStates
from statemanager.core.states import ContainerClass, ContainerStatus

RUNNING = ContainerInfo((), ContainerStatus.RUNNING, ContainerClass.ACTIVE, None)
DEAD = ContainerInfo((), ContainerStatus.DEAD, ContainerClass.DEAD, None)


def model(name: str) -> WorkKey:
    return WorkKey(Resource.MODEL, name)


def package(name: str) -> WorkKey:
    return WorkKey(Resource.PACKAGE, name)


def put(index: Index, cid: str, base: ContainerInfo, model_name: str) -> set[WorkKey]:
    return index.put_container(cid, ContainerInfo(base.names, base.status, base.cls, model_name))


def summary(groups: list[list[Change]]) -> list[list[tuple[WorkKey, str | None, str | None]]]:
    return [[(c.key, c.old.value, c.new) for c in group] for group in groups]


def settled(index: Index) -> None:
    """Record every derived state as written, as after a successful commit."""
    for rev, key in enumerate(sorted(index.all_keys()), start=1):
        verdict = index.verdict(key)
        index.observe_written(key, verdict.state if verdict else None, rev)


def planned(
    index: Index, dirty: Iterable[WorkKey], previous: PreviousStates | None = None
) -> list[list[Change]]:
    """`plan`'s write groups; what it found agreeing is applied to `previous`, as the writer
    applies it."""
    result = plan(index, dirty, previous or PreviousStates())
    if previous is not None:
        previous.agreed((k, v, index.written(k).mod_revision) for k, v in result.agreed.items())
    return result.groups


def derived_now(index: Index) -> PreviousStates:
    """Previous derived states as after this daemon wrote every state the rules give now."""
    previous = PreviousStates()
    verdicts = ((k, index.verdict(k)) for k in index.all_keys())
    previous.agreed((k, v.state, 1) for k, v in verdicts if v is not None)
    return previous


@pytest.fixture
def payment() -> Index:
    """Package p lists models m and n, each with one running container, all states written."""
    index = Index()
    index.put_package_spec("p", ("m", "n"))
    put(index, "c1", RUNNING, "m")
    put(index, "c2", RUNNING, "n")
    settled(index)
    return index


def test_unchanged_keys_plan_nothing(payment: Index) -> None:
    """Dirty keys whose written state already equals the verdict produce no group."""
    assert planned(payment, [model("m"), model("n"), package("p")]) == []


def test_model_change_cascades_to_package_in_one_group(payment: Index) -> None:
    """A model change and the package change it causes form one group, models first."""
    dirty = put(payment, "c1", DEAD, "m")
    groups = planned(payment, dirty)
    assert summary(groups) == [
        [(model("m"), "Running", "Failed"), (package("p"), "Running", "Degraded")]
    ]
    model_change, package_change = groups[0]
    assert model_change.cause is None
    assert package_change.cause == model("m")
    assert package_change.verdict is not None
    assert package_change.verdict.rule == "P3"


def test_model_change_not_changing_package_writes_model_only(payment: Index) -> None:
    """A model change that leaves its package's state as is writes only the model."""
    payment.put_container(
        "c1", ContainerInfo((), ContainerStatus.EXITED, ContainerClass.EXITED, "m")
    )
    assert summary(planned(payment, [model("m")])) == [[(model("m"), "Running", "Succeeded")]]


def test_all_models_failing_in_one_batch(payment: Index) -> None:
    """Two model changes in one package land in one group, both models before the package."""
    put(payment, "c1", DEAD, "m")
    put(payment, "c2", DEAD, "n")
    groups = planned(payment, [model("m"), model("n")])
    assert len(groups) == 1
    kinds = [c.key.resource for c in groups[0]]
    assert kinds == [Resource.MODEL, Resource.MODEL, Resource.PACKAGE]
    assert {c.key for c in groups[0]} == {model("m"), model("n"), package("p")}
    assert groups[0][-1].new == "Error"


def test_models_before_packages_when_package_dirty_first(payment: Index) -> None:
    """Even when the package is dirtied first, the group lists model changes before it."""
    put(payment, "c1", DEAD, "m")
    [group] = planned(payment, [package("p"), model("m")])
    assert [c.key for c in group] == [model("m"), package("p")]


def test_model_in_two_packages_cascades_to_both(payment: Index) -> None:
    """A model listed by two packages pulls both package changes into its group."""
    payment.put_package_spec("q", ("m",))
    settled(payment)
    put(payment, "c1", DEAD, "m")
    [group] = planned(payment, [model("m")])
    assert sorted((c.key, c.new, c.cause) for c in group[1:]) == [
        (package("p"), "Degraded", model("m")),
        (package("q"), "Error", model("m")),
    ]
    assert group[0].key == model("m")


def test_package_pulls_in_unwritten_sibling_model() -> None:
    """A package change brings its other models' unwritten states into the same transaction."""
    index = Index()
    index.put_package_spec("p", ("m", "n"))
    put(index, "c1", DEAD, "m")
    [group] = planned(index, [model("m")])
    assert {(c.key, c.new) for c in group} == {
        (model("m"), "Failed"),
        (model("n"), "Pending"),
        (package("p"), "Degraded"),
    }
    assert [c.key.resource for c in group][-1] is Resource.PACKAGE


def test_independent_changes_form_separate_groups() -> None:
    """Changes in unrelated packages are planned as separate groups."""
    index = Index()
    index.put_package_spec("p", ("m",))
    index.put_package_spec("q", ("n",))
    groups = planned(index, [model("m"), model("n")])
    assert sorted(summary(groups)) == [
        [(model("m"), None, "Pending"), (package("p"), None, "Paused")],
        [(model("n"), None, "Pending"), (package("q"), None, "Paused")],
    ]


def test_an_agreeing_dirty_package_still_brings_its_models_up_to_date(payment: Index) -> None:
    """A dirty package whose own state is right still pulls in its models: one whose state
    key someone else changed is put back, though the model itself was not dirty."""
    payment.observe_written(model("n"), "Failed", 100)  # someone else's write
    assert summary(planned(payment, [package("p")])) == [[(model("n"), "Failed", "Running")]]


def test_package_spec_deletion_plans_deletes(payment: Index) -> None:
    """Deleting a Package spec deletes its state key and those of now-unlisted empty models."""
    payment.delete_container("c2")
    dirty = payment.delete_package_spec("p")
    groups = planned(payment, dirty)
    changes = {c.key: c.new for group in groups for c in group}
    assert changes == {package("p"): None, model("n"): None}
    deleted = next(c for group in groups for c in group if c.key == package("p"))
    assert deleted.verdict is None
    assert deleted.old == payment.written(package("p"))


def test_stale_written_state_is_corrected(payment: Index) -> None:
    """A state someone else overwrote is planned back to the derived value."""
    payment.observe_written(package("p"), "Error", 100)
    assert summary(planned(payment, [package("p")])) == [[(package("p"), "Error", "Running")]]


def test_cause_does_not_depend_on_dirty_order(payment: Index) -> None:
    """A package change caused by a model change names it, whatever order keys were dirtied."""
    put(payment, "c1", DEAD, "m")
    [group] = planned(payment, [package("p"), model("m")])
    assert group[-1].key == package("p")
    assert group[-1].cause == model("m")


# -- pack -------------------------------------------------------------------------------------


def _group(tag: str, size: int) -> list[Change]:
    return [
        Change(model(f"{tag}{i}"), Written(None, 0, 0), "Running", None, None) for i in range(size)
    ]


def _tags(batches: list[list[Change]]) -> list[list[str]]:
    return [[c.key.name for c in batch] for batch in batches]


def _ops(change: Change) -> tuple[int, int]:
    """One operation of one byte per change, so only the operation limit binds."""
    return 1, 1


def _by_ops(groups: list[list[Change]], max_ops: int) -> list[list[Change]]:
    return pack(groups, max_ops, 10**9, _ops)


def test_pack_fills_transactions_with_whole_groups() -> None:
    """Whole groups are packed together while they fit under max_ops."""
    groups = [_group("a", 2), _group("b", 2), _group("c", 2)]
    assert _tags(_by_ops(groups, 4)) == [["a0", "a1", "b0", "b1"], ["c0", "c1"]]


def test_pack_never_splits_a_group_that_fits() -> None:
    """A group that fits in one transaction is moved whole to the next, not split."""
    groups = [_group("a", 3), _group("b", 3)]
    batches = _by_ops(groups, 4)
    assert _tags(batches) == [["a0", "a1", "a2"], ["b0", "b1", "b2"]]


def test_pack_group_of_exactly_max_ops() -> None:
    """A group of exactly max_ops changes is one transaction of its own."""
    groups = [_group("a", 1), _group("b", 3), _group("c", 1)]
    assert _tags(_by_ops(groups, 3)) == [["a0"], ["b0", "b1", "b2"], ["c0"]]


def test_pack_splits_oversized_group_in_order() -> None:
    """A group larger than max_ops is split in order, so models precede their packages."""
    batches = _by_ops([_group("a", 5)], 2)
    assert _tags(batches) == [["a0", "a1"], ["a2", "a3"], ["a4"]]


@pytest.mark.parametrize("max_ops", [1, 2, 3, 5, 8])
def test_pack_respects_max_ops_and_keeps_every_change(max_ops: int) -> None:
    """No transaction exceeds max_ops, and every change appears once, in order."""
    groups = [_group("a", 3), _group("b", 1), _group("c", 4), _group("d", 2)]
    batches = _by_ops(groups, max_ops)
    assert all(0 < len(b) <= max_ops for b in batches)
    assert [c for b in batches for c in b] == [c for g in groups for c in g]


def test_pack_nothing() -> None:
    """No groups pack into no transactions."""
    assert _by_ops([], 4) == []


def test_pack_respects_max_bytes() -> None:
    """Byte costs cut transactions too: no batch goes over max_bytes unless one change alone does."""
    groups = [_group("a", 2), _group("b", 2), _group("c", 1)]
    sizes = {"a0": 40, "a1": 40, "b0": 30, "b1": 30, "c0": 100}
    batches = pack(groups, 100, 100, lambda c: (1, sizes[c.key.name]))
    assert _tags(batches) == [["a0", "a1"], ["b0", "b1"], ["c0"]]


def test_pack_counts_trigger_operations() -> None:
    """A change recording a trigger costs two operations; the group moves whole when it fits."""
    error = Change(package("p"), Written("Running", 1, 1), "Error", None, model("a0"), True)
    groups = [_group("x", 1), [*_group("a", 1), error]]
    batches = pack(groups, 3, 10**9, lambda c: (2 if c.entering_error else 1, 1))
    assert _tags(batches) == [["x0"], ["a0", "p"]]


def test_many_scenarios_cost_one_trigger_record(payment: Index) -> None:
    """A package entering Error with 300 scenarios records one trigger, not one per scenario."""
    for i in range(300):
        payment.put_scenario(f"s{i:03}", "p")
    put(payment, "c1", DEAD, "m")
    put(payment, "c2", DEAD, "n")
    [group] = planned(payment, [model("m"), model("n")])
    [error] = [c for c in group if c.key == package("p")]
    assert (error.new, error.entering_error) == ("Error", True)


def test_entering_error_without_known_scenario_records_a_trigger(payment: Index) -> None:
    """No scenario in the index yet still records a trigger: the Scenario's event may arrive
    after the container's death, so the scenarios are resolved when it is delivered."""
    put(payment, "c1", DEAD, "m")
    put(payment, "c2", DEAD, "n")
    [group] = planned(payment, [model("m"), model("n")])
    [error] = [c for c in group if c.key == package("p")]
    assert (error.new, error.entering_error) == ("Error", True)


def test_a_plan_returns_the_keys_found_agreeing_and_changes_nothing(payment: Index) -> None:
    """Keys etcd already holds the rules' state for are returned as agreeing (the writer makes
    that their previous state); the previous states the planner reads are left as they were."""
    previous = PreviousStates()
    previous.committed(package("p"), "Degraded", 1)
    put(payment, "c1", DEAD, "m")
    payment.observe_written(model("m"), "Failed", 100)  # someone else wrote the rules' state
    result = plan(payment, [model("m"), model("n")], previous)
    assert result.agreed[model("m")] == "Failed" and result.agreed[model("n")] == "Running"
    assert package("p") not in result.agreed  # it changes
    assert previous.previous(package("p")) == "Degraded"
    assert previous.previous(model("m")) is None


def test_putting_back_an_error_state_is_a_correction(payment: Index) -> None:
    """Someone overwrites an Error package's state: putting Error back is a correction, and the
    package does not enter Error again (previous derived state, not the written value)."""
    put(payment, "c1", DEAD, "m")
    put(payment, "c2", DEAD, "n")
    payment.put_scenario("s", "p")
    settled(payment)
    ours = derived_now(payment)
    payment.observe_written(package("p"), "Running", 200)  # someone else's write
    [[change]] = planned(payment, [package("p")], ours)
    assert (change.old.value, change.new) == ("Running", "Error")
    assert change.correction
    assert not change.entering_error


def test_echo_of_our_own_write_keeps_the_previous_derived_state(payment: Index) -> None:
    """The watch echo of our Error write is evaluated (it agrees with the rules) before someone
    overwrites the key: putting Error back is still a correction, not a second entry."""
    put(payment, "c1", DEAD, "m")
    put(payment, "c2", DEAD, "n")
    payment.put_scenario("s", "p")
    settled(payment)
    ours = derived_now(payment)
    assert planned(payment, [package("p")], ours) == []  # the echo: nothing to write
    payment.observe_written(package("p"), "Running", 200)  # someone else's write
    [[change]] = planned(payment, [package("p")], ours)
    assert change.correction
    assert not change.entering_error


def test_error_after_recovering_to_an_outside_value_is_a_transition(payment: Index) -> None:
    """We wrote Error, someone wrote Running, the rules then gave Running too (nothing to
    write), then Error again: that is a real entry into Error, with a trigger."""
    payment.put_scenario("s", "p")
    put(payment, "c1", DEAD, "m")
    put(payment, "c2", DEAD, "n")
    settled(payment)
    ours = derived_now(payment)
    payment.observe_written(package("p"), "Running", 200)  # someone else's write
    put(payment, "c1", RUNNING, "m")
    put(payment, "c2", RUNNING, "n")
    payment.observe_written(model("m"), "Running", 201)
    payment.observe_written(model("n"), "Running", 202)
    assert planned(payment, [model("m"), model("n"), package("p")], ours) == []
    put(payment, "c1", DEAD, "m")
    put(payment, "c2", DEAD, "n")
    [group] = planned(payment, [model("m"), model("n")], ours)
    [error] = [c for c in group if c.key == package("p")]
    assert (error.old.value, error.new) == ("Running", "Error")
    assert error.entering_error
    assert not error.correction


def test_an_error_state_replanned_unchanged_stays_ours(payment: Index) -> None:
    """We wrote Error and a later round finds it still there and still right (nothing to
    write): it stays ours, so when someone then overwrites it, putting it back is a correction
    without a trigger, not a second entry into Error."""
    put(payment, "c1", DEAD, "m")
    put(payment, "c2", DEAD, "n")
    payment.put_scenario("s", "p")
    settled(payment)
    ours = derived_now(payment)
    assert planned(payment, payment.all_keys(), ours) == []  # say, a new leadership's full round
    payment.observe_written(package("p"), "Degraded", 200)  # someone else's write
    [[change]] = planned(payment, [package("p")], ours)
    assert (change.old.value, change.new) == ("Degraded", "Error")
    assert change.correction
    assert not change.entering_error


def test_a_model_moved_to_what_someone_else_wrote_still_cascades(payment: Index) -> None:
    """Someone writes m's state before its container dies; the rules then give that very
    state: nothing to write for m, but p derives from m and must be planned (it was left
    Running forever: the simulation's seed 17307)."""
    ours = derived_now(payment)
    payment.observe_written(model("m"), "Failed", 100)  # someone else's write
    dirty = put(payment, "c1", DEAD, "m")
    verdict = payment.verdict(package("p"))
    assert verdict is not None and verdict.state != "Running"
    assert summary(planned(payment, dirty, ours)) == [[(package("p"), "Running", verdict.state)]]


def scenario(name: str) -> WorkKey:
    return WorkKey(Resource.SCENARIO, name)


def test_scenario_state_is_deleted_with_its_spec_and_otherwise_left_alone(payment: Index) -> None:
    """A scenario's state key is never derived: whatever a daemon stored stays while its spec
    exists (even when someone else rewrites it); once the spec is gone, the key is deleted, a
    group of its own."""
    payment.put_scenario("s", "p")
    assert payment.observe_written(scenario("s"), "Waiting", 10) == {scenario("s")}
    assert planned(payment, [scenario("s")]) == []
    assert scenario("s") not in payment.all_keys()
    payment.observe_written(scenario("s"), "garbage", 11)
    assert planned(payment, [scenario("s")]) == []

    assert payment.delete_scenario("s") == {scenario("s")}
    assert scenario("s") in payment.all_keys()  # a leader's full round finds it too
    groups = planned(payment, [scenario("s"), model("m"), scenario("s")])
    assert summary(groups) == [[(scenario("s"), "garbage", None)]]
    assert groups[0][0].old.mod_revision == 11  # the deletion is guarded on what was seen

    payment.observe_written(scenario("s"), None, 12)
    assert planned(payment, [scenario("s")]) == []
    assert payment.delete_scenario("s") == set()  # no state key: nothing to delete


def test_scenario_state_without_any_spec_is_an_orphan() -> None:
    """A state key found for a scenario whose spec never was (or was invalid) is deleted."""
    index = Index()
    index.observe_written(scenario("ghost"), "Idle", 3)
    assert summary(planned(index, index.all_keys())) == [[(scenario("ghost"), "Idle", None)]]


def test_every_dirty_key_is_planned_after_one_that_is_skipped(payment: Index) -> None:
    """A scenario key or a key already visited does not end the walk over the dirty keys."""
    put(payment, "c1", DEAD, "m")
    scenario = WorkKey(Resource.SCENARIO, "s")
    groups = planned(payment, [scenario, package("p"), package("p"), model("m")])
    assert summary(groups) == [
        [(model("m"), "Running", "Failed"), (package("p"), "Running", "Degraded")]
    ]


def test_a_model_change_carries_its_verdict_and_a_put_back_is_a_correction(payment: Index) -> None:
    """Each change names the rule that decided it; a key someone else changed away from what
    this daemon wrote, and which the rules still give, is put back as a correction."""
    payment.observe_written(model("m"), "Failed", 100)  # someone else's write
    previous = PreviousStates()
    previous.committed(model("m"), "Running", 1)
    [[change]] = planned(payment, [model("m")], previous)
    assert (change.new, change.correction) == ("Running", True)
    assert change.verdict is not None and change.verdict.rule == "M5"
    [[fresh]] = planned(payment, [model("m")])  # no previous state known: a transition
    assert fresh.correction is False


def test_a_moved_model_already_in_etcd_is_its_package_changes_cause(payment: Index) -> None:
    """A model whose derived state moved to what etcd already holds (someone else wrote it)
    pulls in its package, and is named as the cause of the package's change."""
    put(payment, "c1", DEAD, "m")
    payment.observe_written(model("m"), "Failed", 100)
    previous = PreviousStates()
    previous.committed(model("m"), "Running", 1)
    [[change]] = planned(payment, [model("m")], previous)
    assert (change.key, change.new, change.cause) == (package("p"), "Degraded", model("m"))
    assert previous.previous(model("m")) == "Failed"  # agreeing now: the new previous state


def test_a_key_agreeing_with_no_state_forgets_its_previous_state() -> None:
    """A model that should have no key and has none is left with no previous derived state,
    whether it had one or not."""
    index = Index()
    assert planned(index, [model("gone")], PreviousStates()) == []
    previous = PreviousStates()
    previous.committed(model("gone"), "Running", 1)
    assert planned(index, [model("gone")], previous) == []
    assert previous.previous(model("gone")) is None


def _unit(change: Change) -> tuple[int, int]:
    return 1, 10


def test_pack_fills_transactions_to_their_byte_limit_exactly() -> None:
    """Groups and changes fill a transaction up to `max_bytes` inclusive, and each new
    transaction starts empty."""
    changes = [Change(model(f"m{i}"), Written(None, 0, 0), "Running", None, None) for i in range(4)]
    singles = [[c] for c in changes]
    assert pack(singles, 100, 20, _unit) == [changes[:2], changes[2:]]
    assert pack([changes], 100, 20, _unit) == [changes[:2], changes[2:]]  # one group split
    assert pack(singles, 100, 19, _unit) == singles


def test_pack_starts_a_group_in_a_new_transaction_when_the_whole_group_would_not_fit() -> None:
    """A group that fits a transaction of its own is not split because its first change
    would still fit the current one."""
    small, big1, big2 = (Change(model(n), Written(None, 0, 0), "Running", None, None)
                         for n in ("a", "b", "c"))  # fmt: skip
    sizes = {"a": 5, "b": 10, "c": 10}
    packed = pack([[small], [big1, big2]], 100, 20, lambda c: (1, sizes[c.key.name]))
    assert packed == [[small], [big1, big2]]
