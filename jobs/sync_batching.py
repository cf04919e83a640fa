"""Pure rules for shaping sync-back messages to Segment's limits.

Sizes are measured exactly as the client serializes: compact JSON, UTF-8, no ASCII
escaping, so what is measured here is what goes on the wire.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
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


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def dumps(obj: Any) -> bytes:
    """The wire form of ``obj``: compact JSON in UTF-8."""
    return _ENCODER.encode(obj).encode()


def message_size(message: dict[str, Any]) -> int:
    return len(dumps(message))


@dataclass(slots=True)
class Encoded:
    """A message in its wire form, serialised once: sized, packed and sent as ``data``.

    ``tag`` is whatever the caller needs back with it (the message dict, its owner …).
    """

    data: bytes
    message_id: str
    tag: Any = None


def encoded(message: dict[str, Any]) -> Encoded:
    """``message`` serialised, tagged with itself."""
    return Encoded(dumps(message), str(message.get("messageId")), message)


def id_parts(*parts: str) -> bytes:
    """What ``message_id`` hashes: each part length-prefixed, so the parts cannot run together.

    A prefix of parts hashed once can be reused: ``digest_id(id_parts(a) + id_parts(b, c))``
    equals ``message_id(a, b, c)``."""
    return b"".join(b"%d:%s" % (len(p), p) for p in (part.encode() for part in parts))


def digest_id(data: bytes) -> str:
    return "npsd-" + hashlib.sha256(data).hexdigest()[:32]


def message_id(*parts: str) -> str:
    """A deterministic messageId, so a re-sent message is deduplicated by Segment.

    Parts are length-prefixed before hashing, so ("a", "bc") and ("ab", "c") differ.
    """
    if not parts:
        raise ValueError("message_id needs at least one part")
    return digest_id(id_parts(*parts))


def batch_body(parts: Sequence[bytes], sent_at: str | None = None) -> bytes:
    """The request body ``{"batch":[...],"sentAt":...}`` joined from serialised messages."""
    tail = b"]}" if sent_at is None else b'],"sentAt":' + dumps(sent_at) + b"}"
    return b'{"batch":[' + b",".join(parts) + tail


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
    for batch in pack(([encoded(m)] for m in messages), max_messages, max_bytes):
        yield [e.tag for e in batch]


def pack(
    groups: Iterable[list[Encoded]],
    max_messages: int = MAX_BATCH_MESSAGES,
    max_bytes: int = MAX_BATCH_BYTES,
) -> Iterator[list[Encoded]]:
    """Pack groups of serialised messages, in order, into batches within both caps."""
    packer = Packer(max_messages, max_bytes)
    for group in groups:
        yield from packer.add(group)
    if last := packer.flush():
        yield last


class Packer:
    """Packs groups of serialised messages, in order, into batches within both caps.

    A group (the messages of one answer) is kept in one batch whenever it fits one, so a
    checkpoint after a batch settles whole answers. A group too big for any batch is
    spread over batches message by message; a message too big alone is yielded alone.
    """

    def __init__(self, max_messages: int = MAX_BATCH_MESSAGES,
                 max_bytes: int = MAX_BATCH_BYTES) -> None:
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        if max_bytes - ENVELOPE_BYTES < 1:
            raise ValueError(f"max_bytes must exceed the {ENVELOPE_BYTES}-byte envelope")
        self._max_messages = max_messages
        # Sizes below count a comma per message: one more than the body has.
        self._limit = max_bytes - ENVELOPE_BYTES + 1
        self._batch: list[Encoded] = []
        self._used = 0

    def add(self, group: list[Encoded], size: int | None = None) -> list[list[Encoded]]:
        """Take ``group`` (``size``: its messages' bytes, when known); the batches it
        completed (usually none)."""
        full: list[list[Encoded]] = []
        cost = (sum(len(e.data) for e in group) if size is None else size) + len(group)
        if len(group) <= self._max_messages and cost <= self._limit:
            self._place(group, cost, full)
            return full
        for e in group:
            self._place([e], len(e.data) + 1, full)
        return full

    def _place(self, items: list[Encoded], cost: int, full: list[list[Encoded]]) -> None:
        """Add items to the open batch, closing it first (into `full`) if they do not fit."""
        if self._batch and (len(self._batch) + len(items) > self._max_messages
                            or self._used + cost > self._limit):
            full.append(self._batch)
            self._batch, self._used = [], 0
        self._batch.extend(items)
        self._used += cost

    def flush(self) -> list[Encoded]:
        """The last, partly filled batch (empty when there is none)."""
        batch, self._batch, self._used = self._batch, [], 0
        return batch


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
    return fit_encoded(message, max_bytes, truncatable)[0]


def fit_encoded(
    message: dict[str, Any],
    max_bytes: int = MAX_MESSAGE_BYTES,
    truncatable: tuple[tuple[str, ...], ...] = DEFAULT_TRUNCATABLE,
) -> tuple[dict[str, Any], bytes]:
    """``fit_message`` and its wire form: a message that fits is serialised just once."""
    data = dumps(message)
    if len(data) <= max_bytes:
        return message, data
    fitted = copy.deepcopy(message)
    fields = [(path, value) for path in truncatable if (value := _get(fitted, path))]
    fields.sort(key=lambda field: len(dumps(field[1])), reverse=True)
    for path, value in fields:
        if len(data) <= max_bytes:
            break
        _set(fitted, path, _longest_fitting(fitted, path, value, max_bytes))
        data = dumps(fitted)
    return fitted, data


def encode_fitted(
    message: dict[str, Any],
    max_bytes: int = MAX_MESSAGE_BYTES,
    truncatable: tuple[tuple[str, ...], ...] = DEFAULT_TRUNCATABLE,
) -> Encoded:
    """``fit_encoded`` as an ``Encoded`` tagged with the (fitted) message."""
    fitted, data = fit_encoded(message, max_bytes, truncatable)
    return Encoded(data, str(fitted.get("messageId")), fitted)


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
