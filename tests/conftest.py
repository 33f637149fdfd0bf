"""Fixtures shared by every test folder: Debian tools the tests need, installed on demand."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import structlog

_apt_updated = False
# Folders whose tests start a real etcd (and the daemon as a process): marked `integration`.
_INTEGRATION = [Path(__file__).parent / folder for folder in ("integration", "systemd")]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests that need a real etcd, so `pytest -m "not integration"` runs the quick
    in-process rest."""
    for item in items:
        if any(folder in item.path.parents for folder in _INTEGRATION):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def _structlog_config_restored() -> Iterator[None]:
    """A test that configures structlog (the simulation silences it) leaves it as it found it,
    so `capture_logs` in later tests still sees every line."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def _ensure(binary: str, package: str) -> str:
    """Path of `binary`; installs Debian's `package` when it is missing and we are root (as
    in CI on a fresh machine). Elsewhere a missing tool fails the test with the command to run."""
    global _apt_updated  # noqa: PLW0603 - one `apt-get update` per test session
    found = shutil.which(binary)
    if found:
        return found
    if os.geteuid() != 0:
        pytest.fail(f"{binary} missing: run `apt-get install {package}` (needs root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if not _apt_updated:
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True)
        _apt_updated = True
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package],
        check=True,
        env=env,
        capture_output=True,
    )
    found = shutil.which(binary)
    assert found, f"installing {package} did not provide {binary}"
    return found


@pytest.fixture(scope="session")
def debian_tool() -> Callable[[str, str], str]:
    """`debian_tool("promtool", "prometheus")` → the binary's path, installing it if needed."""
    return _ensure
