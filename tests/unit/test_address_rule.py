"""One survey per address per interval, as a pure rule: the address's history under other
user ids decides like the user's own, with its own reason."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from daemon.config import SurveySettings
from jobs.rules import Candidate, decide_on_identify
from storage.survey_plan import email_key

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
BASE = Candidate(user_id="u", email="a@x.io", created_at=None, timezone=None,
                 unsubscribed=False, suppressed=False, has_pending=False, last_survey_at=None)
EVERY = SurveySettings(max_delay=timedelta(0))


def test_address_keys_ignore_case_and_spaces_and_hide_the_address() -> None:
    assert email_key(" Peter@Example.COM ") == email_key("peter@example.com")
    assert email_key("peter@example.com") != email_key("petra@example.com")
    assert "example" not in (email_key("peter@example.com") or "")
    assert email_key(None) is None and email_key("  ") is None


def test_a_pending_survey_to_the_address_skips() -> None:
    d = decide_on_identify(replace(BASE, address_pending=True), EVERY, NOW)
    assert d.action == "skip" and "already pending under another user id" in d.reason


def test_every_identify_waits_for_the_address_interval_to_end() -> None:
    sent = NOW - timedelta(days=10)
    d = decide_on_identify(replace(BASE, address_surveyed_at=sent), EVERY, NOW)
    assert d.action == "schedule" and d.due_at == sent + EVERY.resurvey_interval
    assert "this address was surveyed on 2026-02-20T10:00:00Z under another user id" in d.reason


def test_the_delay_rule_skips_an_address_surveyed_within_the_interval() -> None:
    c = replace(BASE, created_at=NOW - timedelta(days=1),
                address_surveyed_at=NOW - timedelta(days=3))
    d = decide_on_identify(c, SurveySettings(), NOW)
    assert d.action == "skip" and "under another user id" in d.reason


def test_an_address_surveyed_before_the_interval_does_not_count() -> None:
    c = replace(BASE, address_surveyed_at=NOW - EVERY.resurvey_interval - timedelta(days=1))
    d = decide_on_identify(c, EVERY, NOW)
    assert d.action == "schedule" and d.due_at == NOW
