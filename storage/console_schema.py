"""The indexes the console reads through (schema 4). Declared on the tables' metadata, so a
fresh database gets them from create_all and an upgraded one from migration step 3 → 4."""

from __future__ import annotations

import sqlalchemy as sa

from storage.sqlutil import DECISIONS, MEMBERSHIPS, SURVEYS, USERS

CONSOLE_INDEXES = (
    # Responses newest first and cursor paging.
    sa.Index("ix_surveys_answered", SURVEYS.c.answered_at, SURVEYS.c.id),
    # The dashboard's grouped scans, read from the index alone (no table lookups).
    sa.Index("ix_surveys_kind_answered_score", SURVEYS.c.kind, SURVEYS.c.answered_at,
             SURVEYS.c.score),
    sa.Index("ix_surveys_kind_sent", SURVEYS.c.kind, SURVEYS.c.sent_at),
    # Members per account among the active memberships (the accounts list).
    sa.Index("ix_memberships_group_active", MEMBERSHIPS.c.group_id, MEMBERSHIPS.c.active,
             MEMBERSHIPS.c.user_id),
    # Who was skipped lately (the queue page).
    sa.Index("ix_decisions_outcome_at", DECISIONS.c.outcome, DECISIONS.c.at),
    # Customer search by email or name prefix.
    sa.Index("ix_users_email", USERS.c.email),
    sa.Index("ix_users_name", USERS.c.name),
)

# Customer search by surname (a lastName trait): schema 9.
LAST_NAME_INDEX = sa.Index("ix_users_last_name", USERS.c.last_name)
