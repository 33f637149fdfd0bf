"""The commands `run`, `evaluate`, `status`, `triggers`, `history` and `watch` (cli.py parses their
arguments).

`devtools` is imported only where a command starts or reads the development etcd (no etcd
endpoints configured), so the daemon of a deployment never loads it.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import structlog
import uvloop

from statemanager.adapters.etcd import EtcdClient
from statemanager.app import daemon, historycli, triggerscli, watchcli
from statemanager.app.config import LOG_FORMATS, OPTIONS, Settings, load
from statemanager.app.logs import configure
from statemanager.core import report
from statemanager.core.errors import ConfigError, EtcdError, EtcdUnavailable
from statemanager.core.keys import Resource, WorkKey
from statemanager.core.records import LaterFormat
from statemanager.core.timestamps import timestamp
from statemanager.runtime.election import candidate_node, election_prefix

if TYPE_CHECKING:
    from statemanager.devtools.localetcd import LocalEtcd

EXIT_OK, EXIT_DIFFERS, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3


def main(args: argparse.Namespace) -> int:
    """Run `run`, `evaluate`, `status`, `triggers` or `watch` as parsed by cli.py; the exit
    status."""
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
        from statemanager.devtools.localetcd import DEV_ENDPOINT  # noqa: PLC0415 - module doc

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
        if args.command == "history":
            return asyncio.run(historycli.main(settings, args))
        if args.command == "watch":
            return asyncio.run(watchcli.main(settings, args))
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
        settings, local = _development_etcd(settings)
    started = settings

    def reread() -> Settings:
        # The endpoint chosen at start (perhaps the development etcd's) stays what it was.
        fresh = reload()
        return fresh if fresh.etcd.endpoints else _with_endpoints(fresh, started.etcd.endpoints)

    try:
        # uvloop: a quarter less CPU per gRPC message than asyncio's own loop (docs/design.md,
        # Cost per event); everything the daemon asks of a loop it has.
        return uvloop.run(daemon.run(settings, reread))
    finally:
        if local is not None:
            local.stop()


def _development_etcd(settings: Settings) -> tuple[Settings, LocalEtcd | None]:
    """`settings` pointed at the development etcd, and that etcd started unless one already
    answers there (None then): `run` without etcd endpoints, off systemd."""
    from statemanager.devtools import localetcd  # noqa: PLC0415 - see the module docstring

    settings = _with_endpoints(settings, (localetcd.DEV_ENDPOINT,))
    if localetcd.port_open(localetcd.DEV_CLIENT_PORT):
        return settings, None
    local = localetcd.LocalEtcd(
        localetcd.DEV_DATA_DIR.resolve(), localetcd.DEV_CLIENT_PORT, localetcd.DEV_PEER_PORT
    )
    structlog.get_logger("statemanager.cli").warning(
        "local_etcd_started",
        hint="no etcd endpoints configured: using a development etcd",
        endpoint=localetcd.DEV_ENDPOINT,
        data_dir=str(local.data_dir),
    )
    local.start()
    return settings, local


def _with_endpoints(settings: Settings, endpoints: tuple[str, ...]) -> Settings:
    return replace(settings, etcd=replace(settings.etcd, endpoints=endpoints))


async def _inspect(settings: Settings, args: argparse.Namespace) -> int:
    layout = settings.prefixes.layout
    client = EtcdClient.from_settings(settings.etcd)
    try:
        revision, listing = await client.snapshot(list(layout.watched().values()))
        leader = await client.first_created(election_prefix(layout.own))
        snapshot = report.build(layout, revision, listing, settings.inputs.max_value_bytes)
        view = report.select(snapshot, getattr(args, "names", ()))
        shown = [WorkKey(Resource.PACKAGE, p) for p, _ in view.packages]
        shown += [WorkKey(Resource.MODEL, m) for m in view.models()]
        changed = (
            await historycli.changed_at(client, layout, snapshot.index, shown)
            if args.command == "status"
            else {}
        )
    finally:
        await client.close()
    as_json = args.output == "json"
    if args.command == "status":
        node = None if leader is None else candidate_node(leader.value)
        who = (
            node
            if not isinstance(node, LaterFormat)
            else (f"unknown (its leader key is in format {node.format}, newer than this reads)")
        )
        now = time.time_ns()
        if as_json:
            stamps = {key: timestamp(ns) for key, ns in changed.items()}
            print(json.dumps(report.status_document(snapshot, view, who, stamps), indent=2))
        else:
            ages = {key: report.held_for((now - ns) / 1e9) for key, ns in changed.items()}
            print(f"leader: {who or 'none (no daemon is writing)'}")
            print("\n".join(report.render_status(snapshot, view, ages)))
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
