"""Validating one Segment message into a storage.events.Message.

Accepts what Segment and its libraries really send: camelCase or snake_case names, `action`
for `type` (older partner docs), ids as strings or numbers, and `null` meaning absent.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from typing import Any

from storage.events import MAX_ID_LENGTH, TYPES, Message
from storage.timeparse import parse_timestamp

MAX_MESSAGE_BYTES = 32 * 1024
# A timestamp further ahead of the arrival time than this is a bad clock (or an attempt to
# pin a trait: state follows event time, so "9998-12-31" would win over every later call).
FUTURE_LIMIT = timedelta(hours=24)


_TYPES = frozenset(TYPES)


class InvalidMessage(ValueError):
    """The message cannot be accepted; the text says why (returned to the sender)."""


class UnknownType(InvalidMessage):
    pass


def field(raw: dict[str, Any], camel: str, snake: str) -> Any:
    value = raw.get(camel)
    if value is None:
        value = raw.get(snake)
    return value


def _identifier(raw: dict[str, Any], camel: str, snake: str) -> str | None:
    value = raw.get(camel)
    if value is None:
        value = raw.get(snake)
        if value is None:
            return None
    if type(value) is str:
        text = value.strip()
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidMessage(f"{camel} must be a string")
    else:
        text = str(value)
    if len(text) > MAX_ID_LENGTH:
        raise InvalidMessage(f"{camel} is longer than {MAX_ID_LENGTH} characters")
    if "\ufffd" in text:
        # A NUL or lone surrogate was replaced while parsing (no database keeps them):
        # kept, two different ids would become one, and a messageId a duplicate.
        raise InvalidMessage(f"{camel} holds a NUL, a lone surrogate or U+FFFD: send ids "
                             "as plain text")
    return text or None


def _object(raw: dict[str, Any], name: str) -> dict[str, Any]:
    value = raw.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidMessage(f"{name} must be an object")
    return value


def _short_text(value: Any, limit: int = 256) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()[:limit]
    return None


def message_size(raw: Any) -> int:
    return len(json.dumps(raw, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def parse_message(
    raw: Any, arrival: datetime, *, check_size: bool = True,
    timestamp_override: datetime | None = None,
) -> Message:
    if not isinstance(raw, dict):
        raise InvalidMessage("a message must be a JSON object")
    if check_size and message_size(raw) > MAX_MESSAGE_BYTES:
        raise InvalidMessage("message is larger than 32 KB")
    kind = raw.get("type")
    if kind is None:
        kind = raw.get("action")
    if not isinstance(kind, str) or not kind.strip():
        raise InvalidMessage("type is missing")
    if kind not in _TYPES:
        kind = kind.strip().lower()
    if kind not in _TYPES:
        raise UnknownType(f"unknown message type {kind[:40]!r}")
    user_id = _identifier(raw, "userId", "user_id")
    anonymous_id = _identifier(raw, "anonymousId", "anonymous_id")
    message_id = _identifier(raw, "messageId", "message_id") or f"npsd-{uuid.uuid4()}"
    context = _object(raw, "context")
    traits = _object(raw, "traits")
    properties = _object(raw, "properties")
    if kind == "identify" and not traits and isinstance(context.get("traits"), dict):
        traits = context["traits"]
    timestamp = timestamp_override or _event_time(raw) or arrival
    message = Message(message_id, kind, user_id, anonymous_id, timestamp, traits, properties)
    if context:
        message.context_timezone = _short_text(context.get("timezone"), 64)
        message.context_locale = _short_text(context.get("locale"), 32)
        message.context_group_id = _identifier(context, "groupId", "group_id")
    _check_type(message, raw)
    return message


def clamp_future(m: Message, arrival: datetime) -> bool:
    """Replace a timestamp more than FUTURE_LIMIT after the arrival time by the arrival
    time; True when it did."""
    if m.timestamp > arrival + FUTURE_LIMIT:
        m.timestamp = arrival
        return True
    return False


def _event_time(raw: dict[str, Any]) -> datetime | None:
    parsed = parse_timestamp(raw.get("timestamp"))  # the usual one, checked first
    if parsed is not None:
        return parsed
    for camel, snake in (("originalTimestamp", "original_timestamp"),
                         ("receivedAt", "received_at")):
        parsed = parse_timestamp(field(raw, camel, snake))
        if parsed is not None:
            return parsed
    return None


def _check_type(m: Message, raw: dict[str, Any]) -> None:
    # A group may name no one (the Calixa page's own example): it only writes the account.
    if m.type in ("identify", "track", "page", "screen") and not (
        m.user_id or m.anonymous_id
    ):
        raise InvalidMessage(f"{m.type} needs a userId or an anonymousId")
    if m.type == "track":
        m.event = _short_text(raw.get("event"), 200)
        if m.event is None:
            raise InvalidMessage("track needs an event name")
    elif m.type in ("page", "screen"):
        m.name = _short_text(raw.get("name"), 200) or _short_text(m.properties.get("name"), 200)
    elif m.type == "group":
        m.group_id = _identifier(raw, "groupId", "group_id")
        if m.group_id is None:
            raise InvalidMessage("group needs a groupId")
    elif m.type == "alias":
        m.previous_id = _identifier(raw, "previousId", "previous_id")
        if m.user_id is None or (m.previous_id is None and m.anonymous_id is None):
            raise InvalidMessage("alias needs a userId and a previousId")
    elif m.type == "delete" and m.user_id is None:
        raise InvalidMessage("delete needs a userId")
