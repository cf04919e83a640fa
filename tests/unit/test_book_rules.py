"""Table tests for the customer-book rules (storage/book_rules.py), with no database.

Messages are fixture-shaped dicts parsed by daemon.messages.parse_message, as intake does;
the book is the in-memory Book the store loads before a batch and writes back after it.
What is asserted is what the read API would then show: fields, traits, activity, accounts,
memberships, aliases, and what the store is told to write (new/dirty/removed sets).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from daemon.messages import parse_message
from storage.book_rules import Book, BookRules, apply_message, new_account, new_user
from storage.events import Message

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)
SEC = timedelta(seconds=1)
DEFAULT = BookRules()
ONE_ACCOUNT = BookRules(one_account_per_user=True)


def ts(offset: timedelta = timedelta(0)) -> str:
    return (T0 + offset).isoformat().replace("+00:00", "Z")


def book(**rows: Any) -> Book:
    return Book(users=rows.get("users", {}), accounts=rows.get("accounts", {}),
                memberships=rows.get("memberships", {}), aliases=rows.get("aliases", {}),
                suppressed=rows.get("suppressed", set()), now=T0)


_counter = iter(range(10**9))


def message(kind: str, at: timedelta = timedelta(0), **fields: Any) -> Message:
    raw: dict[str, Any] = {"type": kind, "messageId": f"m-{next(_counter)}",
                           "timestamp": ts(at), **fields}
    return parse_message(raw, T0)


def identify(user: str | None = "u1", at: timedelta = timedelta(0), **fields: Any) -> Message:
    if user is not None:
        fields["userId"] = user
    return message("identify", at, **fields)


def track(event: str, user: str | None = "u1", at: timedelta = timedelta(0),
          **fields: Any) -> Message:
    if user is not None:
        fields["userId"] = user
    return message("track", at, event=event, **fields)


def page(user: str | None = "u1", at: timedelta = timedelta(0), **fields: Any) -> Message:
    if user is not None:
        fields["userId"] = user
    return message("page", at, **fields)


def apply(b: Book, *messages: Message, rules: BookRules = DEFAULT) -> Book:
    for m in messages:
        apply_message(b, m, rules)
    return b


def traits(row: dict[str, Any]) -> dict[str, Any]:
    return dict(json.loads(row["traits"]))


def times(row: dict[str, Any]) -> dict[str, str]:
    return dict(json.loads(row["trait_times"]))


def stamp(offset: timedelta = timedelta(0)) -> str:
    return (T0 + offset).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def active(b: Book) -> set[tuple[str, str]]:
    return {key for key, row in b.memberships.items() if row["active"]}


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


# -- B2B track events ------------------------------------------------------------------------


def test_signed_up_creates_the_user_from_its_properties() -> None:
    b = apply(book(), track("Signed Up", properties={
        "type": "organic", "first_name": "Peter", "last_name": "Gibbons",
        "email": "peter@initech.example", "username": "pgibbons", "title": "Programmer",
        "name": "Peter G."}))
    user = b.users["u1"]
    assert traits(user) == {"firstName": "Peter", "lastName": "Gibbons",
                            "email": "peter@initech.example", "username": "pgibbons",
                            "title": "Programmer", "name": "Peter G."}
    assert (user["first_name"], user["last_name"], user["email"], user["name"]) == (
        "Peter", "Gibbons", "peter@initech.example", "Peter G.")
    assert (user["event_count"], user["session_count"]) == (1, 1)


def test_signed_up_does_not_overwrite_newer_traits() -> None:
    b = apply(book(), identify(at=MIN, traits={"email": "new@x.io"}),
              track("Signed Up", properties={"email": "old@x.io", "first_name": "P"}))
    assert b.users["u1"]["email"] == "new@x.io"
    assert b.users["u1"]["first_name"] == "P"


@pytest.mark.parametrize(
    "where",
    [{"context": {"groupId": "acct_123"}},
     {"properties": {"groupId": " acct_123 "}},
     {"properties": {"account_id": "acct_123"}}],
)
def test_account_created_names_the_account_and_links_its_creator(where: dict[str, Any]) -> None:
    fields = {**where}
    fields["properties"] = {**where.get("properties", {}), "account_name": "Initech"}
    b = apply(book(), track("Account Created", **fields))
    account = b.accounts["acct_123"]
    assert traits(account) == {"name": "Initech"}
    assert account["created_at"] == T0 and account["deleted_at"] is None
    assert (b.new_accounts, b.dirty_accounts) == ({"acct_123"}, {"acct_123"})
    assert active(b) == {("u1", "acct_123")}


def test_account_created_keeps_the_earliest_creation_and_undeletes() -> None:
    b = apply(book(), track("Account Created", at=10 * MIN, context={"groupId": "g"}),
              track("Account Created", context={"groupId": "g"}),
              track("Account Created", at=20 * MIN, context={"groupId": "g"}))
    assert b.accounts["g"]["created_at"] == T0
    assert traits(b.accounts["g"]) == {}  # no account_name, no name
    # Deleted, then created again later: alive again.
    apply(b, track("Account Deleted", at=30 * MIN, context={"groupId": "g"}),
          track("Account Created", at=30 * MIN, context={"groupId": "g"}))
    assert b.accounts["g"]["deleted_at"] is None
    # A creation older than the deletion does not undelete.
    apply(b, track("Account Deleted", at=40 * MIN, context={"groupId": "g"}),
          track("Account Created", at=35 * MIN, context={"groupId": "g"}))
    assert b.accounts["g"]["deleted_at"] == T0 + 40 * MIN


def test_account_created_by_an_anonymous_visitor_has_no_member() -> None:
    b = apply(book(), track("Account Created", None, anonymousId="anon-1",
                            context={"groupId": "g"}))
    assert "g" in b.accounts and b.memberships == {}


def test_account_deleted_ends_its_memberships_up_to_then() -> None:
    b = apply(book(), track("Account Added User", "u1", context={"groupId": "g"}),
              track("Account Added User", "u2", at=20 * MIN, context={"groupId": "g"}),
              track("Account Added User", "u3", context={"groupId": "other"}),
              track("Account Deleted", "admin", at=10 * MIN, context={"groupId": "g"}))
    assert b.accounts["g"]["deleted_at"] == T0 + 10 * MIN
    # u2 joined after the deletion (events arrive out of order): kept.
    assert active(b) == {("u2", "g"), ("u3", "other")}
    assert b.memberships[("u1", "g")]["changed_at"] == T0 + 10 * MIN
    assert ("u1", "g") in b.dirty_memberships or ("u1", "g") in b.new_memberships
    assert b.dirty_accounts >= {"g"}


def test_account_deleted_keeps_the_latest_deletion_time() -> None:
    b = apply(book(), track("Account Deleted", at=10 * MIN, context={"groupId": "g"}),
              track("Account Deleted", context={"groupId": "g"}))
    assert b.accounts["g"]["deleted_at"] == T0 + 10 * MIN
    apply(b, track("Account Deleted", at=20 * MIN, context={"groupId": "g"}))
    assert b.accounts["g"]["deleted_at"] == T0 + 20 * MIN


def test_account_deleted_at_the_same_instant_ends_the_membership() -> None:
    b = apply(book(), track("Account Added User", context={"groupId": "g"}),
              track("Account Deleted", context={"groupId": "g"}))
    assert active(b) == set()


def test_added_and_removed_user_change_membership_by_event_time() -> None:
    added = track("Account Added User", context={"groupId": "g"})
    b = apply(book(), added)
    assert active(b) == {("u1", "g")} and b.new_memberships == {("u1", "g")}
    apply(b, track("Account Removed User", at=MIN, context={"groupId": "g"}))
    assert active(b) == set() and b.memberships[("u1", "g")]["changed_at"] == T0 + MIN
    assert b.dirty_memberships == {("u1", "g")}
    # An older "added" does not undo the newer removal ...
    apply(b, track("Account Added User", at=30 * SEC, context={"groupId": "g"}))
    assert active(b) == set()
    # ... a newer one does.
    apply(b, track("Account Added User", at=2 * MIN, context={"groupId": "g"}))
    assert active(b) == {("u1", "g")}


def test_removed_user_without_a_membership_records_the_removal() -> None:
    b = apply(book(), track("Account Removed User", at=MIN, context={"groupId": "g"}))
    assert b.memberships == {("u1", "g"): {"user_id": "u1", "group_id": "g", "active": False,
                                           "changed_at": T0 + MIN}}
    assert b.new_memberships == {("u1", "g")}
    # An older "added" arriving late does not make the user a member.
    apply(b, track("Account Added User", context={"groupId": "g"}))
    assert active(b) == set()


def test_an_older_removal_does_not_end_a_newer_membership() -> None:
    b = apply(book(), track("Account Added User", at=MIN, context={"groupId": "g"}),
              track("Account Removed User", context={"groupId": "g"}))
    assert active(b) == {("u1", "g")}
    assert b.dirty_memberships == set()
    # At the same instant the removal counts.
    apply(b, track("Account Removed User", at=MIN, context={"groupId": "g"}))
    assert active(b) == set()


@pytest.mark.parametrize(
    "event", ["Account Created", "Account Deleted", "Account Added User", "Account Removed User"])
def test_account_events_without_a_group_change_no_account(event: str) -> None:
    b = apply(book(), track(event, properties={"groupId": "  ", "account_name": "X"}))
    assert b.accounts == {} and b.memberships == {}
    assert b.users["u1"]["event_count"] == 1  # still activity


@pytest.mark.parametrize("event", ["Account created", "account deleted", "Order Completed"])
def test_other_track_events_are_only_activity(event: str) -> None:
    b = apply(book(), track(event, context={"groupId": "g"},
                            properties={"email": "x@x.io", "account_name": "X"}))
    assert b.accounts == {} and b.memberships == {}
    assert traits(b.users["u1"]) == {}
    assert b.users["u1"]["event_count"] == 1


# -- membership modes ------------------------------------------------------------------------


def test_users_may_belong_to_many_accounts_by_default() -> None:
    b = apply(book(), identify(traits={"groupId": "a"}),
              message("group", MIN, userId="u1", groupId="b"),
              track("Account Added User", at=2 * MIN, context={"groupId": "c"}))
    assert active(b) == {("u1", "a"), ("u1", "b"), ("u1", "c")}


def test_one_account_per_user_a_later_link_moves_the_user() -> None:
    b = apply(book(), identify(traits={"groupId": "a"}),
              message("group", MIN, userId="u1", groupId="b"),
              message("group", MIN, userId="u2", groupId="a"), rules=ONE_ACCOUNT)
    assert active(b) == {("u1", "b"), ("u2", "a")}
    moved = b.memberships[("u1", "a")]
    assert moved["changed_at"] == T0 + MIN
    assert ("u1", "a") in b.dirty_memberships


def test_one_account_per_user_an_older_link_moves_nothing() -> None:
    b = apply(book(), message("group", 10 * MIN, userId="u1", groupId="b"),
              message("group", userId="u1", groupId="a"), rules=ONE_ACCOUNT)
    # The link to a is older than the one to b: b stays, and a is recorded as it came.
    assert ("u1", "b") in active(b)
    assert b.memberships[("u1", "b")]["changed_at"] == T0 + 10 * MIN
    # At the same instant the later message wins.
    b = apply(book(), message("group", userId="u1", groupId="b"),
              message("group", userId="u1", groupId="a"), rules=ONE_ACCOUNT)
    assert active(b) == {("u1", "a")}


def test_one_account_per_user_leaves_inactive_memberships_alone() -> None:
    b = apply(book(), track("Account Removed User", context={"groupId": "a"}),
              message("group", MIN, userId="u1", groupId="b"), rules=ONE_ACCOUNT)
    assert b.memberships[("u1", "a")]["changed_at"] == T0
    assert b.dirty_memberships == set()


def test_a_stale_link_is_ignored() -> None:
    b = apply(book(), message("group", MIN, userId="u1", groupId="a"),
              message("group", userId="u1", groupId="a"))
    assert b.memberships[("u1", "a")]["changed_at"] == T0 + MIN
    assert b.dirty_memberships == set()


def test_relinking_a_loaded_membership_marks_it_dirty_not_new() -> None:
    loaded = {("u1", "a"): {"user_id": "u1", "group_id": "a", "active": False,
                            "changed_at": T0}}
    b = apply(book(memberships=loaded, accounts={"a": new_account("a", T0)}),
              message("group", MIN, userId="u1", groupId="a"))
    assert active(b) == {("u1", "a")}
    assert (b.new_memberships, b.dirty_memberships) == (set(), {("u1", "a")})
    assert b.new_accounts == set()


# -- activity before the group call ----------------------------------------------------------


def test_activity_before_the_group_call_is_kept_and_attributed() -> None:
    b = apply(book(), page(), page(at=40 * MIN), track("Clicked", at=41 * MIN),
              message("group", 50 * MIN, userId="u1", groupId="acme"))
    user = b.users["u1"]
    assert (user["event_count"], user["session_count"]) == (3, 2)
    assert (user["first_seen"], user["last_seen"]) == (T0, T0 + 41 * MIN)
    assert active(b) == {("u1", "acme")}


# -- anonymous visitor → user ----------------------------------------------------------------


def test_an_anonymous_visitor_is_folded_into_the_user_on_identify() -> None:
    b = apply(book(),
              page(None, anonymousId="anon-1", context={"timezone": "Asia/Tokyo"}),
              page(None, at=40 * MIN, anonymousId="anon-1"),
              identify(None, at=41 * MIN, anonymousId="anon-1",
                       traits={"plan": "trial", "name": "Anon"}),
              identify("u1", at=50 * MIN, anonymousId="anon-1",
                       traits={"email": "u1@x.io", "name": "Known"}))
    assert set(b.users) == {"u1"}
    user = b.users["u1"]
    assert user["anonymous"] is False
    assert traits(user) == {"plan": "trial", "name": "Known", "email": "u1@x.io"}
    assert times(user)["plan"] == stamp(41 * MIN)
    assert (user["event_count"], user["session_count"]) == (2, 2)
    assert (user["first_seen"], user["last_seen"]) == (T0, T0 + 40 * MIN)
    assert user["timezone"] == "Asia/Tokyo"
    assert b.aliases == {"anon-1": "u1"} and b.new_aliases == {"anon-1": "u1"}
    assert b.merges == [("anon-1", "u1")]
    assert "anon-1" in b.removed_users and "anon-1" not in b.new_users | b.dirty_users
    assert b.identified == {"u1": T0 + 50 * MIN}
    # Later events from the anonymous id land on the user.
    apply(b, page(None, at=55 * MIN, anonymousId="anon-1"))
    assert set(b.users) == {"u1"} and b.users["u1"]["event_count"] == 3


def test_an_anonymous_id_seen_with_a_user_id_first_is_just_recorded() -> None:
    b = apply(book(), identify("u1", anonymousId="anon-1"))
    assert set(b.users) == {"u1"} and b.merges == []
    assert b.aliases == {"anon-1": "u1"}
    # The same pair again changes nothing more.
    apply(b, identify("u1", at=MIN, anonymousId="anon-1"))
    assert b.new_aliases == {"anon-1": "u1"} and b.merges == []


def test_an_anonymous_id_equal_to_the_user_id_is_no_alias() -> None:
    b = apply(book(), identify("u1", anonymousId="u1"))
    assert b.aliases == {} and set(b.users) == {"u1"}


def test_a_merged_anonymous_profile_fills_only_missing_fields() -> None:
    anon = new_user("anon-1", T0, anonymous=True)
    anon.update(first_seen=T0 - 100 * MIN, last_seen=T0 + 100 * MIN, event_count=4,
                session_count=2, unsubscribed_at=T0, gender="x", locale="de-DE",
                created_at=datetime(2020, 1, 1, tzinfo=UTC), email="anon@x.io")
    user = new_user("u1", T0)
    user.update(first_seen=T0, last_seen=T0, event_count=1, session_count=1, locale="en-US",
                email="u1@x.io")
    b = apply(book(users={"anon-1": anon, "u1": user}), identify("u1", anonymousId="anon-1"))
    merged = b.users["u1"]
    assert (merged["first_seen"], merged["last_seen"]) == (T0 - 100 * MIN, T0 + 100 * MIN)
    assert (merged["event_count"], merged["session_count"]) == (5, 3)
    assert merged["unsubscribed_at"] == T0
    assert (merged["gender"], merged["locale"], merged["email"]) == ("x", "en-US", "u1@x.io")
    assert merged["created_at"] == datetime(2020, 1, 1, tzinfo=UTC)


def test_a_merged_profile_without_activity_keeps_the_users() -> None:
    user = new_user("u1", T0)
    user.update(first_seen=T0, last_seen=T0 + MIN, event_count=2, session_count=1,
                unsubscribed_at=T0 + MIN)
    anon = new_user("anon-1", T0, anonymous=True)
    anon["unsubscribed_at"] = T0
    b = apply(book(users={"anon-1": anon, "u1": user}), identify("u1", anonymousId="anon-1"))
    merged = b.users["u1"]
    assert (merged["first_seen"], merged["last_seen"]) == (T0, T0 + MIN)
    assert (merged["event_count"], merged["session_count"]) == (2, 1)
    assert merged["unsubscribed_at"] == T0 + MIN  # the user's own is kept
    # Into a user with no activity: the merged profile's activity is taken whole.
    anon2 = new_user("anon-2", T0, anonymous=True)
    anon2.update(first_seen=T0 - MIN, last_seen=T0 + 5 * MIN, event_count=3, session_count=1)
    b = apply(book(users={"anon-2": anon2, "u2": new_user("u2", T0)}),
              identify("u2", anonymousId="anon-2"))
    assert (b.users["u2"]["first_seen"], b.users["u2"]["last_seen"]) == (
        T0 - MIN, T0 + 5 * MIN)


def test_merged_traits_keep_their_times() -> None:
    anon = new_user("anon-1", T0, anonymous=True)
    anon["traits"] = json.dumps({"plan": "old", "color": "red", "undated": 1})
    anon["trait_times"] = json.dumps({"plan": stamp(-MIN), "color": stamp(MIN)})
    user = new_user("u1", T0)
    user["traits"] = json.dumps({"plan": "new", "color": "blue", "undated": 2})
    user["trait_times"] = json.dumps({"plan": stamp(), "color": stamp(), "undated": stamp()})
    b = apply(book(users={"anon-1": anon, "u1": user}), identify("u1", anonymousId="anon-1"))
    # Newer wins on each key; a trait with no time counts as older than any.
    assert traits(b.users["u1"]) == {"plan": "new", "color": "red", "undated": 2}
    assert times(b.users["u1"])["color"] == stamp(MIN)


def test_merged_memberships_move_to_the_user() -> None:
    memberships = {
        ("anon-1", "g"): {"user_id": "anon-1", "group_id": "g", "active": True,
                          "changed_at": T0 - MIN},
        ("anon-1", "old"): {"user_id": "anon-1", "group_id": "old", "active": False,
                            "changed_at": T0 - MIN},
    }
    b = apply(book(users={"anon-1": new_user("anon-1", T0, anonymous=True)},
                   memberships=memberships, accounts={"g": new_account("g", T0)}),
              identify("u1", anonymousId="anon-1"))
    assert b.memberships[("u1", "g")] == {"user_id": "u1", "group_id": "g", "active": True,
                                          "changed_at": T0 - MIN}
    assert ("u1", "old") not in b.memberships


# -- alias ---------------------------------------------------------------------------------


def test_alias_merges_the_previous_id_into_the_user() -> None:
    b = apply(book(), identify("old-id", traits={"email": "o@x.io", "plan": "pro"}),
              page("old-id", at=MIN),
              message("alias", 2 * MIN, userId="new-id", previousId="old-id"))
    assert set(b.users) == {"new-id"}
    user = b.users["new-id"]
    assert user["email"] == "o@x.io" and traits(user)["plan"] == "pro"
    assert user["event_count"] == 1
    assert b.aliases == {"old-id": "new-id"} and b.merges == [("old-id", "new-id")]
    assert "new-id" in b.dirty_users and "old-id" in b.removed_users
    assert (user["event_count"], user["session_count"]) == (1, 1)  # alias is not activity
    # Calls under the old id now land on the new one.
    apply(b, identify("old-id", at=3 * MIN, traits={"plan": "team"}))
    assert set(b.users) == {"new-id"} and traits(b.users["new-id"])["plan"] == "team"


def test_alias_by_anonymous_id_and_of_unknown_ids() -> None:
    b = apply(book(), page(None, anonymousId="anon-1"),
              message("alias", MIN, userId="u1", anonymousId="anon-1"))
    assert set(b.users) == {"u1"} and b.aliases == {"anon-1": "u1"}
    # previousId wins over anonymousId.
    b = apply(book(), page("p1"), page(None, anonymousId="anon-1"),
              message("alias", MIN, userId="u1", previousId="p1", anonymousId="anon-1"))
    assert set(b.users) == {"u1", "anon-1"} and b.aliases == {"p1": "u1"}
    # Nobody known under the previous id: only the alias is recorded.
    b = apply(book(), message("alias", userId="u1", previousId="ghost"))
    assert b.users == {} and b.aliases == {"ghost": "u1"} and b.merges == []


def test_alias_to_itself_changes_nothing() -> None:
    b = apply(book(), page("u1"), message("alias", MIN, userId="u1", previousId="u1"))
    assert b.aliases == {} and b.merges == [] and set(b.users) == {"u1"}


def test_alias_follows_chains_to_the_final_user() -> None:
    b = apply(book(), page("a"), message("alias", MIN, userId="b", previousId="a"),
              message("alias", 2 * MIN, userId="c", previousId="b"), page("a", at=3 * MIN))
    assert set(b.users) == {"c"} and b.users["c"]["event_count"] == 2
    assert b.resolve("a") == "c"


def test_resolve_stops_on_a_cycle() -> None:
    b = book(aliases={"a": "b", "b": "a"})
    assert b.resolve("a") in {"a", "b"}
    assert b.resolve("x") == "x"
    chain = {f"id{k}": f"id{k + 1}" for k in range(20)}
    assert book(aliases=chain).resolve("id0") == "id8"  # at most 8 hops


# -- delete --------------------------------------------------------------------------------


def test_delete_forgets_the_person_and_suppresses_the_id() -> None:
    b = apply(book(), identify(traits={"email": "u1@x.io", "groupId": "g"}),
              identify("u2", traits={"groupId": "g"}),
              message("delete", MIN, userId="u1"))
    assert set(b.users) == {"u2"}
    assert "u1" in b.suppressed and "u1" in b.erased_users
    assert "u1" not in b.new_users | b.dirty_users
    assert b.identified == {}
    assert set(b.memberships) == {("u2", "g")}
    assert b.new_memberships == {("u2", "g")}
    # Later events for the deleted user are accepted and dropped.
    apply(b, identify("u1", at=2 * MIN, traits={"email": "u1@x.io"}), page("u1", at=2 * MIN))
    assert set(b.users) == {"u2"} and b.identified == {}


def test_delete_of_a_loaded_user_records_the_removal() -> None:
    b = apply(book(users={"u1": new_user("u1", T0)}), message("delete", userId="u1"))
    assert b.users == {} and b.removed_users == {"u1"}
    # An id never seen is suppressed all the same, and nothing is "removed".
    b = apply(book(), message("delete", userId="ghost"))
    assert b.suppressed == {"ghost"} and b.removed_users == set()


def test_delete_follows_aliases_and_takes_the_anonymous_id_too() -> None:
    b = apply(book(), page(None, anonymousId="anon-1"), identify("u1", anonymousId="anon-1"),
              page("u1", at=MIN), page(None, anonymousId="anon-2"),
              message("delete", 2 * MIN, userId="anon-1", anonymousId="anon-2"))
    assert b.users == {}
    assert b.suppressed == {"anon-1", "u1", "anon-2"}
    assert b.erased_users == {"anon-1", "u1", "anon-2"}


@pytest.mark.parametrize(
    "later",
    [
        lambda: identify(None, anonymousId="gone"),
        lambda: message("alias", userId="new", previousId="gone"),
        lambda: message("alias", userId="gone", previousId="other"),
        lambda: page("fresh", anonymousId="gone"),
    ],
)
def test_any_message_naming_a_suppressed_id_is_dropped(later: Any) -> None:
    b = apply(book(suppressed={"gone"}), later())
    assert b.users == {} and b.aliases == {}


def test_a_message_naming_an_alias_of_a_suppressed_user_is_dropped() -> None:
    b = apply(book(suppressed={"u1"}, aliases={"anon-1": "u1"}),
              page(None, anonymousId="anon-1"))
    assert b.users == {}
    # Others are unaffected.
    apply(b, page("u2"))
    assert set(b.users) == {"u2"}


def test_a_message_with_no_id_changes_nothing() -> None:
    m = Message(message_id="m", type="page", user_id=None, anonymous_id=None, timestamp=T0)
    b = apply(book(), m)
    assert b.users == {} and b.dirty_users == set()


def test_alias_without_a_source_changes_nothing() -> None:
    m = Message(message_id="m", type="alias", user_id="u1", anonymous_id=None, timestamp=T0)
    b = apply(book(), m)
    assert b.users == {} and b.aliases == {}


# -- the row details the store writes back ---------------------------------------------------


def test_a_new_account_row_is_keyed_and_stamped() -> None:
    b = apply(book(), message("group", userId="u1", groupId="acme"))
    assert b.accounts["acme"]["group_id"] == "acme"
    assert b.accounts["acme"]["updated_at"] == T0


def test_ended_memberships_are_inactive_not_just_falsy() -> None:
    loaded = {key: {"user_id": key[0], "group_id": key[1], "active": True,
                    "changed_at": T0 - MIN} for key in [("u1", "g"), ("u1", "h"), ("u2", "k")]}
    b = apply(book(memberships=dict(loaded)),
              track("Account Deleted", "admin", context={"groupId": "g"}),
              message("group", userId="u1", groupId="x"),
              track("Account Removed User", "u2", context={"groupId": "k"}), rules=ONE_ACCOUNT)
    for key in [("u1", "g"), ("u1", "h"), ("u2", "k")]:
        assert b.memberships[key]["active"] is False, key
        assert b.memberships[key]["changed_at"] == T0
    # Loaded rows that changed are dirty (an UPDATE), not new.
    assert b.dirty_memberships == {("u1", "g"), ("u1", "h"), ("u2", "k")}
    assert b.new_memberships == {("u1", "x")}


def test_relinking_moves_the_change_time() -> None:
    loaded = {("u1", "a"): {"user_id": "u1", "group_id": "a", "active": False,
                            "changed_at": T0}}
    b = apply(book(memberships=loaded), message("group", MIN, userId="u1", groupId="a"))
    assert b.memberships[("u1", "a")] == {"user_id": "u1", "group_id": "a", "active": True,
                                          "changed_at": T0 + MIN}


def test_removed_then_added_at_the_same_instant_is_a_member() -> None:
    b = apply(book(), track("Account Removed User", context={"groupId": "g"}),
              track("Account Added User", context={"groupId": "g"}))
    assert active(b) == {("u1", "g")}


def test_an_anonymous_visitor_stays_anonymous_until_identified() -> None:
    b = apply(book(), page(None, anonymousId="anon-1"), page(None, at=MIN, anonymousId="anon-1"))
    assert b.users["anon-1"]["anonymous"] is True
    assert b.users["anon-1"]["event_count"] == 2


def test_alias_to_a_new_user_id_creates_a_known_user() -> None:
    b = apply(book(), page(None, anonymousId="anon-1"),
              message("alias", MIN, userId="u1", anonymousId="anon-1"))
    assert b.users["u1"]["anonymous"] is False
    assert b.users["u1"]["event_count"] == 1


def test_unchanged_traits_keep_the_loaded_text() -> None:
    """Loaded rows are compared before writing: text that did not change is left alone."""
    user = new_user("u1", T0)
    user["traits"] = '{"plan": "pro"}'  # as another writer formatted it
    user["trait_times"] = f'{{"plan": "{stamp(MIN)}"}}'
    b = apply(book(users={"u1": user}), identify(traits={"plan": "free"}))
    assert b.users["u1"]["traits"] == '{"plan": "pro"}'
    assert b.users["u1"]["trait_times"] == f'{{"plan": "{stamp(MIN)}"}}'


def test_an_undated_merged_trait_is_older_than_any_dated_one() -> None:
    """A trait with no recorded time counts as set at the epoch, 1970-01-01T00:00Z."""
    anon = new_user("anon-1", T0, anonymous=True)
    anon["traits"] = json.dumps({"plan": "undated"})
    early = datetime(1970, 1, 1, 12, tzinfo=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    user = new_user("u1", T0)
    user["traits"] = json.dumps({"plan": "dated"})
    user["trait_times"] = json.dumps({"plan": early})
    b = apply(book(users={"anon-1": anon, "u1": user}), identify("u1", anonymousId="anon-1"))
    assert traits(b.users["u1"])["plan"] == "dated"


def test_an_erasure_naming_only_an_anonymous_id_erases_it() -> None:
    b = apply(book(), page(None, anonymousId="anon-1"))
    m = Message(message_id="d", type="delete", user_id=None, anonymous_id="anon-1",
                timestamp=T0)
    apply(b, m)
    assert b.users == {} and b.suppressed == {"anon-1"}


def test_erasing_a_user_drops_its_pending_membership_writes() -> None:
    loaded = {("u1", "a"): {"user_id": "u1", "group_id": "a", "active": False,
                            "changed_at": T0}}
    b = apply(book(users={"u1": new_user("u1", T0)}, memberships=loaded),
              message("group", MIN, userId="u1", groupId="a"),
              message("group", MIN, userId="u1", groupId="b"),
              message("delete", 2 * MIN, userId="u1"))
    assert b.memberships == {}
    assert b.dirty_memberships == set() and b.new_memberships == set()


def test_aliasing_an_already_merged_id_again_keeps_every_id_with_the_person() -> None:
    """A was merged into B; then A is aliased to C. B's profile moves into C, and B's id
    must follow it: otherwise B's next call starts an empty duplicate profile under B."""
    b = apply(book(), page("A"), page("B", at=MIN),
              message("alias", 2 * MIN, userId="B", previousId="A"),
              message("alias", 3 * MIN, userId="C", previousId="A"),
              identify("B", at=4 * MIN, traits={"plan": "x"}))
    assert set(b.users) == {"C"}
    assert traits(b.users["C"]) == {"plan": "x"} and b.users["C"]["event_count"] == 2
    assert b.resolve("A") == b.resolve("B") == "C"
    assert b.new_aliases == {"A": "C", "B": "C"}
    assert b.merges == [("A", "B"), ("B", "C")]
    assert b.removed_users == {"A", "B"}
