"""Table tests for daily run times across DST (jobs/timing.py)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from jobs.timing import local_to_utc, missed_daily_run, next_daily_run, require_aware


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


# -- DST gaps, minute by minute, against an independent search ------------------------------

GAP_ZONES = ["America/New_York", "Europe/Berlin", "Australia/Lord_Howe"]  # Lord Howe: 30 min
YEARS = range(2020, 2031)


def _offset(ts: int, zone: ZoneInfo) -> timedelta:
    offset = datetime.fromtimestamp(ts, zone).utcoffset()
    assert offset is not None
    return offset


def _forward_transitions(zone: ZoneInfo, year: int) -> list[int]:
    """The instants (UTC seconds) at which the offset grows: found by walking the year a
    day, then a minute, then a second at a time, not by the module's fold-and-bisect."""
    found = []
    t = int(datetime(year, 1, 1, tzinfo=UTC).timestamp())
    end = int(datetime(year + 1, 1, 1, tzinfo=UTC).timestamp())
    while t < end:
        if _offset(t + 86_400, zone) > _offset(t, zone):
            before, m = _offset(t, zone), t
            while _offset(m + 60, zone) == before:
                m += 60
            while _offset(m + 1, zone) == before:
                m += 1
            found.append(m + 1)
        t += 86_400
    return found


def _gaps(tz: str) -> list[tuple[datetime, datetime, datetime]]:
    """(first missing wall time, first wall time after the gap, transition instant)."""
    zone = ZoneInfo(tz)
    gaps = []
    for year in YEARS:
        for ts in _forward_transitions(zone, year):
            jump = datetime.fromtimestamp(ts, UTC)
            wall_before = (jump + _offset(ts - 1, zone)).replace(tzinfo=None)
            wall_after = (jump + _offset(ts, zone)).replace(tzinfo=None)
            gaps.append((wall_before, wall_after, jump))
    return gaps


@pytest.mark.parametrize("tz", GAP_ZONES)
def test_every_minute_of_every_gap_resolves_to_the_first_valid_instant(tz: str) -> None:
    zone, gaps = ZoneInfo(tz), _gaps(tz)
    assert len(gaps) == len(YEARS)  # one spring-forward a year in these zones
    checked = 0
    for gap_start, gap_end, jump in gaps:
        wall = gap_start
        while wall < gap_end:
            for second in (0, 1, 59):  # to the second, not only on whole minutes
                at = wall + timedelta(seconds=second)
                # The first valid instant at or after a missing wall time is the jump.
                assert local_to_utc(at.date(), at.time(), zone) == jump, at
            checked += 1
            wall += timedelta(minutes=1)
        # Either side of the gap the wall time exists and maps straight through.
        just_before = gap_start - timedelta(seconds=1)
        assert local_to_utc(just_before.date(), just_before.time(), zone) == jump - timedelta(
            seconds=1)
        assert local_to_utc(gap_end.date(), gap_end.time(), zone) == jump
    assert checked == len(YEARS) * (30 if tz == "Australia/Lord_Howe" else 60)


def test_a_daily_run_in_the_gap_runs_at_the_jump_every_minute() -> None:
    for gap_start, gap_end, jump in _gaps("America/New_York"):
        wall = gap_start
        while wall < gap_end:
            # From an hour before the jump (01:00 EST), the next such wall time is the jump.
            after = jump - timedelta(hours=1)
            assert next_daily_run(after, wall.time(), "America/New_York") == jump
            wall += timedelta(minutes=7)


def test_a_repeated_wall_time_is_its_first_occurrence_whatever_its_fold() -> None:
    # New York 2026-11-01: 01:30 happens at 05:30 UTC (EDT) and 06:30 UTC (EST).
    zone = ZoneInfo("America/New_York")
    for fold in (0, 1):
        assert local_to_utc(date(2026, 11, 1), time(1, 30, fold=fold), zone) == utc(
            2026, 11, 1, 5, 30)


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: next_daily_run(datetime(2026, 1, 1), time(3), "UTC"), "after"),
        (lambda: missed_daily_run(utc(2026, 1, 1), datetime(2026, 1, 2), time(3), "UTC"), "now"),
        (lambda: require_aware(datetime(2026, 1, 1)), "datetime"),
    ],
)
def test_naive_datetimes_are_refused_by_name(call: Any, name: str) -> None:
    with pytest.raises(ValueError, match=rf"^{name} must be timezone-aware, got naive 2026-"):
        call()


def test_a_tzinfo_without_an_offset_counts_as_naive() -> None:
    class NoOffset(tzinfo):
        def utcoffset(self, dt: datetime | None) -> timedelta | None:
            return None

    with pytest.raises(ValueError, match="timezone-aware"):
        require_aware(datetime(2026, 1, 1, tzinfo=NoOffset()))
