"""Waiting on a condition with a deadline, instead of sleeping a fixed time and hoping.

    await wait_for(lambda: sink.count >= 2, timeout=10, what="two emails")

The predicate may be a plain function or a coroutine function; TimeoutError names what was
awaited, so a failing test says what never happened."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable


async def wait_for(predicate: Callable[[], bool | Awaitable[bool]], timeout: float,
                   interval: float = 0.05, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)
