"""Command line: `run` (the daemon), `evaluate` (what would change), `status` (why),
`triggers` (reconcile triggers and dead letters, in triggerscli.py), `history` (a resource's
recorded state changes, in historycli.py), `watch` (transitions as they commit, in
watchcli.py) and `bench`; `--output json`
documents are described in docs/cli.md.

This module only parses: a command's work is in commands.py (or devtools' bench), imported
when that command runs, and only the chosen command's arguments are declared. So `--version`
and `--help` load nothing else, and a daemon given etcd endpoints never loads `devtools`.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from statemanager import __version__

if TYPE_CHECKING:
    from statemanager.app.config import Option

HELPS = {
    "run": "run the daemon until SIGTERM/SIGINT",
    "evaluate": "print every state in etcd that differs from the rules; write nothing "
    "(exit 0: all agree, 1: something differs, 2: invalid configuration, "
    "3: etcd cannot be read)",
    "status": "show packages → models → containers with states and the rule behind each "
    "(exit 0; 1: a NAME matches nothing, 2: invalid configuration, 3: etcd cannot be read)",
    "triggers": "list pending reconcile triggers and dead letters; redeliver or drop dead "
    "letters (exit 0; 1: a named package has none, or it could not be moved, "
    "2: invalid usage or configuration, 3: etcd cannot be read)",
    "history": "list a model's, package's or scenario's retained state changes, oldest first "
    "(exit 0; 1: NAME has no history, 2: invalid usage or configuration, "
    "3: etcd cannot be read)",
    "watch": "print transitions as etcd commits them, from any node (exit 0 when stopped; "
    "1: cut off, 2: invalid usage or configuration, 3: etcd cannot be read)",
    "bench": "measure the daemon's throughput, latency and footprint against a private etcd",
}


def _parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    """The parser, with the arguments of the command `argv` names (if any) declared."""
    parser = argparse.ArgumentParser(
        prog="statemanager",
        description="Keeps Pullpiri model and package states in etcd true to container states.",
    )
    parser.add_argument("--version", action="version", version=f"statemanager {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = next((a for a in argv if a in HELPS), None)  # options come after the command
    for name, text in HELPS.items():
        sub = commands.add_parser(name, help=text, description=text)
        if name == chosen:
            _add_arguments(name, sub)
    return parser


def _add_arguments(name: str, sub: argparse.ArgumentParser) -> None:
    """Declare command `name`'s arguments and settings flags."""
    if name == "bench":
        from statemanager.devtools import bench  # noqa: PLC0415 - see the module docstring

        bench.add_arguments(sub)
        return
    from statemanager.app import historycli, triggerscli  # noqa: PLC0415
    from statemanager.app.config import OPTIONS  # noqa: PLC0415

    if name == "triggers":
        triggerscli.add_arguments(sub)
    if name == "history":
        historycli.add_arguments(sub)
    if name == "watch":
        from statemanager.app import watchcli  # noqa: PLC0415

        watchcli.add_arguments(sub)
    if name == "status":
        sub.add_argument(
            "names",
            nargs="*",
            metavar="NAME",
            help="show only these packages (with their models) and models; default: all",
        )
    if name in ("status", "evaluate"):
        sub.add_argument(
            "--output",
            choices=("text", "json"),
            default="text",
            help="json: one document in the versioned schema of docs/cli.md",
        )
    settings = sub.add_argument_group(
        "settings",
        "each also read from its STATEMANAGER_* variable and the --config file; "
        "a flag wins over both",
    )
    settings.add_argument(
        "--config",
        type=Path,
        help="TOML config file (default /etc/statemanager/statemanager.toml, may be absent)",
    )
    for option in OPTIONS:
        if name in option.commands:
            settings.add_argument(
                option.flag, dest=option.name, metavar="VALUE", help=_flag_help(option)
            )


def _flag_help(option: Option) -> str:
    sources = f"env {option.env}"
    credential = option.declared.credential
    if credential is not None:
        sources += f"; systemd credential {credential.name}"
    text = f"{option.declared.help} ({sources}; default {option.shown_default})"
    # The help is the README's Markdown: links read as their text, code as itself. argparse
    # %-formats help texts.
    return re.sub(r"\[([^]]+)\]\([^)]*\)", r"\1", text).replace("`", "").replace("%", "%%")


def main(argv: Sequence[str] | None = None) -> int:
    """The `statemanager` command: parse, then run the chosen command; its exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser(argv).parse_args(argv)
    if args.command == "bench":
        from statemanager.devtools import bench  # noqa: PLC0415 - see the module docstring

        return bench.main(args)
    from statemanager.app import commands  # noqa: PLC0415 - see the module docstring

    return commands.main(args)
