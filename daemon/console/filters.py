"""The responses filters from a query string, shared by /console/responses, its CSV and
GET /v1/responses; a bad value is a FilterError whose text says what to fix (a 400)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta

from storage.console_reads import CATEGORIES, MAX_LIMIT, Filters

MAX_Q = 200


class FilterError(ValueError):
    pass


def _whole(text: str, digits: int) -> bool:
    """ASCII digits only (str.isdigit also takes "²"), and few enough that int() of them is
    cheap and allowed (Python refuses over 4,300 digits)."""
    return text.isascii() and text.isdigit() and len(text) <= digits


def _score(query: Mapping[str, str], key: str) -> int | None:
    text = query.get(key, "").strip()
    if not text:
        return None
    if not _whole(text, 2) or int(text) > 10:
        raise FilterError(f"{key} must be a whole number from 0 to 10, got {text[:20]!r}")
    return int(text)


def _instant(query: Mapping[str, str], key: str, end_of_day: bool) -> datetime | None:
    """A date (YYYY-MM-DD: `until` takes the whole day) or an ISO 8601 time with a zone."""
    text = query.get(key, "").strip()
    if not text:
        return None
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC) + (
                timedelta(days=1) if end_of_day else timedelta(0))
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if stamp.tzinfo is None:
            raise FilterError(f"{key} needs a time zone (e.g. 2026-03-01T09:00:00Z)")
        return stamp.astimezone(UTC)
    except OverflowError:  # 9999-12-31's next day, year 1 at +14:00
        raise FilterError(f"{key} is out of range: use a date between 0001-01-02 and "
                          "9999-12-30") from None
    except FilterError:
        raise
    except ValueError:
        raise FilterError(f"{key} must be a date like 2026-03-01 or an ISO 8601 time, "
                          f"got {text[:40]!r}") from None


def parse_filters(query: Mapping[str, str]) -> Filters:
    cat = query.get("category", "").strip() or None
    if cat is not None and cat not in CATEGORIES:
        raise FilterError("category must be promoter, passive or detractor")
    low, high = _score(query, "score_min"), _score(query, "score_max")
    if low is not None and high is not None and low > high:
        raise FilterError("score_min is above score_max")
    since, until = _instant(query, "since", False), _instant(query, "until", True)
    q = query.get("q", "").strip() or None
    if q is not None and len(q) > MAX_Q:
        raise FilterError(f"q must be at most {MAX_Q} characters")
    account = query.get("account", "").strip() or None
    if account is not None and (len(account) > 1000 or "\x00" in account):
        raise FilterError("account is not an account id")
    if q is not None and "\x00" in q:
        raise FilterError("q must not contain NUL")
    return Filters(category=cat, score_min=low, score_max=high, account=account,
                   since=since, until=until, q=q)


def parse_limit(query: Mapping[str, str], default: int) -> int:
    text = query.get("limit", "").strip()
    if not text:
        return default
    if not _whole(text, len(str(MAX_LIMIT))) or not 1 <= int(text) <= MAX_LIMIT:
        raise FilterError(f"limit must be a whole number from 1 to {MAX_LIMIT}")
    return int(text)
