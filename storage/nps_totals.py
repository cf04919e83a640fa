"""Running NPS totals, kept in the transaction that writes or removes an answer, so the
console's dashboard and accounts list, `/v1/nps` and `npsd report` read a few hundred rows
instead of scanning every answer (1,000,000 users, 200,000 answers: 0.4-1 s per page).

Two tables (storage.models): `nps_days`, per UTC day, the answers by category (by answer
day) and the surveys sent (by send day); `nps_accounts`, per account, the answers of its
active members by category and the time of the latest. Only surveys of kind "survey" count,
as in the reports.

`record_change(v, before, after)` is THE entry point for any code that writes survey rows:
pass what the totals knew of each row before (`[]` for a new row) and what it is now (`[]`
for a deleted row); it applies the difference. `forget_surveys` / `refresh_accounts` serve
the erasure and the book (merges, membership changes), where an account's members change.
Written as fast-path steps (storage/fast_path.py) so the intake's writer, the answer path
(`run_async`) and the import all call the same code on both backends.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from storage.fast_path import Fetch, Steps, Values, execute_in, fetch_in, many
from storage.nps import PASSIVE_MIN, PROMOTER_MIN

NO_NPS = -1000  # the stored NPS of an account without answers: below any NPS

_UPSERT_DAY = (
    "INSERT INTO nps_days (day, shard, promoters, passives, detractors, sent) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (day, shard) DO UPDATE SET "
    "promoters = nps_days.promoters + excluded.promoters, "
    "passives = nps_days.passives + excluded.passives, "
    "detractors = nps_days.detractors + excluded.detractors, "
    "sent = nps_days.sent + excluded.sent")
_UPSERT_ACCOUNT = (
    "INSERT INTO nps_accounts (group_id, promoters, passives, detractors, last_answer_at) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (group_id) DO UPDATE SET "
    "promoters = nps_accounts.promoters + excluded.promoters, "
    "passives = nps_accounts.passives + excluded.passives, "
    "detractors = nps_accounts.detractors + excluded.detractors, "
    "last_answer_at = CASE WHEN nps_accounts.last_answer_at IS NULL "
    "OR excluded.last_answer_at > nps_accounts.last_answer_at "
    "THEN excluded.last_answer_at ELSE nps_accounts.last_answer_at END")
# The counted condition sits in the sums (or is checked in Python), never in a WHERE with
# user ids: a WHERE on kind / answered_at lets SQLite (without ANALYZE statistics, as npsd
# runs) pick the answered-time index over the user id one, a scan of every answer per
# member (92 s instead of 0.05 s for 400 accounts).
_COUNTED = "s.kind = 'survey' AND s.answered_at IS NOT NULL"
_ACCOUNT_FIGURES = (
    "SELECT m.group_id, "
    f"SUM(CASE WHEN {_COUNTED} AND s.score >= {PROMOTER_MIN} THEN 1 ELSE 0 END), "
    f"SUM(CASE WHEN {_COUNTED} AND s.score >= {PASSIVE_MIN} AND s.score < {PROMOTER_MIN} "
    "THEN 1 ELSE 0 END), "
    f"SUM(CASE WHEN {_COUNTED} AND s.score < {PASSIVE_MIN} THEN 1 ELSE 0 END), "
    f"MAX(CASE WHEN {_COUNTED} THEN s.answered_at END) "
    "FROM memberships m JOIN surveys s ON s.user_id = m.user_id "
    "WHERE m.group_id IN ({}) AND m.active = TRUE AND s.score IS NOT NULL "
    "GROUP BY m.group_id")


@dataclass(frozen=True)
class Counted:
    """What the totals know of one survey row (kind "survey"): whose it is, when it was
    sent, and its answer (score and time, None when unanswered)."""

    user_id: str
    sent_at: datetime | None
    score: int | None = None
    answered_at: datetime | None = None

    def answered(self, score: int, at: datetime) -> Counted:
        return replace(self, score=score, answered_at=at)


def _slot(score: int) -> int:
    return 0 if score >= PROMOTER_MIN else 1 if score >= PASSIVE_MIN else 2


def record_change(v: Values, before: Iterable[Counted], after: Iterable[Counted]
                  ) -> Steps[None]:
    """Move the totals from `before` (rows as they were; `[]` for rows just inserted) to
    `after` (rows as they are now; `[]` for rows deleted). An account's latest answer time
    only moves forward here: a removal goes through `refresh_accounts`."""
    gone, came = _answers(v, before), _answers(v, after)
    same = gone & came  # a row whose answer did not change (recorded sent, say)
    gone, came = gone - same, came - same
    days: dict[str, list[int]] = {}
    for rows, sign in ((before, -1), (after, 1)):
        for row in rows:
            if row.sent_at is not None:
                days.setdefault(_day(v, row.sent_at), [0, 0, 0, 0])[3] += sign
    users: dict[str, list[Any]] = {}
    for answers, sign in ((gone, -1), (came, 1)):
        for (user_id, score, at), n in answers.items():
            days.setdefault(at.date().isoformat(), [0, 0, 0, 0])[_slot(score)] += sign * n
            mine = users.setdefault(user_id, [0, 0, 0, None])
            mine[_slot(score)] += sign * n
            if sign > 0 and (mine[3] is None or at > mine[3]):
                mine[3] = at
    yield from many(_UPSERT_DAY, sorted([d, v.shard, *c] for d, c in days.items() if any(c)))
    users = {u: c for u, c in users.items() if any(c[:3]) or c[3] is not None}
    if not users:
        return
    accounts: dict[str, list[Any]] = {}
    for user_id, group_id in (yield from _active_groups(users)):
        mine, sums = users[str(user_id)], accounts.setdefault(str(group_id), [0, 0, 0, None])
        for i in range(3):
            sums[i] += mine[i]
        if mine[3] is not None and (sums[3] is None or mine[3] > sums[3]):
            sums[3] = mine[3]
    yield from many(_UPSERT_ACCOUNT, [[g, *c[:3], v.ts(c[3])]
                                      for g, c in sorted(accounts.items())])
    yield from _derive(accounts)


def _answers(v: Values, rows: Iterable[Counted]) -> Counter[tuple[str, int, datetime]]:
    return Counter((r.user_id, r.score, at) for r in rows
                   if r.score is not None and (at := v.dt(r.answered_at)) is not None)


def _day(v: Values, at: datetime) -> str:
    value = v.dt(at)
    assert value is not None
    return value.date().isoformat()


def _active_groups(user_ids: Iterable[str]) -> Steps[list[tuple[Any, ...]]]:
    return (yield from fetch_in(
        "SELECT user_id, group_id FROM memberships WHERE active = TRUE AND user_id IN ({})",
        user_ids))


def counted_rows(v: Values, user_ids: Iterable[str]) -> Steps[list[Counted]]:
    """What the totals hold of these users' surveys (read before deleting or moving them)."""
    rows = yield from fetch_in(
        "SELECT user_id, sent_at, score, answered_at, kind FROM surveys WHERE user_id IN ({})",
        user_ids)  # kind is checked here: see _COUNTED
    return [Counted(str(r[0]), v.dt(r[1]), None if r[2] is None else int(r[2]), v.dt(r[3]))
            for r in rows if r[4] == "survey"]


def users_with_answers(user_ids: Iterable[str]) -> Steps[set[str]]:
    """Which of these users have an answer counted in the totals."""
    rows = yield from fetch_in(
        "SELECT user_id, kind FROM surveys WHERE user_id IN ({}) AND score IS NOT NULL",
        user_ids)  # kind is checked here: see _COUNTED
    return {str(r[0]) for r in rows if r[1] == "survey"}


def active_groups_each(user_ids: Iterable[str]) -> Steps[list[str]]:
    """The account of each active membership of these users (once per membership)."""
    return [str(r[1]) for r in (yield from _active_groups(user_ids))]


def count_members(deltas: dict[str, int]) -> Steps[None]:
    """Add these changes to the accounts' member counts."""
    yield from many(
        "INSERT INTO nps_accounts (group_id, members) VALUES (?, ?) ON CONFLICT (group_id) "
        "DO UPDATE SET members = nps_accounts.members + excluded.members",
        sorted((g, n) for g, n in deltas.items() if n))


def active_groups(user_ids: Iterable[str]) -> Steps[set[str]]:
    """The accounts these users are active members of."""
    return {str(r[1]) for r in (yield from _active_groups(user_ids))}


def accounts_with_answers_of(user_ids: Iterable[str]) -> Steps[set[str]]:
    """The accounts whose figures count answers of these users now (their active
    memberships, for users with an answer): read before the users' rows change."""
    return (yield from active_groups((yield from users_with_answers(user_ids))))


def forget_surveys(v: Values, user_ids: list[str]) -> Steps[set[str]]:
    """Take these users' surveys out of the day totals, before their rows are deleted;
    returns the accounts to `refresh_accounts` once they are."""
    groups = yield from accounts_with_answers_of(user_ids)
    yield from record_change(v, (yield from counted_rows(v, user_ids)), [])
    members: dict[str, int] = {}
    for group_id in (yield from active_groups_each(user_ids)):
        members[group_id] = members.get(group_id, 0) - 1
    yield from count_members(members)
    return groups


def refresh_accounts(v: Values, group_ids: Iterable[str]) -> Steps[None]:
    """Recount these accounts from the answer rows (after their members changed, or some
    answers went): one grouped read through the membership and survey indexes."""
    groups = sorted(set(group_ids))
    if not groups:
        return
    lock = v.for_update()
    if lock:
        # PostgreSQL: the accounts' rows first (count_members made them when the members
        # came), so the recount below reads what any other writer of them committed. Else
        # two intakes (per-key locks, storage/book_locks.py: neither need hold the
        # account's key) or an answer could each recount from a snapshot without the
        # other's change, and the later write of the absolute figures would lose it.
        yield from fetch_in("SELECT group_id FROM nps_accounts WHERE group_id IN ({}) "
                            "ORDER BY group_id" + lock, groups)
    found = {str(r[0]): r for r in (yield from fetch_in(_ACCOUNT_FIGURES, groups))}
    none = (None, 0, 0, 0, None)
    yield from many(
        "INSERT INTO nps_accounts (group_id, promoters, passives, detractors, last_answer_at) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (group_id) DO UPDATE SET "
        "promoters = excluded.promoters, passives = excluded.passives, "
        "detractors = excluded.detractors, last_answer_at = excluded.last_answer_at",
        [(g, int(r[1] or 0), int(r[2] or 0), int(r[3] or 0), v.ts(v.dt(r[4])))
         for g in groups for r in [found.get(g, none)]])
    yield from _derive(groups)


def _derive(group_ids: Iterable[str]) -> Steps[None]:
    """The total and the NPS of these accounts from their counts (the sort columns)."""
    total = "(promoters + passives + detractors)"
    yield from execute_in(
        f"UPDATE nps_accounts SET responses = {total}, nps = CASE WHEN {total} > 0 THEN "
        f"round(100.0 * (promoters - detractors) / {total}, 1) ELSE {NO_NPS} END "
        "WHERE group_id IN ({})", group_ids)


def save_accounts(rows: Iterable[dict[str, Any]]) -> Steps[None]:
    """The name, sort key and liveness of these accounts (rows as the book holds them),
    after their traits or deletion changed."""
    values = []
    for row in rows:
        name = account_name(row["traits"])
        values.append((row["group_id"], name, (name or row["group_id"]).lower(),
                       row["deleted_at"] is None))
    yield from many(
        "INSERT INTO nps_accounts (group_id, name, sort_name, live) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (group_id) DO UPDATE SET name = excluded.name, "
        "sort_name = excluded.sort_name, live = excluded.live", values)


def account_name(traits: str | None) -> str | None:
    """The `name` trait of an account when it is a non-empty string."""
    try:
        value = json.loads(traits or "{}").get("name")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and value else None


def rebuild(v: Values) -> Steps[None]:
    """Build both tables from the survey rows (the migration step, and a repair)."""
    yield Fetch("DELETE FROM nps_days")
    yield Fetch("DELETE FROM nps_accounts")
    days: dict[str, list[int]] = {}
    sent = yield Fetch(f"SELECT {v.day_sql('sent_at')}, COUNT(*) FROM surveys "
                       "WHERE kind = 'survey' AND sent_at IS NOT NULL GROUP BY 1")
    for day, count in sent:
        days.setdefault(str(day), [0, 0, 0, 0])[3] = int(count)
    answered = yield Fetch(
        f"SELECT {v.day_sql('answered_at')}, score, COUNT(*) FROM surveys "
        "WHERE kind = 'survey' AND score IS NOT NULL AND answered_at IS NOT NULL GROUP BY 1, 2")
    for day, score, count in answered:
        days.setdefault(str(day), [0, 0, 0, 0])[_slot(int(score))] += int(count)
    yield from many(_UPSERT_DAY, sorted([d, 0, *c] for d, c in days.items()))
    accounts = yield Fetch("SELECT group_id, traits, deleted_at FROM accounts")
    yield from save_accounts({"group_id": str(g), "traits": t, "deleted_at": d}
                             for g, t, d in accounts)
    groups = yield Fetch("SELECT group_id, COUNT(*) FROM memberships WHERE active = TRUE "
                         "GROUP BY group_id")
    yield from count_members({str(g): int(n) for g, n in groups})
    yield from refresh_accounts(v, (str(r[0]) for r in groups))


