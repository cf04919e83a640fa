"""One supervisor for every background task of the daemon.

A loop that ends with an error (or the intake writer's task, which the store runs) is a
daemon that no longer does its job: the supervisor logs `daemon.task_died` with the task's
name and asks the daemon to stop, with a failing exit status, so systemd restarts it
(Restart=on-failure). Stopping cancels the tasks and waits for them; a CancelledError
of our own cancellation is expected, anyone else's is passed on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

log = structlog.get_logger("npsd")


class Supervisor:
    def __init__(self, on_death: Callable[[str], None]) -> None:
        self._on_death = on_death
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._stopping: set[str] = set()

    def start(self, name: str, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run `coro` as the task `name`, watched."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self.watch(name, task)
        return task

    def watch(self, name: str, task: asyncio.Task[Any]) -> None:
        """Watch a task someone else started (the store's intake writer)."""
        self._tasks[name] = task
        task.add_done_callback(lambda t: self._ended(name, t))

    def _ended(self, name: str, task: asyncio.Task[Any]) -> None:
        if self._tasks.get(name) is task:
            del self._tasks[name]
        error = None if task.cancelled() else task.exception()  # retrieved, always
        if task.cancelled() or name in self._stopping:
            self._stopping.discard(name)
            return
        if error is None:
            return  # a loop with nothing to do (no systemd watchdog) may simply return
        log.error("daemon.task_died", task=name, error=error.__class__.__name__,
                  exc_info=error)
        self._on_death(name)

    async def stop(self, name: str) -> None:
        """Cancel the task `name` and wait for it; nothing when it is not running."""
        task = self._tasks.get(name)
        if task is None:
            return
        self._stopping.add(name)
        try:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                if not task.cancelled():
                    raise
        finally:
            self._tasks.pop(name, None)

    def forget(self, name: str) -> None:
        """A watched task is about to end by design (the writer on close): not a death."""
        self._stopping.add(name)
