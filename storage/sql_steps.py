"""The intake's SQL as steps, apart from the I/O that runs them.

The book's load/apply/save is written once, as generators that yield `Fetch` and `Many`
steps and receive rows back (`storage.sql_run` runs them: on SQLite synchronously, inside
the writer connection's own thread, so a whole group commit is one thread hop; on
PostgreSQL through asyncpg). SQL is written with `?` placeholders, in the subset both
backends speak (ON CONFLICT, RETURNING), and values are converted by hand: statement
compilation and per-row type processing cost more than the database work for the many
small rows the intake writes.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple, TypeVar

from storage.sqlutil import chunks

T = TypeVar("T")
Rows = list[tuple[Any, ...]]


class Fetch(NamedTuple):
    """One statement; the rows it returns (none for a plain write) are sent back."""

    sql: str
    params: Sequence[Any] = ()


class Many(NamedTuple):
    """One statement run for each parameter row (executemany); sends back no rows."""

    sql: str
    rows: Sequence[Sequence[Any]]


Step = Fetch | Many
Steps = Generator[Step, Rows, T]

IN_CHUNK = 2000  # bound parameters per statement: under SQLite's and asyncpg's limits

class Values:
    """Python values to and from one backend's column values."""

    def __init__(self, dialect: str, now: datetime | None = None) -> None:
        self.sqlite = dialect == "sqlite"
        # The transaction's own time recurs on every row it writes (updated_at, received_at).
        self._now = now
        self._now_text = self._text(now) if now is not None else ""
        # An event's time is written twice (its events row, the user's last_seen).
        self._texts: dict[datetime, str] = {}

    def ts(self, value: datetime | None) -> Any:
        """How SQLAlchemy's DateTime stores a time on SQLite: naive UTC text, fixed width
        (so it sorts and compares with what the rest of npsd writes)."""
        if value is None or not self.sqlite:
            return value
        if value is self._now:
            return self._now_text
        text = self._texts.get(value)
        if text is None:
            text = self._texts[value] = self._text(value)
        return text

    @staticmethod
    def _text(value: datetime) -> str:
        utc = value if value.tzinfo is UTC else value.astimezone(UTC)
        # The same text as strftime("%Y-%m-%d %H:%M:%S.%f"), several times faster.
        return utc.isoformat(" ", "microseconds")[:26]

    def dt(self, value: Any) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, datetime):
            return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        # Appending the offset is several times cheaper than .replace(tzinfo=UTC).
        return datetime.fromisoformat(value + "+00:00")

    def time_reader(self) -> Callable[[Any], datetime]:
        """dt() for a value known not to be None, without the checks (rows × columns)."""
        if self.sqlite:
            parse = datetime.fromisoformat
            return lambda text: parse(text + "+00:00")
        return lambda value: value.astimezone(UTC)

    def flag(self, value: bool) -> Any:
        return int(value) if self.sqlite else value

    def for_update(self) -> str:
        """Row locks for a read-modify-write (SQLite's BEGIN IMMEDIATE already excludes)."""
        return "" if self.sqlite else " FOR UPDATE"


def marks(n: int) -> str:
    return ",".join("?" * n)


def fetch_in(sql: str, values: Iterable[Any]) -> Steps[Rows]:
    """`sql` holds `{0}` (once or more) where the same IN list goes."""
    rows: Rows = []
    uses = sql.count("{0}") or sql.count("{}")
    for part in chunks(sorted(set(values)), IN_CHUNK // max(1, uses)):
        rows += yield Fetch(sql.format(marks(len(part))), part * uses)
    return rows


def execute_in(sql: str, values: Iterable[Any], *params: Any) -> Steps[None]:
    """`sql` holds `{}` for the IN list, after any `params`."""
    for part in chunks(sorted(set(values)), IN_CHUNK - len(params)):
        yield Fetch(sql.format(marks(len(part))), [*params, *part])


def insert_returning(sql: str, rows: Sequence[Sequence[Any]], returning: str) -> Steps[Rows]:
    """A multi-row INSERT per slice (one round trip each), with RETURNING; `sql` holds `{}`
    where the VALUES rows go."""
    out: Rows = []
    if not rows:
        return out
    group = "(" + marks(len(rows[0])) + ")"
    per = max(1, min(1000, 30_000 // len(rows[0])))  # both backends take 32,766 parameters
    for start in range(0, len(rows), per):
        part = rows[start:start + per]
        flat = [v for row in part for v in row]
        out += yield Fetch(sql.format(",".join([group] * len(part))) + " RETURNING " + returning,
                           flat)
    return out


def many(sql: str, rows: Sequence[Sequence[Any]]) -> Steps[None]:
    if rows:
        yield Many(sql, rows)
