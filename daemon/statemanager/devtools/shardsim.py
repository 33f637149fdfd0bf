"""`python -m statemanager.devtools.shardsim`: expected figures for the sharding design
(docs/sharding.md).

Purely computational, no etcd: packages are hashed into partitions, partitions are assigned
to the live daemons by rendezvous hashing (the rule every daemon applies to the member list),
and the per-event costs measured by `statemanager bench` are spread over that assignment. It
prints, for each daemon count, the change throughput the busiest daemon allows, its memory, and
what a daemon's death costs: the partitions that move and the time until their new owners
write again. Nothing here is built into the daemon: one leader meets the targets (see the doc).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


def _hash(*parts: str) -> int:
    return int.from_bytes(hashlib.blake2b("/".join(parts).encode(), digest_size=8).digest())


def partition_of(package: str, partitions: int) -> int:
    """The partition a package (and its triggers and state key) belongs to."""
    return _hash("package", package) % partitions


def owner(partition: int, members: Sequence[str]) -> str:
    """Rendezvous hashing: the member with the highest score for this partition. Every daemon
    computes the same answer from the same member list, and a member leaving moves only its
    own partitions (to the runner-up of each)."""
    return max(members, key=lambda m: _hash(str(partition), m))


def assignment(partitions: int, members: Sequence[str]) -> dict[int, str]:
    """The owner of each partition among `members` (rendezvous hashing)."""
    return {p: owner(p, members) for p in range(partitions)}


@dataclass(frozen=True)
class Costs:
    """Per-event and per-container figures from one `statemanager bench --json` run."""

    change_cpu_ms: float = 0.9  # daemon CPU per change at 500/s (a 100,000-container fleet)
    # An event or listed container of another daemon's partition: gRPC decode and the JSON
    # parse that finds its model, then dropped (parse_container alone is 8-12 µs here).
    filter_cpu_ms: float = 0.03
    cold_cpu_s_per_container: float = 1e-4  # listing + index per container at start
    rss_mb_base: float = 45.0  # the process before any container
    rss_kb_per_container: float = 1.25
    lease_ttl_s: float = 10.0  # ha.lease_ttl_seconds: a dead daemon's keys expire after it


def costs_from_bench(path: Path) -> Costs:
    """Costs from a `statemanager bench --json` result (its fleet size taken from `sizes`)."""
    result = json.loads(path.read_text())
    containers = result["sizes"]["containers"]
    base = Costs()
    return Costs(
        change_cpu_ms=result.get("change_cpu_ms") or base.change_cpu_ms,
        filter_cpu_ms=base.filter_cpu_ms,
        cold_cpu_s_per_container=(result.get("cold_start_cpu_s") or 0) / containers
        or base.cold_cpu_s_per_container,
        rss_mb_base=base.rss_mb_base,
        rss_kb_per_container=max(0.0, result["rss_mb"] - base.rss_mb_base) * 1024 / containers,
    )


@dataclass(frozen=True)
class Figures:
    """What one sharded layout would give, as `simulate` computes it."""

    daemons: int
    busiest_share: float  # the busiest daemon's share of all packages
    change_per_s: float  # change events/s before the busiest daemon's CPU is saturated
    rss_mb: float  # the busiest daemon's memory
    moved_on_death: float  # share of partitions that move when one daemon dies
    failover_s: float  # lease expiry + the inheritor's relist of what it takes over


def simulate(
    daemons: int, costs: Costs, packages: int = 50_000, containers: int = 1_000_000,
    partitions: int = 256,
) -> Figures:  # fmt: skip
    """The figures of `daemons` daemons sharing `packages` packages over `partitions`
    partitions, at `costs`."""
    members = [f"statemanager-{i}" for i in range(daemons)]
    owners = assignment(partitions, members)
    per_partition = Counter(partition_of(f"p{k:06d}", partitions) for k in range(packages))
    load = Counter(dict.fromkeys(members, 0))
    for p, n in per_partition.items():
        load[owners[p]] += n
    victim, busiest = load.most_common(1)[0]
    share = busiest / packages
    # Every daemon watches every container (the key layout has no partition in it) and pays
    # the filter cost for events of other partitions; its own share costs the full price.
    per_event_ms = costs.filter_cpu_ms * (1 - share) + costs.change_cpu_ms * share
    survivors = [m for m in members if m != victim] or members
    after = assignment(partitions, survivors)
    moved = [p for p in range(partitions) if owners[p] != after[p]]
    inherited = Counter(after[p] for p in moved)
    heaviest = max(inherited.values(), default=0) / partitions
    # The inheritor relists the whole container prefix (filtering it) and indexes what it takes
    # over. With one daemon the standby follower already holds the whole index: no relist.
    filtered_s = costs.filter_cpu_ms / 1e3 * containers
    relist_s = (filtered_s + costs.cold_cpu_s_per_container * containers * heaviest) * (daemons > 1)
    return Figures(
        daemons=daemons,
        busiest_share=share,
        change_per_s=1e3 / per_event_ms,
        rss_mb=costs.rss_mb_base + costs.rss_kb_per_container * containers * share / 1024,
        moved_on_death=len(moved) / partitions if daemons > 1 else 1.0,
        failover_s=costs.lease_ttl_s + relist_s,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Print the sharding figures for 1, 2, 4 and 8 daemons; 0 always."""
    parser = argparse.ArgumentParser(prog="python -m statemanager.devtools.shardsim")
    parser.add_argument("--bench", type=Path, help="a `statemanager bench --json` result")
    parser.add_argument("--containers", type=int, default=1_000_000)
    parser.add_argument("--packages", type=int, default=50_000)
    parser.add_argument("--partitions", type=int, default=256)
    args = parser.parse_args(argv)
    costs = costs_from_bench(args.bench) if args.bench else Costs()
    print(f"costs: {costs}")
    print("daemons  busiest share  change/s  RSS MB  moved on a death  failover s")
    for n in (1, 2, 4, 8):
        f = simulate(n, costs, args.packages, args.containers, args.partitions)
        print(
            f"{n:7d}  {f.busiest_share:13.3f}  {f.change_per_s:8.0f}  {f.rss_mb:6.0f}  "
            f"{f.moved_on_death:16.3f}  {f.failover_s:10.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
