"""`statemanager bench --quick` as a user runs it: it finishes and reports every figure.

Performance numbers are printed, never asserted: the machine is shared and noisy.
"""

from __future__ import annotations

import json
import subprocess
import sys

FIGURES = (
    "etcd_txn_per_s",
    "etcd_watch_events_per_s",
    "noop_events_per_s",
    "change_events_per_s",
    "change_ratio",
    "latency_p50_ms",
    "latency_p99_ms",
    "cold_start_s",
    "rss_mb",
    "scaling_ratio",
)


def test_quick_bench_reports_every_figure() -> None:
    """A quick run exits 0 and prints one JSON object with every figure a positive number."""
    done = subprocess.run(
        [sys.executable, "-m", "statemanager", "bench", "--quick", "--json"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    print(json.dumps(result, indent=2))
    for name in FIGURES:
        value = result[name]
        assert isinstance(value, int | float) and not isinstance(value, bool), (name, value)
        assert value > 0, (name, value)
    assert set(result["targets"]) >= {"noop_intake_ratio", "change_ratio", "latency_p99_ms"}
    assert result["machine"]["cpus"] > 0
