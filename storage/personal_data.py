"""Where a person's data lives: the one list erasure works from.

Every table of the schema is named here, either with how to find one person's rows in it
(erasure deletes them) or as holding nothing personal. A test fails when a table is added to
storage.models without being listed, so a new table cannot be forgotten by an erasure.
Outside the database a person leaves one more trace: the `.eml` files the file email backend
writes to `email.file_dir`, named by survey id (jobs.email.FileBackend), removed after the
erasure has committed and, should that removal be interrupted, by housekeeping.
"""

from __future__ import annotations

from dataclasses import dataclass

from storage.fast_path import Steps, Values, execute_in, fetch_in
from storage.nps_totals import forget_surveys, refresh_accounts


@dataclass(frozen=True)
class Place:
    """A table holding personal data, and the column that names whose a row is."""

    table: str
    column: str  # a user id column, or "survey_id" for rows tied to the person's surveys
    columns: tuple[str, ...]  # the columns that hold personal data (documentation, tests)


# In erasure order: rows that point at surveys go before the surveys themselves.
PERSONAL: tuple[Place, ...] = (
    Place("sync_failures", "user_id", ("user_id", "reason")),
    Place("sync_failures", "survey_id", ("user_id", "reason")),
    Place("decisions", "user_id", ("user_id", "reason")),
    # Alerts and webhooks of the person, pending or not: a body holds their comment and
    # email. A `user.erased` delivery written by the erasure itself carries no user_id
    # (only the erased id in its body, as `suppressions` keeps it).
    Place("deliveries", "user_id", ("user_id", "body", "last_error")),
    Place("memberships", "user_id", ("user_id",)),
    Place("aliases", "user_id", ("alias_id", "user_id")),
    Place("aliases", "alias_id", ("alias_id", "user_id")),
    Place("surveys", "user_id", ("user_id", "token", "email_key", "score", "comment",
                                 "last_error", "import_key")),
    Place("users", "user_id", ("user_id", "email", "first_name", "last_name", "name", "gender",
                               "timezone", "locale", "created_at", "traits", "first_seen",
                               "last_seen")),
)

# Kept on purpose after an erasure: the suppressed id, so later events of that id are
# dropped instead of bringing the person back (and they are never surveyed again).
KEPT: dict[str, str] = {
    "suppressions": "the erased user id, so it is never surveyed again",
    "suppressed_addresses": "a hash of the erased person's address (never the address), so an "
                            "import's email-only row does not bring them back",
}

# Tables with nothing of a person in them.
NO_PERSONAL_DATA: dict[str, str] = {
    "npsd_schema": "the schema version",
    "events": "messageIds for deduplication, without user ids (schema 2)",
    "accounts": "companies (groupId and traits), not people",
    "sync_state": "the sync-back lease and its last figures",
    "console_sessions": "console sign-ins of the team (hashes of cookie and token), not customers",
    "nps_days": "answer and send counts per day (an erasure takes its answers out)",
    "nps_accounts": "answer counts per account (an erasure takes its answers out)",
}


def erase_rows(v: Values, user_ids: list[str]) -> Steps[list[int]]:
    """Delete every row of these users listed in PERSONAL, and take their answers out of
    the running totals (storage.nps_totals); returns the ids of their surveys that were
    deleted (their .eml files go once this has committed)."""
    accounts = yield from forget_surveys(v, user_ids)
    survey_ids = [int(r[0]) for r in (yield from fetch_in(
        "SELECT id FROM surveys WHERE user_id IN ({})", user_ids))]
    for place in PERSONAL:
        keys: list[object] = list(survey_ids) if place.column == "survey_id" else list(user_ids)
        if keys:
            yield from execute_in(f"DELETE FROM {place.table} WHERE {place.column} IN ({{}})",
                                  keys)
    yield from refresh_accounts(v, accounts)
    return survey_ids
