"""Part of the bug zoo in the normal test run (README, "Simulation"): the bugs the simulator
finds fastest are put back one at a time, and the CI profile must still find each, so its power
cannot decay unnoticed. The whole zoo: `tests/simulation/zoo/run.py`."""

from __future__ import annotations

import pytest

from simulation.zoo.run import hunt

# Found fastest on this machine (the README's zoo table), at least one per family of faults:
# the relist's blind spot the zoo was built for, a lost answer, the restore fault and the
# restore of an unechoed write, the corrections, etcd's refusals, the Error write's lost
# answers (with the ABA on an absent key), the scenario callers, a Reconcile lost to a restore
# and the second Reconciles restore_then_tamper finds; a few seconds each.
FASTEST = [
    "r3-lost-answer-loses-reconcile",
    "r4-relist-forgets-written-keys",
    "r6-blind-after-restore",
    "r7-correction-reenters-error",
    "r8-busy-etcd-kills-worker",
    "s5-lost-answers-then-overwrite",
    "s8-answered-write-lost-to-restore",
    "s10-lost-answers-and-echo-then-overwrite",
    "s11-scenario-answer-lost",
    "s12-retry-lands-twice",
    "s19-carried-state-outweighs-trigger",
    "s29-restored-error-write-carried",
    "s30-restored-error-over-deleted-state",
    "s31-drop-before-relist",
]


# Bugs only a soak found (1 in 10,000 to 100,000 schedules), each by the seed that found it,
# replayed in the normal run as found (test_simulation.SOAK_SEEDS, TARGETED_SEEDS), with the
# PYTHONHASHSEED it breaks under and the mode it was drawn in (zoo/run.py): each seed must
# still find its bug put back, or a change to the simulator has taken it out of reach
# unnoticed. Left out: s16, s18, s20, s22, s23, s24, s27, s28, s35, s40 and s43–s45, whose
# seeds no longer show them since later fixes of the daemon change what happens there (README,
# "The bug zoo"; each hunted 2,000 schedules from its seed, s43–s45 10,000).
BY_SOAK_SEED = {
    "s14-guard-without-value": (2099848, 0, "swarm-added"),
    "s15-guard-loop-below-a-deletion": (3004827, 0, "swarm-added"),
    "s17-foreign-event-unnoticed": (4015143, 0, "swarm-added"),
    # Its soak seeds (400168, 402588) no longer reach it; a hunt's does, under one hash seed.
    "s21-restored-trigger-old-index": (1727, 1, "swarm-added"),
    "s25-history-gap-after-restore": (357081, 0, "swarm-added"),
    # Found in today's profile, restore_then_tamper drawn (test_simulation.TARGETED_SEEDS).
    "s32-failed-guard-hides-own-write": (11052761, 0, "swarm"),
    "s33-unheard-outlives-learning": (11052761, 1, "swarm"),
    "s34-unlisted-carried-state-unjudged": (12005081, 0, "swarm"),
    # Found by the soaks of the restore_then_tamper round (test_simulation.TARGETED_SEEDS).
    "s36-older-trigger-overrules": (13071818, 0, "swarm"),
    "s37-agreement-at-value-revision": (13037801, 0, "swarm"),
    "s38-failed-guard-of-another-history": (13032263, 0, "swarm"),
    "s39-listing-unchecked-for-foreign": (13043743, 0, "swarm"),
    "s41-held-write-unlearnt": (14005423, 0, "swarm"),
    "s42-echoed-deletion-untaught": (15007655, 0, "swarm"),
    # Found by this round's last soaks, and by a zoo hunt for s18.
    "s46-another-leader-unseen": (17044339, 0, "swarm"),
    "s47-dropped-state-forgets-the-one-before": (5063160, 0, "swarm-added"),
    "s48-correction-leaves-no-fallback": (20071107, 0, "swarm"),
    "s49-one-earlier-state-kept": (21040396, 0, "swarm"),
}


@pytest.mark.parametrize("bug", FASTEST)
def test_the_simulator_finds_a_bug_put_back(bug: str) -> None:
    found = hunt(bug, schedules=1000, budget=300.0)
    assert found.found, f"{bug}: {found.row()}"


@pytest.mark.parametrize(("bug", "seed"), BY_SOAK_SEED.items())
def test_the_soak_seed_finds_its_bug_put_back(bug: str, seed: tuple[int, int, str]) -> None:
    first, hash_seed, mode = seed
    found = hunt(bug, 1, mode, 60.0, first=first, hash_seed=hash_seed)
    assert found.found, f"{bug}: {found.row()}"
