"""SQLite WAL checkpoints run in a background thread, not inside an intake commit."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from storage.checkpointer import WRITER_AUTOCHECKPOINT, Checkpointer
from tests.conftest import basic


def _wal_pages_pending(path: Path) -> int:
    """Frames in the WAL not yet copied into the database (asks without checkpointing)."""
    wal = Path(str(path) + "-wal")
    return wal.stat().st_size // 4096 if wal.exists() else 0


def test_background_checkpoint_moves_the_wal_into_the_database(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute(f"PRAGMA wal_autocheckpoint={WRITER_AUTOCHECKPOINT}")
    writer.execute("CREATE TABLE t (x TEXT)")
    writer.execute("BEGIN IMMEDIATE")
    writer.executemany("INSERT INTO t VALUES (?)", [("x" * 200,)] * 5000)
    writer.execute("COMMIT")
    # Everything is still in the WAL: the writer itself did not checkpoint.
    assert path.stat().st_size <= 4096 and _wal_pages_pending(path) > 100

    checkpointer = Checkpointer(str(path), interval_s=0.05)
    checkpointer.start()
    try:
        deadline = time.monotonic() + 10
        while path.stat().st_size < 1_000_000 and time.monotonic() < deadline:
            time.sleep(0.02)
        # The writer goes on committing while checkpoints run.
        writer.execute("INSERT INTO t VALUES ('after')")
    finally:
        checkpointer.stop()
    assert path.stat().st_size >= 1_000_000, "the rows were not copied into the database"
    assert checkpointer.runs >= 1
    assert writer.execute("SELECT count(*) FROM t").fetchone() == (5001,)
    writer.close()


def test_a_failing_checkpoint_is_retried_and_never_raises(tmp_path: Path) -> None:
    checkpointer = Checkpointer(str(tmp_path / "missing" / "c.db"), interval_s=0.02)
    checkpointer.start()
    time.sleep(0.2)
    checkpointer.stop()  # returns: the thread survived its errors
    assert checkpointer.runs == 0


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_npsd_checkpoints_its_database_in_the_background(
    make_client: Any, db_url: str
) -> None:
    client = await make_client()
    path = Path(db_url.split("///", 1)[1])
    batch = [{"type": "track", "userId": f"u{i}", "event": "Opened", "messageId": f"m{i}"}
             for i in range(2000)]
    async with client.post("/v1/segment", json=batch, headers=basic()) as resp:
        assert resp.status == 200 and (await resp.json())["accepted"] == 2000
    size = path.stat().st_size
    deadline = time.monotonic() + 10
    while path.stat().st_size <= size and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert path.stat().st_size > size, "npsd did not checkpoint the WAL into its database"
