"""NPS arithmetic, the one copy: the categories of a 0-10 score, the score from the
counts, and the same categories as SQL sums for the reports (storage/reads.py). Pure but
kept in storage, the lowest floor, because the reports compute it there; jobs/rules.py
re-exports `nps` and `category` for the rules' callers and table tests."""

from __future__ import annotations

from typing import Literal

import sqlalchemy as sa

PROMOTER_MIN = 9  # 9-10
PASSIVE_MIN = 7  # 7-8; 0-6 are detractors


def category(score: int) -> Literal["promoter", "passive", "detractor"]:
    if not 0 <= score <= 10:
        raise ValueError(f"an NPS score is 0 to 10, got {score}")
    if score >= PROMOTER_MIN:
        return "promoter"
    if score >= PASSIVE_MIN:
        return "passive"
    return "detractor"


def nps(promoters: int, passives: int, detractors: int) -> float | None:
    """Net Promoter Score: % promoters − % detractors, one decimal; None without answers."""
    total = promoters + passives + detractors
    if total <= 0:
        return None
    return round(100.0 * (promoters - detractors) / total, 1)


def count_columns(score: sa.ColumnElement[int], sent_at: sa.ColumnElement[object]
                  ) -> tuple[sa.ColumnElement[int], ...]:
    """SUMs of (promoters, passives, detractors, sent) over survey rows; an unanswered
    survey (score NULL) is in no category."""
    def count(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[int]:
        return sa.func.sum(sa.case((condition, 1), else_=0))

    return (count(score >= PROMOTER_MIN),
            count(sa.and_(score >= PASSIVE_MIN, score < PROMOTER_MIN)),
            count(score < PASSIVE_MIN), count(sent_at.is_not(None)))
