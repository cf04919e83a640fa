"""The schema, as SQLModel tables. (No `from __future__ import annotations` here: SQLModel
needs real annotations.) Queries use the tables through SQLAlchemy Core for batch speed."""

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

TZ = sa.DateTime(timezone=True)


class SchemaVersion(SQLModel, table=True):
    __tablename__ = "npsd_schema"
    id: int = Field(default=1, primary_key=True)
    version: int
    migrated_at: datetime = Field(sa_type=TZ)


class Event(SQLModel, table=True):
    """The intake log: one row per accepted messageId, kept for the dedup window. It holds no
    user ids (since schema 2): it serves deduplication, and a deletion request then has
    nothing of the person to find here."""

    __tablename__ = "events"

    message_id: str = Field(primary_key=True)
    received_at: datetime = Field(sa_type=TZ, index=True)
    type: str
    timestamp: datetime | None = Field(default=None, sa_type=TZ)
    name: str | None = None


class User(SQLModel, table=True):
    __tablename__ = "users"
    user_id: str = Field(primary_key=True)
    anonymous: bool = False
    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    name: str | None = None
    gender: str | None = None
    timezone: str | None = None
    locale: str | None = None
    created_at: datetime | None = Field(default=None, sa_type=TZ)
    traits: str = "{}"
    trait_times: str = "{}"
    first_seen: datetime | None = Field(default=None, sa_type=TZ)
    last_seen: datetime | None = Field(default=None, sa_type=TZ)
    event_count: int = 0
    session_count: int = 0
    unsubscribed_at: datetime | None = Field(default=None, sa_type=TZ)
    unsubscribe_synced: bool = Field(default=True, index=True)
    updated_at: datetime = Field(sa_type=TZ)


class Alias(SQLModel, table=True):
    """Ids merged into a user: anonymous ids and alias previousIds."""

    __tablename__ = "aliases"
    alias_id: str = Field(primary_key=True)
    user_id: str = Field(index=True)
    created_at: datetime = Field(sa_type=TZ)


class Account(SQLModel, table=True):
    __tablename__ = "accounts"
    group_id: str = Field(primary_key=True)
    traits: str = "{}"
    trait_times: str = "{}"
    created_at: datetime | None = Field(default=None, sa_type=TZ)
    deleted_at: datetime | None = Field(default=None, sa_type=TZ)
    updated_at: datetime = Field(sa_type=TZ)


class Membership(SQLModel, table=True):
    """A user in an account; `active` false is a removal kept so older events lose to it."""

    __tablename__ = "memberships"
    user_id: str = Field(primary_key=True)
    group_id: str = Field(primary_key=True, index=True)
    active: bool = True
    changed_at: datetime = Field(sa_type=TZ)


class Suppression(SQLModel, table=True):
    """A user id erased by a Segment deletion request: never surveyed again."""

    __tablename__ = "suppressions"
    user_id: str = Field(primary_key=True)
    suppressed_at: datetime = Field(sa_type=TZ)


class SuppressedAddress(SQLModel, table=True):
    """The address key (storage.survey_plan.email_key: a hash, not the address) of an erased
    person, kept so an import cannot bring them back under an email-only row (schema 5)."""

    __tablename__ = "suppressed_addresses"
    email_key: str = Field(primary_key=True)
    suppressed_at: datetime = Field(sa_type=TZ)


class Survey(SQLModel, table=True):
    """A survey and its answer. Ids are never reused (AUTOINCREMENT on SQLite, a sequence on
    PostgreSQL): an erasure deletes rows, and a reused id would give a new survey the
    sync-back messageIds (and the .eml name) of an erased one. `email_key` is the address
    it went to, normalised (storage.survey_plan.email_key): one survey per address per
    re-survey interval, whatever user id carries it."""

    __tablename__ = "surveys"
    __table_args__ = (sa.Index("ix_surveys_state_due", "state", "due_at"),
                      {"sqlite_autoincrement": True})
    id: int | None = Field(default=None, primary_key=True)
    user_id: str = Field(index=True)
    token: str = Field(unique=True)
    kind: str = "survey"
    state: str
    due_at: datetime = Field(sa_type=TZ)
    created_at: datetime = Field(sa_type=TZ)
    sent_at: datetime | None = Field(default=None, sa_type=TZ)
    handoff_at: datetime | None = Field(default=None, sa_type=TZ)
    lease_owner: str | None = None
    lease_until: datetime | None = Field(default=None, sa_type=TZ)
    attempts: int = 0
    last_error: str | None = None
    expires_at: datetime | None = Field(default=None, sa_type=TZ)
    reminder_due_at: datetime | None = Field(default=None, sa_type=TZ, index=True)
    reminder_sent_at: datetime | None = Field(default=None, sa_type=TZ)
    score: int | None = None
    comment: str | None = None
    answered_at: datetime | None = Field(default=None, sa_type=TZ)
    answer_revision: int = 0
    synced_revision: int = 0
    needs_sync: bool = Field(default=False, index=True)
    email_key: str | None = Field(default=None, index=True)
    # An imported answer's identity (jobs/import_rows.py): a second import finds it here.
    import_key: str | None = None  # unique: storage/import_schema.py


class Decision(SQLModel, table=True):
    __tablename__ = "decisions"
    id: int | None = Field(default=None, primary_key=True)
    user_id: str = Field(index=True)
    at: datetime = Field(sa_type=TZ)
    survey_id: int | None = None
    outcome: str
    reason: str


class SyncState(SQLModel, table=True):
    """One row: the sync-back lease (one syncer across processes) and the last results."""

    __tablename__ = "sync_state"
    id: int = Field(default=1, primary_key=True)
    holder: str | None = None
    lease_until: datetime | None = Field(default=None, sa_type=TZ)
    last_started_at: datetime | None = Field(default=None, sa_type=TZ)
    last_finished_at: datetime | None = Field(default=None, sa_type=TZ)
    last_success_at: datetime | None = Field(default=None, sa_type=TZ)
    last_result: str | None = None
    last_sent: int = 0
    last_failed: int = 0


class SyncFailure(SQLModel, table=True):
    """A message Segment refused with 400: recorded, never silently dropped."""

    __tablename__ = "sync_failures"
    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(sa_type=TZ)
    survey_id: int | None = None
    user_id: str | None = None
    message_id: str
    reason: str


class ConsoleSession(SQLModel, table=True):
    """A console login. The cookie holds a random id; only its SHA-256 is kept here (a copy
    of the database gives no live session), with the SHA-256 of the token used to log in, so
    a token taken out of the config ends its sessions at the next request. Rows outlive a
    restart; logout deletes the row."""

    __tablename__ = "console_sessions"
    id_hash: str = Field(primary_key=True)
    token_hash: str
    csrf: str
    created_at: datetime = Field(sa_type=TZ)
    expires_at: datetime = Field(sa_type=TZ, index=True)


class NpsDay(SQLModel, table=True):
    """Running totals per UTC day (storage/nps_totals.py): answers by category on the day
    they were given, surveys sent on the day they went. Kept in the transactions that write
    the survey rows; the dashboard and `/v1/nps` read these few hundred rows. A day's
    figures are the sum of its shards: concurrent writers (PostgreSQL) each add to a shard
    of their own (Dialect.counter_shards), so they do not queue on one row per day."""

    __tablename__ = "nps_days"
    day: str = Field(primary_key=True)  # YYYY-MM-DD, UTC
    shard: int = Field(default=0, primary_key=True)
    promoters: int = 0
    passives: int = 0
    detractors: int = 0
    sent: int = 0


def _zero() -> Any:
    return Field(default=0, sa_column_kwargs={"server_default": sa.text("0")})


class NpsAccount(SQLModel, table=True):
    """The accounts list as a read model (storage/nps_totals.py): per account its name and
    sort key, whether it is live (not deleted), its active members, their answers by
    category with the total, the NPS (NO_NPS without answers, so it sorts lowest on both
    backends) and the latest answer time. Indexed per sort, so a page is an index walk."""

    __tablename__ = "nps_accounts"
    __table_args__ = tuple(sa.Index(f"ix_nps_accounts_{c}", "live", c, "group_id") for c in (
        "sort_name", "members", "responses", "nps", "last_answer_at"))
    group_id: str = Field(primary_key=True)
    name: str | None = None
    sort_name: str | None = None
    live: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    members: int = _zero()
    promoters: int = _zero()
    passives: int = _zero()
    detractors: int = _zero()
    responses: int = _zero()
    nps: float = Field(default=-1000.0, sa_column_kwargs={"server_default": sa.text("-1000")})
    last_answer_at: datetime | None = Field(default=None, sa_type=TZ)


class Delivery(SQLModel, table=True):
    """One alert or webhook to deliver: the outbox. Written in the transaction of the answer
    (or unsubscribe, or erasure) that causes it, so nothing is lost on a crash and nothing is
    sent for what did not commit; delivered by jobs/deliveries.py. `webhook_id` is the
    idempotency key, the same on every retry and replay (and for every URL of one event).
    `body` is what is sent (webhooks) or the alert's facts (alerts): it holds a comment and
    an email, so rows are found by `user_id` on erasure (storage.personal_data). State:
    pending (due at `due_at`; claimed while `lease_until` is ahead), delivered, dead (a
    dead letter: `npsd webhooks replay` sends it again) or dropped (its target left the
    config)."""

    __tablename__ = "deliveries"
    __table_args__ = (sa.Index("ix_deliveries_state_due", "state", "due_at"),
                      {"sqlite_autoincrement": True})
    id: int | None = Field(default=None, primary_key=True)
    webhook_id: str
    channel: str  # "webhook", "slack" or "email"
    target: str  # the receiver's URL, or the alert email's recipients (comma-separated)
    event: str  # "survey.answered", "user.unsubscribed", "user.erased" or "alert"
    user_id: str | None = Field(default=None, index=True)
    survey_id: int | None = None
    body: str
    state: str = "pending"
    created_at: datetime = Field(sa_type=TZ)
    due_at: datetime = Field(sa_type=TZ)
    retry_from: datetime = Field(sa_type=TZ)  # the retry horizon counts from here
    attempts: int = 0
    lease_owner: str | None = None
    lease_until: datetime | None = Field(default=None, sa_type=TZ)
    last_status: int | None = None
    last_error: str | None = None
    finished_at: datetime | None = Field(default=None, sa_type=TZ)  # delivered, dead, dropped
