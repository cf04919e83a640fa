"""`npsd import FILE --format delighted|satismeter|csv [--dry-run] [--sync] [--skip-bad]`:
the command-line side of jobs/importer.py — arguments, the progress bar (tqdm, only when
stderr is a terminal), bad rows and the summary line, exit codes as the other commands
(0 done, 1 the file or a row refused or the database missing, 2 the config)."""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog

from jobs.import_rows import FORMATS, BadRow, ImportFileError
from jobs.importer import ImportJob, Progress, run_import
from settings import Settings

if TYPE_CHECKING:
    from storage.sql_store import SqlStore

EXIT_FAILED = 1
log = structlog.get_logger("npsd.import")


def add_parser(command: Any) -> None:
    """`command(name, help)` makes a subparser (daemon.cli's)."""
    imp = command("import", "import answers exported from Delighted, SatisMeter or a CSV")
    imp.add_argument("file", metavar="FILE", help="the export (CSV, UTF-8)")
    imp.add_argument("--format", required=True, choices=FORMATS, dest="fmt",
                     help="delighted, satismeter, or csv (email,score,comment,answered_at"
                          "[,user_id])")
    imp.add_argument("--dry-run", action="store_true",
                     help="check and count what would be imported; write nothing")
    imp.add_argument("--sync", action="store_true",
                     help="sync the imported answers back to Segment (default: not)")
    imp.add_argument("--skip-bad", action="store_true",
                     help="skip bad rows (listed) and import the rest; default: a bad row "
                          "stops the import before anything is written")
    imp.add_argument("--timezone", default="UTC", metavar="ZONE",
                     help="IANA zone of dates written without an offset (default UTC)")


class _Bar:
    def __init__(self, label: str, total: int) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=total, desc=label, unit="B", unit_scale=True,
                         unit_divisor=1024, file=sys.stderr, leave=False)

    def update(self, done_bytes: int) -> None:
        self._bar.update(done_bytes - self._bar.n)

    def close(self) -> None:
        self._bar.close()


class _NoBar:
    def update(self, done_bytes: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(label: str, total: int) -> Progress:
    return _Bar(label, total) if sys.stderr.isatty() else _NoBar()


def _report_bad(path: str) -> Any:
    def report(row: BadRow) -> None:
        text = f"npsd import: {row.message(path)}"
        if sys.stderr.isatty():
            from tqdm import tqdm

            tqdm.write(text, file=sys.stderr)  # above the bar, not through it
        else:
            print(text, file=sys.stderr)
    return report


def job_of(args: argparse.Namespace) -> ImportJob | str:
    """The job the arguments ask for, or why not (a message naming the file or option)."""
    path = Path(args.file)
    if not path.is_file():
        return f"npsd import: {path}: no such file"
    try:
        zone = ZoneInfo(args.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        return (f"npsd import: --timezone: unknown timezone {args.timezone!r} (use an IANA "
                "name such as Europe/Berlin)")
    return ImportJob(path, args.fmt, zone, sync=args.sync, dry_run=args.dry_run,
                     skip_bad=args.skip_bad)


async def run(settings: Settings, args: argparse.Namespace, store: SqlStore) -> int:
    from jobs.clock import SystemClock

    job = job_of(args)
    if isinstance(job, str):
        print(job, file=sys.stderr)
        return EXIT_FAILED
    shown = str(args.file)
    # The import makes millions of short-lived tuples: without this, the collector's full
    # passes walk every object of the loaded libraries again and again (a tenth of the CPU
    # time, perf 2026-12-02). What is loaded by now stays for the life of the command.
    gc.freeze()
    try:
        summary = await run_import(store, job, SystemClock().now(), on_bad=_report_bad(shown),
                                   progress=_progress)
    except ImportFileError as exc:
        print(f"npsd import: {shown}:{exc}", file=sys.stderr)
        return EXIT_FAILED
    except (OSError, UnicodeError) as exc:
        print(f"npsd import: {shown}: cannot read it ({exc.__class__.__name__})",
              file=sys.stderr)
        return EXIT_FAILED
    if summary.aborted:
        log.warning("import.aborted", format=job.fmt, **summary.counts())
        print(f"npsd import: {shown}: {summary.bad:,} bad "
              f"row{'s' if summary.bad != 1 else ''} of {summary.read:,}; nothing was "
              "imported (fix them, or pass --skip-bad to import the other rows)",
              file=sys.stderr)
        return EXIT_FAILED
    log.info("import.finished", format=job.fmt, dry_run=job.dry_run, sync=job.sync,
             **summary.counts())
    print(summary.line(shown, dry_run=job.dry_run))
    return 0
