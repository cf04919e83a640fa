"""Fitting sync-back messages to Segment's 32 KB per message (jobs/sync_batching.py), the
messageIds, and the syncer's wire form. Limits from tests/unit/segment_limits.py."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from jobs.sync_batching import (
    encode_fitted,
    fit_encoded,
    fit_message,
    message_id,
)
from tests.unit.segment_limits import (
    ELLIPSIS,
    SEGMENT_MESSAGE_BYTES,
    identify,
    sized,
    wire,
)

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


def answer_messages(a: Any, s: Any, newest: bool, accounts: list[str],
                    figures: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """What Segment is to receive for one answer revision, as dicts (README, Sync-back)."""
    from jobs.sync import LIBRARY
    from storage.timeparse import iso

    when = iso(a.answered_at if a.answered_at.tzinfo else a.answered_at.replace(tzinfo=UTC))
    base = {"userId": a.user_id, "timestamp": when, "context": {"library": LIBRARY}}
    rev = (str(a.survey_id), str(a.revision))
    out: list[dict[str, Any]] = []
    if newest:
        out.append({**base, "type": "identify", "messageId": message_id("identify", *rev),
                    "traits": {s.rating_trait: a.score, s.comment_trait: a.comment,
                               s.date_trait: when}})
    if s.track_answers:
        out.append({**base, "type": "track", "event": "NPS Survey Answered",
                    "messageId": message_id("track", *rev),
                    "properties": {"rating": a.score, "comment": a.comment,
                                   "survey_id": a.survey_id, "revision": a.revision}})
    for group_id in accounts if s.group_nps else []:
        f = figures.get(group_id, {})
        out.append({**base, "type": "group", "groupId": group_id,
                    "messageId": message_id("group", group_id, *rev),
                    "traits": {"NPS": f.get("nps"), "NPS_responses": f.get("responses")}})
    return out


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
@pytest.mark.parametrize("accounts", [[], ["acme", "b%s\"c é"]])
@pytest.mark.parametrize("at", [
    datetime(2026, 3, 2, 10, 0, 1, 123456, tzinfo=UTC),
    datetime(2026, 3, 2, 10, 0, 1, tzinfo=UTC),  # no fraction of a second
    datetime(2026, 3, 2, 11, 0, 1, 999, tzinfo=timezone(timedelta(hours=1))),
    datetime(2026, 3, 2, 10, 0, 1, 5000),  # naive, as SQLite gives it back: UTC
])
@pytest.mark.parametrize("groups", [True, False])
def test_shaper_bytes_equal_the_fitted_dicts(
    user_id: str, comment: str, traits: tuple[str, str, str], newest: bool, track: bool,
    accounts: list[str], groups: bool, at: datetime,
) -> None:

    from daemon.config import SegmentSettings
    from jobs.sync import _Shaper
    from storage.sync_store import PendingAnswer
    from storage.timeparse import iso

    s = SegmentSettings(write_key="k", rating_trait=traits[0], comment_trait=traits[1],
                        date_trait=traits[2], track_answers=track, group_nps=groups)
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
