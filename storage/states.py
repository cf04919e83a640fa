"""The survey states, and what a survey link shows: names, not string literals."""

from __future__ import annotations

from enum import StrEnum


class SurveyState(StrEnum):
    """A survey's life: pending → sending (claimed) → sent → answered, or one of the ends."""

    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    ANSWERED = "answered"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


# Not yet emailed: to the customer such a token does not exist.
UNSENT = frozenset({SurveyState.PENDING, SurveyState.SENDING})
# Over without an answer that can still change.
ENDED = frozenset({SurveyState.EXPIRED, SurveyState.CANCELLED, SurveyState.SKIPPED,
                   SurveyState.FAILED})


class Openness(StrEnum):
    """What a survey link shows the customer, decided here and not by the page."""

    UNKNOWN = "unknown"  # no such token, or not sent yet: 404
    CLOSED = "closed"  # expired, cancelled, skipped or failed: the "closed" page
    OPEN = "open"  # sent, not answered: the form
    ANSWERED = "answered"  # answered and still open for a revision: the form, filled in


class AnswerResult(StrEnum):
    RECORDED = "recorded"
    CLOSED = "closed"  # it closed (or was never open) before the answer reached us
