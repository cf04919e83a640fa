"""daemon/supervisor.py: a background task that dies is logged and stops the daemon; one
stopped on purpose, or a loop with nothing to do that returns, is not a death."""

from __future__ import annotations

import asyncio

from structlog.testing import capture_logs

from daemon.supervisor import Supervisor


async def _settle() -> None:
    for _ in range(3):  # done callbacks run on the next turns of the loop
        await asyncio.sleep(0)


async def test_a_task_that_raises_is_logged_and_stops_the_daemon() -> None:
    died: list[str] = []
    supervisor = Supervisor(died.append)

    async def broken() -> None:
        raise RuntimeError("boom")

    with capture_logs() as logs:
        task = supervisor.start("intake-group-commit", broken())
        async with asyncio.timeout(5):
            await asyncio.wait([task])
        await _settle()
    assert died == ["intake-group-commit"]
    [line] = [e for e in logs if e["event"] == "daemon.task_died"]
    assert (line["task"], line["error"]) == ("intake-group-commit", "RuntimeError")


async def test_a_task_stopped_on_purpose_or_returning_is_not_a_death() -> None:
    died: list[str] = []
    supervisor = Supervisor(died.append)
    forever = asyncio.Event()

    async def loop() -> None:
        await forever.wait()

    async def nothing_to_do() -> None:
        return

    with capture_logs() as logs:
        supervisor.start("watchdog", loop())
        quick = supervisor.start("refusal-log", nothing_to_do())
        async with asyncio.timeout(5):
            await asyncio.wait([quick])
            await supervisor.stop("watchdog")
        await supervisor.stop("not-running")  # nothing to stop: no error
        await _settle()
    assert died == [] and not [e for e in logs if e["event"] == "daemon.task_died"]


async def test_a_watched_task_forgotten_before_its_end_is_not_a_death() -> None:
    died: list[str] = []
    supervisor = Supervisor(died.append)

    async def closing() -> None:
        raise RuntimeError("while closing")

    task = asyncio.get_running_loop().create_task(closing())
    supervisor.watch("intake-group-commit", task)
    supervisor.forget("intake-group-commit")
    async with asyncio.timeout(5):
        await asyncio.wait([task])
    await _settle()
    assert died == []
