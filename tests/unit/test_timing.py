"""Table tests for daily run times across DST (jobs/timing.py)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from jobs.timing import local_to_utc, missed_daily_run, next_daily_run


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize(
    ("after", "at", "tz", "expected"),
    [
        pytest.param(utc(2025, 1, 1, 2), time(3), "UTC", utc(2025, 1, 1, 3), id="utc-later-today"),
        pytest.param(
            utc(2025, 1, 1, 3), time(3), "UTC", utc(2025, 1, 2, 3), id="utc-strictly-after"
        ),
        pytest.param(utc(2025, 1, 1, 4), time(3), "UTC", utc(2025, 1, 2, 3), id="utc-tomorrow"),
        pytest.param(utc(2024, 12, 31, 23, 59), time(0), "UTC", utc(2025, 1, 1), id="utc-midnight"),
        # Berlin: CET (UTC+1) in winter, CEST (UTC+2) in summer.
        pytest.param(
            utc(2026, 1, 10), time(3), "Europe/Berlin", utc(2026, 1, 10, 2), id="berlin-winter"
        ),
        pytest.param(
            utc(2026, 7, 10), time(3), "Europe/Berlin", utc(2026, 7, 10, 1), id="berlin-summer"
        ),
        # 2026-03-29: 02:00 CET → 03:00 CEST at 01:00 UTC; 02:30 does not exist.
        pytest.param(
            utc(2026, 3, 28, 12),
            time(2, 30),
            "Europe/Berlin",
            utc(2026, 3, 29, 1),
            id="berlin-spring-forward-gap",
        ),
        pytest.param(
            utc(2026, 3, 29, 1),
            time(2, 30),
            "Europe/Berlin",
            utc(2026, 3, 30, 0, 30),
            id="berlin-after-gap-run-next-day",
        ),
        pytest.param(
            utc(2026, 3, 28, 12),
            time(3),
            "Europe/Berlin",
            utc(2026, 3, 29, 1),
            id="berlin-spring-forward-03-00-exists",
        ),
        # 2026-10-25: 03:00 CEST → 02:00 CET at 01:00 UTC; 02:30 happens twice.
        pytest.param(
            utc(2026, 10, 24, 12),
            time(2, 30),
            "Europe/Berlin",
            utc(2026, 10, 25, 0, 30),
            id="berlin-fall-back-first-occurrence",
        ),
        pytest.param(
            utc(2026, 10, 25, 0, 30),
            time(2, 30),
            "Europe/Berlin",
            utc(2026, 10, 26, 1, 30),
            id="berlin-fall-back-runs-once",
        ),
        # New York 2026-03-08: 02:00 EST → 03:00 EDT at 07:00 UTC.
        pytest.param(
            utc(2026, 3, 7, 12),
            time(2, 30),
            "America/New_York",
            utc(2026, 3, 8, 7),
            id="ny-spring-forward-gap",
        ),
        pytest.param(
            utc(2026, 3, 7, 12),
            time(3),
            "America/New_York",
            utc(2026, 3, 8, 7),
            id="ny-spring-forward-03-00",
        ),
        pytest.param(
            utc(2026, 3, 7, 12),
            time(1, 59),
            "America/New_York",
            utc(2026, 3, 8, 6, 59),
            id="ny-just-before-gap",
        ),
        # New York 2026-11-01: 02:00 EDT → 01:00 EST at 06:00 UTC; 01:30 happens twice.
        pytest.param(
            utc(2026, 10, 31, 12),
            time(1, 30),
            "America/New_York",
            utc(2026, 11, 1, 5, 30),
            id="ny-fall-back-first-occurrence",
        ),
        pytest.param(
            utc(2026, 11, 1, 5, 30),
            time(1, 30),
            "America/New_York",
            utc(2026, 11, 2, 6, 30),
            id="ny-fall-back-runs-once",
        ),
        pytest.param(
            utc(2026, 11, 1, 12),
            time(3),
            "America/New_York",
            utc(2026, 11, 2, 8),
            id="ny-after-fall-back-est",
        ),
        # Late local evening: the UTC date is already the next day.
        pytest.param(
            utc(2026, 1, 10, 4),
            time(23),
            "America/New_York",
            utc(2026, 1, 11, 4),
            id="ny-utc-date-ahead",
        ),
        pytest.param(
            utc(2026, 1, 10, 3),
            time(23),
            "America/New_York",
            utc(2026, 1, 10, 4),
            id="ny-utc-date-ahead-run-tonight",
        ),
    ],
)
def test_next_daily_run(after: datetime, at: time, tz: str, expected: datetime) -> None:
    result = next_daily_run(after, at, tz)
    assert result == expected
    assert result.tzinfo is UTC


@pytest.mark.parametrize("tz", ["UTC", "Europe/Berlin", "America/New_York"])
def test_next_daily_run_runs_once_a_day_all_year(tz: str) -> None:
    run = next_daily_run(utc(2025, 12, 31), time(2, 30), tz)
    days = set()
    for _ in range(365):
        nxt = next_daily_run(run, time(2, 30), tz)
        assert timedelta(hours=22) < nxt - run <= timedelta(hours=26)
        days.add(nxt.astimezone(ZoneInfo(tz)).date())
        run = nxt
    assert len(days) == 365


def test_naive_after_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        next_daily_run(datetime(2026, 1, 1), time(3), "UTC")


@pytest.mark.parametrize(
    ("day", "at", "tz", "expected"),
    [
        (date(2026, 3, 8), time(2, 0), "America/New_York", utc(2026, 3, 8, 7)),
        (date(2026, 3, 8), time(2, 59, 59), "America/New_York", utc(2026, 3, 8, 7)),
        (date(2026, 11, 1), time(1, 0), "America/New_York", utc(2026, 11, 1, 5)),
        (date(2026, 3, 29), time(2, 0), "Europe/Berlin", utc(2026, 3, 29, 1)),
        # Lord Howe Island shifts by 30 minutes.
        (date(2026, 10, 4), time(2, 15), "Australia/Lord_Howe", utc(2026, 10, 3, 15, 30)),
    ],
)
def test_local_to_utc(day: date, at: time, tz: str, expected: datetime) -> None:
    assert local_to_utc(day, at, ZoneInfo(tz)) == expected


@pytest.mark.parametrize(
    ("last_run", "now", "at", "tz", "expected"),
    [
        pytest.param(None, utc(2026, 1, 2, 12), time(3), "UTC", False, id="never-ran"),
        pytest.param(
            utc(2026, 1, 1, 3), utc(2026, 1, 1, 12), time(3), "UTC", False, id="ran-today"
        ),
        pytest.param(
            utc(2026, 1, 1, 3),
            utc(2026, 1, 2, 2, 59),
            time(3),
            "UTC",
            False,
            id="next-run-not-yet-due",
        ),
        pytest.param(
            utc(2026, 1, 1, 3), utc(2026, 1, 2, 3), time(3), "UTC", True, id="due-exactly-now"
        ),
        pytest.param(
            utc(2026, 1, 1, 3), utc(2026, 1, 5, 12), time(3), "UTC", True, id="down-for-days"
        ),
        pytest.param(
            utc(2026, 3, 28, 1, 30),
            utc(2026, 3, 29, 1),
            time(2, 30),
            "Europe/Berlin",
            True,
            id="berlin-gap-run-due-at-jump",
        ),
        pytest.param(
            utc(2026, 3, 28, 1, 30),
            utc(2026, 3, 29, 0, 59),
            time(2, 30),
            "Europe/Berlin",
            False,
            id="berlin-gap-before-jump",
        ),
        pytest.param(
            utc(2026, 11, 1, 5, 30),
            utc(2026, 11, 1, 6, 45),
            time(1, 30),
            "America/New_York",
            False,
            id="ny-fall-back-repeat-is-not-a-missed-run",
        ),
    ],
)
def test_missed_daily_run(
    last_run: datetime | None, now: datetime, at: time, tz: str, expected: bool
) -> None:
    assert missed_daily_run(last_run, now, at, tz) is expected
