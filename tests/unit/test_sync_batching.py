from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from jobs.sync_batching import (
    ELLIPSIS,
    MAX_BATCH_BYTES,
    MAX_MESSAGE_BYTES,
    batches,
    dumps,
    fit_message,
    message_id,
    message_size,
)

SENT_AT = "2024-05-01T03:00:00.123456+00:00"


def identify(n: int, comment: str = "") -> dict[str, Any]:
    return {
        "type": "identify",
        "messageId": message_id("identify", str(n)),
        "userId": f"user-{n}",
        "traits": {"NPS_rating": n % 11, "NPS_comment": comment},
    }


def body_size(batch: list[dict[str, Any]]) -> int:
    return len(dumps({"batch": batch, "sentAt": SENT_AT}))


@pytest.mark.parametrize(
    ("count", "comment_len", "max_messages", "expected_sizes"),
    [
        (0, 0, 2_500, []),
        (1, 0, 2_500, [1]),
        (2_500, 0, 2_500, [2_500]),
        (2_501, 0, 2_500, [2_500, 1]),
        (6_000, 0, 2_500, [2_500, 2_500, 1_000]),
        (5, 0, 2, [2, 2, 1]),
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
        assert body_size(b) <= MAX_BATCH_BYTES


def test_batches_fill_close_to_the_byte_cap() -> None:
    messages = [identify(n, "é" * 7_000) for n in range(200)]  # ~14 KB each in UTF-8
    result = list(batches(messages))
    for b in result[:-1]:
        size = body_size(b)
        assert size <= MAX_BATCH_BYTES
        # One more message would not have fit: packing is tight, not just safe.
        assert size + message_size(messages[0]) > MAX_BATCH_BYTES - 128


def test_batches_yield_an_oversize_message_alone() -> None:
    small, huge, small2 = identify(1), identify(2, "x" * 600_000), identify(3)
    assert list(batches([small, huge, small2])) == [[small], [huge], [small2]]


@pytest.mark.parametrize(("max_messages", "max_bytes"), [(0, MAX_BATCH_BYTES), (10, 100)])
def test_batches_reject_impossible_limits(max_messages: int, max_bytes: int) -> None:
    with pytest.raises(ValueError):
        list(batches([identify(1)], max_messages=max_messages, max_bytes=max_bytes))


@pytest.mark.parametrize(
    ("comment", "max_bytes"),
    [
        ("é" * 100_000, MAX_MESSAGE_BYTES),  # 2 bytes per character
        ("€" * 40_000, MAX_MESSAGE_BYTES),  # 3 bytes
        ("😀" * 30_000, MAX_MESSAGE_BYTES),  # 4 bytes, outside the BMP
        ('ok "quoted" \n line ' * 6_000, MAX_MESSAGE_BYTES),  # JSON escapes grow it
        ("a€😀" * 20_000, 1_000),
    ],
)
def test_fit_message_truncates_a_long_comment(comment: str, max_bytes: int) -> None:
    message = identify(7, comment)
    fitted = fit_message(message, max_bytes)
    kept = fitted["traits"]["NPS_comment"]
    assert message_size(fitted) <= max_bytes
    assert kept.endswith(ELLIPSIS)
    assert comment.startswith(kept[: -len(ELLIPSIS)])
    # As long as possible: one more character would not fit.
    longer = dict(fitted, traits=dict(fitted["traits"], NPS_comment=comment[: len(kept)] + "…"))
    assert message_size(longer) > max_bytes
    assert message["traits"]["NPS_comment"] == comment  # input untouched
    kept.encode()  # a whole code point at the cut: encodes without error


def test_fit_message_returns_a_small_message_unchanged() -> None:
    message = identify(1, "fine")
    assert fit_message(message) is message


def test_fit_message_cuts_the_longest_field_first() -> None:
    message: dict[str, Any] = {
        "type": "track",
        "messageId": "m",
        "userId": "u",
        "properties": {"comment": "short and kept"},
        "traits": {"NPS_comment": "y" * 50_000},
    }
    fitted = fit_message(message)
    assert fitted["properties"]["comment"] == "short and kept"
    assert fitted["traits"]["NPS_comment"].endswith(ELLIPSIS)
    assert message_size(fitted) <= MAX_MESSAGE_BYTES


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
    assert message_size(fitted) > MAX_MESSAGE_BYTES


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
    with pytest.raises(ValueError):
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
    assert [e.data for e in got] == [dumps(m) for m in expected]
    assert [e.message_id for e in got] == [m["messageId"] for m in expected]
    assert all(e.tag == (4242, 3, user_id) for e in got)
    assert all(len(e.data) <= MAX_MESSAGE_BYTES for e in got)


def test_pack_keeps_an_answers_messages_in_one_batch() -> None:
    from jobs.sync_batching import Encoded, pack

    def group(n: int, size: int) -> list[Encoded]:
        return [Encoded(b"x" * size, f"{n}-{k}", n) for k in range(2)]

    result = list(pack([group(n, 100) for n in range(5)], max_messages=5))
    assert [[e.message_id for e in b] for b in result] == [
        ["0-0", "0-1", "1-0", "1-1"], ["2-0", "2-1", "3-0", "3-1"], ["4-0", "4-1"]]
    # A group bigger than a batch is spread message by message.
    big = list(pack([group(0, 10), group(1, 300_000), group(2, 10)]))
    assert [[e.message_id for e in b] for b in big] == [["0-0", "0-1", "1-0"], ["1-1", "2-0", "2-1"]]
