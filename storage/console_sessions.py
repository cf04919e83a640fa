"""Console sessions in the database (table console_sessions): a logout deletes the row, so
the cookie is dead at once (a signed stateless cookie would live until it expires), and a
restart keeps everyone logged in. The cookie's id is stored as its SHA-256 only."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from storage.db import Database, utc_required
from storage.models import ConsoleSession

SESSIONS = ConsoleSession.__table__  # type: ignore[attr-defined]


def digest(value: str) -> str:
    # A cookie that is not UTF-8 arrives with its bytes escaped (surrogateescape).
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass(frozen=True)
class Session:
    token_hash: str
    csrf: str
    expires_at: datetime


async def create(db: Database, session_id: str, token_hash: str, csrf: str,
                 now: datetime, expires_at: datetime) -> None:
    async with db.write() as conn:
        # Logins are rare: tidy expired rows here rather than in a job of their own.
        await conn.execute(sa.delete(SESSIONS).where(SESSIONS.c.expires_at <= now))
        await conn.execute(sa.insert(SESSIONS).values(
            id_hash=digest(session_id), token_hash=token_hash, csrf=csrf, created_at=now,
            expires_at=expires_at))


async def find(db: Database, session_id: str, now: datetime) -> Session | None:
    async with db.read() as conn:
        row = (await conn.execute(sa.select(SESSIONS).where(
            SESSIONS.c.id_hash == digest(session_id)))).first()
    if row is None or utc_required(row.expires_at) <= now:
        return None
    return Session(row.token_hash, row.csrf, utc_required(row.expires_at))


async def delete(db: Database, session_id: str) -> None:
    async with db.write() as conn:
        await conn.execute(sa.delete(SESSIONS).where(SESSIONS.c.id_hash == digest(session_id)))
