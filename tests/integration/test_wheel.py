"""The wheel is what ships: built from the sdist as `python -m build` does, installed into a
fresh virtualenv (not this editable checkout), and run against a real etcd."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from statemanager import __version__
from statemanager.core.keys import KeyLayout

from conftest import Etcd, daemon_env

ROOT = Path(__file__).resolve().parent.parent.parent
PACKAGE = ROOT / "daemon" / "statemanager"


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None, code: int = 0) -> str:
    """The command's stdout, after checking it exited with `code`."""
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
                          check=False)  # fmt: skip
    assert done.returncode == code, f"{args}: {done.stdout}{done.stderr}"
    return done.stdout


def build(source: Path, dist: Path) -> Path:
    """Build the sdist of the source tree `source` and the wheel from it, as `python -m build`
    does, into `dist`; returns the wheel."""
    run([sys.executable, "-m", "build", "--outdir", str(dist), str(source)], cwd=dist.parent)
    (wheel,) = dist.glob("statemanager-*-py3-none-any.whl")
    return wheel


def install(wheel: Path, venv: Path) -> Path:
    """A new virtualenv at `venv` holding `wheel` and its pinned dependencies alone; returns
    `venv`."""
    run([sys.executable, "-m", "venv", str(venv)], cwd=venv.parent)
    run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)], cwd=venv.parent)
    return venv


async def test_built_wheel_installs_and_runs(
    tmp_path: Path, etcd: Etcd, etcd_endpoint: str, layout: KeyLayout
) -> None:
    """sdist and wheel build; the wheel holds every file of the package (the .proto files,
    generated stubs and their .pyi, py.typed); installed alone in a new venv with its pinned
    dependencies, its `statemanager --version` and `statemanager evaluate` work against etcd."""
    # A copy without what an editable install or a run leaves behind: setuptools would reuse a
    # stale *.egg-info/SOURCES.txt and ship files that the package-data rules no longer name.
    checkout = tmp_path / "checkout"
    shutil.copytree(ROOT, checkout, ignore=shutil.ignore_patterns(
        ".git", ".venv", "*.egg-info", "__pycache__", "build", "dist", ".statemanager",
        ".*_cache"))  # fmt: skip
    dist = tmp_path / "dist"
    wheel = build(checkout, dist)
    (sdist,) = dist.glob("statemanager-*.tar.gz")
    assert sdist.name == f"statemanager-{__version__}.tar.gz"

    shipped = set(zipfile.ZipFile(wheel).namelist())
    source = {
        "statemanager/" + p.relative_to(PACKAGE).as_posix()
        for p in PACKAGE.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert source - shipped == set()
    for required in ("py.typed", "proto/statemanager.proto", "proto/actioncontroller.proto",
                     "proto/statemanager_pb2.pyi", "proto/statemanager_pb2_grpc.py"):  # fmt: skip
        assert f"statemanager/{required}" in shipped

    venv = install(wheel, tmp_path / "venv")
    installed = venv / "bin" / "statemanager"
    # Nothing from this checkout may leak in: no PYTHONPATH, run from elsewhere.
    env = {k: v for k, v in daemon_env(etcd_endpoint, layout, 1).items() if k != "PYTHONPATH"}
    assert run([str(installed), "--version"], cwd=tmp_path, env=env).strip() == (
        f"statemanager {__version__}"
    )
    where = run([str(venv / "bin" / "python"), "-c", "import statemanager; print(statemanager.__file__)"],
                cwd=tmp_path, env=env)  # fmt: skip
    assert Path(where.strip()).is_relative_to(venv)

    await etcd.package("shop", ["web"])
    await etcd.container("w1", "dead", "web")
    evaluate = run([str(installed), "evaluate", "--output", "json", "--config", os.devnull],
                   cwd=tmp_path, env=env, code=1)  # fmt: skip
    changes = json.loads(evaluate)["changes"]
    assert [(c["name"], c["derived"]) for c in changes] == [("shop", "Error"), ("web", "Failed")]
