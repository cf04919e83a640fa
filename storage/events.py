"""A Segment message after validation: the one shape both intake doors hand to the store."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

TYPES = ("identify", "group", "track", "page", "screen", "alias", "delete")
MAX_ID_LENGTH = 256  # of a userId, anonymousId, groupId or messageId: every door's bound
ACTIVITY_TYPES = ("track", "page", "screen")


@dataclass(slots=True)
class Message:
    message_id: str
    type: str
    user_id: str | None
    anonymous_id: str | None
    timestamp: datetime  # when it happened: timestamp → originalTimestamp → receivedAt → arrival
    traits: dict[str, Any] = field(default_factory=dict)
    properties: dict[str, Any] = field(default_factory=dict)
    event: str | None = None
    name: str | None = None
    group_id: str | None = None
    previous_id: str | None = None
    context_timezone: str | None = None
    context_locale: str | None = None
    context_group_id: str | None = None
