"""Importing an export file: read it (jobs/import_rows.py), then record its answers through
the Store in batches, streaming, so a million rows cost the memory of one batch.

All or nothing for bad rows: unless `skip_bad`, a first pass checks every row and, if any is
bad, stops before anything is written (each bad row reported with its line); the second
pass writes, one transaction per batch. An interrupted import is finished by running it
again: what was written is "already present" the second time. A dry run makes every
decision against the database and writes nothing; what it would have created earlier in
the same run is remembered in a scratch SQLite file (not in memory), so its counts are
those the real run gives.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Protocol

from jobs.import_rows import BadRow, Reader
from storage.import_store import ImportRow, RowOutcome

# Rows per transaction: more rows, fewer pages written per row into the random-keyed
# indexes (token, import_key, email_key, user ids); but a batch holds the book's write lock,
# and the daemon's intake waits meanwhile. So the size follows the time a batch took,
# aiming at BATCH_SECONDS, between the bounds.
BATCH_MIN, BATCH_MAX, BATCH_SECONDS = 1000, 10_000, 1.0


class ImportStore(Protocol):
    async def import_answers(self, rows: list[ImportRow], source: str, now: datetime, *,
                             sync: bool, write: bool = True) -> list[RowOutcome]: ...


class Progress(Protocol):
    """A progress bar over the file's bytes (tqdm on a terminal, nothing otherwise)."""

    def update(self, done_bytes: int) -> None: ...

    def close(self) -> None: ...


@dataclass
class Summary:
    read: int = 0
    imported: int = 0
    present: int = 0
    bad: int = 0
    suppressed: int = 0
    users_created: int = 0
    aborted: bool = False  # bad rows found without skip_bad: nothing written

    def line(self, path: str, *, dry_run: bool) -> str:
        verb = "would be imported" if dry_run else "imported"
        text = (f"{path}: {self.read:,} rows read, {self.imported:,} {verb}, "
                f"{self.present:,} already present, {self.bad:,} skipped bad, "
                f"{self.suppressed:,} skipped erased, {self.users_created:,} users "
                f"{'to create' if dry_run else 'created'}")
        return text + (" (dry run: nothing written)" if dry_run else "")

    def counts(self) -> dict[str, int]:
        return {"rows": self.read, "imported": self.imported, "present": self.present,
                "bad": self.bad, "suppressed": self.suppressed,
                "users_created": self.users_created}


@dataclass(frozen=True)
class ImportJob:
    path: Path
    fmt: str
    zone: tzinfo
    sync: bool = False
    dry_run: bool = False
    skip_bad: bool = False


ProgressFactory = Callable[[str, int], Progress]  # (label, total bytes) → a bar


async def run_import(store: ImportStore, job: ImportJob, now: datetime, *,
                     on_bad: Callable[[BadRow], None], progress: ProgressFactory
                     ) -> Summary:
    """Import `job.path`; bad rows go to `on_bad` as they are found. Raises
    jobs.import_rows.ImportFileError for a file that cannot be read at all."""
    size = job.path.stat().st_size
    if not job.skip_bad:
        checked = _check(job, now, on_bad, progress("checking", size))
        if checked.bad:
            checked.aborted = True
            return checked
    scratch = _Scratch() if job.dry_run else None
    try:
        return await _write(store, job, now, on_bad, progress("importing", size), scratch)
    finally:
        if scratch is not None:
            scratch.close()


def _check(job: ImportJob, now: datetime, on_bad: Callable[[BadRow], None],
           bar: Progress) -> Summary:
    summary = Summary()
    try:
        with job.path.open("rb") as stream:
            reader = Reader(stream, job.fmt, zone=job.zone, now=now, identities=False)
            for n, row in enumerate(reader):
                summary.read += 1
                if isinstance(row, BadRow):
                    summary.bad += 1
                    on_bad(row)
                if n % 4096 == 0:
                    bar.update(reader.bytes_read)
            bar.update(reader.bytes_read)
    finally:
        bar.close()
    return summary


def _take(rows: Iterator[ImportRow | BadRow], summary: Summary, size: int
          ) -> tuple[list[ImportRow], list[BadRow]]:
    """The next batch of good rows (empty at the end) and the bad rows met on the way."""
    batch: list[ImportRow] = []
    bad: list[BadRow] = []
    for row in rows:
        summary.read += 1
        if isinstance(row, BadRow):
            bad.append(row)  # only with skip_bad: the check found none otherwise
            continue
        batch.append(row)
        if len(batch) >= size:
            break
    return batch, bad


async def _write(store: ImportStore, job: ImportJob, now: datetime,
                 on_bad: Callable[[BadRow], None], bar: Progress,
                 scratch: _Scratch | None) -> Summary:
    """Reading the next batch (in a thread) while the last one is written: the store's
    work (SQLite's own, PostgreSQL's server) overlaps the parsing of the file. One batch
    is written at a time, in file order, each after the one before has committed."""
    summary = Summary()
    writing: asyncio.Task[list[RowOutcome]] | None = None
    size, began = min(BATCH_MAX, BATCH_MIN * 2), 0.0
    try:
        with job.path.open("rb") as stream:
            reader = Reader(stream, job.fmt, zone=job.zone, now=now)
            rows = iter(reader)
            while True:
                batch, bad = await asyncio.to_thread(_take, rows, summary, size)
                if writing is not None:
                    _tally(await writing, summary, scratch)
                    writing = None
                    size = _next_size(size, time.monotonic() - began)
                for row in bad:
                    summary.bad += 1
                    on_bad(row)
                bar.update(reader.bytes_read)
                if not batch:
                    break
                began = time.monotonic()
                writing = asyncio.create_task(store.import_answers(
                    batch, job.fmt, now, sync=job.sync, write=not job.dry_run))
    finally:
        if writing is not None:  # the reading failed: let the write end, then give up
            await asyncio.gather(writing, return_exceptions=True)
        bar.close()
    return summary


def _next_size(size: int, seconds: float) -> int:
    """The next batch's size after one of `size` rows took `seconds` (its write and the
    wait for it: the parsing of the next overlaps it)."""
    wanted = size * BATCH_SECONDS / max(seconds, 1e-3)
    return int(min(BATCH_MAX, max(BATCH_MIN, min(wanted, size * 2))))


def _tally(outcomes: list[RowOutcome], summary: Summary, scratch: _Scratch | None) -> None:
    if scratch is not None:
        outcomes = scratch.adjust(outcomes)
    for o in outcomes:
        if o.outcome == "imported":
            summary.imported += 1
            summary.users_created += o.new_user is not None
        elif o.outcome == "present":
            summary.present += 1
        else:
            summary.suppressed += 1


class _Scratch:
    """A dry run's memory of what it would have written earlier in the run: answer keys,
    users and their address keys, in a temporary SQLite file (bounded memory)."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="npsd-import-")
        self._db = sqlite3.connect(Path(self._dir.name) / "seen.db")
        self._db.executescript(
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;"
            "CREATE TABLE seen (kind TEXT, value TEXT, PRIMARY KEY (kind, value)) "
            "WITHOUT ROWID;")

    def _known(self, kind: str, values: Iterable[str]) -> set[str]:
        listed = sorted(set(values))
        found: set[str] = set()
        for start in range(0, len(listed), 500):
            part = listed[start:start + 500]
            found.update(r[0] for r in self._db.execute(
                f"SELECT value FROM seen WHERE kind = ? AND value IN "
                f"({','.join('?' * len(part))})", [kind, *part]))
        return found

    def adjust(self, outcomes: list[RowOutcome]) -> list[RowOutcome]:
        imported = [o for o in outcomes if o.outcome == "imported"]
        keys = self._known("key", (o.key for o in imported))
        users = self._known("user", (o.new_user for o in imported if o.new_user))
        addresses = self._known("address", (o.new_user_key for o in imported
                                            if o.new_user_key))
        out: list[RowOutcome] = []
        for o in outcomes:
            if o.outcome == "imported" and o.key in keys:
                o = RowOutcome(o.line, o.key, "present")
            elif o.new_user is not None and (o.new_user in users
                                             or o.new_user_key in addresses):
                o = RowOutcome(o.line, o.key, "imported")
            out.append(o)
        rows = [("key", o.key) for o in out if o.outcome == "imported"]
        rows += [("user", o.new_user) for o in out if o.new_user]
        rows += [("address", o.new_user_key) for o in out if o.new_user_key]
        self._db.executemany("INSERT OR IGNORE INTO seen VALUES (?, ?)", rows)
        return out

    def close(self) -> None:
        self._db.close()
        self._dir.cleanup()
