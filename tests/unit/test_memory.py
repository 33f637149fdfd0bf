"""glibc hands freed large blocks back to the system in a daemon process (docs/design.md,
Footprint): each case runs in a fresh interpreter, as the daemon does."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import sys
from statemanager.app.daemon import unpool_large_blocks

def rss_kb():
    with open("/proc/self/status") as status:
        return int(next(line for line in status if line.startswith("VmRSS")).split()[1])

if sys.argv[1] == "unpooled":
    unpool_large_blocks()
before = rss_kb()
for _ in range(3):  # as listing pages come and go: an 8 MiB block, written, then freed
    block = b"x" * (8 << 20)
    del block
print(rss_kb() - before)
"""


def _kept_kb(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True
    )
    return int(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc and /proc")
def test_freed_multi_megabyte_blocks_leave_the_resident_set() -> None:
    """By default glibc keeps a freed 8 MiB block in its heap after the first one (its mmap
    threshold rises to the largest block freed); unpooled, every one is unmapped when freed."""
    assert _kept_kb("default") >= 6 * 1024
    assert _kept_kb("unpooled") < 2 * 1024
