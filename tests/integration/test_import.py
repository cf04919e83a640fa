"""Importing exports (jobs/importer.py through the Store) on a SQLite file and PostgreSQL:
each format's sample, re-import, dry run, bad rows, matching, erased people, sync-back, and
the re-survey interval and reports through the real intake and read API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from jobs.book_rules import BookRules
from jobs.clock import MovableClock
from jobs.import_rows import BadRow
from jobs.importer import ImportJob, Summary, run_import
from jobs.planning import make_planner
from settings import SurveySettings
from storage.events import Message
from storage.sql_store import SqlStore
from storage.store import IntakePolicy
from tests.conftest import basic, bearer

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "fixtures" / "import"
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
POLICY = IntakePolicy(BookRules(), make_planner(SurveySettings()))


class _NoBar:
    def update(self, done_bytes: int) -> None: ...

    def close(self) -> None: ...


async def _import(store: SqlStore, path: Path, fmt: str, now: datetime = NOW,
                  **options: Any) -> tuple[Summary, list[BadRow]]:
    bad: list[BadRow] = []
    summary = await run_import(store, ImportJob(path, fmt, UTC, **options), now,
                               on_bad=bad.append, progress=lambda _label, _total: _NoBar())
    return summary, bad


def _csv(tmp_path: Path, *rows: str, name: str = "answers.csv") -> Path:
    path = tmp_path / name
    path.write_text("email,score,comment,answered_at,user_id\n" + "".join(r + "\n" for r in rows))
    return path


def _identify(user_id: str, email: str, n: int = 0, at: datetime = NOW) -> Message:
    return Message(message_id=f"m-{user_id}-{n}", type="identify", user_id=user_id,
                   anonymous_id=None, timestamp=at, traits={"email": email})


@pytest.fixture
async def store(db_url: str) -> Any:
    async with SqlStore(db_url, MovableClock(NOW)) as opened:
        yield opened


@pytest.mark.parametrize(("fmt", "name", "scores"), [
    ("delighted", "delighted.csv", {"u-ann": 10, "u-cara": 8}),
    ("satismeter", "satismeter.csv", {"u-dan": 9, "u-fay": 7}),
    ("csv", "answers.csv", {"u-gus": 10, "u-ivy": 9}),
])
async def test_each_format_imports_its_sample(store: SqlStore, fmt: str, name: str,
                                              scores: dict[str, int]) -> None:
    summary, bad = await _import(store, SAMPLES / name, fmt)
    assert bad == [] and summary.counts() == {"rows": 3, "imported": 3, "present": 0, "bad": 0,
                                              "suppressed": 0, "users_created": 3}
    for user_id, score in scores.items():
        user = await store.user(user_id)
        assert user is not None
        [survey] = user["surveys"]
        assert (survey["state"], survey["score"]) == ("answered", score)
        assert survey["answered_at"] == survey["sent_at"]
    assert (await store.nps())["responses"] == 3
    decisions = await store.decisions(next(iter(scores)))
    assert decisions is not None and decisions[0]["outcome"] == "imported"
    assert decisions[0]["reason"].startswith(f"imported from {fmt}: answered ")


async def test_delighted_unix_times_are_the_answer_dates(store: SqlStore) -> None:
    await _import(store, SAMPLES / "delighted.csv", "delighted")
    user = await store.user("u-ann")
    assert user is not None and user["surveys"][0]["answered_at"] == "2026-03-02T10:00:00.000Z"
    months = {g["key"]: g["responses"] for g in (await store.nps("month"))["groups"]}
    assert months == {"2026-01": 1, "2026-02": 1, "2026-03": 1}


async def test_importing_again_changes_nothing(store: SqlStore) -> None:
    await _import(store, SAMPLES / "satismeter.csv", "satismeter")
    before = (await store.nps(), await store.status(NOW), await store.user("u-dan"))
    again, _ = await _import(store, SAMPLES / "satismeter.csv", "satismeter")
    assert (again.imported, again.present, again.users_created) == (0, 3, 0)
    assert (await store.nps(), await store.status(NOW), await store.user("u-dan")) == before


async def test_a_dry_run_writes_nothing_and_counts_what_the_import_does(
        store: SqlStore, tmp_path: Path) -> None:
    # The same person twice (one answer each), and one row repeated: the dry run counts as
    # the real run does, though nothing it "created" is in the database.
    path = _csv(tmp_path, "a@example.com,9,,2026-02-01T10:00:00Z,",
                "a@example.com,7,,2026-02-02T10:00:00Z,",
                "a@example.com,7,,2026-02-02T10:00:00Z,",
                "b@example.com,3,,2026-02-03T10:00:00Z,u-b")
    dry, _ = await _import(store, path, "csv", dry_run=True)
    assert (await store.nps())["responses"] == 0 and (await store.status(NOW))["users"] == 0
    real, _ = await _import(store, path, "csv")
    assert dry.counts() == real.counts() == {"rows": 4, "imported": 3, "present": 1, "bad": 0,
                                             "suppressed": 0, "users_created": 2}


async def test_a_bad_row_stops_the_file_unless_skip_bad(store: SqlStore, tmp_path: Path) -> None:
    path = _csv(tmp_path, "a@example.com,9,,2026-02-01T10:00:00Z,",
                "b@example.com,12,,2026-02-01T10:00:00Z,",
                "c@example.com,8,,2026-02-01T10:00:00Z,")
    summary, bad = await _import(store, path, "csv")
    assert summary.aborted and bad == [BadRow(3, "score", "'12' is not a score from 0 to 10")]
    assert (await store.status(NOW))["users"] == 0 and (await store.nps())["responses"] == 0
    summary, bad = await _import(store, path, "csv", skip_bad=True)
    assert not summary.aborted and len(bad) == 1
    assert (summary.imported, summary.bad) == (2, 1)
    assert (await store.nps())["responses"] == 2


async def test_rows_match_by_user_id_then_address(store: SqlStore, tmp_path: Path) -> None:
    await store.record([_identify("u1", "Ann@Example.com"), _identify("a1", "zed@example.com")],
                       POLICY)
    path = _csv(tmp_path,
                "ann@example.com,9,,2026-02-01T10:00:00Z,",  # u1, by address (case aside)
                "zed@example.com,8,,2026-02-01T10:00:00Z,u1",  # the user id wins
                "new@example.com,3,,2026-02-01T10:00:00Z,",  # an email-only user
                "new@example.com,4,,2026-02-05T10:00:00Z,")  # the same one
    summary, _ = await _import(store, path, "csv")
    assert (summary.imported, summary.users_created) == (4, 1)
    u1 = await store.user("u1")
    assert u1 is not None and sorted(s["score"] for s in u1["surveys"] if s["score"]) == [8, 9]
    a1 = await store.user("a1")
    assert a1 is not None and all(s["score"] is None for s in a1["surveys"])
    status = await store.status(NOW)
    assert status["users"] == 3


async def test_an_erased_person_is_not_brought_back(store: SqlStore, tmp_path: Path) -> None:
    await store.record([_identify("gone", "gone@example.com")], POLICY)
    await store.erase("gone", POLICY)
    path = _csv(tmp_path, "other@example.com,9,,2026-02-01T10:00:00Z,gone",  # the id
                "gone@example.com,2,,2026-02-01T10:00:00Z,",  # the address
                "GONE@example.com,2,,2026-02-02T10:00:00Z,u-new",  # the address, new id
                "kept@example.com,10,,2026-02-01T10:00:00Z,")
    summary, _ = await _import(store, path, "csv")
    assert (summary.imported, summary.suppressed, summary.users_created) == (1, 3, 1)
    assert await store.user("gone") is None and await store.user("u-new") is None
    assert (await store.status(NOW))["users"] == 1 and (await store.nps())["responses"] == 1
    # An imported person is erased like any other, and stays erased at the next import.
    solo = _csv(tmp_path, "solo@example.com,6,,2026-02-01T10:00:00Z,u-solo", name="b.csv")
    await _import(store, solo, "csv")
    await store.erase("u-solo", POLICY)
    assert await store.user("u-solo") is None and (await store.nps())["responses"] == 1
    again, _ = await _import(store, solo, "csv")
    assert (again.imported, again.suppressed) == (0, 1) and await store.user("u-solo") is None


async def test_only_sync_makes_imported_answers_pending(store: SqlStore, tmp_path: Path) -> None:
    await _import(store, _csv(tmp_path, "a@example.com,9,,2026-02-01T10:00:00Z,u-a"), "csv")
    assert (await store.status(NOW))["sync"]["backlog"] == 0
    path = _csv(tmp_path, "b@example.com,9,Nice,2026-02-01T10:00:00Z,u-b",
                "c@example.com,5,,2026-02-01T10:00:00Z,", name="b.csv")
    await _import(store, path, "csv", sync=True)
    pending = await store.pending_chunk(10, 0, with_accounts=False)
    # u-b's answer; the email-only user's stays local (Segment would get a made-up userId).
    assert [(a.user_id, a.score, a.comment) for a in pending.answers] == [("u-b", 9, "Nice")]


async def test_the_resurvey_interval_and_reports_count_an_imported_answer(
        make_client: Any, clock: MovableClock, tmp_path: Path, db_url: str) -> None:
    clock.set(NOW)
    client = await make_client(survey={"max_delay": "0", "resurvey_interval": "26w"})
    answered = NOW - timedelta(days=30)
    path = _csv(tmp_path, f"late@example.com,4,Slow,{answered.isoformat()},u-late")
    async with SqlStore(db_url, clock, background=False, migrate=False) as store:
        summary, _ = await _import(store, path, "csv", now=clock.now())
    assert summary.imported == 1
    body = {"type": "identify", "userId": "u-late", "messageId": "id-1",
            "timestamp": NOW.isoformat(), "traits": {"email": "late@example.com"}}
    response = await client.post("/v1/segment", json=body, headers=basic())
    assert response.status == 200
    decisions = await (await client.get("/v1/users/u-late/decisions",
                                        headers=bearer())).json()
    last = decisions["decisions"][-1]
    ends = answered + timedelta(weeks=26)
    assert last["outcome"] == "scheduled" and "interval ends" in last["reason"]
    assert ends.strftime("%Y-%m-%dT%H:%M") in last["reason"]
    user = await (await client.get("/v1/users/u-late", headers=bearer())).json()
    pending = [s for s in user["surveys"] if s["state"] == "pending"]
    assert [s["due_at"][:16] for s in pending] == [ends.strftime("%Y-%m-%dT%H:%M")]
    assert last["survey_id"] == pending[0]["id"]  # the decision names the survey it made
    months = await (await client.get("/v1/nps?by=month", headers=bearer())).json()
    assert [(g["key"], g["detractors"]) for g in months["groups"]] == [
        (answered.strftime("%Y-%m"), 1)]


async def test_the_nps_after_an_import_is_a_recount(make_client: Any, clock: MovableClock,
                                                    tmp_path: Path, db_url: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The running totals (storage/nps_totals.py) move in each batch's transaction: after an
    import in batches of two, and a second import of the same file, `/v1/nps` and the
    tables equal a recount of the answers."""
    from tests.integration.test_nps_totals import recounted, tables

    monkeypatch.setattr("jobs.importer.BATCH_MIN", 2)
    monkeypatch.setattr("jobs.importer.BATCH_MAX", 2)
    clock.set(NOW)
    client = await make_client()
    scores = [10, 9, 3, 7, 0, 10, 6, 8, 9]
    rows = [f"p{n % 7}@example.com,{score},,{(NOW - timedelta(days=10 * n)).isoformat()},"
            f"{'u-' + str(n) if n % 2 else ''}" for n, score in enumerate(scores)]
    path = _csv(tmp_path, *rows, rows[1])  # one row twice: counted once
    async with SqlStore(db_url, clock, background=False, migrate=False) as store:
        for _ in range(2):
            await _import(store, path, "csv", now=clock.now())
        assert await tables(store) == await recounted(store)
    nps = await (await client.get("/v1/nps", headers=bearer())).json()
    promoters = sum(s >= 9 for s in scores)
    detractors = sum(s <= 6 for s in scores)
    assert (nps["promoters"], nps["detractors"], nps["responses"]) == (
        promoters, detractors, len(scores))
    assert nps["nps"] == pytest.approx(100 * (promoters - detractors) / len(scores), abs=0.05)
