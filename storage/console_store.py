"""The Store's console methods (storage/store.py declares them): the dashboard's figures,
answers filtered and paged, accounts, customer search, the send-queue preview and the
console's sessions. A mixin of SqlStore, so sql_store.py stays one screenful per concern;
the statements live in console_reads, console_book and console_sessions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from storage import console_book, console_reads, console_sessions
from storage.console_reads import Filters
from storage.console_sessions import Session
from storage.db import Database


class ConsoleStore:
    db: Database

    async def dashboard(self, now: datetime, by: str = "week") -> dict[str, Any]:
        return await console_reads.dashboard(self.db, now, by)

    async def responses(self, filters: Filters, limit: int = 50, cursor: str | None = None
                        ) -> tuple[list[dict[str, Any]], str | None]:
        return await console_reads.responses(self.db, filters, limit, cursor)

    async def account_names(self, group_ids: list[str]) -> dict[str, str | None]:
        return await console_reads.account_names(self.db, group_ids)

    async def accounts_page(self, sort: str = "name", descending: bool = False,
                            limit: int = 100, offset: int = 0
                            ) -> tuple[list[dict[str, Any]], int]:
        if sort not in console_book.ACCOUNT_SORTS:
            raise ValueError(f"sort must be one of {', '.join(console_book.ACCOUNT_SORTS)}")
        return await console_book.accounts_page(self.db, sort, descending, limit, offset)

    async def account_members(self, group_id: str, limit: int = 200) -> list[dict[str, Any]]:
        return await console_book.members(self.db, group_id, limit)

    async def search_users(self, q: str, limit: int = 50) -> list[dict[str, Any]]:
        return await console_book.search_users(self.db, q, limit)

    async def send_queue(self, now: datetime, days: int = 7, limit: int = 200
                         ) -> dict[str, Any]:
        return await console_book.queue(self.db, now, days, limit)

    async def create_session(self, session_id: str, token_hash: str, csrf: str,
                             now: datetime, expires_at: datetime) -> None:
        await console_sessions.create(self.db, session_id, token_hash, csrf, now, expires_at)

    async def find_session(self, session_id: str, now: datetime) -> Session | None:
        return await console_sessions.find(self.db, session_id, now)

    async def delete_session(self, session_id: str) -> None:
        await console_sessions.delete(self.db, session_id)
