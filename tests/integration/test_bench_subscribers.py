"""`statemanager bench --subscribers N` as a user runs it: it finishes and reports the change
latency alone and with N streams open, and what the streams received.

Performance numbers are printed, never asserted: the machine is shared and noisy.
"""

from __future__ import annotations

import json
import subprocess
import sys

FIGURES = ("p50_ms", "p99_ms", "max_ms", "commit_p99_ms", "daemon_cpu_s")


def test_bench_subscribers_reports_both_latencies() -> None:
    """Every subscriber got the same transitions (all that were committed while it was open),
    none was cut off, and both runs have every figure."""
    done = subprocess.run(
        [sys.executable, "-m", "statemanager", "bench", "--subscribers", "5", "--rate", "100",
         "--latency-seconds", "1"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    print(json.dumps(result, indent=2))
    assert result["subscribers"] == 5
    for run in ("alone", "subscribed"):
        for name in FIGURES:
            value = result[run][name]
            assert isinstance(value, int | float) and value >= 0, (run, name, value)
    assert result["received_min"] == result["received_max"]
    assert result["ended_by_the_daemon"] == 0
