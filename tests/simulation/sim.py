"""A deterministic simulation of statemanager daemons under random faults (README, "Simulation").

One seed makes one schedule (`make_schedule`, a pure function of the seed and its `Mode`): a
starting fleet, then timed steps of fleet churn and faults for `FAULT_SECONDS` of virtual time
(in swarm mode, the default, each seed enables its own subset of the fault kinds).
`simulate` runs two complete daemons' runtimes (watcher, worker, election, reconcile sender)
against `MemEtcd` and a fake ActionController on looptime's virtual clock, applies the steps
(nodes' container lists go through the leader's StateManager service, the gRPC service's write
path, called in process), then stops the faults and checks the invariants:

- convergence: within `SETTLE_SECONDS` every state key equals the oracle's (tests/simulation/
  oracle.py, the rules re-derived without the daemon's code) and no trigger is left, judged
  once nothing sent during the faults is still on its way (a caller's send, a request a
  pause held);
- atomic cascade: right after every committed state write, each package listing a model written
  (and each package written) agrees with the model states in the store;
- fencing: no write committed without its fence holding at that revision;
- reconcile: each recorded trigger is delivered to every scenario of its package unless the
  package left Error, a newer trigger took over, or it was dead-lettered; nothing is delivered
  without a trigger; no trigger is recorded unless the package entered Error by the rules
  before it (since the trigger before, unless leadership changed hands, when the new leader
  cannot know; a first trigger is not judged once etcd's history was replaced); no entry into
  Error a daemon wrote over a daemon's own write (or a key never written) lacks its trigger
  (a Reconcile lost; a correction puts back what someone else changed);
- no busy loop: at most `MAX_REQUESTS_PER_SECOND` etcd requests per virtual second while down,
  and no daemon sends `MAX_REQUESTS_PER_INSTANT` requests without virtual time passing;
- no task of a daemon ends but by its stop; the service answers every list (an abort with a
  status code is an answer; an exception escaping it is not);
- history: every transition a writer reports committed has exactly one record, put in its
  transaction; every record is put by one transition (twice only by a retry that landed
  twice), at a write of its resource's state key from the record's `from` to its `to`; a resource's records are in generation order at
  rising revisions with no generation skipped; and the newest one's `to` is the state etcd
  holds, unless someone else wrote that key last.

A daemon "paused" has each etcd request it sends held until the pause ends (then applied): a
process stopped past its lease, whose last request reaches etcd late. When etcd's history is
replaced (a wipe, a restore), what the invariants judge is the new history: entries into Error
and deliveries of the old one are set aside.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import functools
import itertools
import json
import random
import signal
import traceback
import types
from collections.abc import AsyncGenerator, Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any, TypeVar

import looptime
import structlog

from simulation import oracle
from statemanager.adapters.etcd import prefix_end
from statemanager.adapters.stateservice import StateService
from statemanager.core.history import Transition, decode, history_prefix, parse_history_key
from statemanager.core.keys import Kind, WorkKey
from statemanager.core.ports import (
    Delete,
    Fence,
    Guard,
    Page,
    Put,
    ReconcileOutcome,
    TxnResult,
    WatchBatch,
)
from statemanager.proto import statemanager_pb2 as pb
from statemanager.runtime import controller as controller_module
from statemanager.runtime import reconcile as reconcile_module
from statemanager.runtime import writer as writer_module
from statemanager.runtime.metrics import Metrics

from support.memetcd import RAFT_TERM, MemEtcd, StoreSnapshot
from support.runtime import LAYOUT, Runtime
from support.servicer import Aborted, Context, container_list, send_list

T = TypeVar("T")

FAULT_SECONDS = 20.0
SETTLE_SECONDS = 60.0
SAMPLE_EVERY = 0.25
MAX_REQUESTS_PER_SECOND = 200
# etcd requests one daemon may send without virtual time passing; more is a loop that never
# waits (on real time: etcd hammered until something else changes).
MAX_REQUESTS_PER_INSTANT = 5000
CPU_LIMIT = 20.0
DAEMONS = 2
TTL = 3
TRIGGERS = f"{LAYOUT.own}triggers/"
DEAD_LETTERS = f"{LAYOUT.own}deadletters/"
PACKAGES = [f"p{i}" for i in range(2)]
MODELS = [f"m{i}" for i in range(3)]
CONTAINERS = [f"c{i}" for i in range(4)]
SCENARIOS = [f"s{i}" for i in range(2)]
NODES = [f"n{i}" for i in range(2)]  # nodes reporting their containers through the service
STATUSES = ["running", "running", "dead", "dead", "exited", "paused", "unknown"]
STATE_VALUES = ["Running", "Error", "Failed", "Pending", "Degraded", "bogus"]
MODEL_VALUES = ["Pending", "Running", "Succeeded", "Failed"]
PACKAGE_VALUES = ["Initializing", "Running", "Degraded", "Error", "Paused"]
REPLACE_AFTER = 8.0  # seconds from a restart to the replacement of history it makes visible
CALL_DEADLINE = 5.0  # ActionController's answer, when slow, comes this long after the call


class InvariantBroken(AssertionError):
    pass


@dataclasses.dataclass(frozen=True, slots=True)
class Step:
    at: float
    action: str
    args: tuple[Any, ...] = ()

    def __str__(self) -> str:
        return f"t={self.at:6.2f}s {self.action} {' '.join(map(str, self.args))}".rstrip()


# -- schedules ------------------------------------------------------------------------------


def _container_change(rng: random.Random) -> tuple[str, str, str, str]:
    """A container's new value: its id, model, status and exit code."""
    i = rng.randrange(len(CONTAINERS))
    model = MODELS[i % len(MODELS)] if rng.random() < 0.9 else rng.choice(MODELS)
    status = rng.choice(STATUSES)
    code = rng.choice(["0", "137"]) if status == "exited" else "0"
    return CONTAINERS[i], model, status, code


def _churn(rng: random.Random) -> tuple[str, tuple[Any, ...]]:
    """One change of the fleet or its specs. A small world (each container mostly stays with
    its own model, packages of one or two models) so that packages do enter Error."""
    roll = rng.random()
    if roll < 0.55:
        return "container", _container_change(rng)
    if roll < 0.60:
        return "delete_container", (rng.choice(CONTAINERS),)
    if roll < 0.72:
        models = rng.sample(MODELS, rng.choice([1, 1, 2, 2, 0, 3]))
        return "package", (rng.choice(PACKAGES), ",".join(models))
    if roll < 0.75:
        return "delete_package", (rng.choice(PACKAGES),)
    if roll < 0.85:
        return "scenario", (rng.choice(SCENARIOS), rng.choice(PACKAGES))
    if roll < 0.88:
        return "delete_scenario", (rng.choice(SCENARIOS),)
    if roll < 0.92:
        return "model_spec", (rng.choice(MODELS),)
    key = rng.choice(
        [LAYOUT.containers + rng.choice(CONTAINERS), "Package/" + rng.choice(PACKAGES)]
    )
    return "bad_value", (key, rng.choice(["{not json", "[]", "kind: Package\n", ""]))


def _start(rng: random.Random) -> list[tuple[str, tuple[Any, ...]]]:
    """The fleet at time 0: every package with its models, containers for most models, a
    scenario per package, then a little churn."""
    steps: list[tuple[str, tuple[Any, ...]]] = []
    for package in PACKAGES:
        models = rng.sample(MODELS, rng.choice([1, 2]))
        steps.append(("package", (package, ",".join(models))))
    for i, scenario in enumerate(SCENARIOS):
        steps.append(("scenario", (scenario, PACKAGES[i % len(PACKAGES)])))
    for i, cid in enumerate(CONTAINERS):
        steps.append(("container", (cid, MODELS[i % len(MODELS)], "running", "0")))
    return steps + [_churn(rng) for _ in range(rng.randint(0, 4))]


# The fault kinds of the first generator, with its weights (a kind listed twice is drawn twice as
# often). Regression seeds replay schedules drawn from these alone (Mode.FIRST).
FIRST_FAULTS = [
    "lose_txn_response",
    "tamper",
    "compact",
    "outage",
    "break_watches",
    "silence_watches",
    "compact",
    "lose_txn_response",
    "refuse_txn",
    "expire_lease",
    "crash",
    "pause",
    "ac_down",
    "ac_refuse",
    "tamper",
]
# Faults added since: the member restarted (raft term up), restored from an older snapshot or
# wiped (revision back, term a new cluster's); right after the daemon's next state write, an
# outside delete or overwrite of a key it wrote, while its watches are blind and history is
# compacted (blind_tamper) or not (race_tamper), or etcd restored to the revision before it
# while its echo is lost (blind_restore); an outside write of a valid state (overwrite_state),
# or of a package in Error set back by hand (reset_error); a container change whose model
# state someone else writes at once, as the rules now give it (write_ahead);
# the leader's lease expiring while its transaction is on the way; the daemons' wall clock
# jumping; ActionController answering after the call's deadline; a prefix's watch lagging.
LATER_FAULTS = [
    "restart_etcd",
    "restore",
    "wipe",
    "blind_tamper",
    "race_tamper",
    "blind_restore",
    "overwrite_state",
    "expire_lease_in_txn",
    "clock_jump",
    "ac_slow",
    "lag_watches",
    "reset_error",
]
FAULTS = sorted(set(FIRST_FAULTS + LATER_FAULTS))
# Kinds added since swarm testing began, each enabled in a swarm seed by a draw of its own:
# a seed that leaves it out keeps the schedule it had, so the zoo's earlier findings stand.
# write_ahead: another writer ahead of the daemons (a deposed leader's last transaction, a
# second tool).
# The next transaction that writes a package's entry into Error (its state and its trigger)
# meets: every answer lost for 1 or 6 attempts (etcd applied it, the deadline passed first),
# maybe with its echo lost (a half-open watch connection, then a compaction), and someone
# else's write of that state before the next attempt (an operator, a second tool)
# (lose_error_write); the leader's next keep-alive renewing its lease unanswered (a timeout),
# and that state overwritten at once and again while the leader reads its place again (a
# tool insisting on its value) (keepalive_lost_then_reset); or a scenario
# retargeted to that package just before it lands while the scenarios' watch lags (a
# Scenario applied at that moment, its event caught up late) (retarget_before_error).
# mixed_catch_up: a half-open watch connection, then etcd catching the resumed
# stream's watches up one after another (the packages' last), while an operator moves a
# package to another model and the old model's containers die. replace_in_write: etcd
# restored or wiped while a state write is on its way (its daemon planned before, sent after:
# a pause between the two, or a request reaching the restored member). restore_unechoed: a
# state write's echo lost (a half-open watch connection), then etcd restored to just before
# it by a cluster at the term the daemons saw (restored before it ever changed leader).
# lose_new_error_write: an operator defines a package anew (its state deleted, its spec put)
# with a model whose containers have died, so its entry into Error is a transaction of its
# own guarded on the state being absent; that write lands with its answer lost (etcd applied
# it, the deadline passed first), and the operator deletes the state again before the retry.
# restore_in_lost_error_write: the next entry into Error lands with every answer and its echo
# lost (the deadline passing first, a half-open watch connection), someone else writes that
# state, and etcd is restored from a snapshot taken then (a member rebuilt from the newest
# snapshot: the history is replaced at the same revisions), all while the writer retries.
ADDED_FAULTS = [
    "write_ahead",
    "lose_error_write",
    "keepalive_lost_then_reset",
    "retarget_before_error",
    "mixed_catch_up",
    "replace_in_write",
    "restore_unechoed",
    "lose_new_error_write",
    "restore_in_lost_error_write",
]


class Mode(enum.Enum):
    """How a seed's schedule is drawn. FIRST: the first generator's faults at its weights (the
    regression seeds were found so, and replay so). UNIFORM: every fault kind, each as likely,
    at the first generator's density, and steps of every targeted kind. SWARM: each seed
    enables a random subset of the fault kinds and a higher, random density, so rare
    combinations occur (Groce et al., "Swarm Testing", ISSTA 2012); the CI profile's default.
    SWARM_FIRST: swarm testing over the kinds it began with, without ADDED_FAULTS (the swarm
    regression seeds were found so, and replay so). SWARM_ADDED: swarm testing without
    TARGETED_FAULTS (the soaks' seeds up to 9,119,999 were found so, and replay so)."""

    FIRST = "first"
    UNIFORM = "uniform"
    SWARM = "swarm"
    SWARM_FIRST = "swarm-first"
    SWARM_ADDED = "swarm-added"


def _fault(rng: random.Random, kinds: Sequence[str]) -> tuple[str, tuple[Any, ...]]:
    kind = rng.choice(kinds)
    if kind in ("outage", "ac_down"):
        return kind, (round(rng.uniform(0.5, 8.0), 2),)
    if kind == "pause":
        return kind, (rng.randrange(DAEMONS), round(rng.uniform(1.0, 2.5 * TTL), 2))
    if kind == "crash":
        return kind, (rng.randrange(DAEMONS), round(rng.uniform(0.0, 3.0), 2))
    if kind == "lose_txn_response":
        return kind, (rng.randint(1, 6),)
    if kind == "ac_refuse":
        return kind, (rng.randint(1, 4), rng.choice(["rejected", "error"]))
    if kind == "tamper":
        prefix = rng.choice([LAYOUT.model_states, LAYOUT.package_states])
        name = rng.choice(MODELS if prefix == LAYOUT.model_states else PACKAGES)
        return kind, (f"{prefix}{name}/state", rng.choice([*STATE_VALUES, None]))
    return kind, _later_fault_args(rng, kind)


def _later_fault_args(rng: random.Random, kind: str) -> tuple[Any, ...]:
    """The arguments of a fault of LATER_FAULTS or ADDED_FAULTS (none for the others)."""
    if kind in ADDED_FAULTS:
        return _added_fault_args(rng, kind)
    if kind in ("blind_tamper", "race_tamper"):
        return (rng.choice([None, None, *STATE_VALUES]),)
    if kind == "overwrite_state":
        model = rng.random() < 0.5
        name = rng.choice(MODELS if model else PACKAGES)
        key = f"{LAYOUT.model_states if model else LAYOUT.package_states}{name}/state"
        return (key, rng.choice([None, *(MODEL_VALUES if model else PACKAGE_VALUES)]))
    if kind == "reset_error":
        return (_not_error(rng),)
    if kind == "restore":
        return (round(rng.uniform(0.5, 10.0), 2),)
    if kind == "clock_jump":
        return (rng.choice([-1, 1]) * round(10 ** rng.uniform(0, 5), 1),)
    if kind == "ac_slow":
        return (rng.randint(1, 3),)
    if kind == "lag_watches":
        prefix = rng.choice(sorted(LAYOUT.watched().values()))
        return (prefix, round(rng.uniform(0.2, 4.0), 2))
    return ()


def _added_fault_args(rng: random.Random, kind: str) -> tuple[Any, ...]:
    """The arguments of a fault of ADDED_FAULTS."""
    if kind == "write_ahead":
        return _container_change(rng)
    if kind == "lose_error_write":
        value = _not_error(rng)
        return (rng.choice([1, 6]), rng.random() < 0.5, value)
    if kind == "keepalive_lost_then_reset":
        return (_not_error(rng),)
    if kind == "retarget_before_error":
        return (round(rng.uniform(0.5, 4.0), 2),)
    if kind == "mixed_catch_up":
        return (rng.choice(PACKAGES), rng.choice(MODELS), round(rng.uniform(4.0, 7.0), 2))
    if kind == "replace_in_write":
        return (rng.choice([None, round(rng.uniform(0.5, 10.0), 2)]),)
    if kind == "lose_new_error_write":
        return (rng.choice(PACKAGES), rng.choice(MODELS))
    if kind == "restore_in_lost_error_write":
        return (_not_error(rng),)
    return ()


# Kinds added after the soaks' seeds were found, drawn apart from the rest of a schedule (a
# generator of their own, each kind enabled in a swarm seed by a draw of its own): a seed that
# leaves them out runs the very schedule it ran before, and Mode.SWARM_ADDED, which leaves them
# all out, runs every seed's. restore_then_tamper: etcd restored
# from the snapshot taken right after the newest entry into Error (a member rebuilt from it),
# and someone else at once changes that package's state the restore put back (an operator
# resetting what the restore brought back) before any daemon has relisted.
TARGETED_FAULTS = ["restore_then_tamper"]


def _targeted(seed: int, every: bool) -> list[Step]:
    """The steps of TARGETED_FAULTS in `seed`'s schedule: of every kind (uniform mode), or of
    those its draws enable (swarm mode)."""
    rng = random.Random(f"{seed}/targeted")
    steps = []
    for kind in TARGETED_FAULTS:
        if not every and random.Random(f"{seed}/{kind}").random() >= 0.5:
            continue
        for _ in range(rng.randint(1, 3)):
            steps.append(Step(round(rng.uniform(0.5, FAULT_SECONDS), 2), kind, (_not_error(rng),)))
    return steps


def _not_error(rng: random.Random) -> str | None:
    """A package state other than Error, or None (the state deleted)."""
    return rng.choice([None, *(v for v in PACKAGE_VALUES if v != "Error")])


def _node_lists(rng: random.Random) -> list[Step]:
    """Container lists sent by the nodes (each its own containers, `n0c0`…), at random times:
    some of the node's containers, each in a random state; an empty list removes them all."""
    steps = []
    for _ in range(rng.randint(0, 6)):
        node = rng.choice(NODES)
        listed = []
        for j in rng.sample(range(2), rng.randint(0, 2)):
            status = rng.choice(STATUSES)
            code = rng.choice(["0", "137"]) if status == "exited" else "0"
            listed.append(f"{node}c{j}:{rng.choice(MODELS)}:{status}:{code}")
        steps.append(Step(round(rng.uniform(0.5, FAULT_SECONDS), 2), "node_list", (node, *listed)))
    return steps


# What the platform's callers send for a scenario (current, target), as they believe it is:
# the ApiServer's reset when a Scenario is applied, FilterGateway's steps, PolicyManager's
# decision through FilterGateway, ActionController's completion.
SCENARIO_CALLS = [
    ("", "idle"),
    ("idle", "waiting"),
    ("waiting", "satisfied"),
    ("satisfied", "allowed"),
    ("satisfied", "denied"),
    ("allowed", "completed"),
]


def _scenario_changes(rng: random.Random) -> list[Step]:
    """Scenario state changes from the platform's callers, each sent once to the one daemon
    its caller is configured with (leader or not), at random times; mostly the lifecycle's
    next step, sometimes a stale or repeated one."""
    steps = []
    at = 0.5
    for _ in range(rng.randint(0, 10)):
        at = round(min(FAULT_SECONDS, at + rng.uniform(0.1, 2.0)), 2)
        current, target = rng.choice(SCENARIO_CALLS)
        steps.append(
            Step(
                at,
                "scenario_change",
                (rng.choice(SCENARIOS), current, target, rng.randrange(DAEMONS)),
            )
        )
    return steps


def make_schedule(seed: int, mode: Mode = Mode.FIRST) -> list[Step]:
    """The whole schedule of `seed`: every random choice of a run is made here. The nodes'
    lists and the scenario changes come from generators of their own, so adding them left
    every earlier seed's steps as they were (the regression seeds still replay the schedules
    that found their bugs, in Mode.FIRST)."""
    rng = random.Random(seed)
    steps = [Step(0.0, *step) for step in _start(rng)]
    kinds, share, count = FIRST_FAULTS, 0.5, rng.randint(6, 20)
    if mode is not Mode.FIRST:
        swarm = random.Random(f"{seed}/swarm")  # the FIRST draws above stay as they were
        kinds = [*FAULTS, *ADDED_FAULTS]
        if mode in (Mode.SWARM, Mode.SWARM_FIRST, Mode.SWARM_ADDED):
            kinds = [k for k in FAULTS if swarm.random() < 0.5] or [swarm.choice(FAULTS)]
            share, count = swarm.uniform(0.4, 0.8), swarm.randint(10, 30)
        if mode in (Mode.SWARM, Mode.SWARM_ADDED):
            kinds += [k for k in ADDED_FAULTS if random.Random(f"{seed}/{k}").random() < 0.5]
    times = sorted(round(rng.uniform(0.5, FAULT_SECONDS), 2) for _ in range(count))
    for at in times:
        steps.append(Step(at, *(_fault(rng, kinds) if rng.random() < share else _churn(rng))))
    steps += _node_lists(random.Random(f"{seed}/nodes"))
    if mode in (Mode.SWARM, Mode.UNIFORM):
        steps += _targeted(seed, every=mode is Mode.UNIFORM)
    steps += _scenario_changes(random.Random(f"{seed}/scenarios"))
    return sorted(steps, key=lambda s: s.at)


# -- the pieces around the daemons ----------------------------------------------------------


class ScriptedActionController:
    """Answers Reconcile as told; records each acknowledged call with etcd's revision then."""

    def __init__(self, mem: MemEtcd) -> None:
        self._mem = mem
        self.down = False
        self.refusals: list[str] = []
        self.slow = 0  # calls still to answer past their deadline
        self.acknowledged: list[tuple[str, int]] = []
        # Acknowledged calls of a history etcd no longer has (wiped or restored since): each
        # with etcd's revision then and the revision the replacement went back to (a call that
        # took effect after it: both are the revision below which the new history is still
        # the call's own, see _acted).
        self.replaced: list[tuple[str, int, int]] = []
        self._kept: list[int] = []  # each replacement's revision it went back to, in order

    async def reconcile(self, scenario: str, history: int | None = None) -> ReconcileOutcome:
        """`history`: the history (a count of replacements, as `MemEtcd.replaced`) the caller
        last heard of, when it has heard nothing of etcd's current one yet: the call may carry
        a trigger of that history (it cannot know of the replacement before its watches tell
        it), and counts as one of it."""
        # The history the call was sent in: one replaced while it is on its way (even within
        # the instant it was sent) leaves the call one of the old history's.
        history = self._mem.replaced if history is None else history
        await asyncio.sleep(0)
        if self.slow:
            # It acts, but only once the caller's deadline has passed: the caller sees
            # DEADLINE_EXCEEDED (and sends again) for a call that took effect.
            self.slow -= 1
            await asyncio.sleep(CALL_DEADLINE)
            self._acted(scenario, history)
            return ReconcileOutcome(False, False, "unavailable", "DEADLINE_EXCEEDED: slow")
        if self.down:
            return ReconcileOutcome(False, False, "unavailable", "UNAVAILABLE: down")
        if self.refusals:
            result = self.refusals.pop(0)
            return ReconcileOutcome(False, True, result, "INTERNAL: Invalid current status")
        self._acted(scenario, history)
        return ReconcileOutcome(True, False, "ok", "")

    def history_replaced(self, revision: int) -> None:
        """Etcd's history was just replaced by one that went back to `revision`: the calls
        acknowledged above it are of the history replaced."""
        self._kept.append(revision)
        acks = self.acknowledged
        self.replaced += [(name, at, revision) for name, at in acks if at > revision]
        acks[:] = [a for a in acks if a[1] <= revision]

    def _acted(self, scenario: str, history: int) -> None:
        """Record a call sent in `history` that took effect now."""
        if history == self._mem.replaced:
            self.acknowledged.append((scenario, self._mem.current_revision))
            return
        # It took effect after the replacements since, so after every record the new history
        # kept of the call's (those up to the lowest revision they went back to): a delivery
        # for a trigger among them, as one acknowledged just before would be (ActionController
        # acted after that trigger was put, and the sender rightly removes the record without
        # asking again; seed 5068714 in swarm mode: the call in flight as etcd was restored to
        # the revision just above its trigger). A trigger the new history put above that
        # revision is none of the call's.
        kept = min(self._kept[history:])
        self.replaced.append((scenario, kept, kept))


class Spinning(BaseException):
    """A daemon sent MAX_REQUESTS_PER_INSTANT etcd requests without virtual time passing. Not
    an Exception: no handler of the daemon's may swallow it, and the task it ends is reported
    (the invariant that no task ends but by its stop)."""


class Link:
    """One daemon's connection to etcd: holds its requests while the daemon is paused, ends a
    task that sends requests without ever letting time pass, tells the simulation of each
    transaction and watch just before etcd takes it (a fault may strike then), and checks
    the atomic cascade right after each transaction it commits."""

    def __init__(
        self,
        mem: MemEtcd,
        after_txn: Callable[[Link], None],
        before: Callable[[Link, Sequence[Put | Delete], Collection[str]], None],
    ) -> None:
        self._mem = mem
        self._after_txn = after_txn
        self._before = before  # told of each transaction's ops, or a watch's prefixes
        self.resumed = asyncio.Event()
        self.resumed.set()
        self.endpoint = mem.endpoint
        self._instant = -1.0  # the virtual time of the last request
        self.held = 0  # requests held by a pause, resumed or not, that have not gone on yet
        self._burst = 0  # requests sent at that time
        # The highest raft term a stream of the daemon's state watcher (the one that checks
        # terms) has handed it since etcd's history was last replaced.
        self.term_told = 0

    async def _gate(self) -> None:
        now = asyncio.get_running_loop().time()
        if now != self._instant:
            self._instant, self._burst = now, 0
        self._burst += 1
        if self._burst > MAX_REQUESTS_PER_INSTANT:
            raise Spinning(f"{self._burst - 1} etcd requests without virtual time passing")
        if self.resumed.is_set():
            return
        self.held += 1
        try:
            await self.resumed.wait()
        finally:
            self.held -= 1

    async def txn(
        self, guards: Sequence[Guard], ops: Sequence[Put | Delete], fence: Fence | None = None
    ) -> TxnResult:
        await self._gate()
        self._before(self, ops, ())
        try:
            return await self._mem.txn(guards, ops, fence)
        finally:
            self._after_txn(self)

    async def watch(
        self,
        starts: Mapping[str, int],
        progress_every: float,
        together: Sequence[Sequence[str]] = (),
    ) -> AsyncGenerator[WatchBatch, None]:
        await self._gate()
        self._before(self, (), starts.keys())
        watcher = set(LAYOUT.watched().values()) <= set(starts)
        stream = self._mem.watch(starts, progress_every, together)
        try:
            async for batch in stream:
                await self._gate()
                if watcher:
                    self.term_told = max(self.term_told, batch.header.raft_term)
                yield batch
        finally:
            await stream.aclose()

    async def pages(
        self, prefixes: Sequence[str], page_size: int = 1000
    ) -> AsyncGenerator[Page, None]:
        listing = self._mem.pages(prefixes, page_size)
        try:
            while True:
                await self._gate()  # each page is a read, held like any other request
                page = await anext(listing, None)
                if page is None:
                    return
                yield page
        finally:
            await listing.aclose()

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._mem, name)
        if not asyncio.iscoroutinefunction(target):
            return target

        async def gated(*args: Any, **kwargs: Any) -> Any:
            await self._gate()
            return await target(*args, **kwargs)

        return gated


@functools.cache
def _metrics() -> Metrics:
    """One set of metrics for every daemon of every run: the simulation reads none, and a
    registry costs more to build than a short run takes."""
    return Metrics()


class Caller:
    """ActionController as one daemon reaches it: tells it the history the daemon last heard
    of while it has heard nothing of etcd's current one yet."""

    def __init__(self, actioncontroller: ScriptedActionController, daemon: Daemon) -> None:
        self._actioncontroller = actioncontroller
        self._daemon = daemon

    async def reconcile(self, scenario: str) -> ReconcileOutcome:
        # Not listed since the replacement, and no watch response of the new history handed
        # to its watcher (paused, reconnecting): it cannot know the history it acts on is gone.
        # One that has heard from the new history (which may not tell it anything changed: a
        # restore at the same term) is judged by it.
        daemon = self._daemon
        heard = daemon.heard_current()
        return await self._actioncontroller.reconcile(scenario, None if heard else daemon.history)


class Daemon:
    """One daemon's runtime (tests/support/runtime.py) behind its own `Link`."""

    def __init__(self, sim: Simulation, node: str) -> None:
        self.link = Link(sim.mem, sim.after_txn, sim.before_request)
        self.runtime = Runtime(
            self.link,  # type: ignore[arg-type]
            node,
            TTL,
            actioncontroller=Caller(sim.actioncontroller, self),
            metrics=_metrics(),
            clock=Clock(asyncio.get_running_loop()),
        )
        writer = self.runtime.parts.controller._writer
        commit = writer.commit

        async def reported(*args: Any, **kwargs: Any) -> list[Transition] | None:
            replaced = sim.mem.replaced
            transitions = await commit(*args, **kwargs)
            if sim.mem.replaced == replaced:  # else it may be of the history replaced
                sim.committed += transitions or []
            return transitions

        writer.commit = reported  # type: ignore[method-assign]
        self.started = asyncio.create_task(self.runtime.__aenter__())
        # The listings it must have made before its index is of etcd's current history (one
        # more than it had made when that history replaced the one it followed).
        self.listings_needed = 0
        # The newest history (a count of replacements) it had heard of when etcd's was last
        # replaced: the one its calls are of until it hears of the current one.
        self.history = sim.mem.replaced

    def heard_current(self) -> bool:
        """Whether it has heard of etcd's current history: listed it, or had a watch response
        of it handed to its state watcher."""
        return self.runtime.listings >= self.listings_needed or bool(self.link.term_told)

    def ended(self) -> list[str]:
        return [
            f"{t.get_name()}: {t.exception() if not t.cancelled() else 'cancelled'!r}"
            for t in self.runtime._tasks
            if t.done()
        ]

    async def stop(self) -> None:
        """Stop as a crash does; a task that had ended already is reported by the caller."""
        self.link.resumed.set()
        await self.started
        for task in self.runtime._tasks:
            task.cancel()
        await asyncio.gather(*self.runtime._tasks, return_exceptions=True)


# -- the run --------------------------------------------------------------------------------


def _store(mem: MemEtcd, revision: int = 0) -> dict[str, bytes]:
    return {
        r.key.decode(): r.value for r in mem.range_now(b"\x00", b"\x00", revision=revision).records
    }


def _container(cid: str, model: str, status: str, code: str) -> bytes:
    doc = {
        "id": cid,
        "names": [f"{model}_{cid}"],
        "state": {"Status": status, "ExitCode": code, "OOMKilled": "false"},
        "annotation": {oracle.MODEL_ANNOTATION: model},
    }
    return json.dumps(doc).encode()


class Simulation:
    def __init__(self, schedule: list[Step], trace: Callable[[str], None], wall: Wall) -> None:
        self.schedule = schedule
        self.trace = trace
        self.wall = wall
        self.mem = MemEtcd()
        self.actioncontroller = ScriptedActionController(self.mem)
        self.daemons: list[Daemon | None] = []
        self.failures: list[str] = []
        # Packages whose inputs or state keys the simulation changed, with the prefix and
        # revision of each change, until they agree with the oracle and every daemon's index
        # has followed those prefixes past those revisions: until then a daemon may plan with
        # the old view, and the cascade is not judged for them.
        self.disturbed: dict[str, dict[str, int]] = {}
        self.error_entries: dict[str, list[int]] = {}  # package → revisions it entered Error
        self._derived: dict[str, str] = {}
        self._down_since: float | None = None
        self._down_requests = 0
        self._timers: list[asyncio.TimerHandle] = []
        self._stopping: list[asyncio.Task[None]] = []
        self._lists: list[asyncio.Task[None]] = []
        self._node_sends: dict[str, asyncio.Task[None]] = {}
        self._scenario_sends: dict[str, asyncio.Task[None]] = {}
        # Per scenario: the targets of changes answered SUCCESS (stored), in answer order, and
        # its state key's values in commit order (None: deleted), each with whether a write
        # made it (True) or a replaced history (False: etcd restored or wiped), and the
        # revision (the write's; the one the history went back to).
        self.scenario_accepted: dict[str, list[str]] = {}
        self.scenario_written: dict[str, list[tuple[str | None, bool, int]]] = {}
        self._snapshots: list[tuple[float, StoreSnapshot]] = []  # one per step, to restore
        # Right after each entry into Error committed: its package's state key, and the store.
        self._error_snapshots: list[tuple[str, StoreSnapshot]] = []
        # What happens right after the next committed state write: (fault, value) each.
        self._after_write: list[tuple[str, str | None]] = []
        # What meets the next transaction that writes a package's entry into Error.
        self._at_error_write: list[Callable[[str], None]] = []
        # What happens as the next state write reaches etcd: a restore from a snapshot this
        # many seconds old, or a wipe (None), each.
        self._in_write: list[float | None] = []
        # restore_unechoed: how many wait for the next committed state write, and the
        # revisions of the writes whose echo they took, until the restore below them.
        self._unechoed_armed = 0
        self._unechoed_writes: list[int] = []
        # Revisions of transactions committed after a replacement of etcd's history and
        # before every running daemon had listed the new one: planned, maybe, on the old.
        self._unlisted_writes: set[int] = set()
        self._planned_unlisted: set[int] = set()  # of those, its daemon's own had not listed
        self._judged = 0  # transactions in etcd's log judged by after_txn
        # Transitions the writers reported committed, and where etcd's log of transactions
        # begins for the current history (a restore reuses revisions, a wipe generations).
        self.committed: list[Transition] = []
        self._log_from = 0
        # Each replacement of etcd's history: the length of the txn log then, and the revision
        # it went back to (the log's records before it above that revision are of no history).
        self._replacements: list[tuple[int, int]] = []
        self._committed_from = 0
        self._replaced_at = -REPLACE_AFTER  # loop time of the last replacement of history

    def fail(self, what: str) -> None:
        line = f"INVARIANT {what}"
        if line not in self.failures:
            self.failures.append(line)
            self.trace(line)

    # -- inputs, as the fleet and operators change them

    def _input_changed(self, revision: int) -> None:
        """Track entries into Error by the rules (for the trigger invariant)."""
        derived = oracle.derive(_store(self.mem))
        for key, value in derived.items():
            entering = value == "Error" and self._derived.get(key) != "Error"
            if entering and key.startswith(oracle.PACKAGE_STATES):
                name = key[len(oracle.PACKAGE_STATES) : -len("/state")]
                self.error_entries.setdefault(name, []).append(revision)
        self._derived = derived

    def _put(self, key: str, value: bytes) -> int:
        return self.mem.put_now(key.encode(), value)

    def apply(self, step: Step) -> None:
        self.trace(str(step))
        if not self.mem._down:
            self._snapshots.append((step.at, self.mem.snapshot_now()))
        unaffected = ("ac_down", "ac_refuse", "ac_slow", "crash", "pause", "node_list")
        unaffected += ("clock_jump",)
        if self.mem._down and step.action not in unaffected:
            self.trace("  (etcd is down: skipped)")
            return
        getattr(self, f"_do_{step.action}")(*step.args)

    def _do_container(self, cid: str, model: str, status: str, code: str) -> None:
        self._input_changed(
            self._put(LAYOUT.containers + cid, _container(cid, model, status, code))
        )

    def _do_delete_container(self, cid: str) -> None:
        self._input_changed(self.mem.delete_now((LAYOUT.containers + cid).encode()))

    def _do_package(self, name: str, models: str) -> None:
        items = "".join(f"\n    - {{name: {m}, node: node-a}}" for m in models.split(",") if m)
        doc = f"kind: Package\nmetadata: {{name: {name}}}\nspec:\n  models:{items or ' []'}\n"
        self._input_changed(self._disturb([name], LAYOUT.packages + name, doc.encode()))

    def _do_delete_package(self, name: str) -> None:
        self._input_changed(self._disturb([name], LAYOUT.packages + name, None))

    def _do_scenario(self, name: str, target: str) -> None:
        doc = f"kind: Scenario\nmetadata: {{name: {name}}}\nspec: {{action: update, target: {target}}}\n"
        self._put(LAYOUT.scenarios + name, doc.encode())

    def _do_delete_scenario(self, name: str) -> None:
        self.mem.delete_now((LAYOUT.scenarios + name).encode())

    def _do_model_spec(self, name: str) -> None:
        doc = f"kind: Model\nmetadata: {{name: {name}}}\nspec:\n  containers: [{{name: app, image: x}}]\n"
        self._put(LAYOUT.models + name, doc.encode())

    def _do_node_list(self, node: str, *listed: str) -> None:
        """The node's agent sends its whole list once, to the one daemon it is configured
        with (leader or not), after its previous send ended, and never again: a refused or
        unsent list is lost until the node's next change (NodeAgent's behaviour)."""
        target = self.daemons[NODES.index(node) % len(self.daemons)]
        if target is None:
            self.trace("  (its daemon is down: the list is lost)")
            return
        containers = []
        for entry in listed:
            cid, model, status, code = entry.split(":")
            containers.append((cid, model, status, code))
        request = container_list(node, containers)
        service = target.runtime.parts.service
        self._in_turn(self._node_sends, node, lambda: self._send(service, request), "a list")

    def _do_scenario_change(self, name: str, current: str, target: str, index: int) -> None:
        """A caller sends one scenario change, once, to its daemon; changes of one scenario go
        out one after another (each caller acts on the step before)."""
        target_daemon = self.daemons[index]
        if target_daemon is None:
            self.trace("  (its daemon is down: the change is lost)")
            return
        request = pb.StateChange(
            resource_type=pb.ResourceType.SCENARIO,
            resource_name=name,
            current_state=current,
            target_state=target,
            transition_id=f"sim-{len(self._lists)}",
            timestamp_ns=1,
            source="filtergateway",
        )
        service = target_daemon.runtime.parts.service
        self._in_turn(
            self._scenario_sends, name, lambda: self._send_change(service, request), "a change"
        )

    def _in_turn(
        self,
        sends: dict[str, asyncio.Task[None]],
        caller: str,
        call: Callable[[], Awaitable[None]],
        what: str,
    ) -> None:
        """Run `call` once `caller`'s previous send (in `sends`) has ended: a caller sends one
        thing at a time. An escape from the service breaks the invariant (it answers)."""
        before = sends.get(caller)

        async def send() -> None:
            if before is not None:
                await asyncio.wait([before])
            try:
                await call()
            except Exception as exc:
                self.fail(f"service: {what} raised {exc!r}")

        sends[caller] = asyncio.create_task(send())
        self._lists.append(sends[caller])

    async def _send_change(self, svc: StateService, request: pb.StateChange) -> None:
        answer = await svc.SendStateChange(request, Context())  # type: ignore[arg-type]
        code = pb.ErrorCode.Name(answer.error_code)
        self.trace(f"  {request.resource_name} {request.target_state}: {code}")
        if answer.error_code == pb.ErrorCode.SUCCESS and "already" not in answer.message:
            self.scenario_accepted.setdefault(request.resource_name, []).append(
                request.target_state.capitalize()
            )

    async def _send(self, svc: StateService, request: pb.ContainerList) -> None:
        try:
            await send_list(svc, request)
        except Aborted as refused:  # an answer: the node sends again on its next change only
            self.trace(f"  list of {request.node_name} refused: {refused}")

    def _do_bad_value(self, key: str, value: str) -> None:
        if key.startswith(LAYOUT.packages):
            revision = self._disturb([key[len(LAYOUT.packages) :]], key, value.encode())
        else:
            revision = self._put(key, value.encode())
        self._input_changed(revision)

    # -- faults

    def _later(self, delay: float, action: Callable[[], None]) -> None:
        self._timers.append(asyncio.get_running_loop().call_later(delay, action))

    def _do_outage(self, seconds: float) -> None:
        self.mem.outage()
        self._down_since, self._down_requests = asyncio.get_running_loop().time(), self.mem.requests
        self._later(seconds, self._restore)

    def _restore(self) -> None:
        if self._down_since is not None:
            self._judge_busy()
        self.mem.restore()
        self._down_since = None

    def _judge_busy(self) -> None:
        assert self._down_since is not None
        seconds = asyncio.get_running_loop().time() - self._down_since
        requests = self.mem.requests - self._down_requests
        if seconds >= 1.0 and requests > MAX_REQUESTS_PER_SECOND * seconds:
            self.fail(f"busy loop: {requests} etcd requests in {seconds:.1f}s of outage")

    def _do_break_watches(self) -> None:
        self.mem.break_watches()

    def _do_silence_watches(self) -> None:
        self.mem.silence_watches()

    def _do_compact(self) -> None:
        if self.mem.current_revision > self.mem.compacted_revision:
            self.mem.compact(self.mem.current_revision)

    def _do_lose_txn_response(self, count: int) -> None:
        self.mem.lose_next_txn_response(count)

    def _do_refuse_txn(self) -> None:
        self.mem.refuse_next_txn()

    def _do_expire_lease(self) -> None:
        lease = self._leader_lease()
        if lease is not None:
            self.mem.revoke_now(lease)

    def _leader_lease(self) -> int | None:
        """The lease of the leader's key (None: no daemon leads)."""
        leader = self.mem.range_now(
            f"{LAYOUT.own}leader/".encode(), prefix_end(f"{LAYOUT.own}leader/".encode())
        ).records
        return min(leader, key=lambda r: r.create_revision).lease if leader else None

    def _do_crash(self, index: int, restart_after: float) -> None:
        daemon = self.daemons[index]
        if daemon is None:
            return
        self.daemons[index] = None
        self._stop(daemon)
        self._later(restart_after, lambda: self._start(index))

    def _stop(self, daemon: Daemon) -> None:
        self._check_tasks()
        self._stopping.append(asyncio.create_task(daemon.stop()))

    def _start(self, index: int) -> None:
        if self.daemons[index] is None:
            self.daemons[index] = Daemon(self, f"node-{index}")

    def _do_pause(self, index: int, seconds: float) -> None:
        daemon = self.daemons[index]
        if daemon is not None:
            daemon.link.resumed.clear()
            self._later(seconds, daemon.link.resumed.set)

    def _do_ac_down(self, seconds: float) -> None:
        self.actioncontroller.down = True
        self._later(seconds, lambda: setattr(self.actioncontroller, "down", False))

    def _do_ac_refuse(self, count: int, result: str) -> None:
        self.actioncontroller.refusals += [result] * count

    def _do_tamper(self, key: str, value: str | None) -> None:
        self._disturb(PACKAGES, key, None if value is None else value.encode())

    def _do_ac_slow(self, count: int) -> None:
        self.actioncontroller.slow += count

    def _do_clock_jump(self, seconds: float) -> None:
        """The daemons' wall clock jumps (an NTP step, a wrong RTC); their monotonic and the
        loop's clocks go on."""
        self.wall.offset += seconds

    def _do_lag_watches(self, prefix: str, seconds: float) -> None:
        self.mem.lag_watches(prefix)
        self._later(seconds, lambda: self.mem.lag_watches(prefix, False))

    def _do_expire_lease_in_txn(self) -> None:
        """The leader's lease expires while its next transaction is on the way to etcd."""
        self.mem.before_next_txn(self._do_expire_lease)

    def _do_restart_etcd(self) -> None:
        if self._settled_since_replaced():
            self.mem.restart()

    def _settled_since_replaced(self) -> bool:
        """Whether the last replacement of etcd's history is REPLACE_AFTER seconds old: every
        daemon has reconnected to the new history since. A restart before that, with a
        daemon still away, would bring the term back up to what it saw before, and the
        replacement (revision outgrown meanwhile) would not show to it at all: a limit of
        what etcd's headers tell, which the simulation does not make (traced when skipped)."""
        settled = asyncio.get_running_loop().time() - self._replaced_at >= REPLACE_AFTER
        if not settled:
            self.trace("  (skipped: the history was replaced less than 8 s ago)")
        return settled

    def _do_restore(self, back: float) -> None:
        """etcd restored from the newest snapshot at least `back` seconds old (wiped when
        there is none)."""
        now = self._snapshots[-1][0] if self._snapshots else 0.0
        older = [snap for at, snap in self._snapshots if at <= now - back]
        self._replace_visibly(older[-1] if older else None, True)

    def _do_restore_then_tamper(self, value: str | None) -> None:
        """etcd restored from the snapshot taken right after the newest entry into Error, when
        anything was written since; then at once `value` (None: deleted) put in that package's
        state, before any daemon relists. Dropped when the restore waits for a restart."""
        newer = [s for s in self._error_snapshots if s[1].revision < self.mem.current_revision]
        if not newer:
            self.trace("  (skipped: no entry into Error to go back to)")
            return
        key, snapshot = newer[-1]
        replaced = self.mem.replaced
        self._replace_visibly(snapshot, True)
        if self.mem.replaced == replaced:
            self.trace("  (tamper dropped: the history was not replaced now)")
            return
        self.trace(f"  tamper {key} = {value}")
        self._disturb(PACKAGES, key, None if value is None else value.encode())

    def _do_wipe(self) -> None:
        self._replace_visibly(None, True)

    def _replace_visibly(self, snapshot: StoreSnapshot | None, first: bool) -> None:
        """Replace etcd's history as the daemon can tell (runtime/watcher.py): a replaced
        history that has grown past the daemon's revision before it reconnects shows only by
        the raft term going back, so the member must have run at a term above a new cluster's
        since its last replacement (each run starts at such a term: a cluster that has run has
        been restarted). A second wipe or restore before the member restarted again is
        invisible to a daemon, and the simulation does not make one: the member restarts
        first (see `_settled_since_replaced`) and the history is replaced REPLACE_AFTER seconds
        later (longer than a pause and a reconnection's backoff), unless another replacement
        came first. The raised term must also have been seen (`_raised_term_seen`): a restart
        just before, while a daemon was away, tells that daemon nothing."""
        if self._raised_term_seen():
            self._replace(snapshot)
        elif not first:
            self.trace("  (replacement dropped: a daemon has not seen the member's raised term)")
        elif self._settled_since_replaced():
            self.mem.restart()
            self.trace(
                f"  (the member restarts first; the history is replaced in {REPLACE_AFTER:g} s)"
            )
            replaced = self.mem.replaced
            self._later(
                REPLACE_AFTER,
                lambda: (
                    self._replace_visibly(snapshot, False)
                    if self.mem.replaced == replaced
                    else None
                ),
            )

    def _raised_term_seen(self) -> bool:
        """Whether the member runs at a raft term above a new cluster's and every running
        daemon's state watcher has been handed such a term since the history was last
        replaced: only then does a replacement's term going back show to each of them. A
        daemon whose watches were away when the member restarted (backing off after an outage,
        silent, paused) and come back after the replacement finds the term it saw before; once
        the new history has grown to its revision (its own retried write, another daemon's
        campaign), etcd's headers say nothing changed (README, "Simulation": what no daemon
        can see). Judged by what the links delivered, never by the daemon's own records: a
        daemon that lost count of terms must not keep the faults that find it away."""
        return self.mem.current_term > RAFT_TERM and all(
            daemon.link.term_told > RAFT_TERM for daemon in self.daemons if daemon is not None
        )

    def _replace(self, snapshot: StoreSnapshot | None, keep_term: bool = False) -> None:
        """Replace etcd's history, and judge what follows against the new one: entries into
        Error and deliveries of the replaced history are set aside, and every package counts
        as disturbed until each running daemon has listed the new history."""
        for daemon in self.daemons:
            if daemon is not None and daemon.heard_current():
                daemon.history = self.mem.replaced
        self.mem.replace_history(snapshot, keep_term)
        for daemon in self.daemons:
            if daemon is not None:
                daemon.link.term_told = 0  # what it was told of the history replaced
        self._log_from = len(self.mem.txn_log)
        self._replacements.append((self._log_from, revision_back_to(snapshot)))
        self._committed_from = len(self.committed)
        self._replaced_at = asyncio.get_running_loop().time()
        revision = self.mem.current_revision
        for name in SCENARIOS:  # what a restore keeps of a scenario's state is its new past
            now = self.mem._at(LAYOUT.key_of(Kind.SCENARIO_STATE, name).encode(), revision)
            entry = (now.value.decode() if now else None, False, revision)
            self.scenario_written.setdefault(name, []).append(entry)
        self.trace(f"  history replaced: revision {revision}")
        self._snapshots = [(at, s) for at, s in self._snapshots if s.revision <= revision]
        self._error_snapshots = [(k, s) for k, s in self._error_snapshots if s.revision <= revision]
        for package, entries in self.error_entries.items():
            self.error_entries[package] = [r for r in entries if r <= revision]
        self.actioncontroller.history_replaced(revision)
        self._derived = {}
        self._input_changed(revision)
        for daemon in self.daemons:
            if daemon is not None:
                daemon.listings_needed = daemon.runtime.listings + 1
        for name in PACKAGES:
            marks = self.disturbed.setdefault(name, {})
            marks.update(dict.fromkeys(LAYOUT.watched().values(), revision))

    def _do_blind_tamper(self, value: str | None) -> None:
        """Right after the next committed state write, the watches go silent (its echo is
        lost), someone else deletes or overwrites a key it wrote, and history is compacted:
        the daemons learn of it only by relisting."""
        self._after_write.append(("blind_tamper", value))

    def _do_race_tamper(self, value: str | None) -> None:
        """Right after the next committed state write, someone else deletes or overwrites a
        key it wrote (its echo and the outside write arrive one after the other)."""
        self._after_write.append(("race_tamper", value))

    def _do_blind_restore(self) -> None:
        """Right after the next committed state write, the watches go silent (its echo is
        lost) and etcd is restored to the revision before it."""
        self._after_write.append(("blind_restore", None))

    def _do_overwrite_state(self, key: str, value: str | None) -> None:
        self._do_tamper(key, value)

    def _do_write_ahead(self, cid: str, model: str, status: str, code: str) -> None:
        """A container changes, and at once someone else writes its model's state as the
        rules now give it (another writer ahead of the daemons: a deposed leader's last
        transaction landing, a second tool): the daemons find the model agreeing, and must
        still re-derive what depends on it."""
        self._do_container(cid, model, status, code)
        store = _store(self.mem)
        key = f"{LAYOUT.model_states}{model}/state"
        derived = oracle.derive(store).get(key)
        if derived is not None and store.get(key) != derived.encode():
            self._do_tamper(key, derived)

    def _do_reset_error(self, value: str | None) -> None:
        """Someone sets a package that etcd holds in Error to `value` (deletes its state with
        None), as an operator resetting it by hand would: the rules still give Error, so
        putting it back is a correction, never a new entry into Error."""
        store = _store(self.mem)
        erring = [
            key
            for key in sorted(oracle.state_keys(store))
            if key.startswith(LAYOUT.package_states) and store[key] == b"Error"
        ]
        if erring:
            self._do_tamper(erring[0], value)

    def _do_lose_error_write(self, lost: int, silent: bool, value: str | None) -> None:
        """The next Error write lands but its caller hears nothing for `lost` attempts, its
        echo lost too when `silent` (the watches go quiet, and history is compacted once the
        state is overwritten); someone else writes that state (`value`, None: deletes it)
        before the next transaction applies."""

        def strike(key: str) -> None:
            self.mem.lose_next_txn_response(lost)
            if silent:
                self.mem.silence_watches()
            self.mem.before_next_txn(lambda: None)  # this one applies as sent
            self.mem.before_next_txn(lambda: self._overwrite(key, value, silent))

        self._at_error_write.append(strike)

    def _do_restore_in_lost_error_write(self, value: str | None) -> None:
        """Just before the next Error write applies, etcd is restored from a snapshot of that
        moment (the history replaced at the same revisions: its watchers learn of it by the raft
        term only, and forget what they knew of the old history); the write lands on the new
        history, unanswered through every attempt and unechoed, and someone writes `value` to
        that state (None: deletes it) before the second attempt."""

        def strike(key: str) -> None:
            self.trace(f"  etcd restored as {key}'s Error write lands unanswered")
            self.mem.lose_next_txn_response(6)
            self.mem.silence_watches()
            self.mem.before_next_txn(lambda: self._replace_visibly(self.mem.snapshot_now(), True))
            self.mem.before_next_txn(lambda: self._overwrite(key, value, False))

        self._at_error_write.append(strike)

    def _do_lose_new_error_write(self, package: str, model: str) -> None:
        """`package` is defined anew with `model` alone, its state deleted, once `model` is
        Failed in etcd (at once, or after its container dies and 2 s pass): its entry into
        Error is then a transaction of its own guarded on the state being absent. That write
        lands unanswered, and the state is deleted again before the retry (whose guard on
        "absent" passes a second time: an ABA)."""
        state = f"{LAYOUT.model_states}{model}/state"
        if _store(self.mem).get(state) == b"Failed":
            self._define_failing(package, model)
            return
        self._do_container(CONTAINERS[MODELS.index(model)], model, "dead", "0")
        self._later(2.0, lambda: self._define_failing(package, model))

    def _define_failing(self, package: str, model: str) -> None:
        store = _store(self.mem)
        key = LAYOUT.packages + package
        state = f"{LAYOUT.package_states}{package}/state"
        failed = store.get(f"{LAYOUT.model_states}{model}/state") == b"Failed"
        if self.mem._down or not failed or store.get(state) == b"Error":
            return
        if key in store and oracle.package_models(key, store[key]) == [model]:
            return
        self._overwrite(state, None, False)
        self._do_package(package, model)
        self._do_lose_error_write(1, False, None)

    def _do_keepalive_lost_then_reset(self, value: str | None) -> None:
        """After the next Error write, the leader's next keep-alive renews its lease but its
        answer is lost (the leader stops leading, then reads its place again: the same leader
        key); at once, and again 0.05 s later (the leader, still holding its last fence, may
        have put Error back meanwhile), someone sets that package to `value` (None: deletes
        its state) if it holds Error."""

        def strike(key: str) -> None:
            lease = self._leader_lease()
            overwrite = functools.partial(self._overwrite, key, value, False, b"Error")
            if lease is not None:
                self.mem.lose_next_keep_alive(
                    lease, lambda: (overwrite(), self._later(0.05, overwrite))
                )

        self._at_error_write.append(strike)

    def _do_retarget_before_error(self, seconds: float) -> None:
        """Just before the next Error write applies, a scenario of another package (or none)
        is retargeted to it, while the scenarios' watches lag for `seconds`."""

        def strike(key: str) -> None:
            package = key[len(LAYOUT.package_states) : -len("/state")]
            store = _store(self.mem)
            others = [
                name
                for name in SCENARIOS
                if oracle.scenario_target(
                    LAYOUT.scenarios + name, store.get(LAYOUT.scenarios + name, b"")
                )
                != package
            ]
            if others and not self.mem._down:
                self._do_lag_watches(LAYOUT.scenarios, seconds)
                self._do_scenario(others[0], package)

        self._at_error_write.append(strike)

    def _overwrite(
        self, key: str, value: str | None, compact: bool, only: bytes | None = None
    ) -> None:
        """Someone else writes `value` to the state `key` (deletes it with None), if etcd is up
        and `key` holds `only` (any value when None); then compacts history if `compact`."""
        if self.mem._down or (only is not None and _store(self.mem).get(key) != only):
            return
        self._disturb(PACKAGES, key, None if value is None else value.encode())
        if compact:
            self._do_compact()

    def _meet_error_write(self, ops: Sequence[Put | Delete]) -> None:
        """Just before a daemon's transaction goes to etcd: when it writes a package's entry
        into Error (its state and its trigger record), the fault waiting for one strikes."""
        if not self._at_error_write or not any(op.key.startswith(TRIGGERS.encode()) for op in ops):
            return
        for op in ops:
            key = op.key.decode()
            if (
                isinstance(op, Put)
                and op.value == b"Error"
                and key.startswith(LAYOUT.package_states)
            ):
                self._at_error_write.pop(0)(key)
                return

    def _do_mixed_catch_up(self, package: str, model: str, seconds: float) -> None:
        """While the watches are cut off (silent: a half-open connection) and the packages'
        watch lags on the stream that resumes them (etcd catches a resumed stream's watches up
        one after another), `package` is moved off its models onto `model`, which runs, and
        then its old models' containers die. The rules never give it Error; a daemon applying
        the containers' history before the packages' derives Error from a mix etcd never held."""
        store = _store(self.mem)
        key = LAYOUT.packages + package
        old = oracle.package_models(key, store[key]) if key in store else None
        derived = oracle.derive(store)
        if (
            not old
            or model in old
            or derived.get(f"{LAYOUT.model_states}{model}/state") == "Failed"
            or derived.get(f"{LAYOUT.package_states}{package}/state") == "Error"
        ):
            self.trace("  (skipped: no package to move off its models)")
            return
        self.mem.silence_watches()
        self.mem.lag_watches(LAYOUT.packages)

        def kill() -> None:
            for name in old:
                self._do_container(f"z{name}", name, "dead", "0")

        self._later(0.1, lambda: None if self.mem._down else self._do_package(package, model))
        self._later(0.2, lambda: None if self.mem._down else kill())
        self._later(seconds, lambda: self.mem.lag_watches(LAYOUT.packages, False))

    def _do_replace_in_write(self, back: float | None) -> None:
        """etcd is restored from a snapshot at least `back` seconds old (wiped with None) while
        the next state write is on its way: it lands on the new history, which the writer's
        index, ahead of its watcher, knows nothing of."""
        self._in_write.append(back)

    def before_request(
        self, link: Link, ops: Sequence[Put | Delete], watched: Collection[str]
    ) -> None:
        """A daemon's transaction (`ops`) or watch (of the prefixes `watched`) is about to
        reach etcd: a fault waiting for it strikes."""
        if watched:
            self._restore_at_reconnect(link, watched)
        self._meet_error_write(ops)
        keys = [op.key.decode() for op in ops]
        # Only while the member's term is above a new cluster's, as every daemon has seen: else
        # the replacement waits for a restart (`_replace_visibly`), and the write would land
        # before it.
        replaceable = self._raised_term_seen() and not self.mem._down
        if self._in_write and oracle.state_keys(keys) and replaceable:
            back = self._in_write.pop(0)
            self.trace(f"  {'wipe' if back is None else f'restore {back}'} as a write lands")
            if back is None:
                self._do_wipe()
            else:
                self._do_restore(back)

    def _do_restore_unechoed(self) -> None:
        """Right after the next committed state write (at R), the watches go silent (its echo
        is lost); when its daemon's watcher next opens a stream, etcd has been restored to R - 1
        by a cluster whose raft term is the one the daemons saw (a cluster restored before
        it ever changed leader, or whose elections since have brought it there): only the
        answer R tells that etcd went back. Struck only while no other daemon's index or writer
        knows a revision from R on (it could not tell, once the new history outgrew it), and
        REPLACE_AFTER seconds after the last replacement at the earliest (a second one at the
        same term before every daemon has followed the first is `_replace_visibly`'s limit)."""
        self._unechoed_armed += 1

    def _restore_at_reconnect(self, link: Link, watched: Collection[str]) -> None:
        """restore_unechoed strikes as the first watch opened since the echo was lost opens,
        when that is the state watcher of the daemon that wrote R; otherwise it is dropped (a
        stream opened since may have told its daemon of what the restore takes back)."""
        if not self._unechoed_writes:
            return
        revision = min(self._unechoed_writes)
        self._unechoed_writes.clear()
        opening = [d for d in self.daemons if d is not None and d.link is link]
        others = [d for d in self.daemons if d is not None and d.link is not link]
        prefixes = LAYOUT.watched().values()
        knows = [
            max(
                d.runtime.parts.controller.newest_answer(),
                *map(d.runtime.parts.watcher.applied, prefixes),
            )
            for d in others
        ]
        if (
            not opening
            or not set(prefixes) <= set(watched)  # another watch of the daemon's
            or opening[0].runtime.parts.controller.newest_answer() < revision
            or any(k >= revision for k in knows)
            or self.mem.compacted_revision >= revision
            or asyncio.get_running_loop().time() - self._replaced_at < REPLACE_AFTER
            or self.mem._down
        ):
            self.trace("  (restore_unechoed dropped: another stream or daemon may know more)")
            return
        self._replace(StoreSnapshot(revision - 1, self.mem.compacted_revision), keep_term=True)
        self.trace(f"  restored to {revision - 1}, below an unechoed write, at the same term")

    def _strike(self, revision: int, written: Sequence[str]) -> None:
        """The fault waiting for this state write (at `revision`, keys `written`)."""
        fault, value = self._after_write.pop(0)
        key = sorted(written)[0]
        if fault == "blind_restore":
            self.mem.silence_watches()
            compacted = self.mem.compacted_revision
            self._replace_visibly(StoreSnapshot(max(revision - 1, compacted), compacted), True)
            return
        if fault == "blind_tamper":
            self.mem.silence_watches()

        def strike() -> None:
            if self.mem._down:
                return
            self._disturb(PACKAGES, key, None if value is None else value.encode())
            if fault == "blind_tamper":
                self._do_compact()

        self._later(0.05 if fault == "blind_tamper" else 0.0, strike)

    def _disturb(self, packages: Sequence[str], key: str, value: bytes | None) -> int:
        """Put (or with None delete) `key`, disturbing `packages`; the revision."""
        revision = self.mem.delete_now(key.encode()) if value is None else self._put(key, value)
        prefix = max((p for p in LAYOUT.watched().values() if key.startswith(p)), key=len)
        for name in packages:
            marks = self.disturbed.setdefault(name, {})
            marks[prefix] = max(marks.get(prefix, 0), revision)
        return revision

    # -- invariants

    def after_txn(self, link: Link) -> None:
        """Right after a transaction (sent through `link`) committed: its fence held at its
        revision, and every package touched agrees with the model states in the store (a split
        write breaks it)."""
        if len(self.mem.txn_log) == self._judged:
            return  # this call reached no store (refused, or etcd down)
        self._judged = len(self.mem.txn_log)
        record = self.mem.txn_log[-1]
        if not record.succeeded or record.revision != self.mem.current_revision:
            return
        if any(k.startswith(LAYOUT.node_lists.encode()) for k in record.written):
            self._input_changed(record.revision)  # a node's list, stored by the service
        self._record_scenario_writes(record.written, record.revision)
        states = [
            k.decode() for k in record.written if k.decode() in oracle.state_keys([k.decode()])
        ]
        if self._after_write and states:
            self._strike(record.revision, states)
        self._note_write(record.revision, states, link)
        self._note_error_entry(record.written, states)
        if record.fence is not None:
            leader = self.mem._at(record.fence.key, record.revision - 1)
            if leader is None or leader.create_revision != record.fence.create_revision:
                self.fail(f"fencing: revision {record.revision} committed without its fence")
        store = _store(self.mem)
        written = {k.decode() for k in record.written}
        for key, value in store.items():
            if not key.startswith(LAYOUT.packages):
                continue
            name = key[len(LAYOUT.packages) :]
            models = oracle.package_models(key, value)
            if models is None or name in self.disturbed:
                continue
            package_key = f"{LAYOUT.package_states}{name}/state"
            model_keys = [f"{LAYOUT.model_states}{m}/state" for m in models]
            if package_key not in written and not written & set(model_keys):
                continue
            states = [store.get(k, b"").decode() for k in model_keys]
            expected = oracle.package_rule(states)
            found = store.get(package_key, b"").decode()
            if found != expected:
                self.fail(
                    f"atomic cascade: at revision {record.revision} {package_key}={found!r} "
                    f"but its models {dict(zip(models, states, strict=True))} call for {expected}"
                )

    def _note_write(self, revision: int, states: Sequence[str], link: Link) -> None:
        """Note a committed transaction (writing the state keys `states`, sent through `link`)
        for the watch and restore faults: one planned before every daemon listed a replaced
        history's successor, one planned before its own daemon did, and the state write
        restore_unechoed waits for (its echo lost from now on)."""
        running = [d for d in self.daemons if d is not None]
        if any(d.runtime.listings < d.listings_needed for d in running):
            self._unlisted_writes.add(revision)
        if any(d.link is link and d.runtime.listings < d.listings_needed for d in running):
            self._planned_unlisted.add(revision)
        if self._unechoed_armed and states:
            self._unechoed_armed -= 1
            self._unechoed_writes.append(revision)
            self.mem.silence_watches()

    def _note_error_entry(self, written: Sequence[bytes], states: Sequence[str]) -> None:
        """A committed transaction that recorded a trigger entered its package into Error: the
        store now is what restore_then_tamper goes back to."""
        if any(k.startswith(TRIGGERS.encode()) for k in written):
            entered = [k for k in states if k.startswith(LAYOUT.package_states)]
            if entered:
                self._error_snapshots.append((entered[0], self.mem.snapshot_now()))

    def _record_scenario_writes(self, written: Sequence[bytes], revision: int) -> None:
        for key in written:
            name = LAYOUT.name_in(Kind.SCENARIO_STATE, key.decode())
            if name is not None:
                now = self.mem._at(key, revision)
                value = now.value.decode() if now else None
                self.scenario_written.setdefault(name, []).append((value, True, revision))

    def _settle_disturbed(self) -> None:
        store = _store(self.mem)
        derived = oracle.derive(store)
        for name, marks in list(self.disturbed.items()):
            if not self._followed(marks):
                continue
            spec = store.get(LAYOUT.packages + name)
            models = oracle.package_models(LAYOUT.packages + name, spec) if spec else []
            keys = [f"{LAYOUT.package_states}{name}/state"]
            keys += [f"{LAYOUT.model_states}{m}/state" for m in models or []]
            if all(derived.get(k, "").encode() == store.get(k, b"") for k in keys):
                del self.disturbed[name]

    def _followed(self, marks: Mapping[str, int]) -> bool:
        """Whether every running daemon's index has followed each prefix past its revision."""
        running = [daemon for daemon in self.daemons if daemon is not None]
        return all(d.runtime.listings >= d.listings_needed for d in running) and all(
            daemon.runtime.parts.watcher.applied(prefix) >= revision
            for daemon in running
            for prefix, revision in marks.items()
        )

    def _check_tasks(self) -> None:
        for daemon in self.daemons:
            if daemon is not None and daemon.ended():
                self.fail(f"task ended: {daemon.ended()}")

    def _quiet(self) -> bool:
        """Whether nothing sent during the faults is still on its way: every caller's send has
        been answered and every request a pause held has gone on to etcd. Until then the store
        may agree with the rules only because a change is still held (a node's list to a
        paused daemon lands once it resumes and may put a package into Error, with a trigger
        the end of the run must leave time to deliver; seed 2000271)."""
        sends = all(task.done() for task in self._lists)
        return sends and not any(d.link.held for d in self.daemons if d is not None)

    def converged(self) -> bool:
        store = _store(self.mem)
        derived = oracle.derive(store)
        states = {k: v.decode() for k, v in store.items() if k in oracle.state_keys(store)}
        triggers = [k for k in store if k.startswith(TRIGGERS)]
        return states == derived and not triggers

    def differences(self) -> str:
        store = _store(self.mem)
        derived = oracle.derive(store)
        lines = []
        for key in sorted(oracle.state_keys(store) | derived.keys()):
            found = store[key].decode() if key in store else None
            if found != derived.get(key):
                lines.append(f"  {key}: etcd {found!r}, rules {derived.get(key)!r}")
        lines += [f"  trigger left: {k}" for k in store if k.startswith(TRIGGERS)]
        return "\n".join(lines)

    def _triggers(self) -> tuple[dict[str, list[int]], dict[int, int]]:
        """Package → the revisions its trigger was put at (as etcd's history has them now);
        revision → the create revision of the fence it was written with."""
        triggers: dict[str, list[int]] = {}
        for key, versions in self.mem._versions.items():
            if key.startswith(TRIGGERS.encode()):
                puts = [rev for rev, record in versions if record is not None]
                triggers[key.decode()[len(TRIGGERS) :]] = puts
        fences = {  # the log's later records win: a restore reuses revision numbers
            record.revision: record.fence.create_revision
            for record in self.mem.txn_log
            if record.succeeded and record.fence is not None
        }
        return triggers, fences

    def _check_reconcile(self) -> None:
        """Every trigger recorded is accounted for; every delivery has a trigger; every trigger
        came from an entry into Error by the rules (or a leadership change)."""
        triggers, fences = self._triggers()
        for package, revisions in triggers.items():
            for i, revision in enumerate(revisions):
                if i + 1 == len(revisions):
                    self._check_delivered(package, revision, self._targeting(package, revision))
                previous = revisions[i - 1] if i else 0
                entries = self.error_entries.get(package, [])
                entered = any(previous < r <= revision for r in entries)
                same_leader = fences.get(revision) == fences.get(previous)
                # A first trigger needs an entry too, unless etcd's history was replaced; and
                # none is judged that a transaction may have planned on the replaced history
                # (its daemon paused between plan and send, or not yet relisted): it can carry
                # a trigger of the old history's entry into Error.
                judged = (bool(previous) or not self.mem.replaced) and (
                    revision not in self._unlisted_writes
                )
                if not entered and (same_leader or not previous) and judged:
                    since = f"since {previous} (same leader)" if previous else "before it"
                    self.fail(
                        f"reconcile: trigger {package}@{revision} recorded though {package} "
                        f"did not enter Error by the rules {since}"
                    )
        first = min((min(r) for r in triggers.values()), default=None)
        for scenario, at in self.actioncontroller.acknowledged:
            if first is None or at < first:
                self.fail(f"reconcile: {scenario} delivered at revision {at} with no trigger")

    def _check_entries(self) -> None:
        """Every entry into Error a daemon wrote recorded its trigger: a daemon's write of a
        package's Error over a value a daemon wrote (or over none, the key never written in
        this history) with no trigger put in its transaction lost its Reconcile (a correction
        puts back what someone else changed). Set aside: an entry written by a transaction
        planned before its own daemon listed a replaced history's successor (it may judge by
        what it learnt on the replaced one), and one over a value written before every daemon
        had listed it (planned, maybe, on the replaced history: no transition, put back as a
        correction once the relist shows the inputs it was planned from gone;
        docs/decisions/previous-states-across-replacement.md)."""
        ours = self._daemon_writes()
        for package in PACKAGES:
            key = f"{LAYOUT.package_states}{package}/state".encode()
            trigger = f"{TRIGGERS}{package}".encode()
            puts = {rev for rev, r in self.mem._versions.get(trigger, []) if r is not None}
            under: tuple[int, bytes | None] | None = None  # the version below, in this history
            for revision, record in self.mem._versions.get(key, []):
                value = record.value if record is not None else None
                entered = value == b"Error" and (under is None or under[1] != b"Error")
                planned_after = revision not in self._planned_unlisted
                if entered and (revision, key) in ours and revision not in puts and planned_after:
                    below = 0 if under is None else under[0]
                    if under is None or (
                        (below, key) in ours and below not in self._unlisted_writes
                    ):
                        self.fail(
                            f"reconcile: {package} entered Error at {revision} with no trigger, "
                            f"over a daemon's write at {below} (a Reconcile lost)"
                        )
                under = (revision, value)

    def _daemon_writes(self) -> set[tuple[int, bytes]]:
        """(revision, key) of each key a daemon's fenced transaction wrote in etcd's history as
        it is now (a record from before a replacement counts at or below where it went back)."""
        found = set()
        for i, record in enumerate(self.mem.txn_log):
            gone = any(i < n and record.revision > back for n, back in self._replacements)
            if record.succeeded and record.fence is not None and not gone:
                found.update((record.revision, k) for k in record.written)
        return found

    def _targeting(self, package: str, revision: int) -> set[str]:
        """The scenarios that targeted `package` from `revision` on, without a break: the ones
        its trigger must reach whenever it is delivered."""
        found = set()
        for scenario in SCENARIOS:
            key = (LAYOUT.scenarios + scenario).encode()
            versions = [
                record
                for rev, record in self.mem._versions.get(key, [])
                if rev > revision or record is self.mem._at(key, revision)
            ]
            if self.mem._at(key, revision) is not None and all(
                r is not None and oracle.scenario_target(key.decode(), r.value) == package
                for r in versions
            ):
                found.add(scenario)
        return found

    def _check_delivered(self, package: str, revision: int, scenarios: set[str]) -> None:
        """The newest trigger of `package` reached each scenario, unless the package left Error
        or the trigger was dead-lettered after it."""
        state_key = f"{LAYOUT.package_states}{package}/state".encode()
        if self._left_error(state_key, revision) or self._dead_lettered_after(package, revision):
            return
        acks = self.actioncontroller.acknowledged
        # A delivery of a replaced history (acknowledged before the replacement, or a call of
        # it that took effect after) counts for a record the replacement kept as it was (at or
        # below the revision it went back to): ActionController acted on it, and the sender
        # rightly removes the record without asking again.
        kept = [(s, at) for s, at, back in self.actioncontroller.replaced if revision <= back]
        for scenario in sorted(scenarios):
            if not any(s == scenario and at >= revision for s, at in [*acks, *kept]):
                self.fail(f"reconcile: trigger {package}@{revision} never delivered to {scenario}")

    def _left_error(self, key: bytes, revision: int) -> bool:
        versions = self.mem._versions.get(key, [])
        return any(
            rev > revision and (record is None or record.value != b"Error")
            for rev, record in versions
        )

    def _dead_lettered_after(self, package: str, revision: int) -> bool:
        versions = self.mem._versions.get(f"{DEAD_LETTERS}{package}".encode(), [])
        return any(rev > revision and record is not None for rev, record in versions)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        steps = list(self.schedule)
        while steps and steps[0].at == 0.0:
            self.apply(steps.pop(0))
        self.mem.restart()  # it has run: its raft term is above a new cluster's
        self.daemons = [Daemon(self, f"node-{i}") for i in range(DAEMONS)]
        while steps:
            await asyncio.sleep(max(0.0, start + steps[0].at - loop.time()))
            self._check_tasks()
            self._settle_disturbed()
            self.apply(steps.pop(0))
        await asyncio.sleep(max(0.0, start + FAULT_SECONDS - loop.time()))
        self.trace(f"t={loop.time() - start:6.2f}s faults stop")
        for timer in self._timers:
            timer.cancel()
        self._restore()
        self.actioncontroller.down = False
        self.actioncontroller.refusals.clear()
        self.actioncontroller.slow = 0
        self.mem._before_txn.clear()
        self.mem._lost_keep_alives.clear()
        self._after_write.clear()
        self._at_error_write.clear()
        self._in_write.clear()
        self._unechoed_armed = 0
        self._unechoed_writes.clear()
        for prefix in LAYOUT.watched().values():
            self.mem.lag_watches(prefix, False)
        for i, daemon in enumerate(self.daemons):
            if daemon is None:
                self._start(i)
            else:
                daemon.link.resumed.set()
        deadline = loop.time() + SETTLE_SECONDS
        while not (self._quiet() and self.converged()):
            self._check_tasks()
            self._settle_disturbed()
            if loop.time() > deadline:
                self.fail(
                    f"convergence: not converged {SETTLE_SECONDS:.0f}s after the faults "
                    f"stopped:\n{self.differences()}"
                )
                break
            await asyncio.sleep(SAMPLE_EVERY)
        self.trace(f"t={loop.time() - start:6.2f}s converged={not self.failures}")
        # Let deliveries of the last triggers finish (a trigger's removal follows its ack).
        await asyncio.sleep(1.0)
        await asyncio.gather(*self._lists)
        self._check_tasks()
        for daemon in self.daemons:
            if daemon is not None:
                await daemon.stop()
        await asyncio.gather(*self._stopping)
        self._check_reconcile()
        self._check_entries()
        self._check_scenarios()
        self._check_history()

    def _check_history(self) -> None:
        """The history invariant (module docstring)."""
        prefix = history_prefix(LAYOUT).encode()
        runs: dict[WorkKey, list[tuple[int, Transition]]] = {}
        for key, versions in self.mem._versions.items():
            puts = [(rev, record) for rev, record in versions if record is not None]
            if not key.startswith(prefix) or not puts:
                continue
            resource, generation = parse_history_key(LAYOUT, key.decode())
            state_key = LAYOUT.state_key(resource).encode()
            writes = {r: w.value.decode() if w else None for r, w in self.mem._versions[state_key]}
            records = [decode(LAYOUT, key, record.value, rev) for rev, record in puts]
            for found in records:
                assert isinstance(found, Transition), found
                before = self.mem._at(state_key, found.revision - 1)
                if (
                    writes.get(found.revision, "(no write)") != found.to_state
                    or (before.value.decode() if before else None) != found.from_state
                ):
                    self.fail(f"history: {key.decode()} at {found.revision} is no write of it")
            # Put again only by a retry of its transaction that landed twice (someone else had
            # put the key its guard found back as it was).
            if len({r.transition_id for r in records if isinstance(r, Transition)}) > 1:
                self.fail(f"history: {key.decode()} put by {len(records)} transitions")
            last = records[-1]
            assert isinstance(last, Transition)
            runs.setdefault(resource, []).append((generation, last))
        daemon_writes = {
            (r.revision, k)
            for r in self.mem.txn_log[self._log_from :]
            if r.succeeded
            for k in r.written
        }
        for resource, run in runs.items():
            run.sort(key=lambda g: g[0])
            generations = [g for g, _ in run]
            revisions = [t.revision for _, t in run]
            if generations != list(range(generations[0], generations[0] + len(run))):
                self.fail(f"history: {resource} has generations {generations}")
            if revisions != sorted(set(revisions)):
                self.fail(f"history: {resource}'s records out of order: {revisions}")
            state_key = LAYOUT.state_key(resource).encode()
            now = self.mem._latest(state_key)
            last_write = self.mem._versions.get(state_key, [(0, None)])[-1][0]
            value = now.value.decode() if now else None
            if (last_write, state_key) in daemon_writes and run[-1][1].to_state != value:
                self.fail(f"history: {resource} replays to {run[-1][1].to_state}, not {value}")
        for t in self.committed[self._committed_from :]:
            resource = WorkKey(t.resource, t.name)
            records = [g for g, r in runs.get(resource, []) if r.transition_id == t.transition_id]
            if len(records) != 1:
                self.fail(f"history: {resource}'s transition {t.transition_id} in {len(records)}")

    def _check_scenarios(self) -> None:
        """Every accepted scenario change is stored exactly once, in the order accepted, and
        each stored state follows the one before by the lifecycle (or is a reset to Idle, or
        follows a deletion with its spec). A change a restore took back is excused either way:
        the daemon, asked while etcd's history was replaced, may have seen its write land on
        the history that was replaced (accepted) or not on the new one (refused), and the
        caller's answer matches etcd's either way (the simulation's swarm seed 15001242)."""
        for name in sorted(self.scenario_accepted.keys() | self.scenario_written.keys()):
            written = self.scenario_written.get(name, [])
            accepted = self.scenario_accepted.get(name, [])
            stored = _stored(written, accepted)
            if stored != accepted:
                self.fail(f"scenario {name}: accepted {accepted} but stored {stored}")
            pairs = itertools.pairwise([(None, True), *((v, w) for v, w, _ in written)])
            for (before, _), (after, by_write) in pairs:
                if not by_write or after is None or after == "Idle" or before is None:
                    continue
                if (before.lower(), after.lower()) not in SCENARIO_CALLS:
                    self.fail(f"scenario {name}: stored {before} then {after}")


def _stored(written: Sequence[tuple[str | None, bool, int]], accepted: Sequence[str]) -> list[str]:
    """The values a scenario's writes stored, in order (of its state key's values, each a
    daemon's write or what a replacement of etcd's history left, with its revision), less each
    that a later replacement took back (one to below its revision) where the accepted changes
    do not have it next: a change refused as a restore took its write back."""
    writes: list[tuple[str, int]] = []  # each write, and the revision of the history it is in
    back: set[int] = set()  # the writes (their places) a replacement took back
    for value, by_write, revision in written:
        if not by_write:
            back |= {i for i, (_, at) in enumerate(writes) if at > revision}
        elif value is not None:
            writes.append((value, revision))
    stored: list[str] = []
    for i, (value, _) in enumerate(writes):
        expected = accepted[len(stored)] if len(stored) < len(accepted) else None
        if i not in back or value == expected:
            stored.append(value)
    return stored


_FAKE_TIME = types.SimpleNamespace()


class Clock:
    """Virtual time that also moves a nanosecond at every read, as a real clock moves while
    code runs. Without it a loop that waits for "due minus now" could find a float sliver
    left (1e-15 s), wait that long without the virtual clock moving, and spin forever: an
    artifact of virtual time, not a daemon's behaviour."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._reads = 0

    def __call__(self) -> float:
        self._reads += 1
        return self._loop.time() + self._reads * 1e-9


@dataclasses.dataclass(slots=True)
class Wall:
    """How far the daemons' wall clock is from virtual time (a clock_jump moves it)."""

    offset: float = 0.0


def _virtual_time(clock: Clock, wall: Wall) -> types.SimpleNamespace:
    """A `time` module for the daemon's modules that read the clock directly: virtual time,
    so backoffs and due times follow looptime (and a run does not depend on the machine);
    the wall clock is virtual time plus the `wall` offset."""
    epoch = 1_800_000_000.0
    return types.SimpleNamespace(
        monotonic=clock,
        perf_counter=clock,
        time=lambda: epoch + wall.offset + clock(),
        time_ns=lambda: int((epoch + wall.offset + clock()) * 1e9),
    )


_CLOCKED = (controller_module, reconcile_module, writer_module)


def _drop_every_line(_logger: Any, _method: str, _event: Any) -> Any:
    raise structlog.DropEvent


def simulate(
    seed: int,
    trace: Callable[[str], None] | None = None,
    keep: Sequence[int] | None = None,
    mode: Mode = Mode.FIRST,
) -> list[str]:
    """Run `seed`'s schedule (drawn in `mode`) on a fresh virtual-time loop; the invariants it
    broke. `keep` runs only those steps of it (their indices), as `shrink` found them."""
    lines: list[str] = []
    sink = trace or lines.append
    schedule = make_schedule(seed, mode)
    if keep is not None:
        schedule = [schedule[i] for i in keep]
    # A run's thousands of lines cost more than the run: drop them. Without caching, so the
    # loggers are not bound to this configuration for the tests that run after (tests/conftest.py
    # restores the previous one after each test).
    structlog.configure(processors=[_drop_every_line], cache_logger_on_first_use=False)
    random.seed(seed)  # the daemon's jitter (backoffs, tenacity) draws from the global one
    loop = looptime.new_event_loop(start=0, noop_cycles=1)
    saved = {m: m.time for m in _CLOCKED}  # type: ignore[attr-defined]
    # A loop that spins without letting virtual time pass would hang the run: stop it after
    # CPU_LIMIT seconds of processor time (a normal run takes a fraction of a second).
    spinning: list[str] = []

    def stop(_sig: int, frame: types.FrameType | None) -> None:
        # Where the processor was when the limit struck (a spinning loop is there), and where
        # every task waits (a run that never ends while virtual time flows shows there).
        spinning.extend(
            f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} {f.name}"
            for f in traceback.extract_stack(frame)[-8:]
        )
        loop.stop()

    previous = signal.signal(signal.SIGPROF, stop)
    signal.setitimer(signal.ITIMER_PROF, CPU_LIMIT)
    wall = Wall()
    try:
        for module in _CLOCKED:
            module.time = _virtual_time(Clock(loop), wall)  # type: ignore[attr-defined]
        failures = loop.run_until_complete(_run(schedule, sink, wall)).failures
    except RuntimeError as exc:  # stopped by the limit
        where = " < ".join(reversed(spinning))
        waiting = ", ".join(
            f"{task.get_name()} at {frame.f_code.co_name}:{frame.f_lineno}"
            for task in asyncio.all_tasks(loop)
            for frame in task.get_stack()[-1:]
        )
        failures = [
            f"INVARIANT busy loop or endless run: over {CPU_LIMIT:.0f} s of CPU ({exc}); "
            f"running {where}; tasks waiting: {waiting}"
        ]
        sink(failures[0])
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)
        for module, original in saved.items():
            module.time = original  # type: ignore[attr-defined]
        for task in asyncio.all_tasks(loop):
            task.cancel()
        loop.close()
    return failures


async def _run(schedule: list[Step], trace: Callable[[str], None], wall: Wall) -> Simulation:
    sim = Simulation(schedule, trace, wall)
    try:
        await sim.run()
    finally:
        for daemon in sim.daemons:
            if daemon is not None:
                await daemon.stop()
    return sim


def replay_command(seed: int, keep: Sequence[int] | None = None, mode: Mode = Mode.FIRST) -> str:
    steps = "" if keep is None else f"SIM_KEEP={','.join(map(str, keep)) or '-'} "
    return f"SIM_SEED={seed} SIM_MODE={mode.value} {steps}.venv/bin/pytest tests/simulation -k replay -s"


def invariant(failure: str) -> str:
    """Which invariant a failure line names ("INVARIANT reconcile: ..." -> "INVARIANT reconcile")."""
    return failure.split(":", 1)[0]


def shrink(seed: int, failures: Sequence[str], mode: Mode = Mode.FIRST) -> list[int]:
    """The indices of a small part of `seed`'s schedule that still breaks the first of
    `failures`' invariants: a shorter trace to read. Each run is deterministic, so the part
    replays exactly (`simulate(seed, keep=..., mode=...)`)."""
    broken = invariant(failures[0])
    return minimize(
        list(range(len(make_schedule(seed, mode)))),
        lambda kept: any(invariant(f) == broken for f in simulate(seed, keep=kept, mode=mode)),
    )


def minimize(items: list[T], fails: Callable[[list[T]], bool]) -> list[T]:
    """Drop one item at a time, keeping each drop after which `fails` still holds, until no
    single item can go (one-at-a-time delta debugging: quadratic in the worst case, and a
    schedule has a few dozen steps)."""
    changed = True
    while changed:
        changed = False
        for i in reversed(range(len(items))):
            candidate = items[:i] + items[i + 1 :]
            if fails(candidate):
                items, changed = candidate, True
    return items


def revision_back_to(snapshot: StoreSnapshot | None) -> int:
    """The revision a replacement from `snapshot` goes back to (a wipe: an empty etcd's 1)."""
    return 1 if snapshot is None else snapshot.revision
