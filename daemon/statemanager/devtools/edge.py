"""The edge footprint (`statemanager bench`'s `edge` part): what one daemon costs on a small
node — start to ready, resident memory and CPU while idle with a 100-container fleet, and
how long `statemanager --version` and `--help` take.

A command that prints figures, never a test; the daemon runs as its own process beside a
private etcd, as in the rest of the benchmark.
"""

from __future__ import annotations

import contextlib
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from statemanager.devtools.benchload import Fleet, status_mb

FLEET = Fleet(100, 20, 5)
SETTLE_SECONDS = 5.0  # after ready, before idle is measured: the first sync's aftermath
IDLE_SECONDS = 30.0
QUICK_SECONDS = 2.0  # both, under --quick (a smoke run: the idle figures are coarse then)
RUNS = 5  # of each command, the median reported

# (figure, target, what it is); a figure meets its target when at most the target.
TARGETS = {
    "edge_ready_s": (0.25, "daemon start until /readyz answers 200, 100-container fleet"),
    "edge_rss_idle_mb": (40.0, "VmRSS after the first sync and 5 s idle (2 s with --quick)"),
    "edge_idle_cpu_pct": (
        0.05,
        "CPU of the daemon's threads (their schedstat) per wall time over 30 s idle (2 s with "
        "--quick), % of a core",
    ),
    "version_s": (0.1, "`statemanager --version`, median wall time of 5 runs"),
    "help_s": (0.1, "`statemanager --help`, median wall time of 5 runs"),
}


def threads_cpu_seconds(pid: int) -> float:
    """The CPU time the live threads of process `pid` have run, in nanosecond resolution (the
    scheduler's own account, /proc/PID/task/*/schedstat): /proc/PID/stat counts in 10 ms ticks,
    too coarse for an idle daemon's fraction of a percent."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # a thread that ended meanwhile
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def command_seconds(*args: str) -> float:
    """Median wall time of `statemanager ARGS`, run RUNS times."""
    times = []
    for _ in range(RUNS):
        started = time.monotonic()
        subprocess.run(
            [sys.executable, "-m", "statemanager", *args], capture_output=True, check=True
        )
        times.append(time.monotonic() - started)
    return statistics.median(times)


def measure(
    running: Callable[[Path, Fleet], AbstractContextManager[tuple[Any, float, float, float]]],
    workdir: Path,
    quick: bool,
) -> dict[str, float]:
    """Every figure of TARGETS; `running` is the benchmark's rig (etcd, fleet, daemon)."""
    out: dict[str, float] = {}
    with running(workdir, FLEET) as (rig, ready, _, _):
        out["edge_ready_s"] = ready
        time.sleep(QUICK_SECONDS if quick else SETTLE_SECONDS)
        out["edge_rss_idle_mb"] = status_mb(rig.pid, "VmRSS")
        before, started = threads_cpu_seconds(rig.pid), time.monotonic()
        time.sleep(QUICK_SECONDS if quick else IDLE_SECONDS)
        used = threads_cpu_seconds(rig.pid) - before
        out["edge_idle_cpu_pct"] = 100 * used / (time.monotonic() - started)
    out["version_s"] = command_seconds("--version")
    out["help_s"] = command_seconds("--help")
    return out
