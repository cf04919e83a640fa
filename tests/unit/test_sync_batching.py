"""Batching and fitting of sync-back messages to Segment's limits (jobs/sync_batching.py).

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
ASCII escaping: the client's wire form) with this file's own encoder.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from jobs.sync_batching import (
    Encoded,
    Packer,
    batch_body,
    batches,
    encode_fitted,
    encoded,
    fit_encoded,
    fit_message,
    message_id,
    pack,
)

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


# -- the 32 KB per-message cap -------------------------------------------------------------


def test_a_message_of_exactly_32_kb_is_sent_as_it_is() -> None:
    message = sized(1, SEGMENT_MESSAGE_BYTES)
    assert fit_message(message) is message
    fitted, data = fit_encoded(message)
    assert fitted is message and data == wire(message)
    e = encode_fitted(message)
    assert (e.data, e.message_id, e.tag) == (wire(message), message["messageId"], message)


def test_one_byte_over_32_kb_is_cut_to_exactly_32_kb() -> None:
    message = sized(1, SEGMENT_MESSAGE_BYTES + 1)
    comment = message["traits"]["NPS_comment"]
    fitted = fit_message(message)
    # Four ASCII characters make room for the 3-byte "…" and the byte over.
    assert fitted["traits"]["NPS_comment"] == comment[:-4] + ELLIPSIS
    assert len(wire(fitted)) == SEGMENT_MESSAGE_BYTES
    assert message["traits"]["NPS_comment"] == comment  # input untouched
    fitted2, data = fit_encoded(message)
    assert fitted2 == fitted and data == wire(fitted)
    e = encode_fitted(message)
    assert (e.data, e.message_id, e.tag) == (wire(fitted), message["messageId"], fitted)


def test_encode_fitted_takes_the_limit_and_the_paths_it_is_given() -> None:
    message = {"type": "track", "messageId": "m", "userId": "u", "event": "e" * 2_000}
    e = encode_fitted(message, 1_000, truncatable=(("event",),))
    assert e.tag["event"].endswith(ELLIPSIS)
    assert e.data == wire(e.tag) and len(e.data) == 1_000
    assert e.message_id == "m"


def test_fit_cuts_properties_comment_by_default() -> None:
    message = {"type": "track", "messageId": "m", "userId": "u", "event": "NPS Survey Answered",
               "properties": {"comment": "p" * 40_000}}
    fitted = fit_message(message)
    assert fitted["properties"]["comment"].endswith(ELLIPSIS)
    assert len(wire(fitted)) == SEGMENT_MESSAGE_BYTES
    assert fit_encoded(message) == (fitted, wire(fitted))
    assert encode_fitted(message).tag == fitted


@pytest.mark.parametrize(
    ("comment", "max_bytes"),
    [
        ("é" * 100_000, SEGMENT_MESSAGE_BYTES),  # 2 bytes per character
        ("€" * 40_000, SEGMENT_MESSAGE_BYTES),  # 3 bytes
        ("😀" * 30_000, SEGMENT_MESSAGE_BYTES),  # 4 bytes, outside the BMP
        ('ok "quoted" \n line ' * 6_000, SEGMENT_MESSAGE_BYTES),  # JSON escapes grow it
        ("a€😀" * 20_000, 1_000),
    ],
)
def test_fit_message_truncates_a_long_comment(comment: str, max_bytes: int) -> None:
    message = identify(7, comment)
    fitted, data = fit_encoded(message, max_bytes)
    kept = fitted["traits"]["NPS_comment"]
    assert data == wire(fitted)  # the bytes returned are the fitted message's
    assert len(data) <= max_bytes
    assert kept.endswith(ELLIPSIS)
    assert comment.startswith(kept[: -len(ELLIPSIS)])
    # As long as possible: one more character would not fit.
    longer = dict(fitted, traits=dict(fitted["traits"], NPS_comment=comment[: len(kept)] + "…"))
    assert len(wire(longer)) > max_bytes
    assert message["traits"]["NPS_comment"] == comment  # input untouched
    assert json.loads(data.decode("utf-8", errors="strict")) == fitted


def test_only_the_ellipsis_is_left_when_nothing_else_fits() -> None:
    message = identify(1, "abcdef")
    room = len(wire(identify(1, ELLIPSIS)))
    assert fit_message(message, room)["traits"]["NPS_comment"] == ELLIPSIS
    # Not even the ellipsis fits: best effort, the smallest form is still returned.
    assert fit_message(message, room - 1)["traits"]["NPS_comment"] == ELLIPSIS


def test_all_but_the_last_character_kept_when_that_is_enough() -> None:
    """A NUL is 6 bytes in JSON ("\\u0000"): dropping it alone makes room for the "…"."""
    message = identify(1, "abc\x00")
    limit = len(wire(message)) - 3
    assert fit_message(message, limit)["traits"]["NPS_comment"] == "abc" + ELLIPSIS
    assert len(wire(fit_message(message, limit))) == limit


def test_fit_message_returns_a_small_message_unchanged() -> None:
    message = identify(1, "fine")
    assert fit_message(message) is message


def test_fit_message_cuts_the_longest_field_first() -> None:
    """Listed order is traits, then properties; the longer properties field is cut, alone."""
    message: dict[str, Any] = {
        "type": "track",
        "messageId": "m",
        "userId": "u",
        "traits": {"NPS_comment": "t" * 20_000},
        "properties": {"comment": "p" * 30_000},
    }
    fitted = fit_message(message)
    assert fitted["traits"]["NPS_comment"] == "t" * 20_000
    assert fitted["properties"]["comment"].endswith(ELLIPSIS)
    assert len(wire(fitted)) == SEGMENT_MESSAGE_BYTES


def test_longest_is_measured_in_wire_bytes() -> None:
    """10,000 quotes are 20,000 bytes escaped: longer on the wire than 15,000 letters."""
    message: dict[str, Any] = {
        "type": "track",
        "messageId": "m",
        "userId": "u",
        "traits": {"NPS_comment": "x" * 15_000},
        "properties": {"comment": '"' * 10_000},
    }
    fitted = fit_message(message, 30_000)
    assert fitted["traits"]["NPS_comment"] == "x" * 15_000
    assert fitted["properties"]["comment"].endswith(ELLIPSIS)
    assert len(wire(fitted)) <= 30_000


def test_the_next_field_is_cut_when_the_longest_is_not_enough() -> None:
    message = identify(1, "t" * 35_000)
    message["properties"] = {"comment": "p" * 40_000}
    fitted = fit_message(message)
    # The longest (properties) goes down to the ellipsis, then the other is cut to fit.
    assert fitted["properties"]["comment"] == ELLIPSIS
    assert fitted["traits"]["NPS_comment"].endswith(ELLIPSIS)
    assert len(fitted["traits"]["NPS_comment"]) > 30_000
    assert len(wire(fitted)) == SEGMENT_MESSAGE_BYTES


@pytest.mark.parametrize(
    "path", [("event",), ("context", "traits", "bio")], ids=["top-level", "three-deep"])
def test_fit_message_follows_paths_of_any_depth(path: tuple[str, ...]) -> None:
    message: dict[str, Any] = {"type": "track", "messageId": "m", "userId": "u",
                               "event": "e" * 2_000,
                               "context": {"traits": {"bio": "b" * 2_000}, "x": "keep"}}
    fitted = fit_message(message, 3_000, truncatable=(path,))
    node: Any = fitted
    for key in path:
        node = node[key]
    assert node.endswith(ELLIPSIS)
    assert len(wire(fitted)) == 3_000
    assert fitted["context"]["x"] == "keep"
    assert set(fitted) == set(message) and set(fitted["context"]["traits"]) == {"bio"}


@pytest.mark.parametrize(
    "truncatable",
    [
        (),
        (("traits", "missing"),),
        (("traits", "NPS_rating"),),  # not a string
        (("userId", "deeper"),),  # path through a string
    ],
)
def test_fit_message_is_best_effort_when_nothing_can_be_cut(
    truncatable: tuple[tuple[str, ...], ...],
) -> None:
    message = identify(1, "z" * 40_000)
    fitted = fit_message(message, truncatable=truncatable)
    assert fitted == message
    assert len(wire(fitted)) > SEGMENT_MESSAGE_BYTES


# -- messageIds ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        (("identify", "user-1", "answer-9"), ("identify", "user-1", "answer-9"), True),
        (("identify", "user-1", "answer-9"), ("track", "user-1", "answer-9"), False),
        (("a", "bc"), ("ab", "c"), False),  # parts do not run together
        (("a:b",), ("a", "b"), False),
        (("é",), ("é",), True),
    ],
)
def test_message_id_is_deterministic_and_unambiguous(
    a: tuple[str, ...], b: tuple[str, ...], same: bool
) -> None:
    assert (message_id(*a) == message_id(*b)) is same


def test_message_id_shape() -> None:
    mid = message_id("identify", "user-1")
    assert mid.startswith("npsd-")
    assert len(mid) == len("npsd-") + 32
    int(mid.removeprefix("npsd-"), 16)
    # The documented scheme: each part length-prefixed, SHA-256, 32 hex digits.
    assert mid == "npsd-" + hashlib.sha256(b"8:identify6:user-1").hexdigest()[:32]
    with pytest.raises(ValueError, match=r"^message_id needs at least one part$"):
        message_id()


# -- the syncer's wire form is exactly the dicts' -------------------------------------------


@pytest.mark.parametrize(
    ("user_id", "comment", "traits"),
    [
        ("user-1", "", ("NPS_rating", "NPS_comment", "NPS_date")),
        ('u "quoted" \\ é 😀 \n\t\x00', 'a "b" \\ c\n€ 😀 \u2028 %s %d %%', ("a%s", 'b"', "é")),
        ("u2", "x" * 40_000, ("NPS_rating", "NPS_comment", "NPS_date")),  # truncated
        ("u3", "😀" * 20_000, ("score", "why", "when")),  # truncated, 4-byte characters
    ],
)
@pytest.mark.parametrize("newest", [True, False])
@pytest.mark.parametrize("track", [True, False])
@pytest.mark.parametrize("accounts", [[], ["acme", "b%s\"c"]])
@pytest.mark.parametrize("at", [
    datetime(2026, 3, 2, 10, 0, 1, 123456, tzinfo=UTC),
    datetime(2026, 3, 2, 10, 0, 1, tzinfo=UTC),  # no fraction of a second
    datetime(2026, 3, 2, 11, 0, 1, 999, tzinfo=timezone(timedelta(hours=1))),
    datetime(2026, 3, 2, 10, 0, 1, 5000),  # naive, as SQLite gives it back: UTC
])
def test_shaper_bytes_equal_the_fitted_dicts(
    user_id: str, comment: str, traits: tuple[str, str, str], newest: bool, track: bool,
    accounts: list[str], at: datetime,
) -> None:

    from daemon.config import SegmentSettings
    from jobs.sync import _Shaper, answer_messages
    from storage.sync_store import PendingAnswer
    from storage.timeparse import iso

    s = SegmentSettings(write_key="k", rating_trait=traits[0], comment_trait=traits[1],
                        date_trait=traits[2], track_answers=track)
    a = PendingAnswer(4242, user_id, 7, comment, at, 3)
    figures = {"acme": {"nps": 42.5, "responses": 7}}
    expected = [fit_message(m, truncatable=(("traits", traits[1]), ("properties", "comment")))
                for m in answer_messages(a, s, newest, accounts, figures)]
    assert all(m["timestamp"] == iso(at if at.tzinfo else at.replace(tzinfo=UTC)) for m in expected)
    got, size = _Shaper(s).encode(a, newest, accounts, figures)
    assert size == sum(len(e.data) for e in got)
    assert [e.data for e in got] == [wire(m) for m in expected]
    assert [e.message_id for e in got] == [m["messageId"] for m in expected]
    assert all(e.tag == (4242, 3, user_id) for e in got)
    assert all(len(e.data) <= SEGMENT_MESSAGE_BYTES for e in got)


def test_pack_keeps_an_answers_messages_in_one_batch() -> None:
    def group(n: int, size: int) -> list[Encoded]:
        return [Encoded(b"x" * size, f"{n}-{k}", n) for k in range(2)]

    result = list(pack([group(n, 100) for n in range(5)], max_messages=5))
    assert [[e.message_id for e in b] for b in result] == [
        ["0-0", "0-1", "1-0", "1-1"], ["2-0", "2-1", "3-0", "3-1"], ["4-0", "4-1"]]
    # A group bigger than a batch is spread message by message.
    big = list(pack([group(0, 10), group(1, 300_000), group(2, 10)]))
    assert [[e.message_id for e in b] for b in big] == [["0-0", "0-1", "1-0"], ["1-1", "2-0", "2-1"]]
