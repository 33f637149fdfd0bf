"""The layers' import contracts (pyproject.toml, docs/decisions/layers.md) hold, and each one
fails on an import it forbids."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(daemon_dir: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports with the repository's contracts, on the package found in `daemon_dir`."""
    env = {**os.environ, "PYTHONPATH": str(daemon_dir)}
    return subprocess.run(
        [str(LINT_IMPORTS), str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_package_keeps_its_contracts(tmp_path: Path) -> None:
    """Every contract is kept by the code as it is."""
    result = lint_imports(ROOT / "daemon", tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "planted", "broken"),
    [
        ("core/rules.py", "import asyncio", "The core is pure"),
        ("core/rules.py", "from statemanager.runtime import health", "The core is pure"),
        ("adapters/etcd.py", "from statemanager.app import config", "Layers"),
        ("runtime/writer.py", "from statemanager.app import logs", "Layers"),
        ("app/daemon.py", "from statemanager.devtools import bench", "Development tools"),
        ("runtime/controller.py", "import prometheus_client", "Each outside system"),
    ],
)
def test_a_forbidden_import_breaks_its_contract(
    tmp_path: Path, module: str, planted: str, broken: str
) -> None:
    """A copy of the package with one forbidden import planted fails the contract that
    forbids it (so the contracts check what they claim)."""
    copy = tmp_path / "daemon"
    shutil.copytree(
        ROOT / "daemon" / "statemanager",
        copy / "statemanager",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    target = copy / "statemanager" / module
    target.write_text(target.read_text() + f"\n{planted}  # noqa\n")
    result = lint_imports(copy, tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert broken in result.stdout.split("Broken contracts")[-1]


def _loaded_after(code: str) -> set[str]:
    """The package's modules loaded in a fresh interpreter after running `code`."""
    probe = f"import sys\n{code}\nprint('\\n'.join(sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    return {m for m in result.stdout.split() if m.startswith("statemanager")}


def test_the_daemon_never_loads_devtools() -> None:
    """The daemon's modules and the `run` command's parser load nothing of `devtools`."""
    loaded = _loaded_after(
        "from statemanager.app import cli, commands, daemon\n"
        "cli._parser(['run', '--etcd-endpoints', 'http://127.0.0.1:1']).parse_args("
        "['run', '--etcd-endpoints', 'http://127.0.0.1:1'])"
    )
    assert "statemanager.app.daemon" in loaded
    assert not {m for m in loaded if m.startswith("statemanager.devtools")}


def test_version_and_help_load_only_the_command_line() -> None:
    """`--version` parses with the command line module alone (no config, no clients)."""
    loaded = _loaded_after(
        "from statemanager.app import cli\n"
        "try:\n    cli.main(['--version'])\nexcept SystemExit:\n    pass"
    )
    assert loaded == {"statemanager", "statemanager.app", "statemanager.app.cli"}
