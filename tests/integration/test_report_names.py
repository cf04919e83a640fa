"""`npsd report --by account` (and its --json) name each account next to its id: the stored
`name` trait, not only the id Segment sent."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from storage.db import Database
from storage.migrations import migrate
from tests.console_seed import seed_book
from tests.harness import write_config


def _seeded(tmp_path: Path) -> Path:
    url = f"sqlite+aiosqlite:///{tmp_path / 'npsd.db'}"

    async def go() -> None:
        db = Database(url)
        try:
            await migrate(db, datetime.now(UTC))
            await seed_book(db, datetime.now(UTC))
        finally:
            await db.close()

    asyncio.run(go())
    config = tmp_path / "config.toml"
    write_config(config, {"storage": {"url": url}, "log": {"level": "error"},
                          "email": {"file_dir": str(tmp_path / "outbox")}})
    return config


def _report(config: Path, *args: str) -> str:
    """`npsd report` as a process (the CLI configures logging for the whole process)."""
    root = Path(__file__).resolve().parent.parent.parent
    done = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "--config", str(config), "report", *args],
        capture_output=True, text=True, timeout=60, cwd=config.parent, check=False,
        env={**os.environ, "PYTHONPATH": str(root)})
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_report_by_account_shows_the_stored_name(tmp_path: Path) -> None:
    config = _seeded(tmp_path)
    out = _report(config, "--by", "account")
    assert "acc-1 Initech" in out and "acc-2 Globex" in out and "acc-3 Hooli" in out
    rows = json.loads(_report(config, "--by", "account", "--json"))["by_account"]
    assert {r["key"]: r["name"] for r in rows} == {"acc-1": "Initech", "acc-2": "Globex",
                                                   "acc-3": "Hooli"}
