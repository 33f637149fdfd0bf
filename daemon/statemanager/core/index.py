"""The in-memory index: everything the rules need, kept current from etcd events.

Purely computational: no I/O, no clocks. Each mutator applies one event and returns the work
keys whose derived or written state may now differ, so the caller enqueues exactly those.
Lookups the hot path needs are O(1) per event: container → model, model → packages,
package → scenarios, and per-model counts of container classes (model rules never scan).

Invariants:
- every container id is in exactly one of `_model_containers[m]` (its model) or `_unassigned`;
- a container's model is its annotation, else `_matched[cid]` (found by name);
- `_counts[m]` sums the classes of the containers in `_model_containers[m]`;
- `_model_packages[m]` holds p exactly when `_package_models[p]` lists m.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from statemanager.core.inputs import ContainerInfo
from statemanager.core.keys import Resource, WorkKey
from statemanager.core.rules import Verdict, model_verdict, package_verdict
from statemanager.core.states import ContainerClass


@dataclass(frozen=True, slots=True)
class Written:
    """A state key as etcd holds it. `mod_revision` is 0 when the key is absent; `seen` is the
    revision this was learned at, so an older event never overwrites newer knowledge."""

    value: str | None
    mod_revision: int
    seen: int


_ABSENT = Written(None, 0, 0)


def _name_matched(info: ContainerInfo) -> tuple[str, ...]:
    """The names a Model spec change can (re)assign: only an unannotated container's."""
    return info.names if info.model_annotation is None else ()


class Index:
    def __init__(self) -> None:
        # Every container's info, and for the few without a model annotation the model their
        # name matched: no wrapper object per container (docs/design.md, Footprint).
        self._containers: dict[str, ContainerInfo] = {}
        self._matched: dict[str, str] = {}
        # A dict per model as an ordered set of its container ids: a five-entry dict takes a
        # quarter of a five-entry set's memory.
        self._model_containers: dict[str, dict[str, None]] = {}
        self._counts: dict[str, Counter[ContainerClass]] = {}
        self._unassigned: set[str] = set()
        # Containers that became unassigned since the last take_became_unassigned(), however
        # it happened (their own event, or a Model spec that stopped matching their names).
        self._became_unassigned: list[str] = []
        self._left_unassigned: set[str] = set()  # within one operation: moved, not new
        # Name matching for containers without a model annotation (docs/contract.md, Reads):
        # "{model}_{container}" → models whose spec lists it; container name → unannotated ids.
        self._model_spec: dict[str, tuple[str, ...]] = {}
        self._full_name_models: dict[str, set[str]] = {}
        self._name_containers: dict[str, set[str]] = {}
        self._package_models: dict[str, tuple[str, ...]] = {}
        self._model_packages: dict[str, set[str]] = {}
        self._scenario_target: dict[str, str] = {}
        self._package_scenarios: dict[str, set[str]] = {}
        self._written: dict[WorkKey, Written] = {}
        self._node_containers: dict[str, set[str]] = {}  # node name → ids it reported
        # For gauges: containers by status, and state keys by written value.
        self._statuses: Counter[str] = Counter()
        self._written_counts: dict[Resource, Counter[str]] = {r: Counter() for r in Resource}

    # -- containers ---------------------------------------------------------------------------

    def put_container(self, cid: str, info: ContainerInfo) -> set[WorkKey]:
        old = self._containers.get(cid)
        model = info.model_annotation or self._match_by_name(info.names)
        if old is not None and self._model_of(cid, old) == model and old.cls is info.cls:
            self._statuses[old.status] -= 1
            self._statuses[info.status] += 1
            if _name_matched(old) != _name_matched(info):
                self._forget_names(cid, old)
                self._remember_names(cid, info)
            self._move_node(cid, old.node, info.node)
            self._containers[cid] = info
            self._remember_model(cid, info, model)
            return set()  # the common stats-only rewrite: nothing the rules see has changed
        dirty = self.delete_container(cid)
        self._containers[cid] = info
        self._remember_model(cid, info, model)
        self._move_node(cid, None, info.node)
        self._statuses[info.status] += 1
        self._remember_names(cid, info)
        self._attach(cid, model, info.cls)
        if model is not None:
            dirty.add(WorkKey(Resource.MODEL, model))
        return dirty

    def delete_container(self, cid: str) -> set[WorkKey]:
        old = self._containers.pop(cid, None)
        if old is None:
            return set()
        model = old.model_annotation or self._matched.pop(cid, None)
        self._move_node(cid, old.node, None)
        self._statuses[old.status] -= 1
        self._forget_names(cid, old)
        self._detach(cid, model, old.cls)
        return {WorkKey(Resource.MODEL, model)} if model is not None else set()

    def _model_of(self, cid: str, info: ContainerInfo) -> str | None:
        return info.model_annotation or self._matched.get(cid)

    def _remember_model(self, cid: str, info: ContainerInfo, model: str | None) -> None:
        if info.model_annotation is None and model is not None:
            self._matched[cid] = model
        else:
            self._matched.pop(cid, None)

    def _move_node(self, cid: str, old: str | None, new: str | None) -> None:
        if old == new:
            return
        if old is not None:
            ids = self._node_containers[old]
            ids.discard(cid)
            if not ids:
                del self._node_containers[old]
        if new is not None:
            self._node_containers.setdefault(new, set()).add(cid)

    def _attach(self, cid: str, model: str | None, cls: ContainerClass) -> None:
        if model is None:
            self._unassigned.add(cid)
            if cid in self._left_unassigned:
                self._left_unassigned.discard(cid)  # unassigned before, unassigned still
            else:
                self._became_unassigned.append(cid)
            return
        members = self._model_containers.get(model)
        if members is None:  # not setdefault: that would build a Counter for every container
            members = self._model_containers[model] = {}
            self._counts[model] = Counter()
        members[cid] = None
        self._counts[model][cls] += 1

    def _detach(self, cid: str, model: str | None, cls: ContainerClass) -> None:
        if model is None:
            self._unassigned.discard(cid)
            self._left_unassigned.add(cid)
            return
        members = self._model_containers[model]
        del members[cid]
        counts = self._counts[model]
        counts[cls] -= 1
        if not members:
            del self._model_containers[model]
            del self._counts[model]

    def _remember_names(self, cid: str, info: ContainerInfo) -> None:
        for name in _name_matched(info):
            self._name_containers.setdefault(name, set()).add(cid)

    def _forget_names(self, cid: str, info: ContainerInfo) -> None:
        for name in _name_matched(info):
            ids = self._name_containers.get(name)
            if ids is not None:
                ids.discard(cid)
                if not ids:
                    del self._name_containers[name]

    def _match_by_name(self, names: Iterable[str]) -> str | None:
        """The model whose spec lists one of these names; the smallest name when several do, so
        the answer never depends on the order events arrived in."""
        for name in names:
            models = self._full_name_models.get(name)
            if models:
                return min(models)
        return None

    # -- specs --------------------------------------------------------------------------------

    def put_model_spec(self, model: str, containers: tuple[str, ...]) -> set[WorkKey]:
        old = self._model_spec.get(model, ())
        if old == containers:
            return set()
        self._model_spec[model] = containers
        return self._rematch(model, old, containers)

    def delete_model_spec(self, model: str) -> set[WorkKey]:
        old = self._model_spec.pop(model, None)
        return self._rematch(model, old, ()) if old is not None else set()

    def _rematch(self, model: str, old: tuple[str, ...], new: tuple[str, ...]) -> set[WorkKey]:
        """Move unannotated containers whose full name a Model spec change (un)claimed."""
        old_full = {f"{model}_{c}" for c in old}
        new_full = {f"{model}_{c}" for c in new}
        for full in old_full - new_full:
            models = self._full_name_models[full]
            models.discard(model)
            if not models:
                del self._full_name_models[full]
        for full in new_full - old_full:
            self._full_name_models.setdefault(full, set()).add(model)
        dirty: set[WorkKey] = set()
        for full in old_full ^ new_full:
            for cid in list(self._name_containers.get(full, ())):
                dirty |= self.put_container(cid, self._containers[cid])
        return dirty

    def put_package_spec(self, package: str, models: tuple[str, ...]) -> set[WorkKey]:
        old = self._package_models.get(package)
        if old == models:
            return set()
        self._package_models[package] = models
        return self._relink(package, old or (), models)

    def delete_package_spec(self, package: str) -> set[WorkKey]:
        old = self._package_models.pop(package, None)
        if old is None:
            return set()
        return self._relink(package, old, ())

    def _relink(self, package: str, old: tuple[str, ...], new: tuple[str, ...]) -> set[WorkKey]:
        for model in set(old) - set(new):
            packages = self._model_packages[model]
            packages.discard(package)
            if not packages:
                del self._model_packages[model]
        for model in set(new) - set(old):
            self._model_packages.setdefault(model, set()).add(package)
        dirty = {WorkKey(Resource.MODEL, m) for m in set(old) ^ set(new)}
        dirty.add(WorkKey(Resource.PACKAGE, package))
        return dirty

    def put_scenario(self, scenario: str, target: str) -> set[WorkKey]:
        self._unlink_scenario(scenario)
        self._scenario_target[scenario] = target
        self._package_scenarios.setdefault(target, set()).add(scenario)
        return set()  # scenarios decide who is told about Error, never a derived state

    def delete_scenario(self, scenario: str) -> set[WorkKey]:
        """Forget a deleted Scenario spec; its state key, if any, is to be deleted with it."""
        self._unlink_scenario(scenario)
        key = WorkKey(Resource.SCENARIO, scenario)
        return {key} if self.written(key).value is not None else set()

    def _unlink_scenario(self, scenario: str) -> None:
        target = self._scenario_target.pop(scenario, None)
        if target is not None:
            scenarios = self._package_scenarios[target]
            scenarios.discard(scenario)
            if not scenarios:
                del self._package_scenarios[target]

    def has_scenario(self, scenario: str) -> bool:
        """Whether a valid `Scenario/{scenario}` spec is known."""
        return scenario in self._scenario_target

    # -- written states -----------------------------------------------------------------------

    def observe_written(self, key: WorkKey, value: str | None, revision: int) -> set[WorkKey]:
        """Record a state key as etcd holds it at `revision` (0 mod revision when deleted).

        Returns the key as dirty when etcd now disagrees with what we knew: someone else wrote it,
        and the level-triggered answer is to re-evaluate it.
        """
        known = self._written.get(key, _ABSENT)
        if revision < known.seen:
            return set()
        self._written[key] = Written(value, revision if value is not None else 0, revision)
        if value == known.value:
            return set()
        counts = self._written_counts[key.resource]
        if known.value is not None:
            counts[known.value] -= 1
        if value is not None:
            counts[value] += 1
        return {key}

    def forget_revisions(self) -> None:
        """etcd's history was replaced: what we knew stays as a value, but no revision seen so
        far may keep a newer listing's answer out."""
        self._written = {k: Written(w.value, w.mod_revision, 0) for k, w in self._written.items()}

    def written_keys(self, resource: Resource) -> Iterator[WorkKey]:
        """The state keys of `resource` etcd holds, as far as the index knows."""
        return (
            k for k, w in self._written.items() if w.value is not None and k.resource is resource
        )

    def written(self, key: WorkKey) -> Written:
        return self._written.get(key, _ABSENT)

    # -- queries ------------------------------------------------------------------------------

    def model_verdict(self, model: str) -> Verdict | None:
        """The derived state, or None when the model should have no state key
        (docs/contract.md, Writes)."""
        counts = self._counts.get(model)
        if counts is None and model not in self._model_packages:
            return None
        return model_verdict(counts or {})

    def package_verdict(self, package: str) -> Verdict | None:
        """The derived state, or None when the package has no spec (its key is deleted)."""
        models = self._package_models.get(package)
        if models is None:
            return None
        return package_verdict((self.model_verdict(m) or model_verdict({})).state for m in models)

    def verdict(self, key: WorkKey) -> Verdict | None:
        if key.resource is Resource.MODEL:
            return self.model_verdict(key.name)
        return self.package_verdict(key.name)

    def packages_of(self, model: str) -> set[str]:
        return self._model_packages.get(model, set())

    def models_of(self, package: str) -> tuple[str, ...]:
        return self._package_models.get(package, ())

    def scenarios_of(self, package: str) -> list[str]:
        return sorted(self._package_scenarios.get(package, ()))

    def containers_of(self, model: str) -> Iterator[tuple[str, ContainerInfo]]:
        for cid in sorted(self._model_containers.get(model, ())):
            yield cid, self._containers[cid]

    def status_counts(self) -> Counter[str]:
        """Containers by status word."""
        return self._statuses

    def written_counts(self, resource: Resource) -> Counter[str]:
        """State keys of `resource` by the value etcd holds (which may be no state name)."""
        return self._written_counts[resource]

    def container(self, cid: str) -> ContainerInfo | None:
        """The info the rules see for container `cid`, if any."""
        return self._containers.get(cid)

    def containers_on(self, node: str) -> set[str]:
        """Ids of the containers `node` reported through the gRPC service."""
        return self._node_containers.get(node, set())

    def is_unassigned(self, cid: str) -> bool:
        return cid in self._unassigned

    def take_became_unassigned(self) -> list[str]:
        """Containers that became unassigned since the last call (each reported once)."""
        became = [cid for cid in self._became_unassigned if cid in self._unassigned]
        self._became_unassigned = []
        self._left_unassigned.clear()
        return became

    def unassigned_count(self) -> int:
        return len(self._unassigned)

    def all_keys(self) -> set[WorkKey]:
        """Every model and package that has, or should have, a state key, and every scenario
        state key left without its spec."""
        keys = {WorkKey(Resource.MODEL, m) for m in self.names(Resource.MODEL)}
        keys |= {WorkKey(Resource.PACKAGE, p) for p in self.names(Resource.PACKAGE)}
        # A scenario's state key is written through the gRPC service, never derived: only one
        # whose spec is gone needs the writer (it is deleted).
        scenarios = self.written_keys(Resource.SCENARIO)
        keys.update(k for k in scenarios if not self.has_scenario(k.name))
        return keys

    def names(self, resource: Resource) -> set[str]:
        """The names of all_keys() of one resource type, without building a key for each."""
        if resource is Resource.MODEL:
            names = self._model_containers.keys() | self._model_packages.keys()
        else:
            names = set(self._package_models)
        written = self._written.items()
        names.update(k.name for k, w in written if k.resource is resource and w.value is not None)
        return names

    def sizes(self) -> tuple[int, int, int]:
        """(containers, models with containers or listed, packages) for gauges and logs."""
        models = len(self._model_containers.keys() | self._model_packages.keys())
        return len(self._containers), models, len(self._package_models)
