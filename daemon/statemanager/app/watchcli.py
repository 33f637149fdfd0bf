"""`statemanager watch [--type T] [NAME …]`: print transitions as etcd commits them.

It follows the history in etcd with the daemon's own feed (runtime/feed.py), so it works from
any node that can read etcd, with the same settings (TLS, auth) as `status` and `triggers`,
whichever daemon leads and through failovers, even while no daemon runs. Each transition is a
line: text for people, or with `--output json` one `statemanager.watch/v1` document per line
(docs/cli.md). `--after-revision N` starts with the transitions committed after revision N
(etcd's history permitting), as a stream cut off resumes; `--count N` stops after N.

Exit codes: 0 stopped (SIGINT, SIGTERM, or `--count` reached); 1 cut off (it fell behind, or
the revision to start after is compacted: the message says from where to go on); 2 usage or
config; 3 etcd unreachable at the start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

from statemanager.adapters.etcd import EtcdClient
from statemanager.app.config import Settings
from statemanager.core.errors import Compacted
from statemanager.core.history import Transition
from statemanager.core.keys import Resource, name_problem
from statemanager.core.subscriptions import Committed, CutOff, selector
from statemanager.core.timestamps import timestamp
from statemanager.runtime.feed import TransitionFeed
from statemanager.runtime.metrics import Metrics
from statemanager.runtime.records import LaterFormats

SCHEMA = "statemanager.watch/v1"
EXIT_OK, EXIT_CUT_OFF, EXIT_USAGE = 0, 1, 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare `watch`'s own arguments (cli.py adds the settings flags)."""
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help="only these resources' transitions (any type)"
    )
    parser.add_argument(
        "--type",
        choices=[r.value for r in Resource],
        help="only transitions of this resource type; default: all",
    )
    parser.add_argument(
        "--output",
        choices=("text", "json"),
        default="text",
        help="json: one document per line in the versioned schema of docs/cli.md",
    )
    parser.add_argument(
        "--after-revision",
        type=int,
        metavar="N",
        help="start with the transitions committed after etcd revision N; default: from now",
    )
    parser.add_argument("--count", type=int, metavar="N", help="stop after N transitions")


async def main(settings: Settings, args: argparse.Namespace) -> int:
    """Print transitions until stopped; the exit status."""
    problem = next((f"{n!r}: {p}" for n in args.names if (p := name_problem(n))), None)
    if problem is not None:
        print(f"statemanager: NAME {problem}", file=sys.stderr)
        return EXIT_USAGE
    client = EtcdClient.from_settings(settings.etcd)
    try:
        await client.header()  # unreachable: EtcdUnavailable, exit 3 (commands.py)
        return await _follow(client, settings, args)
    finally:
        await client.close()


async def _follow(client: EtcdClient, settings: Settings, args: argparse.Namespace) -> int:
    metrics = Metrics()  # the feed counts into it; nobody scrapes a command's
    feed = TransitionFeed(
        client=client,
        layout=settings.prefixes.layout,
        metrics=metrics,
        later_formats=LaterFormats(metrics),
    )
    wanted = selector([Resource(args.type)] if args.type else [], args.names)
    subscription = feed.subscribe(wanted, args.after_revision)
    feeding = asyncio.create_task(feed.run(), name="transition-feed")
    printing = asyncio.create_task(_print(subscription.stream(), args), name="print")
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, printing.cancel)
    try:
        start = await subscription.ready()
        print(f"# transitions committed after etcd revision {start}", file=sys.stderr, flush=True)
        return await printing
    except asyncio.CancelledError:
        return EXIT_OK
    except CutOff as exc:
        print(
            f"statemanager: {exc.detail}; every transition up to etcd revision "
            f"{exc.resume_after} was printed: go on with --after-revision {exc.resume_after}",
            file=sys.stderr,
        )
        return EXIT_CUT_OFF
    except Compacted as exc:
        print(
            f"statemanager: etcd no longer holds the history after revision "
            f"{args.after_revision} ({exc})",
            file=sys.stderr,
        )
        return EXIT_CUT_OFF
    finally:
        subscription.close()
        feeding.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feeding


async def _print(stream: AsyncIterator[Committed], args: argparse.Namespace) -> int:
    shown = 0
    async for committed in stream:
        for t in committed.transitions:
            line = json.dumps(document(t)) if args.output == "json" else text(t)
            print(line, flush=True)
            shown += 1
            if shown == args.count:
                return EXIT_OK
    return EXIT_OK


def document(t: Transition) -> dict[str, Any]:
    """One transition as a `statemanager.watch/v1` document."""
    return {
        "schema": SCHEMA,
        "revision": t.revision,
        "type": t.resource.value,
        "name": t.name,
        "from": t.from_state,
        "to": t.to_state,
        "rule": t.rule,
        "reason": t.reason,
        "transition_id": t.transition_id,
        "timestamp": timestamp(t.timestamp_ns),
        "timestamp_ns": t.timestamp_ns,
        "cause_revision": t.cause_revision,
        "caused_by": t.caused_by,
        "source": t.source,
    }


def text(t: Transition) -> str:
    """One transition as a line for people."""
    why = f" ({t.rule}: {t.reason})" if t.rule else ""
    change = f"{t.from_state or '(none)'} → {t.to_state or '(deleted)'}"
    return (
        f"{timestamp(t.timestamp_ns)} {t.resource} {t.name}: {change}{why} at revision {t.revision}"
    )
