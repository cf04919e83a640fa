"""`npsd run` as an operator runs it: a subprocess, its logs, its exit code."""

from __future__ import annotations

from pathlib import Path

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
