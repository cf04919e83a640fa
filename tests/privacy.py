"""Looking for a person in every place npsd stores data: every text column of every table
in the schema, and the outbox. Shared by the erasure tests at each tier."""

from __future__ import annotations

import email
import email.policy
import re
from pathlib import Path

import sqlalchemy as sa
from sqlmodel import SQLModel

import storage.models  # noqa: F401  (registers the tables)
from storage.db import Database


def _is_text(column: sa.Column[object]) -> bool:
    kind = column.type
    return isinstance(kind, sa.String) or isinstance(getattr(kind, "impl", None), sa.String)


def text_columns() -> list[tuple[sa.Table, sa.Column[object]]]:
    """Every text column of the schema (SQLModel's AutoString included)."""
    return [(table, column) for table in SQLModel.metadata.sorted_tables
            for column in table.columns if _is_text(column)]


async def find_everywhere(db: Database, needles: list[str]) -> set[tuple[str, str, str]]:
    """(table, column, needle) for every text value holding a needle (case-insensitive)."""
    wanted = [n.casefold() for n in needles]
    found: set[tuple[str, str, str]] = set()
    async with db.read() as conn:
        for table, column in text_columns():
            for (value,) in await conn.execute(sa.select(column).where(column.is_not(None))):
                text = str(value).casefold()
                for needle, folded in zip(needles, wanted, strict=True):
                    if folded in text:
                        found.add((table.name, column.name, needle))
    return found


def outbox_mail(outbox: Path) -> dict[str, str]:
    """.eml file name → its plain-text part."""
    out: dict[str, str] = {}
    for path in sorted(outbox.glob("*.eml")):
        parsed = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        body = parsed.get_body(("plain",))  # type: ignore[attr-defined]
        out[path.name] = body.get_content() if body is not None else ""
    return out


def token_in(text: str) -> str:
    match = re.search(r"/s/([A-Za-z0-9_-]+)\?score=", text)
    assert match is not None, text[:300]
    return match.group(1)
