"""Table tests for the customer book's accounts (jobs/book_rules.py): the B2B track
events, both membership modes, stale links, and activity before the group call."""

from __future__ import annotations

from typing import Any

import pytest

from storage.book import new_account
from tests.unit.book_support import (
    MIN,
    ONE_ACCOUNT,
    SEC,
    T0,
    active,
    apply,
    book,
    identify,
    message,
    page,
    track,
    traits,
)

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
