"""kill -9 in the middle of a sync-back, then again: everything arrives, and nothing is sent
twice except the batch that was in flight (with the same messageIds, which Segment dedups)."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.fakes.segment_api import FakeSegment
from tests.harness import NPSD, Daemon

ANSWERS = 6000  # two messages each: about five batches of 2,500


def seed_answers(db_path: Path, count: int) -> None:
    now = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    conn = sqlite3.connect(db_path)
    with conn:
        conn.executemany(
            "INSERT INTO users (user_id, anonymous, email, traits, trait_times, event_count, "
            "session_count, unsubscribe_synced, updated_at) VALUES (?, 0, ?, '{}', '{}', 0, 0, 1, ?)",
            [(f"u{i}", f"u{i}@x.io", now.isoformat(" ")) for i in range(count)])
        conn.executemany(
            "INSERT INTO surveys (user_id, token, kind, state, due_at, created_at, sent_at, "
            "attempts, score, comment, answered_at, answer_revision, synced_revision, needs_sync)"
            " VALUES (?, ?, 'survey', 'answered', ?, ?, ?, 0, ?, ?, ?, 1, 0, 1)",
            [(f"u{i}", f"tok{i}", now.isoformat(" "), now.isoformat(" "), now.isoformat(" "),
              i % 11, "fine" if i % 3 else None,
              (now + timedelta(seconds=i)).isoformat(" ")) for i in range(count)])
    conn.close()


async def test_kill_during_sync_then_resume(tmp_path: Path) -> None:
    async with FakeSegment("wk") as seg:
        npsd = Daemon(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'npsd.db'}",
                      segment={"write_key": "wk", "endpoint": seg.url, "group_nps": False})
        npsd.write_config()
        code, _, err = await npsd.cli("migrate")
        assert code == 0, err
        seed_answers(tmp_path / "npsd.db", ANSWERS)
        seg.slow_next(0.4, count=3)  # slow enough to kill it between batches
        root = Path(__file__).resolve().parent.parent.parent
        proc = await asyncio.create_subprocess_exec(
            *NPSD, "--config", str(npsd.config), "sync-now", cwd=str(tmp_path),
            env={**npsd.env, "PYTHONPATH": str(root)},
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        async with asyncio.timeout(30):
            while len(seg.batches) < 1:
                await asyncio.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        delivered_before = len(seg.messages)
        assert 0 < delivered_before < 2 * ANSWERS

        code, out, err = await npsd.cli("sync-now")
        assert code == 0, err + out
        identified = Counter(m["userId"] for m in seg.messages if m["type"] == "identify")
        assert set(identified) == {f"u{i}" for i in range(ANSWERS)}
        duplicates = seg.duplicates()
        # Only the batch in flight at the kill was sent again, with the same messageIds.
        assert len(duplicates) <= 2500
        assert all(count <= 2 for count in Counter(m["messageId"] for m in seg.messages).values())
        code, out, _ = await npsd.cli("status", "--json")
        assert code == 0 and '"backlog": 0' in out
        print(f"sync crash: delivered before kill {delivered_before}, total "
              f"{len(seg.messages)}, re-sent in-flight {len(duplicates)}", file=sys.stderr)
