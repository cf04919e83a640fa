"""Reading an export of another NPS tool into answers to import: the columns of each format,
the checks of a row, and the identity of an imported answer. Pure (no database), streaming
(one row at a time from a binary file: a million rows cost the memory of one).

The column names: Delighted's and SatisMeter's public docs describe their APIs, not the
CSV their dashboards export (tests/fixtures/import/README.md says what was found where), so
each format accepts the documented API field names and the dashboard's spelled-out labels,
compared trimmed and case-insensitively; other columns are ignored.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from itertools import chain, repeat
from typing import BinaryIO

from storage.events import MAX_ID_LENGTH
from storage.import_store import ImportRow

MAX_COMMENT = 5000  # as the survey page takes (daemon/pages.py); a longer one is refused, never cut
FUTURE_SLACK = timedelta(days=1)

# field → the header names that carry it, per format (lower case).
COLUMNS: dict[str, dict[str, tuple[str, ...]]] = {
    "csv": {
        "email": ("email",), "score": ("score",), "comment": ("comment",),
        "answered_at": ("answered_at",), "user_id": ("user_id",),
    },
    "delighted": {
        # API: survey_responses id, score, comment, created_at (Unix time), survey_type;
        # people: email; person_properties as columns (a user id, if you sent one).
        "response_id": ("response id", "id", "response_id"),
        "email": ("email", "person email", "person_email"),
        "score": ("score",),
        "comment": ("comment",),
        "answered_at": ("response timestamp", "created at", "created_at", "date"),
        "user_id": ("user id", "user_id", "userid", "customer id", "customer_id"),
        "survey_type": ("survey type", "survey_type"),
    },
    "satismeter": {
        # API: responses id, created, rating, feedback, userId, traits.email.
        "response_id": ("id", "response id", "response_id", "_id"),
        "email": ("email", "user email", "traits.email"),
        "score": ("rating", "score", "nps"),
        "comment": ("feedback", "comment"),
        "answered_at": ("created", "date", "created at", "created_at"),
        "user_id": ("user id", "userid", "user_id"),
    },
}
REQUIRED: dict[str, tuple[str, ...]] = {
    "csv": ("email", "score", "answered_at"),
    "delighted": ("score", "answered_at"),
    "satismeter": ("score", "answered_at"),
}
FORMATS = tuple(COLUMNS)
_ADDRESS = re.compile(r"[^\s@]+@[^\s@]+")
_TIME_FORMATS = ("%Y-%m-%d %H:%M:%S %z", "%Y-%m-%d %H:%M:%S %Z", "%m/%d/%Y %H:%M:%S",
                 "%m/%d/%Y %H:%M", "%m/%d/%Y")


class ImportFileError(Exception):
    """The file cannot be imported at all (unreadable, no header, a required column
    missing): the message names the file's line and the column."""


@dataclass(frozen=True)
class BadRow:
    line: int
    column: str  # the header as written in the file, or "" for the whole row
    reason: str

    def message(self, path: str) -> str:
        where = f"column {self.column!r}: " if self.column else ""
        return f"{path}:{self.line}: {where}{self.reason}"


# The fields a row is read into, in this order (a format without one reads "").
_FIELDS = ("response_id", "email", "score", "comment", "answered_at", "user_id", "survey_type")


MAX_LINE_BYTES = 2**20  # csv refuses a field over 128 KB anyway


class Reader:
    """The rows of one export, in file order; `bytes_read` follows for a progress bar.
    With `identities` false the rows' keys are left empty (a check pass has no use for
    them, and they are a fifth of a row's cost)."""

    def __init__(self, stream: BinaryIO, fmt: str, *, zone: tzinfo, now: datetime,
                 identities: bool = True) -> None:
        self.fmt, self.zone, self.now = fmt, zone, now
        self._stream = stream
        self._identities = identities
        self._latest = now + FUTURE_SLACK

    @property
    def bytes_read(self) -> int:
        return self._stream.tell()

    def _lines(self) -> Iterator[str]:
        # A byte that is not UTF-8 becomes U+FFFD, and its row is refused below. The lines
        # after the first are decoded by `map`, without a Python frame per line.
        first = self._stream.readline(MAX_LINE_BYTES + 1)
        if not first:
            return iter(())
        rest = map(bytes.decode, self._bounded(), repeat("utf-8"), repeat("replace"))
        return chain((self._checked(1, first).decode("utf-8-sig", errors="replace"),), rest)

    def _bounded(self) -> Iterator[bytes]:
        """The lines after the first, each read at most MAX_LINE_BYTES at a time: a file
        holding one huge line must not be read into memory whole before csv refuses it."""
        readline, number = self._stream.readline, 1
        while line := readline(MAX_LINE_BYTES + 1):
            number += 1
            yield self._checked(number, line)

    @staticmethod
    def _checked(number: int, line: bytes) -> bytes:
        if len(line) > MAX_LINE_BYTES:
            raise ImportFileError(f"{number}: a line over {MAX_LINE_BYTES // 2**20} MB: not an "
                                  "export of answers")
        return line

    def __iter__(self) -> Iterator[ImportRow | BadRow]:
        reader = csv.reader(self._lines())
        try:
            header = next(reader)
        except StopIteration:
            raise ImportFileError("1: the file is empty (expected a header line)") from None
        except csv.Error as exc:
            raise ImportFileError(f"1: the header is not CSV ({exc})") from None
        where = self._header(header)
        plan = tuple(where.get(f, -1) for f in _FIELDS)
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield BadRow(reader.line_num, "", f"not a CSV row ({exc})")
                continue
            n = len(cells)
            values = [cells[i].strip() if 0 <= i < n else "" for i in plan]
            if not any(values) and not any(c.strip() for c in cells):
                continue  # a blank line
            yield self.row(reader.line_num, cells, values, where, header)

    def _header(self, header: list[str]) -> dict[str, int]:
        names = [h.strip().lower() for h in header]
        where: dict[str, int] = {}
        for field, spellings in COLUMNS[self.fmt].items():
            for spelling in spellings:
                if spelling in names:
                    where[field] = names.index(spelling)
                    break
        for field in REQUIRED[self.fmt]:
            if field not in where:
                wanted = " or ".join(repr(s) for s in COLUMNS[self.fmt][field][:3])
                raise ImportFileError(f"1: no {wanted} column: a {self.fmt} export has "
                                      f"{_expected(self.fmt)}")
        if "email" not in where and "user_id" not in where:
            raise ImportFileError(f"1: neither an email nor a user id column: a {self.fmt} "
                                  f"export has {_expected(self.fmt)}")
        return where

    def row(self, line: int, cells: list[str], values: list[str], where: dict[str, int],
            header: list[str]) -> ImportRow | BadRow:
        """One row from its `values` (the cells of _FIELDS, trimmed). Called for every row
        of the file, twice: written for speed, one check after another."""
        def bad(field: str, reason: str) -> BadRow:
            return BadRow(line, header[where[field]].strip() if field in where else field,
                          reason)

        response_id, email_text, score_text, comment_text, at_text, user_text, kind = values
        joined = "".join(cells)
        if "\ufffd" in joined:
            return BadRow(line, "", "not UTF-8 text")
        if "\x00" in joined:
            return BadRow(line, "", "holds a NUL character")
        if kind and kind.lower() != "nps":
            return bad("survey_type", f"a {kind.lower()} survey, not NPS")
        # The common case, a bare 0-10, without parse_score's float().
        score = int(score_text) if score_text in _SCORES else parse_score(score_text)
        if isinstance(score, str):
            return bad("score", score)
        at = parse_time(at_text, self.zone, self.now, self._latest)
        if isinstance(at, str):
            return bad("answered_at", at)
        user_id, email = user_text or None, email_text or None
        if user_id is None and email is None:
            return BadRow(line, "", "neither a user id nor an email")
        if user_id is not None and len(user_id) > MAX_ID_LENGTH:
            # As at the intake: such a user could be neither looked up nor erased.
            return bad("user_id", f"longer than {MAX_ID_LENGTH} characters")
        if email is not None and _ADDRESS.fullmatch(email) is None:
            return bad("email", "not an email address")
        comment = comment_text or None
        if comment is not None and len(comment) > MAX_COMMENT:
            return bad("comment", f"longer than {MAX_COMMENT:,} characters")
        key = identity(self.fmt, response_id, user_id, email, at) if self._identities else ""
        return ImportRow(line, user_id, email, score, comment, at, key)


_SCORES = frozenset(str(n) for n in range(11))


def _expected(fmt: str) -> str:
    return ", ".join(repr(spellings[0]) for spellings in COLUMNS[fmt].values())


def parse_score(text: str) -> int | str:
    """A 0-10 integer, or why not."""
    if not text:
        return "no score"
    try:
        value = float(text)
    except ValueError:
        return f"{text[:20]!r} is not a score from 0 to 10"
    if not value.is_integer() or not 0 <= value <= 10:
        return f"{text[:20]!r} is not a score from 0 to 10"
    return int(value)


def parse_time(text: str, zone: tzinfo, now: datetime,
               latest: datetime | None = None) -> datetime | str:
    """When the answer was given, in UTC, or why not. Unix seconds (Delighted's API
    `created_at`; milliseconds too), ISO 8601 with or without an offset, or a few
    spreadsheet forms; a time without an offset is wall-clock time in `zone`. `latest`
    (now + FUTURE_SLACK, if given) saves the sum per row."""
    if not text:
        return "no date"
    at = _parse(text)
    if at is None:
        return f"{text[:40]!r} is not a date (use ISO 8601, e.g. 2026-03-02T10:00:00Z)"
    if at.tzinfo is None:
        at = at.replace(tzinfo=zone)
    if at.tzinfo is not UTC:
        try:
            at = at.astimezone(UTC)
        except OverflowError:  # year 1 at +14:00 is before year 1 in UTC
            return f"{text[:40]!r} is out of range"
    if at > (latest or now + FUTURE_SLACK):
        return f"{text[:40]!r} is in the future"
    return at


def _parse(text: str) -> datetime | None:
    if text.isascii() and text.isdigit():
        if len(text) > 16:  # past any Unix time in milliseconds (and int()'s digit limit)
            return None
        seconds = int(text)
        if seconds > 100_000_000_000:  # milliseconds
            seconds //= 1000
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        pass
    for form in _TIME_FORMATS:
        try:
            parsed = datetime.strptime(text, form)
        except ValueError:
            continue
        return parsed.replace(tzinfo=UTC) if form.endswith("%Z") else parsed
    return None


def identity(fmt: str, response_id: str, user_id: str | None, email: str | None,
             at: datetime) -> str:
    """The imported answer's identity, stored with it (surveys.import_key) so a second
    import finds it: the source's response id when the export has one; else who answered
    (user id, else the address trimmed and case-folded) and when, to the second. The score
    and comment are left out on purpose: a re-export with a corrected comment is the same
    answer, not a second one."""
    if response_id:
        basis = f"{fmt}\x1fid\x1f{response_id}"
    else:
        who = user_id or (email or "").strip().casefold()
        second = at.replace(microsecond=0) if at.microsecond else at
        basis = f"answer\x1f{who}\x1f{second.isoformat()}"
    return hashlib.sha256(basis.encode("utf-8")).hexdigest()[:32]
