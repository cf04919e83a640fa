"""Housekeeping on a moved clock: messageIds are forgotten after the dedup window, and
unanswered surveys expire after the response window."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from daemon.runtime import RUNTIME
from jobs.clock import MovableClock
from jobs.housekeeping import housekeeping
from tests.conftest import basic


async def test_dedup_window_then_forgotten(make_client: Any, clock: MovableClock) -> None:
    client = await make_client(intake={"dedup_window": "7d"})
    runtime = client.server.app[RUNTIME]
    message = {"type": "track", "userId": "h1", "event": "E", "messageId": "same-id"}
    for _ in range(2):
        await client.post("/v1/segment", json=message, headers=basic())
    clock.advance(timedelta(days=6))
    result = await housekeeping(runtime.store, clock.now(), timedelta(days=7))
    assert result["pruned"] == 0
    response = await client.post("/v1/segment", json=message, headers=basic())
    assert (await response.json())["duplicates"] == 1
    clock.advance(timedelta(days=2))
    result = await housekeeping(runtime.store, clock.now(), timedelta(days=7))
    assert result["pruned"] == 1
    response = await client.post("/v1/segment", json=message, headers=basic())
    assert (await response.json())["accepted"] == 1
