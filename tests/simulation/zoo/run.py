"""The bug zoo: every bug this project fixed, put back one at a time, and whether the simulator
finds it (README, "Simulation").

Each `*.patch` here puts one fixed bug back (its header says which bug, which commit fixed it
and where it was first seen). For each patch named (all by default) this copies the checkout
to a temporary directory, applies the patch there (the checkout itself is never touched, and
no production code carries a switch for it), runs the simulation's CI profile in the copy
(`pytest tests/simulation -k schedules`, stopping at the first schedule that breaks an
invariant) and prints one row: the bug, found or not, by which seed, after how many
schedules, in how many seconds. Exit status 0 when every bug was found.

    .venv/bin/python tests/simulation/zoo/run.py [NAME ...] [--schedules N] [--mode MODE]
        [--first SEED] [--hash-seed N]

MODE is how schedules are drawn (tests/simulation/sim.py, Mode): `swarm`, the CI profile's
(the default); `uniform`, swarm testing off; `swarm-added`, as the soaks' seeds up to
9,119,999 were found.

A schedule is the same run each time only for one PYTHONHASHSEED (the order of a set of
names can decide which of two things happens first): `--hash-seed` fixes it for the runs,
as a finding must be replayed; without it each run draws its own, as the soaks did.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ZOO = Path(__file__).resolve().parent
ROOT = ZOO.parents[2]
# What a copy of the checkout leaves out: the virtualenv, git's objects and tools' caches.
SKIP = shutil.ignore_patterns(
    ".venv", ".git", ".statemanager", "__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache"
)
FOUND = re.compile(r"first broken seed (\d+) after (\d+) schedules in ([\d.]+) s")


@dataclasses.dataclass(frozen=True, slots=True)
class Hunt:
    """One bug's hunt: the seed that found it and after how many schedules (None: not found),
    the seconds the schedules took until then (or in all), and what went wrong otherwise."""

    bug: str
    seed: int | None
    schedules: int | None
    seconds: float
    problem: str = ""
    as_is: tuple[int, ...] = ()  # seeds that break the checkout as it is too (skipped)

    @property
    def found(self) -> bool:
        return self.seed is not None

    def row(self) -> str:
        skipped = f" (the checkout as it is breaks at {list(self.as_is)})" if self.as_is else ""
        if self.problem:
            return f"| {self.bug} | no: {self.problem} | | | {self.seconds:.1f} |"
        if not self.found:
            return f"| {self.bug} | no{skipped} | | | {self.seconds:.1f} |"
        found = f"| {self.bug} | yes{skipped} | {self.seed} | {self.schedules} |"
        return f"{found} {self.seconds:.1f} |"


def bugs() -> list[str]:
    return sorted(p.stem for p in ZOO.glob("*.patch"))


def hunt(
    bug: str,
    schedules: int = 1000,
    mode: str = "swarm",
    budget: float = 600.0,
    first: int = 0,
    hash_seed: int | None = None,
) -> Hunt:
    """Put `bug` back in a scratch copy and run up to `schedules` schedules of the CI profile
    on it, drawn in `mode` (sim.Mode's value), from seed `first` (at most `budget` seconds of
    wall time in all), with
    PYTHONHASHSEED `hash_seed` (None: each run its own). A seed that breaks
    an invariant on the checkout as it is, too, found something else: the hunt goes on after
    it, and its seconds and schedules count."""
    spent, ran = 0.0, 0
    as_is: tuple[int, ...] = ()
    hashed = {} if hash_seed is None else {"PYTHONHASHSEED": str(hash_seed)}
    while True:
        found = _hunt(bug, schedules - ran, mode, budget - spent, first + ran, hashed)
        spent += found.seconds
        if found.seed is None or not _breaks_as_is(found.seed, mode, hashed):
            count = None if found.schedules is None else ran + found.schedules
            return dataclasses.replace(found, schedules=count, seconds=spent, as_is=as_is)
        as_is += (found.seed,)
        ran = found.seed + 1 - first
        if ran >= schedules:
            return Hunt(bug, None, None, spent, as_is=as_is)


def _breaks_as_is(seed: int, mode: str, hashed: dict[str, str]) -> bool:
    """Whether `seed` breaks an invariant on the checkout itself."""
    env = {**os.environ, **hashed, "SIM_SEED": str(seed), "SIM_MODE": mode}
    replay = [sys.executable, "-m", "pytest", "tests/simulation", "-k", "replay", "-q"]
    replay += ["-p", "no:cacheprovider"]
    return (
        subprocess.run(replay, check=False, cwd=ROOT, env=env, capture_output=True).returncode != 0
    )


def _hunt(
    bug: str, schedules: int, mode: str, budget: float, first: int, hashed: dict[str, str]
) -> Hunt:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"zoo-{bug}-") as scratch:
        copy = Path(scratch) / "repo"
        shutil.copytree(ROOT, copy, ignore=SKIP)
        patch = ["git", "apply", str(ZOO / f"{bug}.patch")]
        applied = subprocess.run(patch, check=False, cwd=copy, capture_output=True, text=True)
        if applied.returncode:
            return Hunt(bug, None, None, 0.0, f"patch does not apply: {applied.stderr.strip()}")
        env = {
            **os.environ,
            **hashed,
            "PYTHONPATH": str(copy / "daemon"),  # the copy's package, not the checkout's
            "SIM_SCHEDULES": str(schedules),
            "SIM_FIRST": str(first),
            "SIM_STOP": "first",
            "SIM_SHRINK": "0",
            "SIM_MODE": mode,
        }
        command = [sys.executable, "-m", "pytest", "tests/simulation", "-k", "schedules"]
        command += ["-q", "-s", "-p", "no:cacheprovider"]
        try:
            run = subprocess.run(
                command, check=False, cwd=copy, env=env, capture_output=True, text=True,
                timeout=budget,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return Hunt(bug, None, None, time.perf_counter() - started, f"over {budget:.0f} s")
    found = FOUND.search(run.stdout)
    if found is not None:
        seed, count, seconds = found.groups()
        return Hunt(bug, int(seed), int(count), float(seconds))
    ran = re.search(r"schedules from seed \d+ in ([\d.]+) s", run.stdout)
    if run.returncode or ran is None:
        tail = (run.stdout + run.stderr).strip().splitlines()[-1:]
        return Hunt(bug, None, None, time.perf_counter() - started, f"run failed: {tail}")
    return Hunt(bug, None, None, float(ran.group(1)))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bugs", nargs="*", metavar="NAME", help=f"of: {', '.join(bugs())}")
    parser.add_argument("--schedules", type=int, default=1000)
    parser.add_argument("--first", type=int, default=0, help="the first seed")
    modes = ["swarm", "uniform", "swarm-added"]
    parser.add_argument("--mode", choices=modes, default="swarm", help="how schedules are drawn")
    parser.add_argument("--budget", type=float, default=600.0, help="wall seconds per bug")
    parser.add_argument("--hash-seed", type=int, default=None, help="PYTHONHASHSEED of the runs")
    args = parser.parse_args(argv)
    unknown = set(args.bugs) - set(bugs())
    if unknown:
        parser.error(f"no such bug: {', '.join(sorted(unknown))}")
    print("| bug | found | seed | schedules | seconds |\n|---|---|---|---|---|", flush=True)
    hunts = []
    for bug in args.bugs or bugs():
        hunts.append(hunt(bug, args.schedules, args.mode, args.budget, args.first, args.hash_seed))
        print(hunts[-1].row(), flush=True)
    found = sum(h.found for h in hunts)
    print(f"{found} of {len(hunts)} found ({args.mode})")
    return 0 if found == len(hunts) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
