"""Table tests for the customer book's identities (jobs/book_rules.py): anonymous
visitors folded into users, alias chains, deletion and suppression."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from storage.book import new_account, new_user
from storage.events import Message
from tests.unit.book_support import (
    MIN,
    T0,
    apply,
    book,
    identify,
    message,
    page,
    stamp,
    times,
    traits,
)

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
        lambda: page("gone", anonymousId="fresh"),
    ],
)
def test_any_message_of_a_suppressed_id_is_dropped(later: Any) -> None:
    b = apply(book(suppressed={"gone"}), later())
    assert b.users == {} and b.aliases == {}


def test_another_user_carrying_a_suppressed_anonymous_id_is_kept_without_it() -> None:
    """A shared browser: the next person's events carry the erased person's anonymousId.
    They are that person's, and the erased id is neither folded in nor linked."""
    b = apply(book(suppressed={"gone"}), page("fresh", anonymousId="gone"),
              identify("fresh", anonymousId="gone"))
    assert set(b.users) == {"fresh"} and b.aliases == {} and b.merges == []


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


def test_an_anonymous_visitor_stays_anonymous_until_identified() -> None:
    b = apply(book(), page(None, anonymousId="anon-1"), page(None, at=MIN, anonymousId="anon-1"))
    assert b.users["anon-1"]["anonymous"] is True
    assert b.users["anon-1"]["event_count"] == 2


def test_alias_to_a_new_user_id_creates_a_known_user() -> None:
    b = apply(book(), page(None, anonymousId="anon-1"),
              message("alias", MIN, userId="u1", anonymousId="anon-1"))
    assert b.users["u1"]["anonymous"] is False
    assert b.users["u1"]["event_count"] == 1


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
