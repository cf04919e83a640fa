"""The send-time checks: a claimed survey is judged again at the moment it would be
emailed (the user may have gone, unsubscribed or been sampled out since it was planned;
the send window or an account's cap may hold it back). Pure: a function of the claim, the
settings and `now`, with table tests in tests/unit/test_send_checks.py."""

from __future__ import annotations

from datetime import datetime, timedelta

from jobs.planning import candidate_from
from jobs.rules import (
    format_instant,
    next_send_time,
    recheck_at_dispatch,
    recipient_timezone,
    sampled_in,
)
from settings import SurveySettings
from storage.states import SurveyState
from storage.surveys import Claimed, Outcome


def check_at_send(c: Claimed, s: SurveySettings, now: datetime,
                  caps: dict[str, int]) -> Outcome | None:
    """Eligibility again, at the moment of sending: None means send it, else the outcome
    (skipped, or pending again with the time the send window opens). `caps` counts the
    surveys sent per account in the interval and is incremented for one let through."""
    skip = Outcome(c.id, c.user_id, SurveyState.SKIPPED, "", reminder=c.reminder)
    if c.user is None:
        return _with(skip, "skipped: the user no longer exists")
    candidate = candidate_from(c.user, has_pending=False, last_survey_at=None,
                               suppressed=c.suppressed)
    reason = recheck_at_dispatch(candidate, now)
    if reason is not None:
        return _with(skip, f"skipped at dispatch: {reason}")
    if c.reminder:
        return None
    if not sampled_in(c.user_id, s.sample_rate):
        return _with(skip, f"skipped: not in the sample (sample_rate {s.sample_rate})")
    zone = recipient_timezone(candidate, s)
    opens = next_send_time(now, s.send_window, zone)
    if opens > now + timedelta(seconds=1):
        window = s.send_window
        span = f"{window.start:%H:%M}-{window.end:%H:%M}" if window else ""
        return Outcome(c.id, c.user_id, SurveyState.PENDING,
                       f"deferred to {format_instant(opens)}: outside the send window "
                       f"{span} ({zone})", due_at=opens)
    if s.max_per_account > 0 and c.accounts:
        full = [g for g in c.accounts if caps.get(g, 0) >= s.max_per_account]
        if full:
            return _with(skip, f"skipped: account {full[0]} already had "
                               f"{caps.get(full[0], 0)} surveys in the interval "
                               f"(max_per_account {s.max_per_account})")
        for g in c.accounts:
            caps[g] = caps.get(g, 0) + 1
    return None


def _with(o: Outcome, reason: str) -> Outcome:
    return Outcome(o.survey_id, o.user_id, o.state, reason, reminder=o.reminder)
