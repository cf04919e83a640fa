"""The indexes the console reads through (schema 4). Declared on the tables' metadata, so a
fresh database gets them from create_all and an upgraded one from migration step 3 → 4."""

from __future__ import annotations

import sqlalchemy as sa

from storage.sqlutil import DECISIONS, SURVEYS, USERS

CONSOLE_INDEXES = (
    # Responses newest first, the dashboard's windows and trend, cursor paging.
    sa.Index("ix_surveys_answered", SURVEYS.c.answered_at, SURVEYS.c.id),
    # Who was skipped lately (the queue page).
    sa.Index("ix_decisions_outcome_at", DECISIONS.c.outcome, DECISIONS.c.at),
    # Customer search by email or name prefix.
    sa.Index("ix_users_email", USERS.c.email),
    sa.Index("ix_users_name", USERS.c.name),
)
