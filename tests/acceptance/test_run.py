"""`npsd run` as an operator runs it: a subprocess, its logs, its exit code."""

from __future__ import annotations

from pathlib import Path

from storage.migrations import LATEST
from tests.conftest import fixture
from tests.harness import Daemon


async def test_run_accept_read_and_stop_cleanly(tmp_path: Path) -> None:
    npsd = Daemon(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'npsd.db'}")
    async with npsd:
        for name in ("identify", "group", "track"):
            status, body = await npsd.post_segment(fixture(name))
            assert status == 200 and body["accepted"] == 1
        status, user = await npsd.get_admin("/v1/users/97980cfea0067")
        assert status == 200 and user["accounts"] == [{"groupId": "0e8c78ea9d97a7b8185e8632"}]
        assert await npsd.stop() == 0
    assert npsd.events("server.started") and npsd.events("server.stopped")
    assert all("peter@example.com" not in line for line in npsd.raw_log)


async def test_run_refuses_a_newer_schema_and_an_unreachable_store(tmp_path: Path) -> None:
    import sqlite3

    npsd = Daemon(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'npsd.db'}")
    npsd.write_config()
    code, out, err = await npsd.cli("migrate")
    assert code == 0 and f"version none → {LATEST}" in out
    with sqlite3.connect(tmp_path / "npsd.db") as conn:
        conn.execute("UPDATE npsd_schema SET version = 99")
    await npsd.start(wait=False)
    assert await npsd.wait_exit() == 1
    assert "newer than this npsd knows" in "\n".join(npsd.raw_log)
    await npsd.close()

    down = Daemon(tmp_path / "pg", "postgresql+asyncpg://nobody@127.0.0.1:1/none")
    await down.start(wait=False)
    assert await down.wait_exit() == 1
    assert any(e.get("event") == "server.start_failed" for e in down.logs)
    await down.close()


async def test_run_names_a_database_directory_or_outbox_it_cannot_write(tmp_path: Path) -> None:
    """A path mistake stops the start with the key, the path and the reason, as one JSON
    line (no traceback), instead of a crash or surveys that retry for ever."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    cases = [
        ({"storage": {"url": f"sqlite+aiosqlite:///{blocker / 'npsd.db'}"}},
         f"storage.url: cannot create the directory {blocker}"),
        ({"email": {"backend": "file", "file_dir": str(blocker / "outbox")}},
         f"email.file_dir: cannot write .eml files to {blocker / 'outbox'}"),
    ]
    for n, (sections, says) in enumerate(cases):
        npsd = Daemon(tmp_path / f"run-{n}", f"sqlite+aiosqlite:///{tmp_path / f'{n}.db'}",
                      **sections)
        await npsd.start(wait=False)
        assert await npsd.wait_exit() == 1
        [failed] = npsd.events("server.start_failed")
        assert failed["reason"].startswith(says), failed
        assert not [line for line in npsd.raw_log if "Traceback" in line]
        await npsd.close()
