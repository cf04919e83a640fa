"""Segment timestamps as they really arrive: ISO 8601 with Z or offsets, with or without
fractions, and Go's time.String() form ("2020-05-09 23:54:49.209808489 +0000 UTC m=+7.2")."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

_GO = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})(?:\.(\d+))?\s*([+-]\d{4})?(?:\s+[A-Z]{2,5})?"
    r"(?:\s+m=[+-][\d.]+)?$"
)
_FRACTION = re.compile(r"\.(\d+)")
_MIN = datetime(1970, 1, 1, tzinfo=UTC)
_MAX = datetime(9999, 1, 1, tzinfo=UTC)


def parse_timestamp(value: object) -> datetime | None:
    """An aware UTC datetime, or None when the value is not a usable timestamp."""
    if not isinstance(value, str) or not 10 <= len(value) <= 64:
        return None
    text = value.strip()
    try:
        parsed = _iso(text) or _go(text)
    except OverflowError:  # year 1 at +14:00 or 9999 at -14:00: before 1 or after 9999 in UTC
        return None
    if parsed is None or not _MIN <= parsed < _MAX:
        return None
    return parsed


def in_range(value: datetime) -> bool:
    """Whether an aware datetime is one npsd keeps as an event time (1970 up to 9999)."""
    return _MIN <= value < _MAX


def _iso(text: str) -> datetime | None:
    try:
        # What Segment's libraries send ("2026-05-01T12:00:00.123Z") parses directly.
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return _iso_lenient(text)
    if parsed.tzinfo is UTC:
        return parsed
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _iso_lenient(text: str) -> datetime | None:
    candidate = text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text
    # fromisoformat takes at most 6 fraction digits before 3.12: trim nanoseconds.
    candidate = _FRACTION.sub(lambda m: "." + m.group(1)[:6].ljust(6, "0"), candidate, count=1)
    try:
        parsed = datetime.fromisoformat(candidate)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _go(text: str) -> datetime | None:
    match = _GO.match(text)
    if match is None:
        return None
    date, clock, fraction, offset = match.groups()
    try:
        base = datetime.fromisoformat(f"{date}T{clock}")
    except ValueError:
        return None
    micros = int((fraction or "0")[:6].ljust(6, "0"))
    tz = UTC
    if offset:
        sign = 1 if offset[0] == "+" else -1
        tz = timezone(sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5])))
    return base.replace(microsecond=micros, tzinfo=tz).astimezone(UTC)


STAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def stamp(value: datetime) -> str:
    """A sortable text form of an aware UTC datetime (fixed width, so strings compare)."""
    return value.astimezone(UTC).strftime(STAMP_FORMAT)


def iso(value: datetime | None) -> str | None:
    """ISO 8601 with milliseconds and Z, the way Segment writes timestamps."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
