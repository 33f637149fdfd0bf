"""Mutation testing of the pure core (`daemon/statemanager/core/`) with mutmut (README,
"Simulation"): how many small changes to the core's code the tests notice.

mutmut finds the code it mutates by its path from `src/` (or the top), and records which test
reached which mutant by module name: with the package under `daemon/` the two never match. So
this copies the checkout to a temporary directory with `daemon/` renamed `src/`, adds mutmut's
settings to the copy's pyproject.toml, runs `mutmut run` there with the copy's package first
on the path, and prints mutmut's counts and the score (killed, timed out included, of the
mutants some test reaches). The tests that read the tree's layout or measure the process's
memory are left out (they measure the copy, not the core).

    .venv/bin/pip install mutmut==3.8.1
    .venv/bin/python tests/mutation/run.py [--tests tests/unit/ tests/fuzz/] [--children 2]
        [--keep DIR [--again]]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SKIP = shutil.ignore_patterns(
    ".venv", ".git", ".statemanager", "__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache"
)
LEFT_OUT = ["tests/unit/test_layers.py", "tests/unit/test_memory.py"]
COUNTS = re.compile(r"(\d+)/(\d+)\s+🎉 (\d+) 🫥 (\d+)\s+⏰ (\d+)\s+🤔 (\d+)\s+🙁 (\d+)\s+🔇 (\d+)")


def settings(tests: list[str]) -> str:
    deselect = [arg for path in LEFT_OUT for arg in ("--deselect", path)]
    return (
        "\n[tool.mutmut]\n"
        'paths_to_mutate = ["src/statemanager/core/"]\n'
        f"tests_dir = {tests!r}\n"
        'also_copy = ["src/", "tests/"]\n'
        f"pytest_add_cli_args = {['-p', 'no:cacheprovider', '-q', *deselect]!r}\n"
    ).replace("'", '"')


def refresh(copy: Path, tests: list[str]) -> None:
    """Bring a kept copy's code and `tests` folders to the checkout's (a test file the
    checkout no longer has removed), leave the other test folders without tests, and mark
    every mutant that survived (exit code 0) or that no test reached (33) as not yet tested:
    mutmut then tests those alone (a changed function's mutants it makes and tests anew by
    itself). Its record of which test reaches which function is dropped, so that it runs
    every test once to record it again (seconds): kept, it records only tests it has not
    seen, so a function added or renamed since would be tested with the new tests alone and
    its mutants reported surviving the old ones."""
    shutil.copytree(ROOT / "daemon", copy / "src", ignore=SKIP, dirs_exist_ok=True)
    shutil.copytree(ROOT / "tests", copy / "tests", ignore=SKIP, dirs_exist_ok=True)
    (copy / "mutants" / "mutmut-stats.json").unlink(missing_ok=True)
    kept = [(copy / t).resolve() for t in tests]
    for base in (copy / "tests", copy / "mutants" / "tests"):
        for test in base.rglob("test_*.py"):
            inside = test.resolve().relative_to(base.resolve())
            gone = not (ROOT / "tests" / inside).exists()  # renamed or removed since
            if gone or not any((copy / "tests" / inside).is_relative_to(k) for k in kept):
                test.unlink()
    for meta in (copy / "mutants").rglob("*.meta"):
        data = json.loads(meta.read_text())
        codes = data.get("exit_code_by_key", {})
        data["exit_code_by_key"] = {k: None if v in (0, 33) else v for k, v in codes.items()}
        meta.write_text(json.dumps(data))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tests", nargs="+", default=["tests/unit/", "tests/fuzz/"])
    parser.add_argument("--children", type=int, default=2, help="mutants tested at once")
    parser.add_argument(
        "--keep", type=Path, help="make the copy here and keep it (`mutmut show NAME` in it)"
    )
    parser.add_argument(
        "--again",
        action="store_true",
        help="with --keep: bring the kept copy's code and tests up to date and test again only "
        "the mutants that survived or that no test reached, with the --tests folders alone (a "
        "folder whose tests did not change cannot kill a mutant it let survive)",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mutation-") as scratch:
        copy = args.keep.resolve() if args.keep else Path(scratch) / "repo"
        if args.again:
            refresh(copy, args.tests)
        else:
            shutil.copytree(ROOT, copy, ignore=SKIP)
            (copy / "daemon").rename(copy / "src")
            with (copy / "pyproject.toml").open("a") as pyproject:
                pyproject.write(settings(args.tests))
        env = {**os.environ, "PYTHONPATH": str(copy / "src"), "PYTHONWARNINGS": "ignore"}
        mutmut = [sys.executable, "-m", "mutmut"]
        run = subprocess.run(
            [*mutmut, "run", "--max-children", str(args.children)],
            check=False, cwd=copy, env=env, capture_output=True, text=True,
        )  # fmt: skip
        found = COUNTS.findall(run.stdout)
        if run.returncode or not found:
            print((run.stdout + run.stderr)[-3000:])
            return 1
        results = subprocess.run(
            [*mutmut, "results"], check=False, cwd=copy, env=env, capture_output=True, text=True
        )
    done, total, killed, uncovered, timeout, suspicious, survived, skipped = map(int, found[-1])
    print(results.stdout.strip())
    print(
        f"{total} mutants: {killed} killed, {timeout} timed out, {survived} survived, "
        f"{uncovered} reached by no test, {suspicious} suspicious, {skipped} skipped"
    )
    reached = total - uncovered - skipped
    print(f"score: {(killed + timeout) / max(total, 1):.1%} of all mutants, "
          f"{(killed + timeout) / max(reached, 1):.1%} of those some test reaches")  # fmt: skip
    return 0 if done == total else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
