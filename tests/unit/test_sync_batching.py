"""Batching sync-back messages within Segment's 500 KB and 2,500-message caps, at the byte
and the count (jobs/sync_batching.py). The limits are Segment's documented numbers, written
in tests/unit/segment_limits.py, not read from the module; sizes are measured by encoding
what the module produced."""

from __future__ import annotations

import json
import re

import pytest

from jobs.sync_batching import (
    Encoded,
    Packer,
    batch_body,
    batches,
    encoded,
    pack,
)
from tests.unit.segment_limits import (
    ENVELOPE_RESERVE,
    MESSAGE_ROOM,
    SEGMENT_BATCH_BYTES,
    SENT_AT,
    SPEC_BATCH_MESSAGES,
    body,
    filling,
    identify,
    room_used,
    wire,
)

# -- the 500 KB cap, at the byte ------------------------------------------------------------


def test_a_batch_filled_to_the_byte_is_one_batch_within_500_kb() -> None:
    messages = filling(0)
    result = list(batches(messages))  # the defaults: Segment's caps
    assert result == [messages]
    assert room_used(result[0]) == MESSAGE_ROOM
    size = len(body(result[0]))
    assert size <= SEGMENT_BATCH_BYTES
    assert size == MESSAGE_ROOM + len('{"batch":[],"sentAt":""}') + len(SENT_AT)


def test_one_byte_more_moves_the_last_message_to_the_next_batch() -> None:
    messages = filling(0, MESSAGE_ROOM + 1)
    result = list(batches(messages))
    assert result == [messages[:-1], messages[-1:]]
    assert all(len(body(b)) <= SEGMENT_BATCH_BYTES for b in result)


def test_every_batch_is_filled_to_the_byte_not_only_the_first() -> None:
    first, second = filling(0), filling(100)
    assert list(batches(first + second)) == [first, second]
    over = filling(200, MESSAGE_ROOM + 1)
    assert list(batches(first + over)) == [first, over[:-1], over[-1:]]


@pytest.mark.parametrize("fits", [True, False])
def test_pack_and_packer_defaults_are_segments_byte_cap(fits: bool) -> None:
    messages = filling(0, MESSAGE_ROOM if fits else MESSAGE_ROOM + 1)
    groups = [[encoded(m)] for m in messages]
    expected = [16] if fits else [15, 1]
    assert [len(b) for b in pack(groups)] == expected
    packer, sizes = Packer(), []
    for group in groups:
        sizes += [len(b) for b in packer.add(group)]
    sizes.append(len(packer.flush()))
    assert sizes == expected


def test_a_packer_starts_empty_again_after_flush() -> None:
    packer = Packer()
    for m in filling(0)[:3]:
        assert packer.add([encoded(m)]) == []
    assert len(packer.flush()) == 3
    assert packer.flush() == []
    second = filling(100)
    for m in second:
        assert packer.add([encoded(m)]) == []
    assert [e.tag for e in packer.flush()] == second


def test_a_group_exactly_filling_a_batch_stays_whole() -> None:
    group = [encoded(m) for m in filling(0)]
    assert [len(b) for b in pack([group])] == [16]
    # One byte more: spread message by message, and the spread pieces fill to the byte.
    bigger = [encoded(m) for m in filling(0, MESSAGE_ROOM + 1)]
    small = encoded(identify(999))
    result = list(pack([bigger, [small]]))
    assert [[e.message_id for e in b] for b in result] == [
        [e.message_id for e in bigger[:-1]], [bigger[-1].message_id, small.message_id]]


def test_a_group_spread_over_batches_fills_them_to_the_byte() -> None:
    """A group too big for one batch is spread message by message, each counted with its
    comma, so the first batch is filled exactly as single messages would fill it."""
    exact = [encoded(m) for m in filling(0)]
    extra = encoded(identify(999))
    result = list(pack([[*exact, extra]]))
    assert [len(b) for b in result] == [16, 1]
    assert result[0] == exact


def test_the_size_a_caller_gives_is_what_is_counted() -> None:
    """The syncer passes the sizes it already has instead of having them summed again."""
    group = [encoded(identify(1)), encoded(identify(2))]
    packer = Packer()
    # Claimed too big for one batch: the group is spread, each message at its own size.
    assert packer.add(group, size=MESSAGE_ROOM) == []
    assert packer.add([encoded(identify(3))], size=MESSAGE_ROOM) == [group]


# -- the 2,500-message cap -----------------------------------------------------------------


def test_the_default_count_cap_is_2500() -> None:
    messages = [identify(n) for n in range(SPEC_BATCH_MESSAGES + 1)]
    result = list(batches(messages))
    assert [len(b) for b in result] == [SPEC_BATCH_MESSAGES, 1]
    assert [m for b in result for m in b] == messages
    assert [len(b) for b in pack([encoded(m)] for m in messages)] == [SPEC_BATCH_MESSAGES, 1]
    packer = Packer()  # as the syncer makes it
    full = [b for m in messages for b in packer.add([encoded(m)])]
    assert [len(b) for b in full] == [SPEC_BATCH_MESSAGES]
    assert len(packer.flush()) == 1
    assert all(len(body(b)) <= SEGMENT_BATCH_BYTES for b in result)


def test_a_group_of_exactly_the_count_cap_stays_whole() -> None:
    group = [encoded(identify(n)) for n in range(SPEC_BATCH_MESSAGES)]
    assert [len(b) for b in pack([group])] == [SPEC_BATCH_MESSAGES]
    one_more = [*group, encoded(identify(SPEC_BATCH_MESSAGES))]
    assert [len(b) for b in pack([one_more])] == [SPEC_BATCH_MESSAGES, 1]
    # After an open batch: the whole group starts the next batch instead of topping it up.
    first = encoded(identify(-1))
    assert [len(b) for b in pack([[first], group])] == [1, SPEC_BATCH_MESSAGES]
    assert [len(b) for b in pack([[first], group[:3]], max_messages=3)] == [1, 3]


@pytest.mark.parametrize(
    ("count", "comment_len", "max_messages", "expected_sizes"),
    [
        (0, 0, 2_500, []),
        (1, 0, 2_500, [1]),
        (2_500, 0, 2_500, [2_500]),
        (2_501, 0, 2_500, [2_500, 1]),
        (6_000, 0, 2_500, [2_500, 2_500, 1_000]),
        (5, 0, 2, [2, 2, 1]),
        (3, 0, 1, [1, 1, 1]),
        # ~30 KB messages: the 500 KB cap binds long before the count cap.
        (40, 30_000, 2_500, [16, 16, 8]),
    ],
)
def test_batches_respect_both_caps(
    count: int, comment_len: int, max_messages: int, expected_sizes: list[int]
) -> None:
    messages = [identify(n, "x" * comment_len) for n in range(count)]
    result = list(batches(messages, max_messages=max_messages))
    assert [len(b) for b in result] == expected_sizes
    assert [m for b in result for m in b] == messages  # order kept, nothing lost
    for b in result:
        assert len(body(b)) <= SEGMENT_BATCH_BYTES


def test_batches_fill_close_to_the_byte_cap() -> None:
    messages = [identify(n, "é" * 7_000) for n in range(200)]  # ~14 KB each in UTF-8
    result = list(batches(messages))
    for b in result[:-1]:
        assert len(body(b)) <= SEGMENT_BATCH_BYTES
        # One more message would not have fit: packing is tight, not just safe.
        assert room_used(b) + 1 + len(wire(messages[0])) > MESSAGE_ROOM


def test_batches_yield_an_oversize_message_alone() -> None:
    small, huge, small2 = identify(1), identify(2, "x" * 600_000), identify(3)
    assert list(batches([small, huge, small2])) == [[small], [huge], [small2]]


@pytest.mark.parametrize(
    ("max_messages", "max_bytes", "message"),
    [
        (0, SEGMENT_BATCH_BYTES, "max_messages must be at least 1"),
        (-1, SEGMENT_BATCH_BYTES, "max_messages must be at least 1"),
        (10, 100, "max_bytes must exceed the 128-byte envelope"),
        (10, ENVELOPE_RESERVE, "max_bytes must exceed the 128-byte envelope"),
    ],
)
def test_batches_reject_impossible_limits(max_messages: int, max_bytes: int, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        list(batches([identify(1)], max_messages=max_messages, max_bytes=max_bytes))


def test_the_smallest_possible_limits_work() -> None:
    """One message a batch, and one byte of room past the envelope."""
    tiny = [Encoded(b"1", "a"), Encoded(b"2", "b")]
    assert [[e.message_id for e in b] for b in pack([[e] for e in tiny], max_messages=1)] == [
        ["a"], ["b"]]
    assert [[e.message_id for e in b] for b in pack(
        [[e] for e in tiny], max_bytes=ENVELOPE_RESERVE + 1)] == [["a"], ["b"]]
    assert [len(b) for b in pack([[e] for e in tiny], max_bytes=ENVELOPE_RESERVE + 3)] == [2]


# -- the request body ----------------------------------------------------------------------


@pytest.mark.parametrize("sent_at", [SENT_AT, "2026-03-02T10:00:01+00:00", 'odd "quoted" é'])
def test_batch_body_carries_the_messages_and_sent_at(sent_at: str) -> None:
    messages = [identify(1, "é 😀 \"q\""), identify(2)]
    data = batch_body([wire(m) for m in messages], sent_at)
    assert data == body(messages, sent_at)
    assert json.loads(data) == {"batch": messages, "sentAt": sent_at}


def test_batch_body_without_sent_at_and_empty() -> None:
    messages = [identify(1)]
    assert batch_body([wire(m) for m in messages]) == wire({"batch": messages})
    assert batch_body([]) == b'{"batch":[]}'
    assert batch_body([], SENT_AT) == wire({"batch": [], "sentAt": SENT_AT})


def test_encoded_is_the_wire_form_tagged_with_its_message() -> None:
    message = identify(5, "é")
    e = encoded(message)
    assert (e.data, e.message_id, e.tag) == (wire(message), message["messageId"], message)


def test_pack_keeps_an_answers_messages_in_one_batch() -> None:
    def group(n: int, size: int) -> list[Encoded]:
        return [Encoded(b"x" * size, f"{n}-{k}", n) for k in range(2)]

    result = list(pack([group(n, 100) for n in range(5)], max_messages=5))
    assert [[e.message_id for e in b] for b in result] == [
        ["0-0", "0-1", "1-0", "1-1"], ["2-0", "2-1", "3-0", "3-1"], ["4-0", "4-1"]]
    # A group bigger than a batch is spread message by message.
    big = list(pack([group(0, 10), group(1, 300_000), group(2, 10)]))
    assert [[e.message_id for e in b] for b in big] == [["0-0", "0-1", "1-0"], ["1-1", "2-0", "2-1"]]
