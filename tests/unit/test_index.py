"""The in-memory index: container → model → package links, dirty keys, verdicts."""

from __future__ import annotations

from statemanager.core.index import Index, Written
from statemanager.core.inputs import ContainerInfo
from statemanager.core.keys import Resource, WorkKey
from statemanager.core.states import ContainerClass, ContainerStatus

_STATUS = {
    ContainerClass.ACTIVE: ContainerStatus.RUNNING,
    ContainerClass.DEAD: ContainerStatus.DEAD,
    ContainerClass.EXITED: ContainerStatus.EXITED,
    ContainerClass.NOT_STARTED: ContainerStatus.PAUSED,
}


def info(
    cls: ContainerClass = ContainerClass.ACTIVE,
    model: str | None = None,
    names: tuple[str, ...] = (),
) -> ContainerInfo:
    return ContainerInfo(names, _STATUS[cls], cls, model)


def model(name: str) -> WorkKey:
    return WorkKey(Resource.MODEL, name)


def package(name: str) -> WorkKey:
    return WorkKey(Resource.PACKAGE, name)


def state(index: Index, key: WorkKey) -> str | None:
    verdict = index.verdict(key)
    return None if verdict is None else verdict.state


# -- container → model ------------------------------------------------------------------------


def test_container_assigned_by_annotation() -> None:
    """The model annotation assigns a container to its model and makes that model dirty."""
    index = Index()
    assert index.put_container("c1", info(model="m")) == {model("m")}
    assert [cid for cid, _ in index.containers_of("m")] == ["c1"]
    assert state(index, model("m")) == "Running"


def test_container_assigned_by_name_match() -> None:
    """Without annotation, a name `{M}_{c}` for a container c listed by Model M assigns it."""
    index = Index()
    index.put_model_spec("m", ("web", "db"))
    assert index.put_container("c1", info(names=("other", "m_db"))) == {model("m")}
    assert not index.is_unassigned("c1")
    assert [cid for cid, _ in index.containers_of("m")] == ["c1"]


def test_name_match_requires_listed_container() -> None:
    """A name `{M}_{c}` where Model M does not list c leaves the container unassigned."""
    index = Index()
    index.put_model_spec("m", ("web",))
    assert index.put_container("c1", info(names=("m_db",))) == set()
    assert index.is_unassigned("c1")


def test_annotation_wins_over_name_match() -> None:
    """An annotated container belongs to its annotated model even if its name matches another."""
    index = Index()
    index.put_model_spec("m", ("web",))
    assert index.put_container("c1", info(model="n", names=("m_web",))) == {model("n")}
    assert list(index.containers_of("m")) == []


def test_unassigned_container() -> None:
    """A container matching neither annotation nor name is unassigned and dirties nothing."""
    index = Index()
    assert index.put_container("c1", info(names=("lonely",))) == set()
    assert index.is_unassigned("c1")
    assert index.unassigned_count() == 1
    assert index.delete_container("c1") == set()
    assert index.unassigned_count() == 0


def test_model_spec_arriving_after_container_reassigns_it() -> None:
    """A Model spec that lists an already-seen unassigned container claims it."""
    index = Index()
    index.put_container("c1", info(ContainerClass.DEAD, names=("m_web",)))
    assert index.is_unassigned("c1")
    assert index.put_model_spec("m", ("web",)) == {model("m")}
    assert not index.is_unassigned("c1")
    assert state(index, model("m")) == "Failed"


def test_model_spec_deletion_unassigns_name_matched_container() -> None:
    """Deleting the Model spec releases its name-matched containers and dirties the model."""
    index = Index()
    index.put_model_spec("m", ("web",))
    index.put_container("c1", info(names=("m_web",)))
    assert index.delete_model_spec("m") == {model("m")}
    assert index.is_unassigned("c1")
    assert state(index, model("m")) is None


def test_model_spec_change_dropping_a_container() -> None:
    """A Model spec that stops listing a container releases only that container."""
    index = Index()
    index.put_model_spec("m", ("web", "db"))
    index.put_container("c1", info(names=("m_web",)))
    index.put_container("c2", info(names=("m_db",)))
    assert index.put_model_spec("m", ("web",)) == {model("m")}
    assert index.is_unassigned("c2")
    assert [cid for cid, _ in index.containers_of("m")] == ["c1"]


def test_model_spec_does_not_touch_annotated_containers() -> None:
    """Deleting a Model spec leaves containers assigned by annotation where they are."""
    index = Index()
    index.put_model_spec("m", ("web",))
    index.put_container("c1", info(model="m", names=("m_web",)))
    assert index.delete_model_spec("m") == set()
    assert [cid for cid, _ in index.containers_of("m")] == ["c1"]


def test_name_match_ambiguity_picks_smallest_model() -> None:
    """When two Model specs claim a name, the smallest model name wins, whatever the order."""
    first, second = Index(), Index()
    first.put_model_spec("a", ("b_c",))
    first.put_model_spec("a_b", ("c",))
    second.put_model_spec("a_b", ("c",))
    second.put_model_spec("a", ("b_c",))
    for index in (first, second):
        index.put_container("x", info(names=("a_b_c",)))
        assert [cid for cid, _ in index.containers_of("a")] == ["x"]


def test_stats_only_rewrite_is_not_dirty() -> None:
    """Rewriting a container with the same model and class dirties nothing."""
    index = Index()
    index.put_container("c1", info(model="m"))
    rewrite = ContainerInfo((), ContainerStatus.UNKNOWN, ContainerClass.ACTIVE, "m")
    assert index.put_container("c1", rewrite) == set()


def test_class_change_dirties_model() -> None:
    """A container changing class (running → dead) dirties its model and changes its verdict."""
    index = Index()
    index.put_container("c1", info(model="m"))
    assert index.put_container("c1", info(ContainerClass.DEAD, model="m")) == {model("m")}
    assert state(index, model("m")) == "Failed"


def test_moving_container_dirties_both_models() -> None:
    """A container whose annotation changes model dirties the old and the new model."""
    index = Index()
    index.put_container("c1", info(model="a"))
    assert index.put_container("c1", info(model="b")) == {model("a"), model("b")}
    assert state(index, model("a")) is None
    assert state(index, model("b")) == "Running"


def test_model_counts_follow_container_changes() -> None:
    """The model verdict reflects every container put and delete (counts stay consistent)."""
    index = Index()
    index.put_container("c1", info(ContainerClass.EXITED, model="m"))
    index.put_container("c2", info(ContainerClass.DEAD, model="m"))
    assert state(index, model("m")) == "Failed"
    assert index.delete_container("c2") == {model("m")}
    assert state(index, model("m")) == "Succeeded"
    index.put_container("c3", info(ContainerClass.NOT_STARTED, model="m"))
    assert state(index, model("m")) == "Running"


def test_delete_unknown_container() -> None:
    """Deleting a container never seen is a no-op."""
    assert Index().delete_container("nope") == set()


# -- packages ---------------------------------------------------------------------------------


def test_package_spec_dirties_package_and_listed_models() -> None:
    """A new Package spec dirties the package and every model it now lists."""
    index = Index()
    assert index.put_package_spec("p", ("a", "b")) == {package("p"), model("a"), model("b")}
    assert index.put_package_spec("p", ("a", "b")) == set()


def test_package_spec_change_dirties_only_changed_models() -> None:
    """Changing a Package spec dirties the package and the models added or removed."""
    index = Index()
    index.put_package_spec("p", ("a", "b"))
    assert index.put_package_spec("p", ("b", "c")) == {package("p"), model("a"), model("c")}


def test_model_in_two_packages() -> None:
    """A model listed by two packages feeds both verdicts."""
    index = Index()
    index.put_package_spec("p", ("m",))
    index.put_package_spec("q", ("m", "n"))
    index.put_container("c1", info(ContainerClass.DEAD, model="m"))
    index.put_container("c2", info(model="n"))
    assert index.packages_of("m") == {"p", "q"}
    assert state(index, package("p")) == "Error"
    assert state(index, package("q")) == "Degraded"


def test_package_spec_deletion_deletes_package_state() -> None:
    """A package whose spec is deleted has no verdict (its state key is deleted)."""
    index = Index()
    index.put_package_spec("p", ("m",))
    assert index.delete_package_spec("p") == {package("p"), model("m")}
    assert index.package_verdict("p") is None
    assert index.delete_package_spec("p") == set()


def test_package_without_models_is_initializing() -> None:
    """A Package spec listing no models gets Initializing (rule P1)."""
    index = Index()
    index.put_package_spec("p", ())
    assert state(index, package("p")) == "Initializing"


def test_listed_model_without_containers_is_pending() -> None:
    """A model a package lists but that has no containers is Pending (rule M1)."""
    index = Index()
    index.put_package_spec("p", ("m",))
    verdict = index.model_verdict("m")
    assert verdict is not None
    assert (verdict.state, verdict.rule) == ("Pending", "M1")
    assert state(index, package("p")) == "Paused"


def test_unlisted_model_without_containers_has_no_state() -> None:
    """A model no package lists and with no containers has no verdict (key deleted)."""
    index = Index()
    index.put_package_spec("p", ("m",))
    index.put_package_spec("p", ())
    assert index.model_verdict("m") is None
    index.put_container("c1", info(model="m"))
    index.delete_container("c1")
    assert index.model_verdict("m") is None


def test_unlisted_model_with_containers_keeps_state() -> None:
    """A model with containers has a state whether or not a package lists it."""
    index = Index()
    index.put_container("c1", info(ContainerClass.EXITED, model="m"))
    assert state(index, model("m")) == "Succeeded"


def test_scenarios_of_package_sorted_and_retargeted() -> None:
    """Scenarios are found by target, sorted by name, and move when retargeted."""
    index = Index()
    assert index.put_scenario("z", "p") == set()
    index.put_scenario("a", "p")
    index.put_scenario("b", "q")
    assert index.scenarios_of("p") == ["a", "z"]
    index.put_scenario("z", "q")
    assert index.scenarios_of("p") == ["a"]
    assert index.scenarios_of("q") == ["b", "z"]
    index.delete_scenario("a")
    assert index.scenarios_of("p") == []


# -- written states ---------------------------------------------------------------------------


def test_observe_written_records_and_dirties_on_change() -> None:
    """A state key seen with a new value is recorded and returned as dirty."""
    index = Index()
    key = model("m")
    assert index.observe_written(key, "Running", 5) == {key}
    assert index.written(key) == Written("Running", 5, 5)
    assert index.observe_written(key, "Running", 6) == set()


def test_observe_written_ignores_older_revision() -> None:
    """An event older than what is known does not overwrite newer knowledge."""
    index = Index()
    key = package("p")
    index.observe_written(key, "Error", 10)
    assert index.observe_written(key, "Running", 9) == set()
    assert index.written(key).value == "Error"


def test_observe_written_deletion() -> None:
    """A deleted state key is recorded as absent with mod revision 0, and is dirty."""
    index = Index()
    key = model("m")
    index.observe_written(key, "Running", 5)
    assert index.observe_written(key, None, 7) == {key}
    assert index.written(key) == Written(None, 0, 7)
    assert index.observe_written(key, "Running", 6) == set()


def test_written_state_keys_are_in_all_keys() -> None:
    """A state key that exists in etcd is considered even if nothing derives it (to delete it)."""
    index = Index()
    index.observe_written(model("ghost"), "Running", 3)
    index.put_package_spec("p", ())
    assert index.all_keys() == {model("ghost"), package("p")}


def test_containers_are_tracked_per_reporting_node() -> None:
    """A container's node follows its latest value; deleting it forgets it."""

    def info(node: str | None, status: ContainerStatus = ContainerStatus.RUNNING) -> ContainerInfo:
        cls = ContainerClass.DEAD if status is ContainerStatus.DEAD else ContainerClass.ACTIVE
        return ContainerInfo((), status, cls, "m", node)

    index = Index()
    index.put_container("c1", info("a"))
    index.put_container("c2", info("a"))
    assert index.containers_on("a") == {"c1", "c2"}
    index.put_container("c1", info("b"))  # same class: the short path
    index.put_container("c2", info("b", ContainerStatus.DEAD))  # class change: the long path
    assert index.containers_on("a") == set()
    assert index.containers_on("b") == {"c1", "c2"}
    index.delete_container("c1")
    index.put_container("c2", info(None))
    assert index.containers_on("b") == set()


def test_names_added_by_a_stats_only_rewrite_are_matched_later() -> None:
    """A rewrite that keeps the container's model but adds a name registers it: a Model spec
    that lists the new name later moves the container."""
    index = Index()
    index.put_model_spec("m", ("web",))
    index.put_container("c", info(names=("m_web",)))
    index.put_container("c", info(names=("y_b", "m_web")))
    index.put_model_spec("y", ("b",))
    assert [cid for cid, _ in index.containers_of("y")] == ["c"]


def test_names_dropped_by_a_stats_only_rewrite_are_forgotten() -> None:
    """A rewrite that keeps the container's model but drops a name forgets it: once the
    container is gone, a Model spec listing the dropped name finds nothing to move."""
    index = Index()
    index.put_model_spec("m", ("web",))
    index.put_container("c", info(names=("m_web", "y_b")))
    assert index.put_container("c", info(names=("m_web",))) == set()
    index.delete_container("c")
    assert index.put_model_spec("y", ("b",)) == set()
    assert list(index.containers_of("y")) == []


def test_a_full_name_two_models_list_stays_matched_when_one_stops() -> None:
    """`a_b` listing `c` and `a` listing `b_c` both name `a_b_c`: when one spec goes, the
    other still matches it."""
    index = Index()
    index.put_model_spec("a_b", ("c",))
    index.put_model_spec("a", ("b_c",))
    index.put_container("k", info(names=("a_b_c",)))
    index.delete_model_spec("a_b")
    assert [cid for cid, _ in index.containers_of("a")] == ["k"]


def test_a_match_remembered_before_an_annotation_is_forgotten() -> None:
    """Matched by name, then annotated, then matching nothing, then matched again: the
    container is assigned again (no match from before the annotation lingers)."""
    index = Index()
    index.put_model_spec("m", ("web",))
    index.put_container("c", info(names=("m_web",)))
    index.put_container("c", info(model="m", names=("m_web",)))
    index.put_container("c", info(names=("zz",)))
    assert index.is_unassigned("c")
    assert index.put_container("c", info(names=("m_web",))) == {model("m")}
    assert not index.is_unassigned("c")
