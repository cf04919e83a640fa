"""Survey rules as pure functions: Callexa's delays, then npsd's additions.

Nothing here reads a clock or touches storage: every rule takes `now` (aware UTC) and
returns a value, so the whole policy is covered by table tests. Decision reasons are the
sentences an operator reads in `npsd why`, so they name the rule and the setting.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jobs.timing import local_to_utc, require_aware
from settings import SendWindow, SurveySettings
from settings.durations import format_duration
from storage.nps import category, nps

__all__ = [
    "Candidate",
    "Decision",
    "category",
    "decide_on_event",
    "decide_on_identify",
    "expires_at",
    "format_instant",
    "next_send_time",
    "nps",
    "recheck_at_dispatch",
    "recipient_timezone",
    "reminder_due",
    "sampled_in",
]


@dataclass(frozen=True)
class Candidate:
    """What the rules need to know about a user at the moment of a decision."""

    user_id: str
    email: str | None
    created_at: datetime | None
    timezone: str | None
    unsubscribed: bool
    suppressed: bool
    has_pending: bool
    # When the latest survey was sent (or created/scheduled if not sent yet): the
    # re-survey interval counts from it.
    last_survey_at: datetime | None
    # The same address (compared case-insensitively) under other user ids: one survey per
    # address per interval, whoever carries it.
    address_pending: bool = False
    address_surveyed_at: datetime | None = None


@dataclass(frozen=True)
class Decision:
    action: Literal["schedule", "skip"]
    reason: str
    due_at: datetime | None = None


def format_instant(when: datetime) -> str:
    """UTC, to the second, with a Z: the one timestamp format of decision reasons."""
    return require_aware(when).strftime("%Y-%m-%dT%H:%M:%SZ")


def _skip(reason: str) -> Decision:
    return Decision("skip", f"skipped: {reason}")


def _ineligible(c: Candidate) -> str | None:
    """Why this user may not be surveyed at all, whatever the timing."""
    if c.email is None or not c.email.strip():
        return "no email trait"
    if c.unsubscribed:
        return "unsubscribed"
    if c.suppressed:
        return "suppressed"
    return None


def decide_on_identify(c: Candidate, s: SurveySettings, now: datetime) -> Decision:
    """Whether, and when, an identify call leads to a survey for this user."""
    now = require_aware(now, "now")
    reason = _ineligible(c)
    if reason is not None:
        return _skip(reason)
    if c.has_pending:
        return _skip("a survey is already pending")
    if c.address_pending:
        return _skip("a survey to this address is already pending under another user id")
    if not sampled_in(c.user_id, s.sample_rate):
        return _skip(f"not in the sample (sample_rate {s.sample_rate:g})")

    interval = format_duration(s.resurvey_interval)
    last = None if c.last_survey_at is None else require_aware(c.last_survey_at, "last_survey_at")
    other = (None if c.address_surveyed_at is None
             else require_aware(c.address_surveyed_at, "address_surveyed_at"))
    if other is not None and now < other + s.resurvey_interval and (last is None or other > last):
        return _by_address(c, s, now, other)

    if c.created_at is not None and s.max_delay > timedelta(0):
        created = require_aware(c.created_at, "created_at")
        if now > created + s.max_delay:
            return _skip(f"older than max_delay (createdAt+{format_duration(s.max_delay)})")
        earliest = created + s.min_delay
        due = max(earliest, now)
        # Delayed surveys are not deferred to the interval's end: the delay rule only
        # surveys new customers, so a recent survey means this one is not wanted.
        if last is not None and due < last + s.resurvey_interval:
            return _skip(
                f"surveyed within the {interval} interval "
                f"(last {format_instant(last)}, next possible "
                f"{format_instant(last + s.resurvey_interval)})"
            )
        why = f"createdAt+{format_duration(s.min_delay)}"
        if due > earliest:
            why += " had passed, so at once"
        return _schedule(due, why, c, s)

    # max_delay = 0 or no createdAt: every identify asks for a survey, at once unless
    # one went out within the interval; then it waits for the interval's end.
    why = "max_delay is 0, so at once" if c.created_at is not None else "no createdAt, so at once"
    due = now
    if last is not None and now < last + s.resurvey_interval:
        due = last + s.resurvey_interval
        why = f"re-survey when the {interval} interval ends"
    return _schedule(due, why, c, s)


def decide_on_event(c: Candidate, s: SurveySettings, now: datetime, event: str,
                    at: datetime) -> Decision:
    """A track named in `survey.trigger_events`: a candidate as an identify with
    max_delay = 0 is, but due at the event's time + min_delay (the reason names the event).

    The event time is clamped to `now` (a clock ahead of ours must not push the survey out).
    """
    now = require_aware(now, "now")
    at = min(require_aware(at, "at"), now)
    name = f'"{event}"'
    reason = _ineligible(c)
    if reason is not None:
        return _skip(f"{name}: {reason}")
    if c.has_pending:
        return _skip(f"{name}: a survey is already pending")
    if c.address_pending:
        return _skip(f"{name}: a survey to this address is already pending under another "
                     "user id")
    if not sampled_in(c.user_id, s.sample_rate):
        return _skip(f"{name}: not in the sample (sample_rate {s.sample_rate:g})")
    earliest = at + s.min_delay
    due = max(earliest, now)
    why = f"{name}+{format_duration(s.min_delay)}"
    if due > earliest:
        why += " had passed, so at once"
    # Once per interval, whoever carried the address: wait for the later interval end.
    interval = format_duration(s.resurvey_interval)
    if c.last_survey_at is not None:
        own_end = require_aware(c.last_survey_at) + s.resurvey_interval
        if own_end > due:
            due, why = own_end, f"{name}: re-survey when the {interval} interval ends"
    if c.address_surveyed_at is not None:
        other = require_aware(c.address_surveyed_at)
        if other + s.resurvey_interval > due:
            due = other + s.resurvey_interval
            why = (f"{name}: deferred: this address was surveyed on {format_instant(other)} "
                   f"under another user id (one survey per address per {interval})")
    return _schedule(due, why, c, s)


def _by_address(c: Candidate, s: SurveySettings, now: datetime, other: datetime) -> Decision:
    """The address was surveyed within the interval under another user id: the delay rule
    skips (as for the user's own survey), every-identify waits for the interval's end."""
    ends = other + s.resurvey_interval
    said = (f"this address was surveyed on {format_instant(other)} under another user id "
            f"(one survey per address per {format_duration(s.resurvey_interval)})")
    if c.created_at is not None and s.max_delay > timedelta(0):
        created = require_aware(c.created_at, "created_at")
        if now > created + s.max_delay:
            return _skip(f"older than max_delay (createdAt+{format_duration(s.max_delay)})")
        return _skip(f"{said}, next possible {format_instant(ends)}")
    return _schedule(ends, f"deferred: {said}", c, s)


def _schedule(due: datetime, why: str, c: Candidate, s: SurveySettings) -> Decision:
    if s.send_window is None:
        return Decision("schedule", f"scheduled for {format_instant(due)}: {why}", due)
    tz = recipient_timezone(c, s)
    send = next_send_time(due, s.send_window, tz)
    if send != due:
        window = f"{s.send_window.start:%H:%M}-{s.send_window.end:%H:%M}"
        why += f", moved into the {window} send window ({tz})"
    return Decision("schedule", f"scheduled for {format_instant(send)}: {why}", send)


def recipient_timezone(c: Candidate, s: SurveySettings) -> str:
    """The user's own IANA timezone when it is known and valid, else the default."""
    if c.timezone:
        try:
            ZoneInfo(c.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            # Traits are customer data: a bad zone must not block the survey.
            return s.default_timezone
        return c.timezone
    return s.default_timezone


def sampled_in(user_id: str, rate: float) -> bool:
    """Deterministic sampling: a user's hash decides, so retries and re-identifies agree."""
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    digest = hashlib.sha256(user_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


def recheck_at_dispatch(c: Candidate, now: datetime) -> str | None:
    """None if the user may still be surveyed when the survey falls due, else why not.

    `now` is taken for symmetry with the other rules, so a time-based rule can be added
    without changing every caller.
    """
    require_aware(now, "now")
    reason = _ineligible(c)
    if reason == "no email trait":
        return "no email any more"
    return reason


def next_send_time(due: datetime, window: SendWindow | None, tz: str) -> datetime:
    """The first instant at or after `due` inside the daily send window in `tz` (UTC).

    The end is exclusive; a window whose end is not after its start wraps midnight
    (22:00-06:00 runs from 22:00 to 06:00 the next morning). DST follows
    `jobs.timing.local_to_utc`: a missing start moves to the end of the gap, a repeated
    one counts once.
    """
    due = require_aware(due, "due")
    if window is None:
        return due
    zone = ZoneInfo(tz)
    wraps = window.end <= window.start
    first = due.astimezone(zone).date() - timedelta(days=1)
    # The previous day's window may still be open (wrapping windows), and one of the next
    # two days always has an open window, even if a DST gap empties one.
    for offset in range(4):
        day = first + timedelta(days=offset)
        start = local_to_utc(day, window.start, zone)
        end = local_to_utc(day + timedelta(days=1) if wraps else day, window.end, zone)
        if start >= end:
            continue  # the whole window fell into a DST gap today
        if start <= due < end:
            return due
        if start >= due:
            return start
    raise AssertionError(f"no send window found after {due.isoformat()} in {tz}")


def expires_at(sent_at: datetime, s: SurveySettings) -> datetime:
    """When the survey link stops accepting answers."""
    return require_aware(sent_at, "sent_at") + s.response_window


def reminder_due(sent_at: datetime, s: SurveySettings) -> datetime | None:
    """When to send the one reminder, or None when reminders are off (reminder_after 0)."""
    if s.reminder_after <= timedelta(0):
        return None
    return require_aware(sent_at, "sent_at") + s.reminder_after
