"""`npsd webhooks replay [--since T]`: dead letters back to pending, then delivered at once.

Safe while the daemon runs: deliveries are leased, so a row is attempted by one process at
a time. A replayed row keeps its webhook-id (receivers deduplicate on it) and gets a new
retry horizon from now: if its receiver still fails, the daemon retries it on the usual
schedule. Kept apart from daemon/cli.py so that file stays small."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog

from settings import Settings
from settings.durations import DurationTooLong, parse_duration

if TYPE_CHECKING:
    from storage.sql_store import SqlStore

log = structlog.get_logger("npsd.deliveries")


def add_commands(command: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    actions = command.add_subparsers(dest="webhooks_command", required=True, metavar="ACTION")
    replay = actions.add_parser(
        "replay", parents=[common], help="send dead-lettered alerts and webhooks again",
        description="Send dead-lettered alerts and webhooks again, with their webhook-ids.")
    replay.add_argument("--since", metavar="T",
                        help="only events since T: an ISO 8601 date or time (UTC unless it "
                             "says otherwise), or a duration ago such as 36h or 2d")
    replay.add_argument("--json", action="store_true", help="print JSON")


def parse_since(text: str, now: datetime) -> datetime:
    """`--since`: a date, a date and time, or how long ago ("36h")."""
    too_long: DurationTooLong | None = None
    try:
        return now - parse_duration(text)
    except DurationTooLong as exc:
        too_long = exc
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text.strip().replace("z", "Z"))  # also 20261201
    except ValueError:
        if too_long is not None:
            raise ValueError(f"--since {text!r}: {too_long}") from None
        raise ValueError(f"--since {text!r}: expected an ISO 8601 date or time such as "
                         "2026-12-01 or 2026-12-01T09:30:00Z, or a duration such as 36h"
                         ) from None
    try:
        return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:59:59-14:00 is past year 9999 in UTC
        raise ValueError(f"--since {text!r}: out of range") from None


async def replay(settings: Settings, args: argparse.Namespace, store: SqlStore) -> int:
    import aiohttp

    from daemon.runtime import process_identity
    from jobs.clock import SystemClock
    from jobs.deliveries import Deliverer
    from jobs.email import make_backend

    clock = SystemClock()
    since = parse_since(args.since, clock.now()) if args.since else None
    replayed = await store.replay_dead(clock.now(), since)
    log.info("delivery.replayed", deliveries=replayed,
             since=since.isoformat() if since else None)
    results: Counter[str] = Counter()
    backend = make_backend(settings.email, clock)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(
                total=settings.webhooks.timeout.total_seconds() + 5)) as session:
            deliverer = Deliverer(store, clock, process_identity(), lambda: settings,
                                  lambda: backend, session,
                                  on_result=lambda _c, r: results.update([r]))
            if replayed:
                await deliverer.run_once()
    finally:
        await backend.close()
    summary = {"replayed": replayed, "delivered": results["delivered"],
               "retrying": results["retry"], "dead": results["dead"],
               "dropped": results["dropped"]}
    if args.json:
        print(json.dumps(summary))
    elif not replayed:
        print("no dead letters" + (f" since {since.isoformat()}" if since else ""))
    else:
        print(f"replayed {replayed} dead letter{'s' if replayed != 1 else ''}: "
              f"{summary['delivered']} delivered, {summary['retrying']} failed again and "
              f"will be retried, {summary['dead']} refused for good, "
              f"{summary['dropped']} dropped (receiver no longer configured)")
    return 0


def status_line(deliveries: dict[str, int | str | None]) -> str:
    dead = deliveries["dead"]
    line = (f"alerts and webhooks: pending {deliveries['pending']} (due now "
            f"{deliveries['due_now']}), dead letters {dead}")
    if dead:
        line += (f" (oldest from {deliveries['oldest_dead_letter']}; `npsd webhooks replay` "
                 "sends them again)")
    return line
