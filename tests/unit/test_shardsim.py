"""The sharding design's assignment rule and the figures its simulation derives."""

from __future__ import annotations

from itertools import pairwise

import pytest

from statemanager.devtools.shardsim import Costs, assignment, main, simulate

MEMBERS = [f"d{i}" for i in range(4)]


def test_every_partition_has_exactly_one_owner_among_the_members() -> None:
    """Each daemon computes the same owner for each partition from the member list alone."""
    owners = assignment(64, MEMBERS)
    assert set(owners) == set(range(64))
    assert set(owners.values()) <= set(MEMBERS)
    assert owners == assignment(64, list(reversed(MEMBERS)))  # order of the list is irrelevant


def test_a_leaving_member_moves_only_its_own_partitions() -> None:
    """Rendezvous hashing: survivors keep every partition they had."""
    before = assignment(256, MEMBERS)
    after = assignment(256, MEMBERS[1:])
    moved = {p for p in before if before[p] != after[p]}
    assert moved == {p for p, m in before.items() if m == "d0"}


def test_a_joining_member_takes_partitions_only_for_itself() -> None:
    """A new daemon takes about its share, and every moved partition moves to it."""
    before = assignment(256, MEMBERS)
    after = assignment(256, [*MEMBERS, "d4"])
    moved = {p for p in before if before[p] != after[p]}
    assert {after[p] for p in moved} == {"d4"}
    assert 256 / 5 / 2 < len(moved) < 256 / 5 * 2


def test_more_daemons_absorb_more_changes_each_holding_less() -> None:
    """The simulated change ceiling grows and the busiest daemon's memory shrinks with the
    daemon count; one daemon holds every package."""
    figures = [simulate(n, Costs(), packages=5_000, containers=100_000) for n in (1, 2, 4, 8)]
    assert figures[0].busiest_share == 1.0
    assert all(a.change_per_s < b.change_per_s for a, b in pairwise(figures))
    assert all(a.rss_mb > b.rss_mb for a, b in pairwise(figures))


def test_the_command_prints_a_row_per_daemon_count(capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m statemanager.devtools.shardsim` prints figures for 1, 2, 4 and 8 daemons."""
    assert main(["--packages", "2000", "--containers", "40000"]) == 0
    rows = [line.split()[0] for line in capsys.readouterr().out.splitlines()[2:]]
    assert rows == ["1", "2", "4", "8"]
