"""The README's backup and restore steps, run as written against a running npsd.

The commands are read from README.md (the code blocks after the `test: backup` and
`test: restore` markers), so the README and this test cannot drift apart. The only changes
made to them: the state directory and /backup point into the test's directory, `sudo` is
dropped, `systemctl stop|start npsd` stop and start the npsd under test, and the restore's
example file name is the backup just taken."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.harness import Daemon

STATE = "/var/lib/npsd"


def readme_block(marker: str) -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(rf"<!-- test: {marker}\b[^>]*-->\s*```sh\n(.*?)```", text, re.DOTALL)
    assert match is not None, f"README.md has no ```sh block after <!-- test: {marker} -->"
    return [line for line in match.group(1).splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def need_sqlite3() -> None:
    if shutil.which("sqlite3") is None:
        if os.environ.get("CI"):
            pytest.fail("the sqlite3 command is missing under CI (.ci/run installs it)")
        pytest.skip("the README's backup steps need the sqlite3 command (apt-get install "
                    "sqlite3)")


async def run_step(line: str, npsd: Daemon, state: Path, backups: Path,
                   backup_file: str | None = None) -> str:
    command = line.replace("sudo ", "").replace(STATE, str(state))
    command = command.replace("/backup/", f"{backups}/")
    if backup_file is not None:
        command = re.sub(r"npsd-\d{4}-\d{2}-\d{2}\.db", backup_file, command)
    if command.strip() == "systemctl stop npsd":
        assert await npsd.stop() == 0
        return ""
    if command.strip() == "systemctl start npsd":
        await npsd.start()
        return ""
    proc = await asyncio.create_subprocess_shell(
        command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        executable="/bin/bash")
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode == 0, f"{command!r} exited {proc.returncode}: {err.decode()}"
    return out.decode()


def user_ids(database: Path) -> set[str]:
    with sqlite3.connect(database) as conn:
        return {row[0] for row in conn.execute("SELECT user_id FROM users")}


def identify(user_id: str) -> dict[str, object]:
    return {"type": "identify", "userId": user_id, "traits": {"email": f"{user_id}@ex.com"}}


async def test_the_readme_backup_and_restore_steps_work_as_written(tmp_path: Path) -> None:
    need_sqlite3()
    backup_steps, restore_steps = readme_block("backup"), readme_block("restore")
    assert any(STATE in line for line in backup_steps + restore_steps)
    state, backups = tmp_path / "state", tmp_path / "backup"
    state.mkdir()
    backups.mkdir()
    # The sample config's storage.url, under the unit's StateDirectory=npsd.
    npsd = Daemon(tmp_path / "work", "sqlite+aiosqlite:///var/npsd.db",
                  env={"STATE_DIRECTORY": str(state)})
    try:
        await npsd.start()
        for user in ("before-1", "before-2"):
            status, _ = await npsd.post_segment(identify(user))
            assert status == 200
        # Backed up online, while npsd runs and takes more events.
        outputs = [await run_step(line, npsd, state, backups) for line in backup_steps]
        [backup] = backups.glob("npsd-*.db")
        assert user_ids(backup) == {"before-1", "before-2"}
        assert "ok" in "".join(outputs)  # the README's integrity check ran on the backup
        status, _ = await npsd.post_segment(identify("after-backup"))
        assert status == 200
        # Restored: the database is the backup again, and npsd serves it.
        for line in restore_steps:
            await run_step(line, npsd, state, backups, backup_file=backup.name)
        assert npsd.proc is not None and npsd.proc.returncode is None, "npsd is not running"
        status, _ = await npsd.get_admin("/v1/users/before-1")
        assert status == 200
        status, _ = await npsd.get_admin("/v1/users/after-backup")
        assert status == 404
        status, _ = await npsd.post_segment(identify("after-restore"))  # writable again
        assert status == 200
        assert await npsd.stop() == 0
    finally:
        await npsd.close()
    assert user_ids(state / "var" / "npsd.db") == {"before-1", "before-2", "after-restore"}


def test_the_backup_step_fails_loudly_when_the_database_is_not_there(tmp_path: Path) -> None:
    """The old README's path pointed where no database was; sqlite3 created an empty file
    there and exited 0. The README's step must fail instead."""
    need_sqlite3()
    [step] = [line for line in readme_block("backup") if ".backup" in line]
    command = step.replace("sudo ", "").replace(STATE, str(tmp_path / "state"))
    command = command.replace("/backup/", f"{tmp_path}/")
    import subprocess

    done = subprocess.run(["/bin/bash", "-c", command], capture_output=True, timeout=60,
                          check=False)
    assert done.returncode != 0
    assert not (tmp_path / "state" / "var" / "npsd.db").exists()
