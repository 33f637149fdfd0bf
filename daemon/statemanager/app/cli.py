"""Command line: `run` (the daemon), `evaluate` (what would change), `status` (why) and
`triggers` (reconcile triggers and dead letters, in triggerscli.py); `--output json`
documents are described in docs/cli.md."""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import structlog

from statemanager import __version__
from statemanager.adapters.etcd import EtcdClient
from statemanager.app import daemon, triggerscli
from statemanager.app.config import LOG_FORMATS, OPTIONS, Option, Settings, load
from statemanager.app.logs import configure
from statemanager.core import report
from statemanager.core.errors import ConfigError, EtcdError, EtcdUnavailable
from statemanager.core.records import LaterFormat
from statemanager.devtools import bench
from statemanager.devtools.localetcd import (
    DEV_CLIENT_PORT,
    DEV_DATA_DIR,
    DEV_ENDPOINT,
    DEV_PEER_PORT,
    LocalEtcd,
    port_open,
)
from statemanager.runtime.election import candidate_node, election_prefix

EXIT_OK, EXIT_DIFFERS, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="statemanager",
        description="Keeps Pullpiri model and package states in etcd true to container states.",
    )
    parser.add_argument("--version", action="version", version=f"statemanager {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    helps = {
        "run": "run the daemon until SIGTERM/SIGINT",
        "evaluate": "print every state in etcd that differs from the rules; write nothing "
        "(exit 0: all agree, 1: something differs, 2: invalid configuration, "
        "3: etcd cannot be read)",
        "status": "show packages → models → containers with states and the rule behind each "
        "(exit 0; 1: a NAME matches nothing, 2: invalid configuration, 3: etcd cannot be read)",
        "triggers": "list pending reconcile triggers and dead letters; redeliver or drop dead "
        "letters (exit 0; 1: a named package has none, or it could not be moved, "
        "2: invalid usage or configuration, 3: etcd cannot be read)",
    }
    for name, text in helps.items():
        sub = commands.add_parser(name, help=text, description=text)
        if name == "triggers":
            triggerscli.add_arguments(sub)
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
            if name in option.declared.commands:
                settings.add_argument(
                    option.flag, dest=option.name, metavar="VALUE", help=_flag_help(option)
                )
    text = "measure the daemon's throughput, latency and footprint against a private etcd"
    bench.add_arguments(commands.add_parser("bench", help=text, description=text))
    return parser


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
    args = _parser().parse_args(argv)
    if args.command == "bench":
        return bench.main(args)
    # A command without a setting's flag still reads it from the environment and the file.
    flags = {o.name: getattr(args, o.name, None) for o in OPTIONS}
    try:
        settings = load(args.config, os.environ, flags)
    except ConfigError as exc:
        # The log format as far as it can be told: flag, then environment (no file: it may be
        # the very thing that is broken).
        wanted = flags.get("log.format") or os.environ.get("STATEMANAGER_LOG_FORMAT")
        return _config_error(str(exc), wanted)
    configure(settings.log.format, settings.log.level)
    if args.command == "run":
        return _run(settings, lambda: load(args.config, os.environ, flags))
    if not settings.etcd.endpoints:
        # Never silently: an operator who forgot the setting must not mistake the development
        # etcd's (or no) answer for production's.
        print(
            f"statemanager: etcd.endpoints is not set: reading the development etcd at "
            f"{DEV_ENDPOINT}",
            file=sys.stderr,
        )
        settings = _with_endpoints(settings, (DEV_ENDPOINT,))
    try:
        if args.command == "triggers":
            return asyncio.run(triggerscli.main(settings, args))
        return asyncio.run(_inspect(settings, args))
    except (EtcdUnavailable, EtcdError) as exc:
        print(f"statemanager: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE


def _config_error(error: str, log_format: str | None) -> int:
    """Say what is wrong in the format the lines of a working daemon would have (JSON under
    systemd), using the configured log format when that much of the configuration is valid."""
    configure(log_format if log_format in LOG_FORMATS else "auto", "info")
    structlog.get_logger("statemanager.cli").error("invalid_config", error=error)
    return EXIT_USAGE


def _run(settings: Settings, reload: Callable[[], Settings]) -> int:
    # A watchdog kill (SIGABRT) or a crash in native code prints every thread's Python stack
    # to stderr (the journal): where the loop was stuck, not just that it was.
    faulthandler.enable(all_threads=True)
    local: LocalEtcd | None = None
    if not settings.etcd.endpoints and "INVOCATION_ID" in os.environ:
        # Under systemd a missing endpoint is a configuration mistake, not a request for a
        # throwaway development etcd in the service's working directory.
        return _config_error(
            "etcd.endpoints is not set (set it in /etc/statemanager/statemanager.toml or "
            "STATEMANAGER_ETCD_ENDPOINTS)",
            settings.log.format,
        )
    if not settings.etcd.endpoints:
        settings = _with_endpoints(settings, (DEV_ENDPOINT,))
        if not port_open(DEV_CLIENT_PORT):
            local = LocalEtcd(DEV_DATA_DIR.resolve(), DEV_CLIENT_PORT, DEV_PEER_PORT)
            structlog.get_logger("statemanager.cli").warning(
                "local_etcd_started",
                hint="no etcd endpoints configured: using a development etcd",
                endpoint=DEV_ENDPOINT,
                data_dir=str(local.data_dir),
            )
            local.start()
    started = settings

    def reread() -> Settings:
        # The endpoint chosen at start (perhaps the development etcd's) stays what it was.
        fresh = reload()
        return fresh if fresh.etcd.endpoints else _with_endpoints(fresh, started.etcd.endpoints)

    try:
        return asyncio.run(daemon.run(settings, reread))
    finally:
        if local is not None:
            local.stop()


def _with_endpoints(settings: Settings, endpoints: tuple[str, ...]) -> Settings:
    return replace(settings, etcd=replace(settings.etcd, endpoints=endpoints))


async def _inspect(settings: Settings, args: argparse.Namespace) -> int:
    client = EtcdClient.from_settings(settings.etcd)
    try:
        revision, listing = await client.snapshot(list(settings.prefixes.layout.watched().values()))
        leader = await client.first_created(election_prefix(settings.prefixes.layout.own))
    finally:
        await client.close()
    snapshot = report.build(
        settings.prefixes.layout, revision, listing, settings.inputs.max_value_bytes
    )
    as_json = args.output == "json"
    if args.command == "status":
        node = None if leader is None else candidate_node(leader.value)
        who = (
            node
            if not isinstance(node, LaterFormat)
            else (f"unknown (its leader key is in format {node.format}, newer than this reads)")
        )
        view = report.select(snapshot, args.names)
        if as_json:
            print(json.dumps(report.status_document(snapshot, view, who), indent=2))
        else:
            print(f"leader: {who or 'none (no daemon is writing)'}")
            print("\n".join(report.render_status(snapshot, view)))
        for name in view.unknown:
            print(f"statemanager: no package or model named {name!r}", file=sys.stderr)
        return EXIT_DIFFERS if view.unknown else EXIT_OK
    changes = report.differences(snapshot)
    if as_json:
        print(json.dumps(report.evaluate_document(snapshot, changes), indent=2))
        return EXIT_DIFFERS if changes else EXIT_OK
    for line in report.render_differences(changes):
        print(line)
    for r in snapshot.reports:
        print(f"warning: {r.key}: {r.kind}: {r.detail}", file=sys.stderr)
    if not changes:
        print(f"all states agree with the rules at revision {revision}")
    return EXIT_DIFFERS if changes else EXIT_OK
