"""Pure rules for shaping sync-back messages to Segment's limits.

Sizes are measured exactly as the client serializes: compact JSON, UTF-8, no ASCII
escaping, so what is measured here is what goes on the wire.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable, Iterator
from typing import Any

MAX_BATCH_MESSAGES = 2_500
MAX_BATCH_BYTES = 500 * 1024
MAX_MESSAGE_BYTES = 32 * 1024
# Room for '{"batch":[...],"sentAt":"<ISO 8601>"}' around the messages, with slack for an
# ISO timestamp of any precision and offset.
ENVELOPE_BYTES = 128
ELLIPSIS = "…"
DEFAULT_TRUNCATABLE: tuple[tuple[str, ...], ...] = (
    ("traits", "NPS_comment"),
    ("properties", "comment"),
)


def dumps(obj: Any) -> bytes:
    """The wire form of ``obj``: compact JSON in UTF-8."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def message_size(message: dict[str, Any]) -> int:
    return len(dumps(message))


def message_id(*parts: str) -> str:
    """A deterministic messageId, so a re-sent message is deduplicated by Segment.

    Parts are length-prefixed before hashing, so ("a", "bc") and ("ab", "c") differ.
    """
    if not parts:
        raise ValueError("message_id needs at least one part")
    digest = hashlib.sha256()
    for part in parts:
        encoded = part.encode()
        digest.update(f"{len(encoded)}:".encode())
        digest.update(encoded)
    return "npsd-" + digest.hexdigest()[:32]


def batches(
    messages: Iterable[dict[str, Any]],
    max_messages: int = MAX_BATCH_MESSAGES,
    max_bytes: int = MAX_BATCH_BYTES,
) -> Iterator[list[dict[str, Any]]]:
    """Pack messages, in order, into batches whose request body stays within ``max_bytes``.

    A message too big to fit any batch is yielded alone rather than raised: Segment
    refuses it with a 400, and the isolating sender records it as failed while the rest
    of the sync goes on.
    """
    if max_messages < 1:
        raise ValueError("max_messages must be at least 1")
    budget = max_bytes - ENVELOPE_BYTES
    if budget < 1:
        raise ValueError(f"max_bytes must exceed the {ENVELOPE_BYTES}-byte envelope")
    batch: list[dict[str, Any]] = []
    used = 0
    for message in messages:
        size = message_size(message)
        # Every message after the first costs a separating comma too.
        cost = size + 1 if batch else size
        if batch and (len(batch) >= max_messages or used + cost > budget):
            yield batch
            batch, used, cost = [], 0, size
        batch.append(message)
        used += cost
    if batch:
        yield batch


def fit_message(
    message: dict[str, Any],
    max_bytes: int = MAX_MESSAGE_BYTES,
    truncatable: tuple[tuple[str, ...], ...] = DEFAULT_TRUNCATABLE,
) -> dict[str, Any]:
    """Truncate the strings at ``truncatable`` key paths until ``message`` fits ``max_bytes``.

    Returns ``message`` itself when it already fits, else a truncated copy (the input is
    never changed). The longest field is cut first, each as little as needed, on a code
    point boundary, with "…" appended. Best effort: if the rest of the message alone is
    too big the result still exceeds ``max_bytes``, and Segment will refuse it.
    """
    if message_size(message) <= max_bytes:
        return message
    fitted = copy.deepcopy(message)
    fields = [(path, value) for path in truncatable if (value := _get(fitted, path))]
    fields.sort(key=lambda field: len(dumps(field[1])), reverse=True)
    for path, value in fields:
        if message_size(fitted) <= max_bytes:
            break
        _set(fitted, path, _longest_fitting(fitted, path, value, max_bytes))
    return fitted


def _longest_fitting(
    message: dict[str, Any], path: tuple[str, ...], value: str, max_bytes: int
) -> str:
    # Binary search for the longest prefix that fits: the size grows with the prefix.
    lo, hi = 0, len(value) - 1  # keeping all of it already failed to fit
    while lo < hi:
        mid = (lo + hi + 1) // 2
        _set(message, path, value[:mid] + ELLIPSIS)
        if message_size(message) <= max_bytes:
            lo = mid
        else:
            hi = mid - 1
    return value[:lo] + ELLIPSIS


def _get(message: dict[str, Any], path: tuple[str, ...]) -> str | None:
    node: Any = message
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node if isinstance(node, str) else None


def _set(message: dict[str, Any], path: tuple[str, ...], value: str) -> None:
    node: Any = message
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
