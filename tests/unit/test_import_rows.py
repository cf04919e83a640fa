"""Reading exports (jobs/import_rows.py): scores, dates and their zones, identities, headers
and the reasons a row is refused — tables of cases, no database."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from jobs.import_rows import BadRow, ImportFileError, Reader, identity, parse_score, parse_time
from storage.import_store import ImportRow

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
BERLIN = ZoneInfo("Europe/Berlin")


@pytest.mark.parametrize(("text", "expected"), [
    ("0", 0), ("10", 10), ("7", 7), ("9.0", 9), (" ", "no score"), ("", "no score"),
    ("11", "'11' is not a score from 0 to 10"), ("-1", "'-1' is not a score from 0 to 10"),
    ("8.5", "'8.5' is not a score from 0 to 10"), ("ten", "'ten' is not a score from 0 to 10"),
])
def test_scores(text: str, expected: int | str) -> None:
    assert parse_score(text.strip()) == expected


@pytest.mark.parametrize(("text", "zone", "expected"), [
    ("1772445600", UTC, datetime(2026, 3, 2, 10, 0, tzinfo=UTC)),  # Delighted: Unix seconds
    ("1772445600000", UTC, datetime(2026, 3, 2, 10, 0, tzinfo=UTC)),  # milliseconds
    ("2026-02-14T09:30:00.000Z", UTC, datetime(2026, 2, 14, 9, 30, tzinfo=UTC)),
    ("2026-02-14T10:30:00+01:00", UTC, datetime(2026, 2, 14, 9, 30, tzinfo=UTC)),
    ("2026-02-14 09:30:00 -0700", UTC, datetime(2026, 2, 14, 16, 30, tzinfo=UTC)),
    ("2026-02-14 09:30:00 UTC", BERLIN, datetime(2026, 2, 14, 9, 30, tzinfo=UTC)),
    # No offset: wall-clock time in --timezone (Berlin is UTC+1 in winter, +2 in summer).
    ("2026-02-14 09:30:00", BERLIN, datetime(2026, 2, 14, 8, 30, tzinfo=UTC)),
    ("2025-07-14 09:30:00", BERLIN, datetime(2025, 7, 14, 7, 30, tzinfo=UTC)),
    ("2026-02-14", UTC, datetime(2026, 2, 14, tzinfo=UTC)),
    ("02/14/2026 09:30", UTC, datetime(2026, 2, 14, 9, 30, tzinfo=UTC)),
])
def test_dates_become_utc(text: str, zone: ZoneInfo, expected: datetime) -> None:
    assert parse_time(text, zone, NOW) == expected


@pytest.mark.parametrize(("text", "reason"), [
    ("", "no date"),
    ("yesterday", "'yesterday' is not a date (use ISO 8601, e.g. 2026-03-02T10:00:00Z)"),
    ("2026-13-01", "'2026-13-01' is not a date (use ISO 8601, e.g. 2026-03-02T10:00:00Z)"),
    ("2026-03-04T10:00:00Z", "'2026-03-04T10:00:00Z' is in the future"),
    # Each was a crash of the whole import, without a line number.
    ("0001-01-01T00:00:00+14:00", "'0001-01-01T00:00:00+14:00' is out of range"),
    ("9" * 5000, f"{'9' * 40!r} is not a date (use ISO 8601, e.g. 2026-03-02T10:00:00Z)"),
])
def test_dates_refused(text: str, reason: str) -> None:
    assert parse_time(text, UTC, NOW) == reason


def test_identity_is_the_response_id_else_who_and_when() -> None:
    at = datetime(2026, 2, 1, 10, 0, tzinfo=UTC)
    assert identity("delighted", "4001", "u1", None, at) == identity("delighted", "4001", None,
                                                                      "x@y.z", NOW)
    assert identity("delighted", "4001", None, None, at) != identity("satismeter", "4001",
                                                                      None, None, at)
    # No id: who (the address trimmed and case-folded) and when, to the second.
    assert identity("csv", "", None, " Ann@Example.com", at) == identity(
        "csv", "", None, "ann@example.com", at.replace(microsecond=999))
    assert identity("csv", "", "u1", "a@b.c", at) != identity("csv", "", "u2", "a@b.c", at)
    assert len(identity("csv", "", "u1", None, at)) == 32


def _read(text: str, fmt: str = "csv") -> list[ImportRow | BadRow]:
    return list(Reader(io.BytesIO(text.encode()), fmt, zone=UTC, now=NOW))


def test_rows_and_their_reasons() -> None:
    rows = _read("\ufeffEmail ,Score,comment,answered_at,user_id,extra\n"
                 "ann@example.com,9,\"Fine, thanks\",2026-02-01T10:00:00Z,u1,x\n"
                 "\n"
                 "bob@example.com,eleven,,2026-02-01T10:00:00Z,,\n"
                 ",5,,2026-02-01T10:00:00Z,,\n"
                 "not-an-address,5,,2026-02-01T10:00:00Z,,\n"
                 "cy@example.com,5,,,,\n")
    first = rows[0]
    assert isinstance(first, ImportRow)
    assert (first.line, first.email, first.user_id, first.score, first.comment) == (
        2, "ann@example.com", "u1", 9, "Fine, thanks")
    assert rows[1:] == [
        BadRow(4, "Score", "'eleven' is not a score from 0 to 10"),
        BadRow(5, "", "neither a user id nor an email"),
        BadRow(6, "Email", "not an email address"),
        BadRow(7, "answered_at", "no date"),
    ]
    assert rows[1].message("x.csv") == "x.csv:4: column 'Score': 'eleven' is not a score " \
                                       "from 0 to 10"


def test_ids_the_intake_would_refuse_are_bad_rows() -> None:
    """A user id over 256 characters, or a NUL anywhere, could be stored but never looked
    up nor erased (the read API and the intake refuse such ids)."""
    rows = _read("email,score,comment,answered_at,user_id\n"
                 f",9,x,2026-02-01T10:00:00Z,{'u' * 257}\n"
                 ",9,x,2026-02-01T10:00:00Z,u\x00v\n"
                 "a@example.com,9,a\x00b,2026-02-01T10:00:00Z,\n"
                 f",9,x,2026-02-01T10:00:00Z,{'u' * 256}\n")
    assert rows[:3] == [BadRow(2, "user_id", "longer than 256 characters"),
                        BadRow(3, "", "holds a NUL character"),
                        BadRow(4, "", "holds a NUL character")]
    assert isinstance(rows[3], ImportRow) and rows[3].user_id == "u" * 256


def test_a_huge_line_stops_the_import_before_it_is_read_whole() -> None:
    """A 3 MB line (one field): read 1 MB at a time and refused, naming its line, instead
    of growing the process by twice the line before csv's field limit refuses it."""
    text = ("email,score,comment,answered_at\n"
            "a@example.com,9,fine,2026-02-01T10:00:00Z\n"
            f"b@example.com,9,{'x' * 3 * 2**20},2026-02-01T10:00:00Z\n")
    with pytest.raises(ImportFileError, match=r"^3: a line over 1 MB"):
        _read(text)
    rows = _read(text.rsplit("b@", 1)[0])  # a line of 1 MB or less is read as before
    assert len(rows) == 1 and isinstance(rows[0], ImportRow)


def test_a_multi_line_comment_keeps_the_line_numbers_of_the_file() -> None:
    rows = _read("email,score,comment,answered_at\n"
                 "a@example.com,9,\"two\nlines\",2026-02-01\n"
                 "b@example.com,x,,2026-02-01\n")
    assert isinstance(rows[0], ImportRow) and rows[0].comment == "two\nlines"
    assert rows[1] == BadRow(4, "score", "'x' is not a score from 0 to 10")


def test_other_survey_types_and_bytes_that_are_not_utf8_are_refused() -> None:
    data = (b"Response ID,Email,Score,Survey type,Response timestamp\n"
            b"1,a@example.com,4,csat,1772445600\n") + \
        b"2,b@example.com,9,nps,1772445600,\xff\n"
    rows = list(Reader(io.BytesIO(data), "delighted", zone=UTC, now=NOW))
    assert rows == [BadRow(2, "Survey type", "a csat survey, not NPS"),
                    BadRow(3, "", "not UTF-8 text")]


@pytest.mark.parametrize(("text", "fmt", "message"), [
    ("", "csv", "1: the file is empty (expected a header line)"),
    ("email,comment,answered_at\n", "csv",
     "1: no 'score' column: a csv export has 'email', 'score', 'comment', 'answered_at', "
     "'user_id'"),
    ("Id,Created,Rating\n", "satismeter",
     "1: neither an email nor a user id column: a satismeter export has 'id', 'email', "
     "'rating', 'feedback', 'created', 'user id'"),
])
def test_a_file_that_cannot_be_imported_names_the_column(text: str, fmt: str,
                                                         message: str) -> None:
    with pytest.raises(ImportFileError) as raised:
        _read(text, fmt)
    assert str(raised.value) == message
