"""Wall-clock times in a timezone → UTC instants, correct across DST changes.

Pure functions of the previous run time (arq's `next_cron` style): no clock is read here.
DST rules, shared by daily jobs and send windows:
- a wall time that does not exist (spring forward, e.g. 02:30 in America/New_York on
  2026-03-08) means the first instant after the gap, i.e. the moment the clocks jump;
- a wall time that occurs twice (fall back) means its first occurrence, so a daily job
  runs once and a window is entered once.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

__all__ = ["local_to_utc", "missed_daily_run", "next_daily_run", "require_aware"]


def require_aware(when: datetime, name: str = "datetime") -> datetime:
    """`when` in UTC; naive datetimes are refused, since their zone would be a guess."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {when.isoformat()}")
    return when.astimezone(UTC)


def local_to_utc(day: date, at: time, zone: ZoneInfo) -> datetime:
    """The UTC instant at which the wall clock in `zone` shows `day` `at`.

    Ambiguous times resolve to the first occurrence (fold=0); times inside a
    spring-forward gap resolve to the end of the gap.
    """
    wall = datetime.combine(day, at.replace(tzinfo=None, fold=0), tzinfo=zone)
    instant = wall.astimezone(UTC)
    if instant.astimezone(zone).replace(tzinfo=None) == wall.replace(tzinfo=None):
        return instant
    return _gap_end(wall, zone)


def _gap_end(wall: datetime, zone: ZoneInfo) -> datetime:
    """The transition instant of the gap that swallows `wall` (a non-existent wall time).

    fold=1 maps the wall time with the pre-gap offset to an instant before the jump and
    fold=0 with the post-gap offset to one after it (PEP 495); zoneinfo does not expose
    its transitions, so bisect between the two to the second (gaps are whole seconds).
    """
    before = wall.replace(fold=1).astimezone(UTC)
    after = wall.replace(fold=0).astimezone(UTC)
    if before > after:
        before, after = after, before
    offset_after = after.astimezone(zone).utcoffset()
    low, high = int(before.timestamp()), int(after.timestamp())
    # Invariant: the offset at `high` is the post-gap offset, at `low` it is not.
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, zone).utcoffset() == offset_after:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


def next_daily_run(after: datetime, at: time, tz: str) -> datetime:
    """The next instant strictly after `after` at which the wall clock in `tz` shows `at`."""
    after_utc = require_aware(after, "after")
    zone = ZoneInfo(tz)
    # Start a day early: the local date of `after` may already be past `at` or, near
    # midnight and a DST change, the previous day's run may still lie ahead.
    day = after_utc.astimezone(zone).date() - timedelta(days=1)
    while True:
        candidate = local_to_utc(day, at, zone)
        if candidate > after_utc:
            return candidate
        day += timedelta(days=1)


def missed_daily_run(last_run: datetime | None, now: datetime, at: time, tz: str) -> bool:
    """True when a scheduled run time lies in (last_run, now]: a run missed while down.

    `last_run` None means the job never ran; that is not a missed run (False), so a fresh
    install waits for its first scheduled time instead of running at once on start.
    """
    if last_run is None:
        return False
    return next_daily_run(last_run, at, tz) <= require_aware(now, "now")
