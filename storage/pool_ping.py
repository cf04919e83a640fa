"""Ping a pooled PostgreSQL connection only when it has been idle.

SQLAlchemy's `pool_pre_ping` tests every connection at every checkout, and for asyncpg a
ping is three round trips (BEGIN, an empty query, ROLLBACK): more than a hand-off commit's
own statements. A connection handed back a moment ago is as alive as the transaction it
just committed, so only one idle for longer than IDLE_S is tested; one that fails the test
is replaced before use (SQLAlchemy's documented custom pessimistic ping: a checkout
listener raising DisconnectionError). A connection that dies while busy fails its own
transaction, and SQLAlchemy then discards the pool's older connections.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import event, exc
from sqlalchemy.ext.asyncio import AsyncEngine

IDLE_S = 1.0
_SINCE = "npsd_idle_since"


def ping_when_idle(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "checkin")
    def _checked_in(dbapi_connection: Any, record: Any) -> None:
        record.info[_SINCE] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        since = record.info.pop(_SINCE, None)
        if since is None or time.monotonic() - since <= IDLE_S:
            return
        try:
            dbapi_connection.ping()
        except Exception as error:
            raise exc.DisconnectionError("the pooled connection failed its ping") from error
