"""The `npsd` command: run, check-config, migrate, sync-now, report, why, status, import,
webhooks.

Only `run` and `migrate` may create a database; the others read one that exists and say
where they looked when it does not (SQLite would otherwise create an empty file)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Coroutine
from importlib import metadata
from typing import TYPE_CHECKING, Any

from daemon import cli_webhooks, import_cli
from daemon.config import ConfigError, Settings, config_path, load_settings
from daemon.config_loop import plain_http_receivers
from daemon.logging import configure_logging
from daemon.paths import sqlite_file
from daemon.weak_secrets import is_loopback, refusal, weak_secrets
from jobs.redact import redact

if TYPE_CHECKING:
    from storage.sql_store import SqlStore

EXIT_CONFIG = 2
EXIT_FAILED = 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="npsd", description="Segment destination: customer book, NPS surveys, sync-back.")
    config_help = "config file (default: $NPSD_CONFIG, else ./config.toml)"
    parser.add_argument("--config", metavar="PATH", help=config_help)
    parser.add_argument("--version", action="version", version=f"npsd {version()}")
    # --config is accepted after the command too (`npsd run --config /etc/npsd/config.toml`).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="PATH", help=config_help, default=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, description=help_text, parents=[common])

    command("run", "run the daemon (intake, survey dispatch, sync-back)")
    command("check-config", "validate the config file and exit")
    command("migrate", "upgrade the database schema and exit")
    command("sync-now", "sync new answers back to Segment now")
    report = command("report", "NPS overall, by account and by month")
    report.add_argument("--json", action="store_true", help="print JSON")
    report.add_argument("--by", choices=("account", "month"),
                        help="the overall figures, then only this breakdown")
    why = command("why", "every survey decision for a user, with its reason")
    why.add_argument("user_id", help="the customer's Segment userId")
    why.add_argument("--json", action="store_true", help="print JSON")
    status = command("status", "pending surveys, last sync, backlog, dead letters")
    status.add_argument("--json", action="store_true", help="print JSON")
    import_cli.add_parser(command)
    cli_webhooks.add_commands(command("webhooks", "alert and webhook deliveries"), common)
    return parser


def version() -> str:
    try:
        return metadata.version("npsd")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    path = config_path(args.config)
    try:
        settings = load_settings(path)
    except ConfigError as exc:
        print(f"npsd: invalid config: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    weak = weak_secrets(settings)
    if weak and args.command in ("run", "check-config") and not is_loopback(settings.server.host):
        print(refusal(settings, weak), file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "check-config":
        for w in weak:
            print(f"npsd: warning: {w.message()} (npsd refuses to start with it when "
                  "server.host is not a loopback address)", file=sys.stderr)
        for key, host in plain_http_receivers(settings.alerts, settings.webhooks):
            print(f"npsd: warning: {path}: {key}: http://{host} is not https: alerts and "
                  "webhooks carry comments and emails", file=sys.stderr)
        print(f"{path}: ok")
        return 0
    configure_logging(settings.log.format, settings.log.level, settings.secrets())
    if args.command == "run":
        from daemon.server import serve

        return asyncio.run(serve(settings, path))
    commands: dict[str, Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int]]] = {
        "migrate": _migrate, "sync-now": _sync_now, "report": _report, "why": _why,
        "status": _status, "import": _import, "webhooks": _webhooks,
    }
    try:
        return asyncio.run(commands[args.command](settings, args))
    except Exception as exc:
        print(f"npsd {args.command}: {exc.__class__.__name__}: {redact(str(exc))}",
              file=sys.stderr)
        return EXIT_FAILED


async def _with_db(settings: Settings, work: Callable[[SqlStore], Awaitable[int]],
                   *, upgrade: bool = False) -> int:
    """Run `work` on the store (without its intake writer: a command only reads, or syncs)."""
    from jobs.clock import SystemClock
    from storage.migrations import LATEST, migrate
    from storage.sql_store import SqlStore

    missing = _missing_database(settings) if not upgrade else None
    if missing is not None:
        print(missing, file=sys.stderr)
        return EXIT_FAILED
    async with SqlStore(settings.storage.url, SystemClock(), migrate=False,
                        background=False) as store:
        if upgrade:
            before, after = await migrate(store.db, SystemClock().now())
            print(f"schema: version {before if before is not None else 'none'} → {after}")
            return 0
        version = await store.schema_version()
        if version is None:
            print(f"npsd: {settings.storage.url.rpartition('@')[2]} holds no npsd schema: start "
                  "npsd (`npsd run`) or run `npsd migrate` to create it, or point storage.url at "
                  "the existing database", file=sys.stderr)
            return EXIT_FAILED
        if version != LATEST:
            print(f"npsd: the database schema is {version}, expected {LATEST}: run `npsd "
                  "migrate` (or start `npsd run`, which upgrades it)", file=sys.stderr)
            return EXIT_FAILED
        return await work(store)


def _missing_database(settings: Settings) -> str | None:
    """Why a command that only reads cannot run: its SQLite file does not exist."""
    path = sqlite_file(settings.storage.url)
    if path is None or (path.exists() and path.stat().st_size > 0):
        return None
    what = "an empty file" if path.exists() else "no database"
    return (f"npsd: {what} at {path.absolute()} (storage.url in {settings.origin('storage.url')}): "
            "start npsd (`npsd run`) or run `npsd migrate` to create it, or point "
            "storage.url at the existing one")


async def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    async def nothing(_store: SqlStore) -> int:
        return 0

    return await _with_db(settings, nothing, upgrade=True)


async def _sync_now(settings: Settings, args: argparse.Namespace) -> int:
    if not settings.segment.enabled:
        print("npsd sync-now: sync-back is off (set segment.write_key or "
              "NPSD_SEGMENT_WRITE_KEY)", file=sys.stderr)
        return EXIT_FAILED

    async def work(store: SqlStore) -> int:
        import aiohttp

        from daemon.runtime import process_identity
        from jobs.clock import SystemClock
        from jobs.sync import Syncer

        async with aiohttp.ClientSession() as session:
            syncer = Syncer(store, SystemClock(), process_identity(), lambda: settings.segment,
                            session)
            report = await syncer.run("cli")
        print(json.dumps(report))
        return 0 if report["result"] == "ok" else EXIT_FAILED

    return await _with_db(settings, work)


def _table(rows: list[dict[str, Any]], key_name: str) -> str:
    w = 44 if any(r.get("name") for r in rows) else 24  # an account's id and stored name
    header = f"{key_name:<{w}} {'NPS':>7} {'prom':>6} {'pass':>6} {'detr':>6} {'resp':>6} " \
             f"{'sent':>6} {'rate':>7}"
    lines = [header, "-" * len(header)]
    for r in rows:
        nps = "—" if r["nps"] is None else f"{r['nps']:+.1f}"
        rate = "—" if r["response_rate"] is None else f"{100 * r['response_rate']:.1f}%"
        label = f"{r['key']} {r['name']}" if r.get("name") else str(r["key"])
        lines.append(f"{label[:w]:<{w}} {nps:>7} {r['promoters']:>6} {r['passives']:>6}"
                     f" {r['detractors']:>6} {r['responses']:>6} {r['sent']:>6} {rate:>7}")
    return "\n".join(lines)


async def _report(settings: Settings, args: argparse.Namespace) -> int:
    from daemon.admin_api import named_report

    async def work(store: SqlStore) -> int:
        overall = await named_report(store, None)
        wanted = [args.by] if args.by else ["account", "month"]
        parts = {by: (await named_report(store, by))["groups"] for by in wanted}
        if args.json:
            print(json.dumps({"overall": overall, **{f"by_{k}": v for k, v in parts.items()}},
                             indent=2))
            return 0
        print(_table([{"key": "overall", **overall}], "NPS"))
        for by, rows in parts.items():
            print(f"\nby {by}")
            print(_table(rows, by) if rows else "(no surveys sent yet)")
        return 0

    return await _with_db(settings, work)


async def _why(settings: Settings, args: argparse.Namespace) -> int:
    async def work(store: SqlStore) -> int:
        found = await store.decisions(args.user_id)
        if found is None:
            print(f"npsd why: no user {args.user_id!r}", file=sys.stderr)
            return EXIT_FAILED
        if args.json:
            print(json.dumps({"userId": args.user_id, "decisions": found}, indent=2))
            return 0
        if not found:
            print(f"{args.user_id}: no survey decisions yet (no identify with an email)")
        for d in found:
            print(f"{d['at']}  {d['outcome']:<12} {d['reason']}")
        return 0

    return await _with_db(settings, work)


async def _status(settings: Settings, args: argparse.Namespace) -> int:
    from jobs.clock import SystemClock
    async def work(store: SqlStore) -> int:
        s = await store.status(SystemClock().now())
        if args.json:
            print(json.dumps(s, indent=2))
            return 0
        surveys = ", ".join(f"{k} {v}" for k, v in s["surveys"].items() if v) or "none"
        sync = s["sync"]
        print(f"users: {s['users']}  accounts: {s['accounts']}")
        print(f"surveys: {surveys}")
        print(f"due now: {s['due_now']} (oldest {s['oldest_due_seconds']:.0f}s overdue)")
        print(f"sync: {'on' if settings.segment.enabled else 'off'}; last run "
              f"{sync['last_started_at'] or 'never'} → {sync['last_result'] or '-'}; last "
              f"success {sync['last_success_at'] or 'never'}; backlog {sync['backlog']} "
              f"answers; refused messages {sync['failed_messages']}")
        print(cli_webhooks.status_line(s["deliveries"]))
        return 0

    return await _with_db(settings, work)


async def _import(settings: Settings, args: argparse.Namespace) -> int:
    async def work(store: SqlStore) -> int:
        return await import_cli.run(settings, args, store)

    return await _with_db(settings, work)


async def _webhooks(settings: Settings, args: argparse.Namespace) -> int:
    if args.since:
        from jobs.clock import SystemClock
        try:
            cli_webhooks.parse_since(args.since, SystemClock().now())
        except ValueError as exc:
            print(f"npsd webhooks replay: {exc}", file=sys.stderr)
            return EXIT_CONFIG

    async def work(store: SqlStore) -> int:
        return await cli_webhooks.replay(settings, args, store)

    return await _with_db(settings, work)


if __name__ == "__main__":
    sys.exit(main())
