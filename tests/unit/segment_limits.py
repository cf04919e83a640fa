"""Segment's documented limits and message helpers for the sync-batching tests.

The limits are written here from Segment's documentation, not read from the module, so a
wrong constant there fails here. segment-docs, "HTTP API Source", sections "Max request
size" and "Batch": "There is a maximum of `500KB` per batch request and `32KB` per call"
and "The `batch` API endpoint accepts a maximum of `500KB` per request, with a limit of
`32KB` per event in the batch". The doc does not say whether a KB is 1,000 or 1,024 bytes;
npsd reads it as 1,024 (500 KB = 512,000 bytes, 32 KB = 32,768 bytes). Segment's own
analytics-python agrees for messages (MAX_MSG_SIZE = 32 << 10) but packs batches to at most
475,000 bytes ("Our servers only accept batches less than 500KB"), so a server reading KB as
1,000 would refuse npsd's batches of 500,001-512,000 bytes with a 400, which the isolating
sender then splits. The doc gives no message count: the 2,500-message cap is npsd's SPEC
("Batches hold at most 2,500 messages and 500 KB").

Every size is measured by encoding what the module produced (compact JSON, UTF-8, no
ASCII escaping: the client's wire form) with wire() below, not the module's encoder.
"""

from __future__ import annotations

import json
from typing import Any

from jobs.sync_batching import message_id

SEGMENT_BATCH_BYTES = 500 * 1024  # 512,000
SEGMENT_MESSAGE_BYTES = 32 * 1024  # 32,768
SPEC_BATCH_MESSAGES = 2_500
# The packer does not know the batch's sentAt when it closes a batch, so it keeps 128 bytes
# of the 500 KB for '{"batch":[', '],"sentAt":"…"}' (56 bytes with a microsecond UTC
# timestamp; the rest is slack for any ISO form). What is left carries the messages and
# the commas between them, to the byte: this is the boundary the tests pin.
ENVELOPE_RESERVE = 128
MESSAGE_ROOM = SEGMENT_BATCH_BYTES - ENVELOPE_RESERVE  # 511,872
# The longest sentAt the syncer writes: iso() of an aware datetime with microseconds.
SENT_AT = "2024-05-01T03:00:00.123456+00:00"
ELLIPSIS = "…"  # 3 bytes in UTF-8


def wire(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def body(batch: list[dict[str, Any]], sent_at: str = SENT_AT) -> bytes:
    """The request body for `batch`, encoded here rather than by the module."""
    return wire({"batch": batch, "sentAt": sent_at})


def identify(n: int, comment: str = "") -> dict[str, Any]:
    return {
        "type": "identify",
        "messageId": message_id("identify", str(n)),
        "userId": f"user-{n}",
        "traits": {"NPS_rating": n % 11, "NPS_comment": comment},
    }


def sized(n: int, size: int) -> dict[str, Any]:
    """An identify whose wire form is exactly `size` bytes (ASCII padding in the comment)."""
    message = identify(n)
    message["traits"]["NPS_comment"] = "x" * (size - len(wire(message)))
    assert len(wire(message)) == size
    return message


def filling(first: int, room: int = MESSAGE_ROOM, count: int = 16) -> list[dict[str, Any]]:
    """`count` messages (each under 32 KB) whose bytes plus commas are exactly `room`."""
    each = 32_000
    last = room - (count - 1) * each - (count - 1)
    assert 0 < last <= SEGMENT_MESSAGE_BYTES
    return [sized(first + k, each) for k in range(count - 1)] + [sized(first + count - 1, last)]


def room_used(batch: list[dict[str, Any]]) -> int:
    return sum(len(wire(m)) for m in batch) + len(batch) - 1
