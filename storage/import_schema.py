"""The indexes the import reads through (schema 5). Declared on the tables' metadata, as
the console's are (storage/console_schema.py), so a fresh database gets them from
create_all and an upgraded one from migration step 4 → 5."""

from __future__ import annotations

import sqlalchemy as sa

from storage.sqlutil import SURVEYS, USERS

IMPORT_INDEXES = (
    # An imported answer's identity: a second import of the same row finds it, and two
    # imports racing cannot both insert it.
    sa.Index("ux_surveys_import_key", SURVEYS.c.import_key, unique=True),
    # Rows matched to users by address, compared case-insensitively as the one survey per
    # address rule does.
    sa.Index("ix_users_email_lower", sa.func.lower(USERS.c.email)),
)
