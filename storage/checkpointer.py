"""WAL checkpoints off the intake's path (SQLite only).

Left to itself, SQLite checkpoints inside whichever commit crosses `wal_autocheckpoint`
pages: that commit then copies the WAL into the database and fsyncs both while every
intake request of its group waits (measured: a quarter of commits took 10-25 ms instead of
2-4 ms). Here a thread with its own connection runs PASSIVE checkpoints every second:
PASSIVE never blocks the writer, and the sqlite3 module lets go of the GIL meanwhile.

Under continuous writes a PASSIVE checkpoint never finds the log fully copied at the moment
a writer starts, so the log would never start again from its beginning and would only grow
(slower page lookups). So the writer keeps an automatic checkpoint, at WRITER_AUTOCHECKPOINT
pages: when it fires inside a commit, it has only what arrived since this thread's last pass
left to copy, and the next write restarts the log.

After an erasure the log still holds the erased rows' earlier page versions: `wipe_log()`
asks for a TRUNCATE checkpoint, which copies the whole log and empties the file. It waits
for the writer and readers WIPE_WAIT_MS at most (it holds new writers back meanwhile) and is
tried again each pass until it succeeds.
"""

from __future__ import annotations

import sqlite3
import threading

import structlog

log = structlog.get_logger("npsd.storage")

WRITER_AUTOCHECKPOINT = 4096  # pages (16 MB of log with 4 KB pages)
# A wipe's wait for the writer and readers, per attempt. It holds new writers back
# meanwhile, so it stays short: an intake commit takes a few milliseconds; a long read (a
# backup) makes the attempt fail, and it is tried again a second later.
WIPE_WAIT_MS = 20
WIPE_WARN_AFTER = 30  # attempts (about 30 s) before a wipe still pending is logged


class Checkpointer:
    def __init__(self, path: str, interval_s: float = 1.0) -> None:
        self._path = path
        self._interval = interval_s
        self._stop = threading.Event()
        self._wipe = threading.Event()
        self._thread: threading.Thread | None = None
        self.runs = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="npsd-wal-checkpoint",
                                        daemon=True)
        self._thread.start()

    def wipe_log(self) -> None:
        """Empty the write-ahead log soon (thread-safe)."""
        self._wipe.set()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        failed = False
        attempts = 0  # of the wipe pending
        while not self._stop.wait(self._interval):
            try:
                if conn is None:
                    conn = sqlite3.connect(self._path, isolation_level=None, timeout=10)
                # The sqlite3 module releases the GIL while SQLite copies and fsyncs.
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                self.runs += 1
                if self._wipe.is_set():
                    attempts = self._try_wipe(conn, attempts + 1)
                if failed:
                    log.info("storage.checkpoint_recovered")
                failed = False
            except sqlite3.Error as exc:
                if not failed:  # once per outage, not once a second
                    log.warning("storage.checkpoint_failed", error=str(exc)[:200])
                failed = True
                if conn is not None:
                    conn.close()
                    conn = None
        if conn is not None:
            conn.close()

    def _try_wipe(self, conn: sqlite3.Connection, attempt: int) -> int:
        """One TRUNCATE checkpoint; returns the attempts made so far (0: done)."""
        self._wipe.clear()  # an erasure committed from now on asks again
        try:
            conn.execute(f"PRAGMA busy_timeout={WIPE_WAIT_MS}")
            busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            conn.execute("PRAGMA busy_timeout=10000")
        except BaseException:
            self._wipe.set()  # tried again on the next connection
            raise
        if not busy:
            return 0
        self._wipe.set()
        if attempt == WIPE_WARN_AFTER:
            log.warning("privacy.log_not_wiped", attempts=attempt,
                        reason="a reader or the writer kept the write-ahead log busy; "
                               "npsd keeps trying")
        return attempt
