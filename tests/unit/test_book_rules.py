"""Table tests for the customer-book rules (jobs/book_rules.py), with no database:
new rows, identify, trait times, context fields, group calls, activity and sessions.

What is asserted is what the read API would then show (fields, traits, activity) and what
the store is told to write back (the new/dirty/removed sets).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jobs.book_rules import BookRules
from storage.book import new_account, new_user
from storage.events import Message
from tests.unit.book_support import (
    MIN,
    SEC,
    T0,
    active,
    apply,
    book,
    identify,
    message,
    page,
    stamp,
    times,
    traits,
)

# -- new rows ------------------------------------------------------------------------------


def test_new_user_and_account_rows() -> None:
    assert new_user("u1", T0) == {
        "user_id": "u1", "anonymous": False, "email": None, "first_name": None,
        "last_name": None, "name": None, "gender": None, "timezone": None, "locale": None,
        "created_at": None, "traits": "{}", "trait_times": "{}", "first_seen": None,
        "last_seen": None, "event_count": 0, "session_count": 0, "unsubscribed_at": None,
        "unsubscribe_synced": True, "updated_at": T0,
    }
    assert new_user("a1", T0, anonymous=True)["anonymous"] is True
    assert new_account("g1", T0) == {"group_id": "g1", "traits": "{}", "trait_times": "{}",
                                     "created_at": None, "deleted_at": None, "updated_at": T0}


# -- identify --------------------------------------------------------------------------------


def test_identify_creates_the_user_with_its_fields() -> None:
    b = apply(book(), identify(traits={
        "email": "  ada@example.com ", "firstName": "Ada", "lastName": "Lovelace",
        "name": "Ada L.", "gender": "f", "timezone": "Europe/London", "locale": "en-GB",
        "createdAt": "2025-12-01T08:00:00Z", "plan": "pro"}))
    user = b.users["u1"]
    assert user["email"] == "ada@example.com"  # trimmed
    assert (user["first_name"], user["last_name"], user["name"], user["gender"]) == (
        "Ada", "Lovelace", "Ada L.", "f")
    assert (user["timezone"], user["locale"]) == ("Europe/London", "en-GB")
    assert user["created_at"] == datetime(2025, 12, 1, 8, tzinfo=UTC)
    assert user["anonymous"] is False
    assert traits(user)["plan"] == "pro"
    assert set(times(user)) == set(traits(user)) and set(times(user).values()) == {stamp()}
    assert (b.new_users, b.dirty_users) == ({"u1"}, {"u1"})
    assert b.identified == {"u1": T0}
    assert user["updated_at"] == T0


def test_traits_are_stored_compactly_with_their_own_characters() -> None:
    b = apply(book(), identify(traits={"name": "Zoë 😀", "n": 1}))
    assert b.users["u1"]["traits"] == '{"name":"Zoë 😀","n":1}'
    assert b.users["u1"]["trait_times"] == f'{{"name":"{stamp()}","n":"{stamp()}"}}'


@pytest.mark.parametrize(
    ("trait_values", "column", "expected"),
    [
        ({"first_name": "Ada"}, "first_name", "Ada"),
        ({"last_name": "L"}, "last_name", "L"),
        ({"firstName": "Ada", "first_name": "Other"}, "first_name", "Ada"),  # camelCase first
        ({"lastName": "L", "last_name": "Other"}, "last_name", "L"),
        ({"email": "   "}, "email", None),  # blank is no email
        ({"email": 42}, "email", None),  # not text
        ({"name": "x" * 400}, "name", "x" * 320),  # kept to 320 characters
        ({"email": " " + "y" * 330 + " "}, "email", "y" * 320),
        ({"timezone": "  "}, "timezone", None),
        ({"locale": " fr-FR "}, "locale", "fr-FR"),
    ],
)
def test_identify_field_spellings_and_cleaning(
    trait_values: dict[str, Any], column: str, expected: Any
) -> None:
    b = apply(book(), identify(traits=trait_values))
    assert b.users["u1"][column] == expected


@pytest.mark.parametrize(
    ("created", "expected"),
    [
        ("2025-12-01T08:00:00Z", datetime(2025, 12, 1, 8, tzinfo=UTC)),
        (1_700_000_000, datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),  # epoch seconds
        (1_700_000_000_000, datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),  # milliseconds
        (1_700_000_000.5, datetime(2023, 11, 14, 22, 13, 20, 500_000, tzinfo=UTC)),
        # The seconds/milliseconds boundary: up to 1e11 is seconds (year 5138) ...
        (100_000_000_000, datetime(5138, 11, 16, 9, 46, 40, tzinfo=UTC)),
        # ... above it milliseconds.
        (100_000_000_001, datetime(1973, 3, 3, 9, 46, 40, 1000, tzinfo=UTC)),
        (True, None),  # a bool is not a number of seconds
        (10**30, None),  # out of range: ignored, not a crash
        ("not a date", None),
    ],
)
def test_created_at_forms(created: Any, expected: datetime | None) -> None:
    b = apply(book(), identify(traits={"createdAt": created}))
    assert b.users["u1"]["created_at"] == expected


def test_created_at_snake_case_and_camel_case_wins() -> None:
    b = apply(book(), identify(traits={"created_at": "2025-01-01T00:00:00Z"}))
    assert b.users["u1"]["created_at"] == datetime(2025, 1, 1, tzinfo=UTC)
    b = apply(book(), identify(traits={"createdAt": "2024-01-01T00:00:00Z",
                                       "created_at": "2025-01-01T00:00:00Z"}))
    assert b.users["u1"]["created_at"] == datetime(2024, 1, 1, tzinfo=UTC)


def test_an_out_of_range_created_at_keeps_the_one_known() -> None:
    b = apply(book(), identify(traits={"createdAt": 1_700_000_000}))
    apply(b, identify(at=MIN, traits={"createdAt": 10**30}))
    assert b.users["u1"]["created_at"] == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)


@pytest.mark.parametrize(
    ("fields", "linked"),
    [
        ({"traits": {"groupId": "acme"}}, "acme"),
        ({"traits": {"groupId": 42}}, "42"),
        ({"context": {"groupId": "ctx"}}, "ctx"),
        ({"traits": {"groupId": "acme"}, "context": {"groupId": "ctx"}}, "acme"),
        ({"traits": {"groupId": True}}, None),
        ({"traits": {"groupId": ""}}, None),
        ({"traits": {"groupId": 1.5}}, None),
        ({"traits": {"groupId": ["a"]}}, None),
    ],
)
def test_identify_links_the_user_to_its_group(fields: dict[str, Any], linked: str | None) -> None:
    b = apply(book(), identify(**fields))
    if linked is None:
        assert b.memberships == {} and b.accounts == {}
        return
    assert b.memberships == {("u1", linked): {"user_id": "u1", "group_id": linked,
                                              "active": True, "changed_at": T0}}
    assert b.new_memberships == {("u1", linked)}
    assert linked in b.accounts and b.new_accounts == {linked}


def test_identified_only_with_an_email_and_a_user_id() -> None:
    b = apply(book(), identify(traits={"name": "no email"}))
    assert b.identified == {}
    b = apply(book(), identify(None, anonymousId="anon-1", traits={"email": "a@x.io"}))
    assert b.identified == {}
    assert b.users["anon-1"]["anonymous"] is True
    assert b.users["anon-1"]["email"] == "a@x.io"


def test_a_known_anonymous_row_becomes_a_user_when_identified_by_user_id() -> None:
    b = book(users={"x1": new_user("x1", T0, anonymous=True)})
    apply(b, identify("x1", traits={"email": "x@x.io"}))
    assert b.users["x1"]["anonymous"] is False
    assert b.identified == {"x1": T0}
    assert b.new_users == set()  # it was loaded, not created


# -- trait timestamps: an older message never overwrites a newer value -----------------------


def test_an_older_identify_never_overwrites_a_newer_trait() -> None:
    b = apply(book(),
              identify(at=10 * MIN, traits={"plan": "pro", "email": "new@x.io"}),
              identify(at=5 * MIN, traits={"plan": "free", "email": "old@x.io", "seats": 3}))
    user = b.users["u1"]
    assert traits(user) == {"plan": "pro", "email": "new@x.io", "seats": 3}
    assert user["email"] == "new@x.io"
    assert times(user) == {"plan": stamp(10 * MIN), "email": stamp(10 * MIN),
                           "seats": stamp(5 * MIN)}


def test_a_newer_or_equal_time_overwrites() -> None:
    b = apply(book(), identify(traits={"plan": "a"}), identify(traits={"plan": "b"}))
    assert traits(b.users["u1"])["plan"] == "b"  # same instant: the later message wins
    apply(b, identify(at=SEC, traits={"plan": "c"}))
    assert traits(b.users["u1"])["plan"] == "c"
    assert times(b.users["u1"])["plan"] == stamp(SEC)


def test_an_all_older_identify_changes_no_stored_text() -> None:
    b = apply(book(), identify(at=MIN, traits={"plan": "pro"}))
    before = (b.users["u1"]["traits"], b.users["u1"]["trait_times"])
    apply(b, identify(traits={"plan": "free"}))
    assert (b.users["u1"]["traits"], b.users["u1"]["trait_times"]) == before


def test_an_identify_without_traits_keeps_the_traits() -> None:
    b = apply(book(), identify(traits={"plan": "pro"}), identify(at=MIN))
    assert traits(b.users["u1"]) == {"plan": "pro"}


# -- context.timezone / context.locale -------------------------------------------------------


def test_context_fills_timezone_and_locale_when_traits_do_not() -> None:
    b = apply(book(), page(context={"timezone": "Asia/Tokyo", "locale": "ja-JP"}))
    assert (b.users["u1"]["timezone"], b.users["u1"]["locale"]) == ("Asia/Tokyo", "ja-JP")


def test_a_timezone_trait_wins_over_context() -> None:
    b = apply(book(), identify(traits={"timezone": "Europe/Paris", "locale": "fr-FR"}),
              page(at=MIN, context={"timezone": "Asia/Tokyo", "locale": "ja-JP"}))
    assert (b.users["u1"]["timezone"], b.users["u1"]["locale"]) == ("Europe/Paris", "fr-FR")
    # In the same message, too.
    b = apply(book(), identify(traits={"timezone": "Europe/Paris", "locale": "fr-FR"},
                               context={"timezone": "Asia/Tokyo", "locale": "ja-JP"}))
    assert (b.users["u1"]["timezone"], b.users["u1"]["locale"]) == ("Europe/Paris", "fr-FR")


def test_context_timezone_alone_or_locale_alone() -> None:
    b = apply(book(), page(context={"timezone": "Asia/Tokyo"}))
    assert (b.users["u1"]["timezone"], b.users["u1"]["locale"]) == ("Asia/Tokyo", None)
    b = apply(book(), page(context={"locale": "ja-JP"}))
    assert (b.users["u1"]["timezone"], b.users["u1"]["locale"]) == (None, "ja-JP")
    # A second event changes only what differs.
    apply(b, page(at=MIN, context={"locale": "ja-JP", "timezone": "Asia/Seoul"}))
    assert (b.users["u1"]["timezone"], b.users["u1"]["locale"]) == ("Asia/Seoul", "ja-JP")
    apply(b, page(at=2 * MIN, context={"locale": "ko-KR", "timezone": "Asia/Seoul"}))
    assert (b.users["u1"]["timezone"], b.users["u1"]["locale"]) == ("Asia/Seoul", "ko-KR")


def test_context_values_are_cut_to_the_column_sizes() -> None:
    """Messages from intake are already cut; the book does not rely on it."""
    b = book()
    m = Message(message_id="m", type="page", user_id="u1", anonymous_id=None, timestamp=T0,
                context_timezone="z" * 100, context_locale="l" * 100)
    apply(b, m)
    assert (b.users["u1"]["timezone"], b.users["u1"]["locale"]) == ("z" * 64, "l" * 32)
    same = Message(message_id="m2", type="page", user_id="u1", anonymous_id=None,
                   timestamp=T0 + MIN, context_timezone="z" * 100, context_locale="k" * 100)
    apply(b, same)
    assert b.users["u1"]["locale"] == "k" * 32


# -- group -------------------------------------------------------------------------------


def test_group_writes_the_account_and_links_the_user() -> None:
    b = apply(book(), message("group", userId="u1", groupId="acme",
                              traits={"name": "Acme", "plan": "enterprise"}))
    account = b.accounts["acme"]
    assert traits(account) == {"name": "Acme", "plan": "enterprise"}
    assert times(account) == {"name": stamp(), "plan": stamp()}
    assert (b.new_accounts, b.dirty_accounts) == ({"acme"}, {"acme"})
    assert active(b) == {("u1", "acme")}
    assert b.dirty_users == {"u1"} and "u1" in b.users


def test_group_traits_follow_event_time() -> None:
    b = apply(book(), message("group", 10 * MIN, userId="u1", groupId="acme",
                              traits={"plan": "enterprise"}),
              message("group", userId="u1", groupId="acme", traits={"plan": "free", "n": 5}))
    assert traits(b.accounts["acme"]) == {"plan": "enterprise", "n": 5}
    assert b.new_accounts == {"acme"}


def test_an_anonymous_group_call_writes_the_account_without_a_membership() -> None:
    b = apply(book(), message("group", anonymousId="anon-1", groupId="acme",
                              traits={"name": "Acme"}))
    assert traits(b.accounts["acme"]) == {"name": "Acme"}
    assert b.memberships == {}


def test_group_and_identify_are_not_activity() -> None:
    b = apply(book(), identify(), message("group", userId="u1", groupId="acme"))
    user = b.users["u1"]
    assert (user["event_count"], user["session_count"], user["first_seen"]) == (0, 0, None)


# -- activity and sessions -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["track", "page", "screen"])
def test_every_track_page_and_screen_is_activity(kind: str) -> None:
    fields = {"event": "Clicked"} if kind == "track" else {}
    b = apply(book(), message(kind, userId="u1", **fields))
    user = b.users["u1"]
    assert (user["first_seen"], user["last_seen"]) == (T0, T0)
    assert (user["event_count"], user["session_count"]) == (1, 1)


@pytest.mark.parametrize(
    ("gaps", "timeout", "sessions"),
    [
        ([30 * MIN], timedelta(minutes=30), 1),  # exactly the timeout: same session
        ([30 * MIN + SEC], timedelta(minutes=30), 2),
        ([10 * MIN, 10 * MIN, 10 * MIN], timedelta(minutes=30), 1),
        ([31 * MIN, 31 * MIN], timedelta(minutes=30), 3),
        ([5 * MIN + SEC], timedelta(minutes=5), 2),
        ([5 * MIN], timedelta(minutes=5), 1),
    ],
)
def test_a_new_session_after_the_timeout(
    gaps: list[timedelta], timeout: timedelta, sessions: int
) -> None:
    at, events = timedelta(0), [page()]
    for gap in gaps:
        at += gap
        events.append(page(at=at))
    b = apply(book(), *events, rules=BookRules(session_timeout=timeout))
    user = b.users["u1"]
    assert (user["session_count"], user["event_count"]) == (sessions, len(events))
    assert (user["first_seen"], user["last_seen"]) == (T0, T0 + at)


@pytest.mark.parametrize(
    ("late", "sessions", "first_seen"),
    [
        (-30 * MIN, 1, T0 - 30 * MIN),  # just within the timeout before the first event
        (-30 * MIN - SEC, 2, T0 - 30 * MIN - SEC),  # well before: a session of its own
        (5 * MIN, 1, T0),  # between first and last: only counted
    ],
)
def test_late_arriving_history(late: timedelta, sessions: int, first_seen: datetime) -> None:
    b = apply(book(), page(), page(at=10 * MIN), page(at=late))
    user = b.users["u1"]
    assert (user["session_count"], user["event_count"]) == (sessions, 3)
    assert (user["first_seen"], user["last_seen"]) == (first_seen, T0 + 10 * MIN)


def test_an_event_at_the_same_instant_is_counted_in_the_same_session() -> None:
    b = apply(book(), page(), page())
    assert (b.users["u1"]["event_count"], b.users["u1"]["session_count"]) == (2, 1)


def test_unchanged_traits_keep_the_loaded_text() -> None:
    """Loaded rows are compared before writing: text that did not change is left alone."""
    user = new_user("u1", T0)
    user["traits"] = '{"plan": "pro"}'  # as another writer formatted it
    user["trait_times"] = f'{{"plan": "{stamp(MIN)}"}}'
    b = apply(book(users={"u1": user}), identify(traits={"plan": "free"}))
    assert b.users["u1"]["traits"] == '{"plan": "pro"}'
    assert b.users["u1"]["trait_times"] == f'{{"plan": "{stamp(MIN)}"}}'
